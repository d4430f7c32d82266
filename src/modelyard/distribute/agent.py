"""modelyard's node agent: one file, standard library only, run on a fleet node by `python3`.

modelyard ships this file's source over SSH with each call (it is never installed on the node)
and sends one JSON request on standard input; the agent answers with one JSON document on
standard output. Everything it touches lies under the request's models root:

    <root>/<target>                                  symlink -> .modelyard/<target>/<version>
    <root>/.modelyard/<target>/<version>/...         a verified version's files
    <root>/.modelyard/<target>/.staging/<version>/   a transfer in progress (rsync --partial)
    <root>/.modelyard/<target>/records/<version>.json  what verification saw: size, mtime, sha256

The serving path only ever changes by an atomic rename of a symlink onto it, so a server never
reads a half-copied version. Digests are computed here, on the node, with hashlib (OpenSSL).
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import shutil
import struct
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

AGENT_PROTOCOL = 1
STATE_DIR = ".modelyard"
STAGING = ".staging"
RECORDS = "records"
CHUNK = 1 << 20


class AgentError(Exception):
    """A request this node refuses; the message goes back to modelyard as the reason."""


# -- paths ----------------------------------------------------------------------------------------


def segment(value: Any, what: str) -> str:
    """One directory name: never empty, '.', '..', or containing a separator."""
    if not isinstance(value, str) or not value or value.startswith(".") or "/" in value or "\x00" in value:
        raise AgentError(f"{what} {value!r} is not a plain directory name (and may not start with '.')")
    return value


def relative_file(value: Any) -> str:
    """A file path inside a version directory: relative, normalised, never leaving it."""
    if not isinstance(value, str) or not value or value.startswith("/") or "\x00" in value:
        raise AgentError(f"file path {value!r} must be relative")
    parts = value.split("/")
    if any(part in ("", ".", "..") for part in parts):
        raise AgentError(f"file path {value!r} must not contain '.', '..' or empty parts")
    return value


def models_root(request: dict[str, Any]) -> str:
    root = request.get("root")
    if not isinstance(root, str) or not root.startswith("/") or os.path.normpath(root) != root:
        raise AgentError(f"models root {root!r} must be an absolute, normalised path")
    return root


def target_dir(request: dict[str, Any]) -> str:
    return os.path.join(models_root(request), STATE_DIR, segment(request.get("target"), "target name"))


def version_dir(request: dict[str, Any], key: str = "version") -> str:
    return os.path.join(target_dir(request), segment(request.get(key), "version"))


def staging_dir(request: dict[str, Any]) -> str:
    return os.path.join(target_dir(request), STAGING, segment(request.get("version"), "version"))


def record_path(request: dict[str, Any], version: str) -> str:
    return os.path.join(target_dir(request), RECORDS, segment(version, "version") + ".json")


def serving_path(request: dict[str, Any]) -> str:
    return os.path.join(models_root(request), segment(request.get("target"), "target name"))


def fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_json_atomically(path: str, document: Any) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    temporary = f"{path}.tmp-{os.getpid()}"
    with open(temporary, "w", encoding="utf-8") as handle:
        json.dump(document, handle, sort_keys=True)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, path)
    fsync_dir(os.path.dirname(path))


def read_json(path: str) -> Any:
    try:
        with open(path, encoding="utf-8") as handle:
            return json.load(handle)
    except (OSError, ValueError):
        return None


# -- hashing --------------------------------------------------------------------------------------


def sha256_file(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb", buffering=0) as handle:
        buffer = bytearray(CHUNK * 4)
        view = memoryview(buffer)
        while True:
            count = handle.readinto(buffer)
            if not count:
                break
            digest.update(view[:count])  # hashlib releases the GIL: files hash in parallel
    return digest.hexdigest()


def block_digests(path: str, block_size: int) -> list[str]:
    digests = []
    with open(path, "rb") as handle:
        while True:
            block = handle.read(block_size)
            if not block:
                break
            digests.append(hashlib.sha256(block).hexdigest())
    return digests


def hash_workers() -> int:
    return max(1, min(4, os.cpu_count() or 1))


# -- commands -------------------------------------------------------------------------------------


def probe(request: dict[str, Any]) -> dict[str, Any]:
    """What this node has: python, free disk under the models root, the tools modelyard uses."""
    root = models_root(request)
    existing = root
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    usage = shutil.disk_usage(existing)
    return {
        "hostname": platform.node(),
        "python": platform.python_version(),
        "root_exists": os.path.isdir(root),
        "root_writable": os.access(existing, os.W_OK),
        "free_bytes": usage.free,
        "total_bytes": usage.total,
        "tools": {tool: shutil.which(tool) for tool in ("rsync", "openssl", "sha256sum")},
        "hasher": f"python {platform.python_version()} hashlib ({_openssl_version()})",
        "peft": _importable("peft") and _importable("torch"),
        "paths": {path: os.path.isdir(path) for path in request.get("paths", []) if isinstance(path, str)},
    }


def _openssl_version() -> str:
    import ssl

    return ssl.OPENSSL_VERSION


def _importable(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


def state(request: dict[str, Any]) -> dict[str, Any]:
    """The serving symlink, the versions present with their records, whether each is intact by
    size and mtime (no hashing: that is `verify`), and transfers left in staging."""
    serving = serving_path(request)
    current, serving_kind = _current_version(request, serving)
    base = target_dir(request)
    versions = []
    if os.path.isdir(base):
        for name in sorted(os.listdir(base)):
            if name.startswith(".") or name == RECORDS or not os.path.isdir(os.path.join(base, name)):
                continue
            record = read_json(record_path(request, name))
            versions.append(
                {
                    "version": name,
                    "recorded": record is not None,
                    "verified_at": record.get("verified_at") if record else None,
                    "ref": record.get("ref") if record else None,
                    "intact": _intact(os.path.join(base, name), record) if record else False,
                }
            )
    staging = os.path.join(base, STAGING)
    return {
        "current": current,
        "serving": serving_kind,
        "versions": versions,
        "staging": sorted(os.listdir(staging)) if os.path.isdir(staging) else [],
    }


def _current_version(request: dict[str, Any], serving: str) -> tuple[str | None, str]:
    """(version, kind): kind is symlink, missing, or foreign (something modelyard did not make)."""
    if not os.path.lexists(serving):
        return None, "missing"
    if not os.path.islink(serving):
        return None, "foreign"
    link = os.readlink(serving)
    prefix = os.path.join(STATE_DIR, segment(request.get("target"), "target name")) + "/"
    if not link.startswith(prefix) or "/" in link[len(prefix) :]:
        return None, "foreign"
    return link[len(prefix) :], "symlink"


def _intact(directory: str, record: dict[str, Any]) -> bool:
    """Every recorded file is still there with its size and mtime, and nothing was added."""
    files = record.get("files") or {}
    for relative, seen in files.items():
        try:
            st = os.stat(os.path.join(directory, relative))
        except OSError:
            return False
        if st.st_size != seen["size"] or st.st_mtime_ns != seen["mtime_ns"]:
            return False
    return _count_files(directory) == len(files)


def _count_files(directory: str) -> int:
    return sum(len(names) for _, _, names in os.walk(directory))


def prepare(request: dict[str, Any]) -> dict[str, Any]:
    """Make the staging directory for a version, hardlink into it the files this node already
    holds, and check the disk can take the rest (partial files of an interrupted transfer count
    as there)."""
    staging = staging_dir(request)
    installed = version_dir(request)
    needed = int(request.get("bytes", 0))
    if os.path.isdir(installed) and read_json(record_path(request, request["version"])):
        return {"installed": True, "staging": None, "free_bytes": None, "linked": 0}
    os.makedirs(staging, exist_ok=True)
    linked = _link_known_files(request, staging)
    already = sum(
        os.path.getsize(os.path.join(dirpath, name)) for dirpath, _, names in os.walk(staging) for name in names
    )
    free = shutil.disk_usage(staging).free
    if needed - already > free:
        raise AgentError(
            f"not enough disk under {models_root(request)}: the version needs {needed - already} more bytes, "
            f"{free} are free"
        )
    return {"installed": False, "staging": staging, "free_bytes": free, "linked": linked}


def _link_known_files(request: dict[str, Any], staging: str) -> int:
    """Hardlink into staging every planned file another version here already holds with the same
    SHA-256 (by its verification record, and unchanged in size and mtime since): rsync then finds
    it in place and sends nothing for it. By digest, not by size and mtime as rsync's --link-dest
    would, which links a different file that merely has the same size and timestamp."""
    known: dict[str, str] = {}
    base = target_dir(request)
    for name in sorted(os.listdir(base)):
        if name.startswith(".") or name == RECORDS or name == request["version"]:
            continue
        record = read_json(record_path(request, name))
        for relative, seen in ((record or {}).get("files") or {}).items():
            path = os.path.join(base, name, relative)
            try:
                st = os.stat(path)
            except OSError:
                continue
            if st.st_size == seen.get("size") and st.st_mtime_ns == seen.get("mtime_ns"):
                known.setdefault(seen.get("sha256", ""), path)
    linked = 0
    for item in request.get("files", []):
        source = known.get(item.get("sha256", ""))
        target = os.path.join(staging, relative_file(item["path"]))
        if source is None or os.path.lexists(target):
            continue
        os.makedirs(os.path.dirname(target), exist_ok=True)
        try:
            os.link(source, target)
            linked += 1
        except OSError:
            continue  # a filesystem without hardlinks: rsync sends the file
    return linked


def verify(request: dict[str, Any]) -> dict[str, Any]:
    """Seed 004's four checks on a staged or installed version: every file present, sizes match,
    SHA-256 match (computed here), and the load check for its kind. A staged version that passes
    is moved into place; the record of what was seen is written."""
    where = request.get("where", "installed")
    directory = staging_dir(request) if where == "staging" else version_dir(request)
    if where == "staging" and not os.path.isdir(directory) and os.path.isdir(version_dir(request)):
        directory, where = version_dir(request), "installed"  # a retry after the move
    expected = {relative_file(item["path"]): item for item in request.get("files", [])}
    if not os.path.isdir(directory):
        return {"checks": _all_failed(f"{directory} does not exist on the node"), "files": {}, "passed": False}
    present, missing, extra = _presence(directory, expected)
    sizes = {path: os.stat(os.path.join(directory, path)).st_size for path in present}
    wrong_size = sorted(path for path in present if sizes[path] != expected[path]["size"])
    with ThreadPoolExecutor(hash_workers()) as pool:
        digests = dict(zip(present, pool.map(lambda p: sha256_file(os.path.join(directory, p)), present), strict=True))
    wrong_digest = sorted(path for path in present if digests[path] != expected[path]["sha256"])
    checks = {
        "files_present": _check(not missing and not extra, _presence_reason(missing, extra)),
        "sizes": _check(not wrong_size and not missing, _list_reason("size differs", wrong_size, missing)),
        "sha256": _check(not wrong_digest and not missing, _list_reason("SHA-256 differs", wrong_digest, missing)),
        "load": load_check(directory, request.get("load") or {}),
    }
    passed = all(check["status"] == "passed" or check["status"] == "skipped" for check in checks.values()) and all(
        checks[name]["status"] == "passed" for name in ("files_present", "sizes", "sha256")
    )
    files = {path: {"size": sizes[path], "sha256": digests[path]} for path in present}
    previous = read_json(record_path(request, request["version"]))
    result: dict[str, Any] = {"checks": checks, "files": files, "passed": passed, "where": where, "extra": extra}
    result["changed_since_record"] = _changes(previous, files, missing, extra) if previous else None
    if passed:
        if where == "staging":
            _install(request, directory)
            directory = version_dir(request)
        _write_record(request, directory, files)
    elif where == "staging":
        # rsync would trust these files' size and mtime on a retry: remove them so it resends them
        for path in sorted(set(wrong_size) | set(wrong_digest)):
            os.unlink(os.path.join(directory, path))
    return result


def _presence(directory: str, expected: dict[str, Any]) -> tuple[list[str], list[str], list[str]]:
    seen = set()
    for dirpath, _, names in os.walk(directory):
        for name in names:
            seen.add(os.path.relpath(os.path.join(dirpath, name), directory).replace(os.sep, "/"))
    present = sorted(path for path in expected if path in seen)
    missing = sorted(path for path in expected if path not in seen)
    extra = sorted(seen - set(expected))
    return present, missing, extra


def _check(ok: bool, reason: str) -> dict[str, str]:
    return {"status": "passed", "reason": ""} if ok else {"status": "failed", "reason": reason}


def _all_failed(reason: str) -> dict[str, dict[str, str]]:
    return {name: {"status": "failed", "reason": reason} for name in ("files_present", "sizes", "sha256", "load")}


def _presence_reason(missing: list[str], extra: list[str]) -> str:
    parts = []
    if missing:
        parts.append(f"missing: {_few(missing)}")
    if extra:
        parts.append(f"not in the manifest: {_few(extra)}")
    return "; ".join(parts)


def _list_reason(what: str, wrong: list[str], missing: list[str]) -> str:
    parts = []
    if wrong:
        parts.append(f"{what}: {_few(wrong)}")
    if missing:
        parts.append(f"cannot check missing files: {_few(missing)}")
    return "; ".join(parts)


def _few(paths: list[str]) -> str:
    return ", ".join(paths[:5]) + (f" and {len(paths) - 5} more" if len(paths) > 5 else "")


def _changes(
    record: dict[str, Any], files: dict[str, Any], missing: list[str], extra: list[str]
) -> dict[str, list[str]]:
    """What differs from the last verification: edited, deleted or added files."""
    before = record.get("files") or {}
    return {
        "edited": sorted(p for p in files if p in before and files[p]["sha256"] != before[p]["sha256"]),
        "deleted": sorted(set(missing) | {p for p in before if p not in files}),
        "added": sorted({p for p in files if p not in before} | set(extra)),
    }


def discard(request: dict[str, Any]) -> dict[str, Any]:
    """Remove files that do not belong to an installed version (found by verify; a repair)."""
    directory = version_dir(request)
    removed = []
    for path in request.get("paths", []):
        full = os.path.join(directory, relative_file(path))
        if os.path.lexists(full) and not os.path.isdir(full):
            os.unlink(full)
            removed.append(path)
    return {"removed": removed}


def _install(request: dict[str, Any], staging: str) -> None:
    installed = version_dir(request)
    if os.path.isdir(installed):
        shutil.rmtree(installed)  # an unrecorded leftover of an interrupted install
    os.rename(staging, installed)
    fsync_dir(os.path.dirname(installed))


def _write_record(request: dict[str, Any], directory: str, files: dict[str, Any]) -> None:
    recorded = {}
    for path, seen in files.items():
        st = os.stat(os.path.join(directory, path))
        recorded[path] = {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "sha256": seen["sha256"]}
    write_json_atomically(
        record_path(request, request["version"]),
        {"ref": request.get("ref"), "verified_at": time.time(), "files": recorded},
    )


def switch(request: dict[str, Any]) -> dict[str, Any]:
    """Point the serving path at an installed, verified version by renaming a new symlink onto it
    (atomic: a reader sees the old version or the new one, never neither)."""
    serving = serving_path(request)
    if request.get("version") is None:
        return _unswitch(request, serving)
    version = segment(request.get("version"), "version")
    if not os.path.isdir(version_dir(request)) or read_json(record_path(request, version)) is None:
        raise AgentError(f"version {version} is not installed and verified on this node")
    previous, kind = _current_version(request, serving)
    if kind == "foreign":
        raise AgentError(f"{serving} exists and was not made by modelyard; move it away first")
    link = os.path.join(STATE_DIR, segment(request.get("target"), "target name"), version)
    temporary = os.path.join(models_root(request), f".{request['target']}.switch-{os.getpid()}")
    if os.path.lexists(temporary):
        os.unlink(temporary)
    os.symlink(link, temporary)
    os.replace(temporary, serving)
    fsync_dir(models_root(request))
    return {"previous": previous, "current": version}


def _unswitch(request: dict[str, Any], serving: str) -> dict[str, Any]:
    """Remove the serving symlink (a first version that failed its health check has no earlier
    version to go back to)."""
    previous, kind = _current_version(request, serving)
    if kind == "symlink":
        os.unlink(serving)
        fsync_dir(models_root(request))
    return {"previous": previous, "current": None}


def cleanup(request: dict[str, Any]) -> dict[str, Any]:
    """Remove versions not in `keep` (never the one served) and staging directories of other
    versions; return what went."""
    keep = {segment(name, "version") for name in request.get("keep", [])}
    keep_staging = {segment(name, "version") for name in request.get("keep_staging", [])}
    current, _ = _current_version(request, serving_path(request))
    if current:
        keep.add(current)
    base = target_dir(request)
    removed = []
    if os.path.isdir(base):
        for name in sorted(os.listdir(base)):
            path = os.path.join(base, name)
            if name.startswith(".") or name == RECORDS or name in keep or not os.path.isdir(path):
                continue
            # the record goes first: a version without a record is never switched to
            record = record_path(request, name)
            if os.path.exists(record):
                os.unlink(record)
            shutil.rmtree(path)
            removed.append(name)
        staging = os.path.join(base, STAGING)
        if os.path.isdir(staging):
            for name in sorted(os.listdir(staging)):
                if name not in keep_staging:
                    shutil.rmtree(os.path.join(staging, name))
                    removed.append(f"{STAGING}/{name}")
    return {"removed": removed}


def ranges(request: dict[str, Any]) -> dict[str, Any]:
    """SHA-256 of each block of one file of an installed version (for a partial repair)."""
    path = os.path.join(version_dir(request), relative_file(request.get("path")))
    block_size = int(request["block_size"])
    if not os.path.exists(path):
        return {"size": None, "blocks": []}
    return {"size": os.path.getsize(path), "blocks": block_digests(path, block_size)}


def patch(request: dict[str, Any], payload: Any) -> dict[str, Any]:
    """Repair one file in batches of blocks. The first batch copies the damaged file (a fresh
    inode: other versions hardlinked to it keep theirs); each batch overwrites its blocks with
    the bytes that follow the request; the final one checks the whole file's SHA-256 and only
    then renames the copy over the damaged file."""
    directory = version_dir(request)
    relative = relative_file(request.get("path"))
    path = os.path.join(directory, relative)
    block_size = int(request["block_size"])
    size = int(request["size"])
    repair_copy = os.path.join(os.path.dirname(path), f".{os.path.basename(path)}.modelyard-repair")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    if request.get("first", True) or not os.path.exists(repair_copy):
        if os.path.exists(path):
            shutil.copyfile(path, repair_copy)
        else:
            open(repair_copy, "wb").close()
    with open(repair_copy, "r+b") as handle:
        handle.truncate(size)
        for index in request.get("blocks", []):
            length = min(block_size, size - index * block_size)
            handle.seek(index * block_size)
            handle.write(_read_exactly(payload, length))
        handle.flush()
        os.fsync(handle.fileno())
    if not request.get("final", True):
        return {"path": relative, "sha256": None, "blocks": len(request.get("blocks", []))}
    digest = sha256_file(repair_copy)
    if digest != request["sha256"]:
        os.unlink(repair_copy)
        raise AgentError(f"{relative}: SHA-256 after repair is {digest}, expected {request['sha256']}")
    os.replace(repair_copy, path)
    fsync_dir(os.path.dirname(path))
    return {"path": relative, "sha256": digest, "blocks": len(request.get("blocks", []))}


def _read_exactly(stream: Any, length: int) -> bytes:
    data = stream.read(length)
    if len(data) != length:
        raise AgentError(f"the repair stream ended early: {len(data)} of {length} bytes")
    return bytes(data)


# -- load checks ----------------------------------------------------------------------------------


def load_check(directory: str, spec: dict[str, Any]) -> dict[str, str]:
    """The check that the artifact's kind can be loaded: a PEFT adapter against its base model's
    config, safetensors headers consistent with their files, GGUF magic and version."""
    kind = spec.get("kind")
    try:
        if kind == "peft":
            return _peft_check(directory, spec)
        return _format_check(directory)
    except AgentError as exc:
        return {"status": "failed", "reason": str(exc)}


def _format_check(directory: str) -> dict[str, str]:
    checked = []
    for dirpath, _, names in os.walk(directory):
        for name in sorted(names):
            path = os.path.join(dirpath, name)
            if name.endswith(".safetensors"):
                safetensors_header(path)
                checked.append(name)
            elif name.endswith(".gguf"):
                _gguf_magic(path)
                checked.append(name)
    if not checked:
        return {"status": "skipped", "reason": "no safetensors or GGUF file to check the headers of"}
    return {"status": "passed", "reason": f"headers consistent: {_few(checked)}"}


def safetensors_header(path: str) -> dict[str, Any]:
    """The header of a safetensors file, checked against the file's size (no weights read)."""
    size = os.path.getsize(path)
    name = os.path.basename(path)
    with open(path, "rb") as handle:
        prefix = handle.read(8)
        if len(prefix) != 8:
            raise AgentError(f"{name}: shorter than a safetensors header")
        (length,) = struct.unpack("<Q", prefix)
        if length > min(size - 8, 100 << 20):
            raise AgentError(f"{name}: header length {length} exceeds the file")
        try:
            header = json.loads(handle.read(length))
        except ValueError as exc:
            raise AgentError(f"{name}: header is not JSON ({exc})") from None
    if not isinstance(header, dict):
        raise AgentError(f"{name}: header is not a JSON object")
    end = 0
    for key, entry in header.items():
        if key == "__metadata__":
            continue
        offsets = entry.get("data_offsets") if isinstance(entry, dict) else None
        if not (isinstance(offsets, list) and len(offsets) == 2):
            raise AgentError(f"{name}: tensor {key!r} has no data_offsets")
        end = max(end, int(offsets[1]))
    if 8 + length + end != size:
        raise AgentError(f"{name}: tensors end at byte {8 + length + end}, the file has {size}")
    return header


