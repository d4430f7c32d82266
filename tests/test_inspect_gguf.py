"""read_gguf: real files written by gguf-py's GGUFWriter (both byte orders, v2 and v3, a tokenizer,
chat templates, quantized tensors, splits), cross-checked against gguf-py's own reader; corrupt
files built by hand refused with a message naming the file and the cause; fuzzing that may only
ever produce a result or InvalidModelFileError."""

from __future__ import annotations

import io
import struct
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path

import gguf
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from modelyard.errors import InvalidModelFileError
from modelyard.inspect._bounded import ByteSource
from modelyard.inspect.gguf import (
    MAX_KEPT_ARRAY,
    TOKEN_CHECKPOINT_STRIDE,
    ArraySummary,
    GgufBaseModel,
    GgufInfo,
    read_gguf,
)
from modelyard.inspect.gguf_tables import FILE_TYPE_LABELS, GGML_TYPES

NAME = "model.gguf"
Q = gguf.GGMLQuantizationType


# -- helpers --------------------------------------------------------------------------------


def read_bytes(data: bytes) -> GgufInfo:
    return read_gguf(ByteSource(io.BytesIO(data), len(data), NAME))


def read_path(path: Path) -> GgufInfo:
    with ByteSource.open(path, name=NAME) as source:
        return read_gguf(source)


def assert_invalid(data: bytes, *causes: str, field: str | None = None) -> InvalidModelFileError:
    """`data` is refused with a one-line message naming the file, the field and every cause."""
    with pytest.raises(InvalidModelFileError) as caught:
        read_bytes(data)
    message = str(caught.value)
    assert message.startswith(f"{NAME}: "), message
    assert "\n" not in message
    for cause in causes:
        assert cause in message, message
    if field is not None:
        assert caught.value.field == field, message
    return caught.value


def tokens(count: int) -> list[str]:
    specials = ["<unk>", "<s>", "</s>", "<pad>"]
    return specials + [f"tok_{i}_ü" for i in range(len(specials), count)]


def write_model(
    path: Path,
    *,
    endian: gguf.GGUFEndian = gguf.GGUFEndian.LITTLE,
    vocab: int = 300,
    ids_first: bool = False,
    extra: Callable[[gguf.GGUFWriter], None] | None = None,
    file_type: int | None = gguf.LlamaFileType.MOSTLY_Q4_K_M,
) -> Path:
    """A small Llama-like GGUF written by gguf-py: metadata, a tokenizer, F32/F16/Q8_0/Q4_K tensors."""
    writer = gguf.GGUFWriter(str(path), "llama", endianess=endian)
    writer.add_name("Tiny Llama")
    writer.add_type("model")
    writer.add_context_length(4096)
    writer.add_embedding_length(256)
    writer.add_block_count(2)
    writer.add_head_count(8)
    writer.add_head_count_kv(2)
    writer.add_uint64("llama.expert_count", 4)  # the spec's u64 where converters write u32
    writer.add_license("apache-2.0")
    writer.add_author("Example Org")
    writer.add_size_label("1M")
    if file_type is not None:
        writer.add_file_type(file_type)
    writer.add_quantization_version(2)
    if ids_first:
        writer.add_bos_token_id(1)
        writer.add_eos_token_id(2)
    writer.add_tokenizer_model("llama")
    writer.add_token_list(tokens(vocab))
    writer.add_token_scores([0.0] * vocab)
    writer.add_token_types([1] * vocab)
    writer.add_token_merges([f"t{i} t{i + 1}" for i in range(vocab)])
    if not ids_first:
        writer.add_bos_token_id(1)
        writer.add_eos_token_id(2)
    writer.add_unk_token_id(0)
    writer.add_pad_token_id(3)
    writer.add_chat_template("{% for m in messages %}{{ m.content }}{% endfor %}")
    if extra is not None:
        extra(writer)
    rng = np.random.default_rng(0)
    writer.add_tensor("token_embd.weight", rng.standard_normal((vocab, 256)).astype(np.float16))
    writer.add_tensor("blk.0.attn_norm.weight", np.ones(256, np.float32))
    writer.add_tensor("blk.0.attn_q.weight", np.zeros((256, 34 * 8), np.uint8), raw_dtype=Q.Q8_0)
    writer.add_tensor("blk.0.ffn_up.weight", np.zeros((512, 144), np.uint8), raw_dtype=Q.Q4_K)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


