#!/usr/bin/env python3
"""Inspection benchmark: reading a safetensors or GGUF header against reading the whole file.

    .venv/bin/python benchmarks/bench_inspect.py            # the full run: 200 MiB and 2 GiB files (~1 min)
    .venv/bin/python benchmarks/bench_inspect.py --small    # smoke: 100 MiB and 400 MiB files (~15 s)

Four files are generated under --workdir: a safetensors checkpoint and a GGUF file of each size,
shaped like Llama 3 (32 layers, 291 tensors named as in the real checkpoints; BF16 for
safetensors, a Q4_K_M mix of Q4_K/Q6_K/F32 for GGUF). The GGUF files carry a Llama-3-sized
tokenizer: 128,256 token strings, as many token types, 280,147 merges, bos/eos ids and a chat
template of a few KiB. The hidden size is chosen per file size and the vocabulary rows are padded
so that each file lands on its size; the header of the large file is as large as the small one's.
The data regions are real bytes: one random block written over and over (fast to generate).

Every figure is printed next to the time of reading the same whole file once (1 MiB reads into
one buffer), measured in the same run:

* `ByteSource.open` + `read_safetensors`: target < 20 ms at both sizes;
* `ByteSource.open` + `read_gguf`: target < 150 ms at both sizes;
* the 2 GiB time within 1.2x of the 200 MiB time, per format (inspection must not grow with the data);
* `modelyard.inspect.inspect_path(path)`, the whole inspection, when modelyard has it (no target).

Method: the minimum of --runs interleaved rounds; a round visits every file in turn and times the
whole-file read, then the header read, then inspect_path. Each header-read figure of a round is
the fastest of a few back-to-back calls (20 for safetensors, 3 for GGUF) after a full garbage
collection and one untimed call, which keeps millisecond timings steady on a shared machine. The page cache is warm:
each timed step follows a whole-file read of its file, and the share of each file resident in the
page cache (mincore) is printed. Only the standard library and modelyard are used.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import gc
import importlib
import json
import mmap
import os
import platform
import random
import shutil
import struct
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

KiB = 1024
MiB = 1024 * KiB
GiB = 1024 * MiB

SPEC_SIZES = (200 * MiB, 2 * GiB)
SMALL_SIZES = (100 * MiB, 400 * MiB)  # the Llama 3 vocabulary alone needs tens of MiB
TARGET_SAFETENSORS_S = 0.020
TARGET_GGUF_S = 0.150
TARGET_GROWTH = 1.2
REPEATS = {"safetensors": 20, "gguf": 3}  # back-to-back calls per timed figure in one round
READ_CHUNK = 1 * MiB
DATA_BLOCK = 16 * MiB  # the random block the data regions repeat

LAYERS = 32
LLAMA3_VOCAB = 128_256
LLAMA3_MERGES = 280_147
BOS_ID, EOS_ID = 128_000, 128_009
GGUF_ALIGNMENT = 32
Q4_K, Q6_K, F32 = 12, 14, 0
GGUF_TYPE_SIZES = {Q4_K: (256, 144), Q6_K: (256, 210), F32: (1, 4)}  # ggml type -> (block size, bytes per block)


# ---------------------------------------------------------------------------------------------
# Generating the files
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Tensor:
    name: str
    shape: tuple[int, ...]  # outermost first, as in safetensors
    kind: str | int  # a safetensors dtype or a ggml type id


def llama_tensors(hidden: int, vocab: int, step: int, gguf: bool) -> list[Tensor]:
    """The 291 tensors of a Llama 3 checkpoint at a given hidden size (grouped-query attention with
    a quarter of the heads for keys/values, a feed-forward 3.5x wide rounded to `step`)."""
    kv, ffn = hidden // 4, max(step, round(hidden * 3.5 / step) * step)
    if not gguf:
        layer = [
            ("self_attn.q_proj.weight", (hidden, hidden)),
            ("self_attn.k_proj.weight", (kv, hidden)),
            ("self_attn.v_proj.weight", (kv, hidden)),
            ("self_attn.o_proj.weight", (hidden, hidden)),
            ("mlp.gate_proj.weight", (ffn, hidden)),
            ("mlp.up_proj.weight", (ffn, hidden)),
            ("mlp.down_proj.weight", (hidden, ffn)),
            ("input_layernorm.weight", (hidden,)),
            ("post_attention_layernorm.weight", (hidden,)),
        ]
        tensors = [Tensor("model.embed_tokens.weight", (vocab, hidden), "BF16")]
        for i in range(LAYERS):
            tensors += [Tensor(f"model.layers.{i}.{name}", shape, "BF16") for name, shape in layer]
        return [
            *tensors,
            Tensor("model.norm.weight", (hidden,), "BF16"),
            Tensor("lm_head.weight", (vocab, hidden), "BF16"),
        ]
    # llama.cpp's Q4_K_M: Q4_K mostly, Q6_K for attn_v, ffn_down and the output, F32 norms.
    layer_g = [
        ("attn_q.weight", (hidden, hidden), Q4_K),
        ("attn_k.weight", (kv, hidden), Q4_K),
        ("attn_v.weight", (kv, hidden), Q6_K),
        ("attn_output.weight", (hidden, hidden), Q4_K),
        ("ffn_gate.weight", (ffn, hidden), Q4_K),
        ("ffn_up.weight", (ffn, hidden), Q4_K),
        ("ffn_down.weight", (hidden, ffn), Q6_K),
        ("attn_norm.weight", (hidden,), F32),
        ("ffn_norm.weight", (hidden,), F32),
    ]
    tensors = [Tensor("token_embd.weight", (vocab, hidden), Q4_K)]
    for i in range(LAYERS):
        tensors += [Tensor(f"blk.{i}.{name}", shape, kind) for name, shape, kind in layer_g]
    return [*tensors, Tensor("output_norm.weight", (hidden,), F32), Tensor("output.weight", (vocab, hidden), Q6_K)]


def tensor_bytes(tensor: Tensor) -> int:
    count = 1
    for dim in tensor.shape:
        count *= dim
    if isinstance(tensor.kind, str):
        return count * 2  # BF16
    block, size = GGUF_TYPE_SIZES[tensor.kind]
    return count // block * size


def plan(target: int, gguf: bool) -> list[Tensor]:
    """The largest hidden size whose checkpoint fits `target`, then vocabulary rows padded to reach it."""
    step = 256 if gguf else 64  # k-quants need the inner dimension to be a multiple of 256

    def total(hidden: int, vocab: int) -> int:
        return sum(tensor_bytes(t) for t in llama_tensors(hidden, vocab, step, gguf))

    hidden = step
    while total(hidden + step, LLAMA3_VOCAB) <= target:
        hidden += step
    per_row = total(hidden, LLAMA3_VOCAB + 1) - total(hidden, LLAMA3_VOCAB)
    vocab = LLAMA3_VOCAB + max(0, (target - total(hidden, LLAMA3_VOCAB)) // per_row)
    return llama_tensors(hidden, vocab, step, gguf)


def write_data(handle: Any, size: int, block: bytes) -> None:
    while size > 0:
        n = min(size, len(block))
        handle.write(block[:n])
        size -= n


def make_safetensors(path: Path, target: int, block: bytes) -> None:
    tensors = sorted(plan(target, gguf=False), key=lambda t: t.name)
    header: dict[str, Any] = {"__metadata__": {"format": "pt"}}
    offset = 0
    for tensor in tensors:
        size = tensor_bytes(tensor)
        header[tensor.name] = {
            "dtype": tensor.kind,
            "shape": list(tensor.shape),
            "data_offsets": [offset, offset + size],
        }
        offset += size
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)  # the official writer pads the header to a multiple of 8 with spaces
    with open(path, "wb") as handle:
        handle.write(struct.pack("<Q", len(raw)) + raw)
        write_data(handle, offset, block)


class GgufHeader:
    """GGUF v3 little-endian header bytes, packed by hand (ggml docs/gguf.md)."""

    def __init__(self) -> None:
        self.pairs: list[bytes] = []
        self.count = 0

    @staticmethod
    def string(text: str) -> bytes:
        raw = text.encode()
        return struct.pack("<Q", len(raw)) + raw

    def add(self, key: str, value_type: int, payload: bytes) -> None:
        self.pairs.append(self.string(key) + struct.pack("<I", value_type) + payload)
        self.count += 1

    def text(self, key: str, value: str) -> None:
        self.add(key, 8, self.string(value))

    def u32(self, key: str, value: int) -> None:
        self.add(key, 4, struct.pack("<I", value))

    def f32(self, key: str, value: float) -> None:
        self.add(key, 6, struct.pack("<f", value))

    def strings(self, key: str, values: list[str]) -> None:
        self.add(key, 9, struct.pack("<IQ", 8, len(values)) + b"".join(map(self.string, values)))

    def i32s(self, key: str, values: list[int]) -> None:
        self.add(key, 9, struct.pack("<IQ", 5, len(values)) + struct.pack(f"<{len(values)}i", *values))


def llama3_vocabulary(rng: random.Random) -> tuple[list[str], list[str]]:
    """128,256 byte-level BPE-like token strings (the last 256 special) and 280,147 merges."""
    alphabet = "etaoinshrdlcumwfgypbvkjxqz" * 3 + "ETAOINSHRD0123456789" + "Ġ" * 12 + "Ċ.,'-"
    text = "".join(rng.choices(alphabet, k=4_000_000))
    pieces: list[str] = []
    position = 0
    for _ in range(LLAMA3_VOCAB - 256 + 2 * LLAMA3_MERGES):
        length = rng.randint(1, 11)
        pieces.append(text[position : position + length])
        position = (position + length) % (len(text) - 16)
    vocab = pieces[: LLAMA3_VOCAB - 256]
    specials = [f"<|reserved_special_token_{i}|>" for i in range(256)]
    names = {0: "begin_of_text", 1: "end_of_text", 6: "start_header_id", 7: "end_header_id", 8: "eom_id", 9: "eot_id"}
    for index, name in names.items():
        specials[index] = f"<|{name}|>"
    rest = pieces[len(vocab) :]
    merges = [f"{rest[2 * i]} {rest[2 * i + 1]}" for i in range(LLAMA3_MERGES)]
    return vocab + specials, merges


CHAT_TEMPLATE = (
    "{{- bos_token }}\n{%- if custom_tools is defined %}{%- set tools = custom_tools %}{%- endif %}\n"
    "{%- if not tools_in_user_message is defined %}{%- set tools_in_user_message = true %}{%- endif %}\n"
    '{%- if not date_string is defined %}{%- set date_string = "26 Jul 2024" %}{%- endif %}\n'
    "{%- if messages[0]['role'] == 'system' %}{%- set system_message = messages[0]['content']|trim %}"
    '{%- set messages = messages[1:] %}{%- else %}{%- set system_message = "" %}{%- endif %}\n'
    '{{- "<|start_header_id|>system<|end_header_id|>\\n\\n" }}{{- "Today Date: " + date_string + "\\n\\n" }}'
    '{{- system_message }}{{- "<|eot_id|>" }}\n'
    "{%- for message in messages %}{%- if not (message.role == 'ipython' or message.role == 'tool') %}"
    "{{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n' + message['content'] | trim + "
    "'<|eot_id|>' }}{%- else %}{{- \"<|start_header_id|>ipython<|end_header_id|>\\n\\n\" }}"
    '{{- message.content | tojson }}{{- "<|eot_id|>" }}{%- endif %}{%- endfor %}\n'
    "{%- if add_generation_prompt %}{{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{%- endif %}\n"
) * 4  # real Llama 3.1 templates are a few KiB


def make_gguf(path: Path, target: int, block: bytes, vocab: list[str], merges: list[str]) -> None:
    tensors = plan(target, gguf=True)
    hidden = tensors[-1].shape[1]
    header = GgufHeader()
    header.text("general.architecture", "llama")
    header.text("general.type", "model")
    header.text("general.name", "Meta Llama 3.1 8B Instruct")
    header.text("general.basename", "Meta-Llama-3.1")
    header.text("general.finetune", "Instruct")
    header.text("general.size_label", "8B")
    header.text("general.license", "llama3.1")
    header.strings("general.tags", ["facebook", "meta", "pytorch", "llama", "llama-3", "text-generation"])
    header.strings("general.languages", ["en", "de", "fr", "it", "pt", "hi", "es", "th"])
    header.u32("llama.block_count", LAYERS)
    header.u32("llama.context_length", 131_072)
    header.u32("llama.embedding_length", hidden)
    header.u32("llama.feed_forward_length", tensors[5].shape[0])
    header.u32("llama.attention.head_count", hidden // 128)
    header.u32("llama.attention.head_count_kv", hidden // 512)
    header.f32("llama.rope.freq_base", 500_000.0)
    header.f32("llama.attention.layer_norm_rms_epsilon", 1e-5)
    header.u32("general.file_type", 15)  # MOSTLY_Q4_K_M
    header.u32("llama.vocab_size", len(vocab))
    header.u32("llama.rope.dimension_count", 128)
    header.text("tokenizer.ggml.model", "gpt2")
    header.text("tokenizer.ggml.pre", "llama-bpe")
    header.strings("tokenizer.ggml.tokens", vocab)
    header.i32s("tokenizer.ggml.token_type", [1] * (len(vocab) - 256) + [3] * 256)
    header.strings("tokenizer.ggml.merges", merges)
    header.u32("tokenizer.ggml.bos_token_id", BOS_ID)
    header.u32("tokenizer.ggml.eos_token_id", EOS_ID)
    header.text("tokenizer.chat_template", CHAT_TEMPLATE)
    header.u32("general.quantization_version", 2)
    infos: list[bytes] = []
    offset = 0
    for tensor in tensors:
        dims = tensor.shape[::-1]  # GGUF lists the innermost dimension first
        infos.append(
            header.string(tensor.name)
            + struct.pack(f"<I{len(dims)}Q", len(dims), *dims)
            + struct.pack("<IQ", tensor.kind, offset)
        )
        offset += tensor_bytes(tensor) + (-tensor_bytes(tensor) % GGUF_ALIGNMENT)
    head = b"GGUF" + struct.pack("<IQQ", 3, len(tensors), header.count) + b"".join(header.pairs) + b"".join(infos)
    with open(path, "wb") as handle:
        handle.write(head + b"\0" * (-len(head) % GGUF_ALIGNMENT))
        write_data(handle, offset, block)


# ---------------------------------------------------------------------------------------------
# Measuring
# ---------------------------------------------------------------------------------------------


@dataclass
class Subject:
    """One generated file and the samples of each figure taken on it."""

    fmt: str  # "safetensors" or "gguf"
    label: str  # "200 MiB"
    path: Path
    samples: dict[str, list[float]] = field(default_factory=dict)

    def add(self, key: str, seconds: float) -> None:
        self.samples.setdefault(key, []).append(seconds)

    def best(self, key: str) -> float:
        return min(self.samples[key])


def read_whole(path: Path) -> None:
    buffer = bytearray(READ_CHUNK)
    with open(path, "rb", buffering=0) as handle:
        while handle.readinto(buffer):
            pass


def header_reader(fmt: str) -> Callable[[Path], Any]:
    from modelyard.inspect._bounded import ByteSource
    from modelyard.inspect.gguf import read_gguf
    from modelyard.inspect.safetensors import read_safetensors

    read = read_safetensors if fmt == "safetensors" else read_gguf

    def run(path: Path) -> Any:
        with ByteSource.open(path) as source:
            return read(source)

    return run


def find_inspect_path() -> Callable[[Path], Any] | None:
    function: Callable[[Path], Any] | None = getattr(importlib.import_module("modelyard.inspect"), "inspect_path", None)
    return function


def settle(call: Callable[[], Any]) -> None:
    """Start a timed step from the same state every time: a full garbage collection, then one
    untimed call. Right after a whole-file read, the first header read of a round was up to 1.6x
    slower than the next ones (in a VM whose balloon takes back freed memory, the first touch of
    memory Python handed back is a host page fault), which made millisecond timings swing."""
    gc.collect()
    call()


def timed(call: Callable[[], Any], repeats: int = 1) -> float:
    """The fastest of `repeats` back-to-back calls: on a shared 2-core machine, other processes
    only ever add time, so the fastest call is the best estimate of the call's own cost."""
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        call()
        best = min(best, time.perf_counter() - started)
    return best


