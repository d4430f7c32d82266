"""Resource usage of a production version: how long its weights take to load and how much memory.

`measure_resource_usage` loads the weights the way a server would, in a child process so that
the parent's own memory does not count: safetensors with `safetensors.numpy.load_file` (or
`safetensors.torch.load_file` for dtypes numpy lacks, such as bf16), PyTorch files with
`torch.load(weights_only=True)` (only when their pickle scan, repeated here, says "safe"), GGUF by
reading every tensor's bytes through a numpy memmap (as llama.cpp maps the file). The child
reports its load time and its peak resident set (VmHWM); every file stays loaded until the end,
as a server keeps them. The result becomes `performance/resource_usage.json`.

`read_benchmarks` reads the `--benchmarks FILE` a user hands in (a JSON object).
"""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from modelyard.errors import InvalidInputError
from modelyard.inspect._bounded import ByteSource
from modelyard.lifecycle.weights import INSTALL_TORCH, TORCH_CHECKPOINT_SUFFIXES, torch_available
from modelyard.loaders import JsonValue, parse_json, read_text

__all__ = ["ResourceUsage", "measure_resource_usage", "read_benchmarks"]

SAFETENSORS_NUMPY = "safetensors.numpy.load_file"
SAFETENSORS_TORCH = "safetensors.torch.load_file"
TORCH_LOAD = "torch.load(weights_only=True)"
GGUF_MEMMAP = "numpy.memmap (every GGUF tensor read)"
# safetensors dtypes numpy has no type for: such files load through torch.
_NOT_IN_NUMPY = frozenset({"BF16", "F8_E4M3", "F8_E5M2", "F8_E4M3FNUZ", "F8_E5M2FNUZ", "F8_E8M0", "F4"})


@dataclass(frozen=True)
class ResourceUsage:
    """One measured load. `peak_rss_bytes` is the child's high-water mark, interpreter and libraries
    included; `baseline_rss_bytes` is its resident set after the imports, before any weights.
    `files` maps each file to its size in bytes; `methods` each file to how it was loaded."""

    load_seconds: float
    peak_rss_bytes: int
    baseline_rss_bytes: int
    method: str
    methods: dict[str, str]
    python_version: str
    library_versions: dict[str, str]
    files: dict[str, int]

    @property
    def total_bytes(self) -> int:
        return sum(self.files.values())

    def to_json(self) -> str:
        """The contents of `performance/resource_usage.json`: indented, with a trailing newline."""
        return json.dumps(asdict(self) | {"total_bytes": self.total_bytes}, indent=2) + "\n"


def measure_resource_usage(files: list[Path], *, timeout: float = 600) -> ResourceUsage:
    """Load every file in a child process and report its load time and peak memory."""
    if not files:
        raise InvalidInputError("no weights files to measure", field="files")
    plan = [_plan(path) for path in files]
    names = _display_names(files)
    report = _run_child(plan, files, timeout)
    methods = {names[i]: entry["method"] for i, entry in enumerate(plan)}
    return ResourceUsage(
        load_seconds=float(report["load_seconds"]),
        peak_rss_bytes=int(report["peak_rss_bytes"]),
        baseline_rss_bytes=int(report["baseline_rss_bytes"]),
        method=" + ".join(dict.fromkeys(methods.values())),
        methods=methods,
        python_version=str(report["python"]),
        library_versions={str(k): str(v) for k, v in report["versions"].items()},
        files={names[i]: path.stat().st_size for i, path in enumerate(files)},
    )


def read_benchmarks(path: Path) -> dict[str, Any]:
    """A benchmarks file (`--benchmarks FILE`): a JSON object, kept as it is."""
    value: JsonValue = parse_json(read_text(path), path)
    if not isinstance(value, dict):
        raise InvalidInputError(
            f"a benchmarks file must hold a JSON object at the top level, found {type(value).__name__}", path=path
        )
    return value


# -- what the child loads, decided in the parent from the headers ---------------------------------


def _plan(path: Path) -> dict[str, Any]:
    """The child's instructions for one file: its path, the method, and (GGUF) the byte ranges."""
    suffix = path.suffix.lower()
    if suffix == ".safetensors":
        return {"path": str(path), "method": _safetensors_method(path)}
    if suffix == ".gguf":
        return {"path": str(path), "method": GGUF_MEMMAP, "ranges": _gguf_ranges(path)}
    if suffix in TORCH_CHECKPOINT_SUFFIXES:
        _require_safe_pickle(path)
        _require_torch(path, "a PyTorch file")
        return {"path": str(path), "method": TORCH_LOAD}
    raise InvalidInputError(
        f"cannot measure '{suffix or 'no suffix'}' files (safetensors, GGUF and PyTorch files only)", path=path
    )


def _safetensors_method(path: Path) -> str:
    from modelyard.inspect.safetensors import read_safetensors

    with ByteSource.open(path) as source:
        header = read_safetensors(source)
    numpy_less = sorted({t.dtype for t in header.tensors.values()} & _NOT_IN_NUMPY)
    if not numpy_less:
        return SAFETENSORS_NUMPY
    _require_torch(path, f"a safetensors file with {', '.join(numpy_less)} tensors")
    return SAFETENSORS_TORCH