@pytest.fixture
def model(tmp_path: Path) -> Path:
    return write_model(tmp_path / NAME)


class Builder:
    """GGUF bytes by hand, for the inputs GGUFWriter refuses to produce."""

    def __init__(self, order: str = "<", version: int = 3) -> None:
        self.order = order
        self.version = version
        self.pairs: list[bytes] = []
        self.infos: list[bytes] = []

    def pack(self, fmt: str, *values: int | float) -> bytes:
        return struct.pack(self.order + fmt, *values)

    def string(self, text: str | bytes, length: int | None = None) -> bytes:
        raw = text.encode() if isinstance(text, str) else text
        return self.pack("Q", len(raw) if length is None else length) + raw

    def pair(self, key: str | bytes, value_type: int, payload: bytes) -> Builder:
        self.pairs.append(self.string(key) + self.pack("I", value_type) + payload)
        return self

    def text(self, key: str, value: str | bytes) -> Builder:
        return self.pair(key, 8, self.string(value))

    def u32(self, key: str, value: int) -> Builder:
        return self.pair(key, 4, self.pack("I", value))

    def array(self, key: str, element_type: int, count: int, elements: bytes) -> Builder:
        return self.pair(key, 9, self.pack("IQ", element_type, count) + elements)

    def tensor(self, name: str | bytes, dims: list[int], ggml_type: int = 0, offset: int = 0) -> Builder:
        info = self.string(name) + self.pack("I", len(dims)) + b"".join(self.pack("Q", d) for d in dims)
        self.infos.append(info + self.pack("IQ", ggml_type, offset))
        return self

    def build(
        self, data: bytes = b"", *, arch: bool = True, alignment: int = 32, counts: tuple[int, int] | None = None
    ) -> bytes:
        pairs = [self.string("general.architecture") + self.pack("I", 8) + self.string("llama")] if arch else []
        pairs += self.pairs
        tensor_count, pair_count = counts or (len(self.infos), len(pairs))
        head = b"GGUF" + self.pack("I", self.version) + self.pack("QQ", tensor_count, pair_count)
        body = head + b"".join(pairs) + b"".join(self.infos)
        padding = b"\0" * (-len(body) % alignment) if data else b""
        return body + padding + data


# -- valid files ----------------------------------------------------------------------------


def test_a_real_file(model: Path) -> None:
    info = read_path(model)
    assert (info.version, info.byte_order, info.alignment) == (3, "little", 32)
    assert info.architecture == "llama" and info.name == "Tiny Llama" and info.general_type == "model"
    assert (info.file_type, info.quantization) == (15, "Q4_K_M")
    assert (info.context_length, info.embedding_length, info.block_count) == (4096, 256, 2)
    assert (info.head_count, info.head_count_kv, info.expert_count) == (8, 2, 4)
    assert (info.license, info.author, info.size_label) == ("apache-2.0", "Example Org", "1M")
    assert info.vocab_size == 300 and info.tokenizer_model == "llama"
    assert (info.bos_token, info.eos_token, info.unknown_token, info.padding_token) == ("<s>", "</s>", "<unk>", "<pad>")
    assert info.chat_template == "{% for m in messages %}{{ m.content }}{% endfor %}"
    assert info.chat_templates == {}
    assert info.metadata["tokenizer.ggml.tokens"] == ArraySummary("string", 300)
    assert info.metadata["tokenizer.ggml.scores"] == ArraySummary("float32", 300)
    assert info.metadata["tokenizer.ggml.merges"] == ArraySummary("string", 300)
    assert info.warnings == ()