def resident_share(path: Path) -> float | None:
    """The share of `path` in the page cache (mincore(2) over a private mapping), None if unknown."""
    with contextlib.suppress(OSError, ValueError, AttributeError, TypeError):
        libc = ctypes.CDLL(None, use_errno=True)
        page = mmap.PAGESIZE
        with open(path, "rb") as handle:
            size = os.fstat(handle.fileno()).st_size
            mapping = mmap.mmap(handle.fileno(), size, access=mmap.ACCESS_COPY)
            try:
                anchor = ctypes.c_char.from_buffer(mapping)
                pages = (size + page - 1) // page
                vector = (ctypes.c_ubyte * pages)()
                ok = libc.mincore(ctypes.c_void_p(ctypes.addressof(anchor)), ctypes.c_size_t(size), vector) == 0
                del anchor
                if ok:
                    return sum(byte & 1 for byte in bytes(vector)) / pages
            finally:
                mapping.close()
    return None


class LoadMeter:
    """The share of the machine's CPU time spent outside this process (other users, kernel threads)
    while it measured: what makes figures noisy. None where /proc/stat is missing."""

    def __init__(self) -> None:
        self.start = self._sample()

    @staticmethod
    def _sample() -> tuple[float, float, float] | None:
        with contextlib.suppress(OSError, ValueError, IndexError):
            fields = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:9]]
            user, nice, system, _idle, _iowait, irq, softirq, steal = fields
            busy = (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")
            own = os.times()
            return time.monotonic(), busy, own.user + own.system
        return None

    def outside_share(self) -> float | None:
        end = self._sample()
        if self.start is None or end is None:
            return None
        wall, busy, own = (b - a for a, b in zip(self.start, end, strict=True))
        return max(0.0, busy - own) / (wall * (os.cpu_count() or 1)) if wall > 0 else None


def peak_python_memory(call: Callable[[], Any]) -> int:
    tracemalloc.start()
    try:
        call()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def check_result(subject: Subject, result: Any) -> list[str]:
    """The benchmark must time a successful read of what it generated."""
    problems = []
    if subject.fmt == "safetensors":
        if result.tensor_count != 291 or result.dominant_dtype != "BF16":
            problems.append(f"{subject.path.name}: read {result.tensor_count} tensors, {result.dominant_dtype}")
    elif (result.vocab_size, result.bos_token, result.eos_token, result.quantization, len(result.tensors)) != (
        result.metadata["llama.vocab_size"],
        "<|begin_of_text|>",
        "<|eot_id|>",
        "Q4_K_M",
        291,
    ):
        problems.append(f"{subject.path.name}: unexpected result {result.vocab_size} {result.bos_token}")
    return problems


# ---------------------------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------------------------


def cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def fmt_bytes(n: float) -> str:
    for unit, size in (("GiB", GiB), ("MiB", MiB), ("KiB", KiB)):
        if n >= size:
            return f"{n / size:.2f} {unit}"
    return f"{n:.0f} B"


def fmt_s(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms" if seconds < 1 else f"{seconds:.2f} s"


def verdict(ok: bool, indicative: bool) -> str:
    return ("PASS" if ok else "FAIL") + ("*" if indicative else "")


def print_table(rows: list[tuple[str, ...]]) -> None:
    headers = ("figure", "measured (min)", "reference (same run)", "ratio", "target", "verdict")
    widths = [max(len(row[i]) for row in [headers, *rows]) for i in range(len(headers))]
    for index, row in enumerate([headers, *rows]):
        line = "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        print(line)
        if index == 0:
            print("-" * len(line))


def build_rows(subjects: list[Subject], indicative: bool) -> list[tuple[str, ...]]:
    rows: list[tuple[str, ...]] = []
    for subject in subjects:
        reference = subject.best("whole file")
        target = TARGET_SAFETENSORS_S if subject.fmt == "safetensors" else TARGET_GGUF_S
        measured = subject.best("header")
        rows.append(
            (
                f"{subject.fmt} {subject.label}: read_{subject.fmt}",
                fmt_s(measured),
                f"read whole file {fmt_s(reference)}",
                f"{measured / reference:.4f}x",
                f"< {fmt_s(target)}",
                verdict(measured < target, indicative),
            )
        )
        if "inspect_path" in subject.samples:
            whole = subject.best("inspect_path")
            rows.append(
                (
                    f"{subject.fmt} {subject.label}: inspect_path",
                    fmt_s(whole),
                    f"read whole file {fmt_s(reference)}",
                    f"{whole / reference:.4f}x",
                    "-",
                    "info",
                )
            )
    for fmt in ("safetensors", "gguf"):
        small, large = (s for s in subjects if s.fmt == fmt)
        growth = large.best("header") / small.best("header")
        rows.append(
            (
                f"{fmt}: {large.label} vs {small.label}",
                f"{growth:.2f}x",
                "",
                "",
                f"<= {TARGET_GROWTH}x",
                verdict(growth <= TARGET_GROWTH, indicative),
            )
        )
    return rows


def log(message: str) -> None:
    print(f"# {message}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------------
# Main
# ---------------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    default_workdir = Path(__file__).resolve().parent.parent / "bench-data"
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", type=Path, default=default_workdir, help=f"(default: {default_workdir})")
    parser.add_argument("--runs", type=int, default=3, help="interleaved rounds; each figure is their minimum")
    parser.add_argument("--small", action="store_true", help="smoke run on 100 MiB and 400 MiB files")
    parser.add_argument("--keep", action="store_true", help="leave the generated files in --workdir")
    args = parser.parse_args(argv)
    if args.runs < 1:
        parser.error("--runs must be positive")
    return args


def main(argv: Sequence[str]) -> int:
    args = parse_args(argv)
    sizes = SMALL_SIZES if args.small else SPEC_SIZES
    needed = 2 * sum(sizes) + 64 * MiB
    args.workdir.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(args.workdir).free
    if free < needed:
        print(f"not enough free disk space under {args.workdir}: {fmt_bytes(free)} free, {fmt_bytes(needed)} needed")
        return 2
    base = Path(tempfile.mkdtemp(prefix="bench-inspect-", dir=args.workdir)).resolve()
    try:
        return run(args, base, sizes)
    finally:
        if args.keep:
            log(f"kept {base}")
        else:
            shutil.rmtree(base, ignore_errors=True)


def generate(base: Path, sizes: tuple[int, ...]) -> list[Subject]:
    started = time.perf_counter()
    rng = random.Random(1234)
    block = os.urandom(DATA_BLOCK)
    vocab, merges = llama3_vocabulary(rng)
    subjects = []
    for fmt in ("safetensors", "gguf"):
        for size in sizes:
            label = fmt_bytes(size).replace(".00", "")
            path = base / f"llama-{label.replace(' ', '')}.{fmt}"
            if fmt == "safetensors":
                make_safetensors(path, size, block)
            else:
                make_gguf(path, size, block, vocab, merges)
            subjects.append(Subject(fmt, label, path))
    os.sync()
    log(f"generated {len(subjects)} files in {time.perf_counter() - started:.1f} s under {base}")
    return subjects


def run(args: argparse.Namespace, base: Path, sizes: tuple[int, ...]) -> int:
    subjects = generate(base, sizes)
    inspect_path = find_inspect_path()
    problems: list[str] = []
    print("modelyard inspection benchmark")
    cores = f"{os.cpu_count()} cores ({len(os.sched_getaffinity(0))} usable)"
    print(f"machine: {cpu_model()}, {cores}; python {platform.python_version()}; load average {os.getloadavg()[0]:.2f}")
    for subject in subjects:
        result = header_reader(subject.fmt)(subject.path)
        problems += check_result(subject, result)
        size = subject.path.stat().st_size
        if subject.fmt == "safetensors":
            detail = f"{result.tensor_count} tensors, header {fmt_bytes(result.header_length)}, {result.dominant_dtype}"
        else:
            detail = (
                f"{len(result.tensors)} tensors, header {fmt_bytes(result.data_offset)} ({result.vocab_size:,} tokens, "
                f"{result.metadata['tokenizer.ggml.merges'].count:,} merges), {result.quantization}"
            )
        memory = peak_python_memory(partial(header_reader(subject.fmt), subject.path))
        print(f"file:    {subject.path.name}: {fmt_bytes(size)}; {detail}; peak Python memory {fmt_bytes(memory)}")
    print(
        f"method:  min of {args.runs} interleaved round(s); a round reads each whole file once, then times its header "
        f"read (fastest of {REPEATS['safetensors']} calls for safetensors, {REPEATS['gguf']} for GGUF, each opening a "
        "ByteSource, after gc.collect() and one untimed call), then inspect_path once"
    )
    if inspect_path is None:
        print("NOTE:    modelyard.inspect.inspect_path is not available in this checkout: its lines are skipped")
    if args.small:
        print("NOTE:    --small: not the specified sizes (200 MiB, 2 GiB); verdicts marked * are indicative only")
    sys.stdout.flush()

    resident_before = {s.path.name: resident_share(s.path) for s in subjects}
    background: list[float | None] = []
    for number in range(1, args.runs + 1):
        meter = LoadMeter()
        for subject in subjects:
            subject.add("whole file", timed(partial(read_whole, subject.path)))
            read_header = partial(header_reader(subject.fmt), subject.path)
            settle(read_header)
            subject.add("header", timed(read_header, REPEATS[subject.fmt]))
            if inspect_path is not None:
                try:
                    subject.add("inspect_path", timed(partial(inspect_path, subject.path)))
                except Exception as exc:  # another engineer's code: report, do not abort the benchmark
                    problems.append(f"inspect_path({subject.path.name}) raised {type(exc).__name__}: {exc}")
                    inspect_path = None
        background.append(meter.outside_share())
        log(f"round {number} done")
    resident_after = {s.path.name: resident_share(s.path) for s in subjects}

    print()
    print_table(build_rows(subjects, indicative=args.small))
    print("\npage cache (share of each file resident, mincore; before the first round -> after the last):")
    for name in resident_before:
        before, after = resident_before[name], resident_after[name]
        shown = [f"{100 * x:.0f}%" if x is not None else "unknown" for x in (before, after)]
        print(f"  {name:<26} {shown[0]} -> {shown[1]}")
    shares = ", ".join(f"{100 * x:.0f}%" if x is not None else "unknown" for x in background)
    print(f"\nbackground load (CPU time used outside this benchmark, share of the machine, per round): {shares}")
    if any(x is not None and x > 0.10 for x in background):
        print("WARNING: the machine was busy during some rounds: their figures are pessimistic (the minimum is kept)")
    print("\nall runs, in milliseconds:")
    for subject in subjects:
        for key, values in subject.samples.items():
            print(f"  {subject.fmt} {subject.label:<8} {key:<12} " + " ".join(f"{1000 * v:.2f}" for v in values))
    if problems:
        print("\nproblems:")
        for problem in problems:
            print(f"  - {problem}")
    failed = [row[0] for row in build_rows(subjects, args.small) if row[5].startswith("FAIL")]
    print(f"\n{len(failed)} target(s) failed" + (": " + "; ".join(failed) if failed else ""))
    return 1 if failed or problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