def _gguf_ranges(path: Path) -> list[tuple[int, int]]:
    from modelyard.inspect.gguf import read_gguf

    with ByteSource.open(path) as source:
        info = read_gguf(source)
    return [(info.data_offset + tensor.offset, tensor.n_bytes) for tensor in info.tensors]


def _require_safe_pickle(path: Path) -> None:
    """Only a pickle whose scan says "safe" is loaded: the cleaned weights of a promotion are."""
    from modelyard.inspect.pytorch import read_torch_checkpoint

    with ByteSource.open(path) as source:
        scan = read_torch_checkpoint(source).scan
    if scan.verdict != "safe":
        names = sorted({finding.qualified for finding in scan.findings if finding.severity != "allowed"})
        raise InvalidInputError(
            f"its pickle scan says {scan.verdict} ({', '.join(names[:3])}): only plain state dicts are loaded "
            "for measuring; measure the cleaned model.pt or model.safetensors",
            path=path,
        )


def _require_torch(path: Path, what: str) -> None:
    if not torch_available():
        raise InvalidInputError(f"{what} loads with torch, which is not installed: {INSTALL_TORCH}", path=path)


def _display_names(files: list[Path]) -> list[str]:
    """File names, or the paths as given when two files share a name."""
    names = [path.name for path in files]
    return names if len(set(names)) == len(names) else [str(path) for path in files]


# -- the child ------------------------------------------------------------------------------------


def _run_child(plan: list[dict[str, Any]], files: list[Path], timeout: float) -> dict[str, Any]:
    command = [sys.executable, "-c", CHILD_SCRIPT, json.dumps(plan)]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired as exc:  # run() has killed the child already
        loading = _last_loading(exc.stderr) or ", ".join(str(path) for path in files)
        raise InvalidInputError(
            f"loading took longer than {timeout:g} s; the measuring process was stopped", path=loading
        ) from None
    lines = done.stdout.strip().splitlines()
    try:
        report = json.loads(lines[-1]) if lines else {}
    except json.JSONDecodeError:
        report = {}
    if done.returncode != 0 or "error" in report or "peak_rss_bytes" not in report:
        where = report.get("path") or _last_loading(done.stderr) or ", ".join(str(path) for path in files)
        cause = report.get("error") or _exit_cause(done.returncode, done.stderr)
        raise InvalidInputError(f"loading failed in the measuring process: {cause}", path=where)
    return dict(report)


def _last_loading(stderr: str | bytes | None) -> str | None:
    text = stderr.decode(errors="replace") if isinstance(stderr, bytes) else (stderr or "")
    loading = [line[len("loading: ") :] for line in text.splitlines() if line.startswith("loading: ")]
    return loading[-1] if loading else None


def _exit_cause(returncode: int, stderr: str) -> str:
    if returncode < 0:
        return f"killed by signal {-returncode} (out of memory?)"
    last = [line for line in stderr.strip().splitlines() if not line.startswith("loading: ")]
    return last[-1] if last else f"exit status {returncode}"


# Runs in the child: imports only what the plan needs, records its resident set before and its
# high-water mark after loading every file, and prints one JSON line on stdout.
CHILD_SCRIPT = r"""
import json, platform, sys, time
from importlib.metadata import version

plan = json.loads(sys.argv[1])
methods = {entry["method"] for entry in plan}


def memory(field):
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    import resource
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024


import numpy
versions = {"numpy": version("numpy")}
if any(method.startswith("safetensors") for method in methods):
    import safetensors.numpy
    versions["safetensors"] = version("safetensors")
if any("torch" in method for method in methods):
    import torch
    import safetensors.torch
    versions["torch"] = version("torch")

baseline = memory("VmRSS")
kept = []
started = time.perf_counter()
for entry in plan:
    path, method = entry["path"], entry["method"]
    print("loading: " + path, file=sys.stderr, flush=True)
    try:
        if method == "safetensors.numpy.load_file":
            kept.append(safetensors.numpy.load_file(path))
        elif method == "safetensors.torch.load_file":
            kept.append(safetensors.torch.load_file(path, device="cpu"))
        elif method == "torch.load(weights_only=True)":
            kept.append(torch.load(path, map_location="cpu", weights_only=True))
        else:
            data = numpy.memmap(path, dtype=numpy.uint8, mode="r")
            views = [data[offset:offset + length] for offset, length in entry["ranges"]]
            sum(int(view[::4096].sum()) for view in views if len(view))  # touches every page
            kept.append(views)
    except Exception as exc:
        message = (str(exc).strip().splitlines() or [""])[0]
        print(json.dumps({"error": type(exc).__name__ + ": " + message, "path": path}))
        sys.exit(1)
elapsed = time.perf_counter() - started
print(json.dumps({"load_seconds": elapsed, "peak_rss_bytes": memory("VmHWM"), "baseline_rss_bytes": baseline,
                  "versions": versions, "python": platform.python_version()}))
"""