def test_tensors_match_gguf_py_reader(model: Path) -> None:
    info = read_path(model)
    official = gguf.GGUFReader(model)
    assert info.data_offset == official.data_offset
    assert [t.name for t in info.tensors] == [t.name for t in official.tensors]
    for mine, theirs in zip(info.tensors, official.tensors, strict=True):
        assert mine.ggml_type == theirs.tensor_type.name
        assert mine.dims == tuple(int(d) for d in theirs.shape)  # gguf-py's `shape` keeps file order
        assert (mine.n_elements, mine.n_bytes) == (theirs.n_elements, theirs.n_bytes)
        assert info.data_offset + mine.offset == theirs.data_offset
    assert info.parameter_count == 300 * 256 + 256 + 256 * 256 + 512 * 256
    assert info.type_breakdown == {"F16": 300 * 256, "F32": 256, "Q8_0": 256 * 256, "Q4_K": 512 * 256}


def test_scalar_metadata_matches_gguf_py_reader(model: Path) -> None:
    info = read_path(model)
    official = gguf.GGUFReader(model)
    compared = 0
    for key, field in official.fields.items():
        if key.startswith("GGUF."):
            continue
        value = info.metadata[key]
        if isinstance(value, ArraySummary):
            assert value.count == len(field.data), key
        else:
            assert value == pytest.approx(field.contents()), key
        compared += 1
    assert compared == len(info.metadata) == 24


def test_big_endian_file(tmp_path: Path) -> None:
    little = read_path(write_model(tmp_path / "le.gguf"))
    big = read_path(write_model(tmp_path / "be.gguf", endian=gguf.GGUFEndian.BIG))
    assert big.byte_order == "big" and big.version == 3
    assert big.metadata == little.metadata
    assert big.tensors == little.tensors
    assert big.bos_token == "<s>" and big.quantization == "Q4_K_M"


def test_version_2_file(model: Path) -> None:
    data = bytearray(model.read_bytes())
    data[4:8] = struct.pack("<I", 2)  # v2 and v3 little-endian files have the same layout
    info = read_bytes(bytes(data))
    assert info.version == 2 and info.eos_token == "</s>"


def test_token_ids_before_the_tokens(tmp_path: Path) -> None:
    info = read_path(write_model(tmp_path / NAME, ids_first=True))
    assert list(info.metadata).index("tokenizer.ggml.bos_token_id") < list(info.metadata).index("tokenizer.ggml.tokens")
    assert (info.bos_token, info.eos_token) == ("<s>", "</s>")


@pytest.mark.parametrize("ids_first", [False, True])
def test_special_tokens_across_checkpoints(tmp_path: Path, ids_first: bool) -> None:
    stride = TOKEN_CHECKPOINT_STRIDE
    vocab = 2 * stride + 100

    def ids(writer: gguf.GGUFWriter) -> None:
        writer.add_uint32("tokenizer.ggml.unknown_token_id", stride - 1)
        writer.add_uint32("tokenizer.ggml.padding_token_id", 2 * stride)

    def late_ids(writer: gguf.GGUFWriter) -> None:
        writer.add_uint32("tokenizer.ggml.bos_token_id", stride)
        writer.add_uint32("tokenizer.ggml.eos_token_id", vocab - 1)

    path = tmp_path / NAME
    writer_extra = ids if ids_first else late_ids
    info = read_path(write_model(path, vocab=vocab, extra=writer_extra))
    names = tokens(vocab)
    if ids_first:
        assert (info.unknown_token, info.padding_token) == (names[stride - 1], names[2 * stride])
    else:
        assert (info.bos_token, info.eos_token) == (names[stride], names[vocab - 1])