def _gguf_magic(path: str) -> None:
    with open(path, "rb") as handle:
        head = handle.read(8)
    if head[:4] != b"GGUF" or len(head) < 8 or struct.unpack("<I", head[4:8])[0] not in (2, 3):
        raise AgentError(f"{os.path.basename(path)}: not a GGUF v2/v3 file")


# Per projection: which base-config dimensions its input and output have (Llama-style names).
def _projection_dims(config: dict[str, Any]) -> dict[str, tuple[int, int]]:
    hidden = int(config.get("hidden_size") or config.get("n_embd") or config.get("d_model") or 0)
    heads = int(config.get("num_attention_heads") or config.get("n_head") or 0)
    if not hidden or not heads:
        return {}
    head_dim = int(config.get("head_dim") or hidden // heads)
    kv_heads = int(config.get("num_key_value_heads") or heads)
    intermediate = int(config.get("intermediate_size") or config.get("n_inner") or 4 * hidden)
    return {
        "q_proj": (hidden, heads * head_dim),
        "k_proj": (hidden, kv_heads * head_dim),
        "v_proj": (hidden, kv_heads * head_dim),
        "o_proj": (heads * head_dim, hidden),
        "gate_proj": (hidden, intermediate),
        "up_proj": (hidden, intermediate),
        "down_proj": (intermediate, hidden),
    }


def _peft_check(directory: str, spec: dict[str, Any]) -> dict[str, str]:
    config = read_json(os.path.join(directory, "adapter_config.json"))
    if not isinstance(config, dict):
        raise AgentError("adapter_config.json is missing or not JSON")
    weights = next(
        (
            os.path.join(directory, name)
            for name in ("adapter_model.safetensors", "adapter_model.bin")
            if os.path.exists(os.path.join(directory, name))
        ),
        None,
    )
    if weights is None:
        raise AgentError("no adapter_model.safetensors or adapter_model.bin")
    base_path = spec.get("base_path")
    base_config = read_json(os.path.join(base_path, "config.json")) if base_path else None
    if not isinstance(base_config, dict):
        where = f"{base_path}/config.json" if base_path else "no base path"
        return {"status": "skipped", "reason": f"the base model's config is not readable on the node ({where})"}
    if not weights.endswith(".safetensors"):
        return {"status": "skipped", "reason": "adapter weights are a pickle; shapes are checked for safetensors only"}
    header = safetensors_header(weights)
    problems = _lora_shape_problems(config, header, base_config)
    if problems:
        raise AgentError("; ".join(problems[:5]))
    loaded = _peft_load(directory)
    detail = f"{len(header) - ('__metadata__' in header)} tensors match the base config (r={config.get('r')})"
    if loaded is None:
        return {"status": "passed", "reason": f"{detail}; peft/torch not installed on the node, load not tried"}
    if loaded:
        raise AgentError(f"peft could not load the adapter: {loaded}")
    return {"status": "passed", "reason": f"{detail}; loaded with peft"}


def _lora_shape_problems(config: dict[str, Any], header: dict[str, Any], base: dict[str, Any]) -> list[str]:
    rank = config.get("r")
    layers = int(base.get("num_hidden_layers") or base.get("n_layer") or 0)
    dims = _projection_dims(base)
    problems = []
    for name, entry in header.items():
        if name == "__metadata__" or not isinstance(entry, dict):
            continue
        shape = entry.get("shape") or []
        parts = name.split(".")
        which = "A" if "lora_A" in parts else "B" if "lora_B" in parts else None
        if which is None or len(shape) != 2:
            continue
        if rank is not None and shape[0 if which == "A" else 1] != rank:
            problems.append(f"{name}: rank {shape[0 if which == 'A' else 1]} but adapter_config r={rank}")
        layer = _layer_index(parts)
        if layer is not None and layers and layer >= layers:
            problems.append(f"{name}: layer {layer} but the base model has {layers} layers")
        projection = next((part for part in parts if part in dims), None)
        if projection is not None:
            inputs, outputs = dims[projection]
            got = shape[1] if which == "A" else shape[0]
            want = inputs if which == "A" else outputs
            if got != want:
                side = "input" if which == "A" else "output"
                problems.append(f"{name}: {side} size {got} but the base model's {projection} has {want}")
    return problems


def _layer_index(parts: list[str]) -> int | None:
    for index, part in enumerate(parts[:-1]):
        if part in ("layers", "h", "layer", "blocks") and parts[index + 1].isdigit():
            return int(parts[index + 1])
    return None


def _peft_load(directory: str) -> str | None:
    """None when peft or torch is absent; '' when they load the adapter; else the error."""
    if not (_importable("peft") and _importable("torch") and _importable("safetensors")):
        return None
    try:
        from peft import PeftConfig  # type: ignore[import-not-found,unused-ignore]
        from safetensors.torch import load_file  # type: ignore[import-not-found,unused-ignore]

        PeftConfig.from_pretrained(directory)
        load_file(os.path.join(directory, "adapter_model.safetensors"))
    except Exception as exc:  # any failure to load is the answer
        return f"{type(exc).__name__}: {exc}"
    return ""


# -- entry point ----------------------------------------------------------------------------------

COMMANDS = {
    "probe": probe,
    "state": state,
    "prepare": prepare,
    "verify": verify,
    "switch": switch,
    "cleanup": cleanup,
    "ranges": ranges,
    "discard": discard,
}


def handle(request: dict[str, Any], payload: Any) -> dict[str, Any]:
    command = request.get("command")
    if command == "patch":
        return patch(request, payload)
    if command not in COMMANDS:
        raise AgentError(f"unknown agent command {command!r}")
    return COMMANDS[command](request)


def main() -> None:
    stdin = sys.stdin.buffer
    request = json.loads(stdin.readline())
    try:
        reply = {"ok": True, "protocol": AGENT_PROTOCOL, "result": handle(request, stdin)}
    except AgentError as exc:
        reply = {"ok": False, "protocol": AGENT_PROTOCOL, "error": str(exc)}
    except OSError as exc:
        reply = {"ok": False, "protocol": AGENT_PROTOCOL, "error": f"{exc.strerror or exc}: {exc.filename or ''}"}
    sys.stdout.write(json.dumps(reply) + "\n")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