def test_small_arrays_are_kept(tmp_path: Path) -> None:
    def extra(writer: gguf.GGUFWriter) -> None:
        writer.add_array("llama.attention.head_count_per_layer", [4, 8, 8])
        writer.add_array("general.tags", ["chat", "small"])
        writer.add_array("general.flags", [True, False])
        writer.add_array("general.long", list(range(MAX_KEPT_ARRAY + 1)))
        writer.add_bool("general.flag", True)

    info = read_path(write_model(tmp_path / NAME, vocab=40, extra=extra))
    assert info.metadata["llama.attention.head_count_per_layer"] == (4, 8, 8)
    assert info.metadata["general.tags"] == ("chat", "small")
    assert info.metadata["general.flags"] == (True, False)
    assert info.metadata["general.long"] == ArraySummary("int32", MAX_KEPT_ARRAY + 1)
    assert info.metadata["general.flag"] is True
    assert info.metadata["tokenizer.ggml.tokens"] == tuple(tokens(40))
    assert info.bos_token == "<s>" and info.vocab_size == 40


def test_named_chat_templates_base_models_and_adapters(tmp_path: Path) -> None:
    def extra(writer: gguf.GGUFWriter) -> None:
        writer.add_chat_template([{"name": "default", "template": "D"}, {"name": "tool_use", "template": "T"}])
        writer.add_base_model_count(2)
        writer.add_base_model_name(0, "Llama 3")
        writer.add_base_model_organization(0, "Meta")
        writer.add_base_model_repo_url(0, "https://huggingface.co/meta-llama/Llama-3")
        writer.add_base_model_name(1, "Other")
        writer.add_string("adapter.type", "lora")
        writer.add_float32("adapter.lora.alpha", 16.0)
        writer.add_uint32("llama.pooling_type", 1)

    info = read_path(write_model(tmp_path / NAME, extra=extra))
    assert info.chat_template == "D"  # the writer stores the default as the main template
    assert info.chat_templates == {"tool_use": "T"}
    assert info.base_models == (
        GgufBaseModel("Llama 3", "https://huggingface.co/meta-llama/Llama-3", "Meta"),
        GgufBaseModel("Other", None, None),
    )
    assert (info.adapter_type, info.lora_alpha, info.pooling_type) == ("lora", 16.0, "mean")


def test_split_files(tmp_path: Path) -> None:
    writer = gguf.GGUFWriter(str(tmp_path / "m.gguf"), "llama", split_max_tensors=1)
    writer.add_tensor("a", np.zeros(32, np.float32))
    writer.add_tensor("b", np.zeros(64, np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    second = read_path(tmp_path / "m-00002-of-00002.gguf")
    assert (second.split_no, second.split_count) == (1, 2)
    assert [t.name for t in second.tensors] == ["b"]


def test_quantization_without_file_type_is_the_majority_type(tmp_path: Path) -> None:
    info = read_path(write_model(tmp_path / NAME, file_type=None))
    by_bytes = {t.ggml_type: t.n_bytes for t in info.tensors}
    assert info.file_type is None and info.quantization == max(by_bytes, key=by_bytes.__getitem__) == "F16"
    guessed = read_path(write_model(tmp_path / "g.gguf", file_type=gguf.LlamaFileType.GUESSED))
    assert guessed.file_type == 1024 and guessed.quantization == "F16"


def test_tables_agree_with_gguf_py() -> None:
    assert {i: (t.block_size, t.type_size) for i, t in GGML_TYPES.items()} == {
        int(kind): sizes for kind, sizes in gguf.GGML_QUANT_SIZES.items()
    }
    assert {i: t.name for i, t in GGML_TYPES.items()} == {int(kind): kind.name for kind in gguf.GGMLQuantizationType}
    expected = {int(t): t.name.removeprefix("MOSTLY_") for t in gguf.LlamaFileType if t != gguf.LlamaFileType.GUESSED}
    assert expected == FILE_TYPE_LABELS


def test_hand_built_minimal_file() -> None:
    data = Builder().tensor("w", [8, 2], 0, 0).build(b"\0" * 64)
    info = read_bytes(data)
    assert info.tensors[0].dims == (8, 2) and info.tensors[0].n_bytes == 64
    assert info.quantization == "F32" and info.bos_token is None and info.vocab_size is None


def test_big_endian_hand_built_file() -> None:
    info = read_bytes(Builder(">").u32("general.alignment", 64).tensor("w", [16], 1).build(b"\0" * 32, alignment=64))
    assert info.byte_order == "big" and info.alignment == 64 and info.data_offset % 64 == 0


def test_bad_token_ids_are_warnings() -> None:
    strings = b"".join(Builder().string(f"t{i}") for i in range(100))
    data = (
        Builder()
        .array("tokenizer.ggml.tokens", 8, 100, strings)
        .u32("tokenizer.ggml.bos_token_id", 100)
        .text("tokenizer.ggml.eos_token_id", "2")
        .build()
    )
    info = read_bytes(data)
    assert info.bos_token is None and info.eos_token is None
    assert "tokenizer.ggml.bos_token_id is 100, outside the vocabulary of 100 tokens" in info.warnings
    assert "tokenizer.ggml.eos_token_id is of type string, not an integer token id" in info.warnings


def test_token_id_without_tokens_is_a_warning() -> None:
    info = read_bytes(Builder().u32("tokenizer.ggml.bos_token_id", 1).build())
    assert info.warnings == (
        "tokenizer.ggml.bos_token_id is 1 but there is no tokenizer.ggml.tokens string array to look it up in",
    )


# -- bad files ------------------------------------------------------------------------------


@pytest.mark.parametrize("data", [b"", b"GG", b"GGML" + b"\0" * 40, b"\0" * 60, b"ggufxxxx"])
def test_wrong_magic(data: bytes) -> None:
    assert_invalid(data, "not a GGUF file", field="magic")


@pytest.mark.parametrize(
    ("version", "cause"),
    [
        (0, "GGUF version 0 is not supported"),
        (1, "GGUF version 1 (32-bit lengths, 2023) is not supported"),
        (4, "GGUF version 4 is not supported"),
        (0x10000, "GGUF version 256 is not supported"),
    ],
)
def test_unsupported_versions(version: int, cause: str) -> None:
    assert_invalid(b"GGUF" + struct.pack("<I", version) + b"\0" * 40, cause, field="version")


def test_big_endian_version_1_is_named_too() -> None:
    assert_invalid(b"GGUF" + struct.pack(">I", 1) + b"\0" * 40, "GGUF version 1")


def test_truncated_at_each_region(model: Path) -> None:
    data = model.read_bytes()
    info = read_path(model)
    tokens_at = data.index(b"tokenizer.ggml.tokens")
    infos_at = data.index(b"token_embd.weight")
    regions = [6, 12, 20, 30, tokens_at + 40, tokens_at + 2000, infos_at + 5, info.data_offset - 1]
    regions += [info.data_offset + 10, len(data) - 1]
    for cut in regions:
        with pytest.raises(InvalidModelFileError) as caught:
            read_bytes(data[:cut])
        assert str(caught.value).startswith(f"{NAME}: "), cut


def test_counts_beyond_the_file() -> None:
    assert_invalid(Builder().build(counts=(2**60, 1)), "claims 1152921504606846976 tensors", field="counts")
    assert_invalid(Builder().build(counts=(0, 1000)), "1000 metadata pairs", field="counts")


def assert_fast_and_small(data: bytes, *causes: str) -> None:
    """A claimed 10^12 bytes must fail at once, allocating nothing near that size."""
    tracemalloc.start()
    started = time.perf_counter()
    try:
        assert_invalid(data, *causes)
    finally:
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    assert time.perf_counter() - started < 0.5
    assert peak < 1 << 20


def test_huge_string_length_in_a_small_file() -> None:
    builder = Builder()
    builder.pairs.append(builder.string("general.name") + builder.pack("I", 8) + builder.string("x", length=10**12))
    assert_fast_and_small(builder.build(), "a string of 1000000000000 bytes, but only", "general.name")


def test_huge_key_length() -> None:
    builder = Builder()
    builder.pairs.append(builder.string("k", length=10**12))
    assert_fast_and_small(builder.build(), "the key of metadata pair 1: a string of 1000000000000 bytes")


def test_huge_array_counts() -> None:
    assert_fast_and_small(Builder().array("a", 8, 10**12, b"").build(), "an array of 1000000000000 string")
    assert_fast_and_small(Builder().array("a", 0, 10**12, b"").build(), "an array of 1000000000000 uint8")


def test_huge_string_inside_a_skipped_array() -> None:
    builder = Builder()
    strings = b"".join(builder.string("t") for _ in range(100)) + builder.string("x", length=10**12)
    data = builder.array("tokenizer.ggml.merges", 8, 200, strings + b"\0" * 800).build()
    assert_fast_and_small(data, "field 'tokenizer.ggml.merges'", "run past the end of the file")


def test_huge_tensor_name_length() -> None:
    builder = Builder()
    builder.infos.append(builder.string("w", length=10**12))
    assert_fast_and_small(builder.build(counts=(1, 1)), "the name of tensor 0: a string of 1000000000000 bytes")


def test_overlong_strings_are_refused() -> None:
    assert_invalid(Builder().tensor("t" * 65, [32]).build(b"\0" * 128), "a string of 65 bytes, over the limit of 64")
    assert_invalid(Builder().pair("k" * 65536, 0, b"\0").build(), "over the limit of 65535")


@pytest.mark.parametrize(
    ("builder", "cause", "field"),
    [
        (Builder().pair("general.x", 13, b"\0"), "unknown value type 13", "general.x"),
        (Builder().array("general.x", 13, 1, b"\0"), "unknown array element type 13", "general.x"),
        (Builder().array("general.x", 9, 1, b"\0" * 12), "an array of arrays", "general.x"),
        (Builder().pair("", 0, b"\0"), "metadata pair 1 has an empty key", None),
        (Builder().u32("general.x", 1).u32("general.x", 2), "duplicate key", "general.x"),
        (Builder().pair(b"general.\xff", 0, b"\0"), "the key of metadata pair 1 is not UTF-8", None),
        (Builder().text("general.name", b"caf\xe9"), "the value is not UTF-8 (byte 3 of the string)", "general.name"),
        (Builder().array("general.tags", 8, 1, Builder().string(b"\xc3")), "element 0 is not UTF-8", "general.tags"),
        (Builder().pair("general.alignment", 10, struct.pack("<Q", 64)), "must be a uint32, found uint64", None),
        (Builder().u32("general.alignment", 48), "must be a power of two, found 48", "general.alignment"),
        (Builder().u32("general.alignment", 0), "must be a power of two, found 0", "general.alignment"),
    ],
)
def test_bad_metadata(builder: Builder, cause: str, field: str | None) -> None:
    assert_invalid(builder.build(), cause, field=field)


def test_architecture_missing_or_not_a_string() -> None:
    assert_invalid(Builder().build(arch=False), "missing", field="general.architecture")
    not_text = Builder().u32("general.architecture", 7).build(arch=False)
    assert_invalid(not_text, "must be a string, found uint32", field="general.architecture")


@pytest.mark.parametrize(
    ("builder", "data_size", "cause"),
    [
        (Builder().tensor("w", [1, 1, 1, 1, 1]), 32, "tensor 'w' has 5 dimensions; GGUF allows at most 4"),
        (Builder().tensor("w", [32], ggml_type=4), 32, "tensor 'w' has unknown ggml type 4"),
        (Builder().tensor("w", [32], ggml_type=99), 32, "unknown ggml type 99"),
        (Builder().tensor("w", [100], ggml_type=12), 1024, "first dimension 100 is not a multiple of the Q4_K block"),
        (Builder().tensor("w", [2**63]), 32, "do not fit ggml's signed 64-bit sizes"),
        (Builder().tensor("w", [2**32, 2**32]), 32, "overflow ggml's signed 64-bit sizes"),
        (Builder().tensor("w", [8]).tensor("w", [8], offset=32), 64, "duplicate tensor name 'w'"),
        (Builder().tensor("w", [8], offset=16), 64, "data offset 16 is not a multiple of 32"),
        (Builder().tensor("a", [16]).tensor("b", [8], offset=32), 96, "tensor 'b' (data 32..64) overlaps tensor 'a'"),
        (Builder().tensor("w", [64]), 128, "ends at byte"),
        (Builder().tensor(b"\xff", [8]), 32, "the name of tensor 0 is not UTF-8"),
    ],
)
def test_bad_tensor_infos(builder: Builder, data_size: int, cause: str) -> None:
    assert_invalid(builder.build(b"\0" * data_size), cause)


def test_tensor_data_past_the_end_names_the_tensor(model: Path) -> None:
    error = assert_invalid(model.read_bytes()[:-100], "the data of tensor 'blk.0.ffn_up.weight' ends at byte")
    assert "(truncated?)" in str(error)


# -- fuzzing --------------------------------------------------------------------------------

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def read_or_refuse(data: bytes) -> None:
    try:
        read_bytes(data)
    except InvalidModelFileError as error:
        assert str(error).startswith(f"{NAME}: ")


@FUZZ
@given(st.binary(max_size=300))
def test_fuzz_arbitrary_bytes(data: bytes) -> None:
    read_or_refuse(data)


@FUZZ
@given(st.sampled_from([b"\x03\0\0\0", b"\0\0\0\x03", b"\x02\0\0\0"]), st.binary(max_size=300))
def test_fuzz_bytes_after_a_valid_preamble(version: bytes, rest: bytes) -> None:
    read_or_refuse(b"GGUF" + version + rest)


@pytest.fixture(scope="module")
def small_model(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    def extra(writer: gguf.GGUFWriter) -> None:
        writer.add_array("general.tags", ["a", "b"])

    return write_model(tmp_path_factory.mktemp("fuzz") / NAME, vocab=80, extra=extra).read_bytes()


@FUZZ
@given(data=st.data())
def test_fuzz_mutations_of_a_real_file(small_model: bytes, data: st.DataObject) -> None:
    mutated = bytearray(small_model)
    header_end = small_model.index(b"blk.0.ffn_up.weight") + 60  # mutate the header, where parsing happens
    for _ in range(data.draw(st.integers(1, 4))):
        position = data.draw(st.integers(0, header_end))
        mutated[position] = data.draw(st.sampled_from([0, 1, 2, 3, 8, 9, 12, 13, 0x7F, 0x80, 0xFF]))
    cut = data.draw(st.integers(0, len(mutated)))
    read_or_refuse(bytes(mutated[:cut]))


@FUZZ
@given(
    st.lists(st.tuples(st.text(max_size=4), st.integers(0, 14), st.binary(max_size=24)), max_size=5),
    st.lists(
        st.tuples(
            st.text(max_size=4), st.lists(st.integers(0, 300), max_size=5), st.integers(0, 42), st.integers(0, 96)
        ),
        max_size=3,
    ),
    st.sampled_from(["<", ">"]),
)
def test_fuzz_structured_files(
    pairs: list[tuple[str, int, bytes]], infos: list[tuple[str, list[int], int, int]], order: str
) -> None:
    builder = Builder(order)
    for key, value_type, payload in pairs:
        builder.pair(key, value_type, payload)
    for name, dims, ggml_type, offset in infos:
        builder.tensor(name, dims, ggml_type, offset)
    read_or_refuse(builder.build(b"\0" * 256))
