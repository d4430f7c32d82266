"""read_safetensors, the shard index checks and the kohya/ModelSpec metadata readers: real files
written by the safetensors library, hand-crafted corrupt headers refused with a message naming the
file and the cause, and fuzzing that may only ever produce a header or InvalidModelFileError."""

from __future__ import annotations

import io
import itertools
import json
import struct
import time
import tracemalloc
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors import safe_open
from safetensors.numpy import save_file

from modelyard.errors import InvalidModelFileError
from modelyard.inspect._bounded import ByteSource
from modelyard.inspect.safetensors import (
    MAX_HEADER_BYTES,
    SafetensorsHeader,
    ShardIndex,
    check_shards,
    read_safetensors,
    read_shard_index,
)
from modelyard.inspect.safetensors_metadata import (
    KohyaInfo,
    ModelSpecInfo,
    base_family,
    is_adapter,
    read_kohya,
    read_modelspec,
)

NAME = "model.safetensors"
INDEX_NAME = "model.safetensors.index.json"


# -- helpers --------------------------------------------------------------------------------


def read_bytes(data: bytes, name: str = NAME) -> SafetensorsHeader:
    return read_safetensors(ByteSource(io.BytesIO(data), len(data), name))


def read_path(path: Path) -> SafetensorsHeader:
    with ByteSource.open(path, name=path.name) as source:
        return read_safetensors(source)


def craft(header: dict[str, Any] | str | bytes, data: bytes = b"", length: int | None = None) -> bytes:
    """A safetensors file by hand: the 8-byte length, the header, the data buffer."""
    if isinstance(header, dict):
        header = json.dumps(header)
    raw = header.encode() if isinstance(header, str) else header
    return struct.pack("<Q", len(raw) if length is None else length) + raw + data


def entry(dtype: str, shape: list[Any], begin: Any, end: Any) -> dict[str, Any]:
    return {"dtype": dtype, "shape": shape, "data_offsets": [begin, end]}


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


@pytest.fixture
def real_file(tmp_path: Path) -> Path:
    """A small checkpoint written by the official library, tensors named like a Llama."""
    path = tmp_path / NAME
    rng = np.random.default_rng(0)
    save_file(
        {
            "model.embed_tokens.weight": rng.standard_normal((32, 8)).astype(np.float16),
            "model.layers.0.self_attn.q_proj.weight": rng.standard_normal((8, 8)).astype(np.float32),
            "model.layers.0.input_layernorm.weight": np.ones(8, np.float32),
            "model.norm.weight": np.ones(8, np.float64),
            "lm_head.scale": np.array(3, np.int8),
            "model.empty": np.zeros((0, 4), np.float32),
        },
        str(path),
        metadata={"format": "pt", "note": "ünïcode"},
    )
    return path


# -- valid files ----------------------------------------------------------------------------


def test_real_file_matches_the_official_reader(real_file: Path) -> None:
    header = read_path(real_file)
    with safe_open(str(real_file), framework="numpy") as official:
        names = official.keys()
        assert set(header.tensors) == set(names)
        assert header.metadata == official.metadata() == {"format": "pt", "note": "ünïcode"}
        for name in names:
            piece = official.get_slice(name)
            assert list(header.tensors[name].shape) == piece.get_shape(), name
            assert header.tensors[name].dtype == piece.get_dtype(), name
    assert header.file_size == real_file.stat().st_size
    assert header.header_length == int.from_bytes(real_file.read_bytes()[:8], "little")
    assert header.data_size == sum(t.n_bytes for t in header.tensors.values())
    assert header.tensor_count == 6


def test_counts_and_dtype_breakdown(real_file: Path) -> None:
    header = read_path(real_file)
    assert header.dtype_parameters == {"F16": 256, "F32": 64 + 8, "F64": 8, "I8": 1}
    assert header.parameter_count == 256 + 72 + 8 + 1
    assert header.dominant_dtype == "F16"
    scalar = header.tensors["lm_head.scale"]
    assert scalar.shape == () and scalar.n_elements == 1 and scalar.n_bytes == 1
    empty = header.tensors["model.empty"]
    assert empty.shape == (0, 4) and empty.begin == empty.end


def test_tensors_are_listed_in_data_order(real_file: Path) -> None:
    tensors = list(read_path(real_file).tensors.values())
    assert [t.begin for t in tensors] == sorted(t.begin for t in tensors)
    assert all(a.end == b.begin for a, b in itertools.pairwise(tensors))


def test_bf16_and_float8_written_by_torch(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    from safetensors.torch import save_file as save_torch

    path = tmp_path / NAME
    save_torch(
        {
            "w": torch.zeros((4, 8), dtype=torch.bfloat16),
            "q": torch.zeros((16,), dtype=torch.float8_e4m3fn),
        },
        str(path),
    )
    header = read_path(path)
    assert header.tensors["w"].dtype == "BF16" and header.tensors["w"].n_bytes == 64
    assert header.tensors["q"].dtype == "F8_E4M3" and header.tensors["q"].n_bytes == 16
    assert header.dominant_dtype == "BF16"


def test_a_file_without_tensors_or_metadata() -> None:
    header = read_bytes(craft({}))
    assert header.tensors == {} and header.metadata == {}
    assert header.parameter_count == 0 and header.dominant_dtype is None


def test_whitespace_around_the_json_is_accepted() -> None:
    # The reference reader's tests accept this although the README says the header starts with '{'.
    header = read_bytes(craft('  {"a": {"dtype": "U8", "shape": [2], "data_offsets": [0, 2]}}    ', b"xy"))
    assert header.tensors["a"].shape == (2,)


def test_sub_byte_dtypes_are_sized_in_bits() -> None:
    header = read_bytes(craft({"f4": entry("F4", [2, 2], 0, 2), "f6": entry("F6_E2M3", [4], 2, 5)}, b"\0" * 5))
    assert header.dtype_parameters == {"F4": 4, "F6_E2M3": 4}


def test_equal_counts_pick_the_alphabetically_first_dtype() -> None:
    header = read_bytes(craft({"b": entry("U8", [2], 0, 2), "a": entry("I8", [2], 2, 4)}, b"\0" * 4))
    assert header.dominant_dtype == "I8"


# -- bad files ------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [0, 1, 7])
def test_shorter_than_the_length_field(size: int) -> None:
    assert_invalid(b"\x05" * size, f"is {size} bytes, too short")


def test_header_length_beyond_the_file() -> None:
    assert_invalid(
        craft("{}", length=500), "header length is 500 bytes", "only 2 bytes after it", field="header length"
    )


@pytest.mark.parametrize("length", [MAX_HEADER_BYTES + 1, 10**12, 2**64 - 1])
def test_header_length_beyond_the_cap(length: int) -> None:
    tracemalloc.start()
    started = time.perf_counter()
    try:
        assert_invalid(craft("{}", length=length), f"{length} bytes", f"over the {MAX_HEADER_BYTES}-byte limit")
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    assert time.perf_counter() - started < 0.5 and peak < 1 << 20


def test_truncated_at_each_region(real_file: Path) -> None:
    data = real_file.read_bytes()
    header_end = 8 + int.from_bytes(data[:8], "little")
    for cut in (3, 8, 9, header_end // 2, header_end - 1, header_end, header_end + 5, len(data) - 1):
        with pytest.raises(InvalidModelFileError) as caught:
            read_bytes(data[:cut])
        assert str(caught.value).startswith(f"{NAME}: "), cut


def test_trailing_bytes_after_the_last_tensor(real_file: Path) -> None:
    assert_invalid(real_file.read_bytes() + b"\0", "1 bytes no tensor accounts for", field="data_offsets")


def test_header_not_utf8() -> None:
    assert_invalid(craft(b'{"\xff": {}}'), "not UTF-8", "byte 10")


@pytest.mark.parametrize(
    ("header", "cause"),
    [
        ("{", "the header: invalid JSON at line 1 column 2"),
        ("[]", "must be a JSON object, found a list"),
        ('{"a": NaN}', "NaN is not valid JSON"),
        ('{"a": {}, "a": {}}', "duplicate key 'a'"),
        ('{"__metadata__": ' + "[" * 300 + "]" * 300 + "}", "nested deeper than"),
    ],
)
def test_header_not_a_strict_json_object(header: str, cause: str) -> None:
    assert_invalid(craft(header), cause)


@pytest.mark.parametrize(
    ("tensor", "cause", "field"),
    [
        ([1, 2], "tensor 'w' must map to an object, found a list", None),
        ({"dtype": "U8", "shape": [4]}, "tensor 'w' lacks data_offsets", "data_offsets"),
        ({**entry("U8", [4], 0, 4), "strides": [1]}, "unexpected field(s) 'strides'", "strides"),
        (entry(8, [4], 0, 4), "tensor 'w': expected a string, found a number", "dtype"),
        (entry("F7_E3M3", [4], 0, 4), "tensor 'w' has unknown dtype 'F7_E3M3'", "dtype"),
        (entry("U8", "4", 0, 4), "expected a list of integers, found a string", "shape"),
        (entry("U8", [-4], 0, 4), "dimension -4 is not a non-negative integer", "shape"),
        (entry("U8", [True], 0, 1), "dimension True is not a non-negative integer", "shape"),
        (entry("U8", [4.0], 0, 4), "dimension 4.0 is not a non-negative integer", "shape"),
        (entry("U8", [2**64], 0, 4), "below 2^64", "shape"),
        ({"dtype": "U8", "shape": [4], "data_offsets": [0]}, "expected [begin, end]", "data_offsets"),
        (entry("U8", [4], -1, 3), "expected [begin, end]", "data_offsets"),
        (entry("U8", [4], 0, False), "expected [begin, end]", "data_offsets"),
        (entry("U8", [4], 4, 0), "tensor 'w' ends at 0, before it begins at 4", "data_offsets"),
        (entry("F32", [4], 0, 4), "shape [4] of F32 needs 16 bytes but data_offsets span 4", "data_offsets"),
        (entry("F4", [3], 0, 4), "3 elements of F4 make 12 bits, not a whole number of bytes", "shape"),
        (entry("U8", [2**40, 2**40, 0], 0, 0), "overflows 64 bits", "shape"),
    ],
)
def test_bad_tensor_entries(tensor: Any, cause: str, field: str | None) -> None:
    assert_invalid(craft({"w": tensor}, b"\0" * 4), cause, field=field)


def test_unknown_dtype_message_is_exact() -> None:
    error = assert_invalid(craft({"w": entry("Q4_K", [4], 0, 4)}, b"\0" * 4))
    assert str(error) == f"{NAME}: field 'dtype': tensor 'w' has unknown dtype 'Q4_K'"


def test_a_tensor_past_the_buffer_names_both_sizes() -> None:
    error = assert_invalid(craft({"w": entry("F32", [24], 0, 96)}, b"\0" * 64))
    assert str(error) == f"{NAME}: field 'data_offsets': tensor 'w' ends at 96 but the data buffer has 64 bytes"


def test_gap_between_tensors() -> None:
    header = {"a": entry("U8", [4], 0, 4), "b": entry("U8", [4], 8, 12)}
    assert_invalid(
        craft(header, b"\0" * 12), "tensor 'b' begins at 8", "'a' ends at 4", "gap of 4", field="data_offsets"
    )


def test_gap_before_the_first_tensor() -> None:
    assert_invalid(craft({"a": entry("U8", [4], 4, 8)}, b"\0" * 8), "the data starts at 0", "gap of 4")


def test_overlapping_tensors() -> None:
    header = {"a": entry("U8", [8], 0, 8), "b": entry("U8", [4], 4, 8)}
    assert_invalid(craft(header, b"\0" * 8), "tensor 'b' (4..8) overlaps tensor 'a' (0..8)", field="data_offsets")


def test_aliased_tensors_are_overlaps() -> None:
    header = {"a": entry("U8", [4], 0, 4), "b": entry("U8", [4], 0, 4)}
    assert_invalid(craft(header, b"\0" * 4), "overlaps", field="data_offsets")


def test_missing_data_bytes() -> None:
    assert_invalid(craft({"a": entry("U8", [8], 0, 8)}, b"\0" * 4), "ends at 8 but the data buffer has 4 bytes")


@pytest.mark.parametrize(
    ("metadata", "cause"),
    [
        ([], "must be an object of strings, found a list"),
        ({"epochs": 3}, "the value of 'epochs' is a number; metadata values must be strings"),
        ({"nested": {"a": "b"}}, "the value of 'nested' is an object"),
    ],
)
def test_bad_metadata(metadata: Any, cause: str) -> None:
    assert_invalid(craft({"__metadata__": metadata}), cause, field="__metadata__")


def test_a_long_tensor_name_is_cut_short_in_messages() -> None:
    name = "x" * 10_000
    error = assert_invalid(craft({name: entry("F7", [1], 0, 1)}, b"\0"))
    assert len(str(error)) < 300


# -- fuzzing --------------------------------------------------------------------------------

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def read_or_refuse(data: bytes) -> None:
    try:
        read_bytes(data)
    except InvalidModelFileError as error:
        assert str(error).startswith(f"{NAME}: ")


@FUZZ
@given(st.binary(max_size=200))
def test_fuzz_arbitrary_bytes(data: bytes) -> None:
    read_or_refuse(data)


@FUZZ
@given(st.binary(max_size=200))
def test_fuzz_arbitrary_headers(header: bytes) -> None:
    read_or_refuse(craft(header, b"\0" * 16))


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats() | st.text(max_size=8),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=6), children, max_size=4),
    max_leaves=12,
)
DTYPES = st.sampled_from(["U8", "F16", "BF16", "F32", "F4", "F6_E3M2", "C64", "Q4", 7])
ENTRIES = st.fixed_dictionaries(
    {
        "dtype": DTYPES,
        "shape": st.lists(st.integers(-1, 5), max_size=3) | JSON_VALUES,
        "data_offsets": st.lists(st.integers(-1, 40), min_size=0, max_size=3) | JSON_VALUES,
    }
)


@FUZZ
@given(
    st.dictionaries(st.text(max_size=6), ENTRIES | JSON_VALUES, max_size=5),
    st.integers(0, 48),
)
def test_fuzz_structured_headers(header: dict[str, Any], data_size: int) -> None:
    read_or_refuse(craft(json.dumps(header), b"\0" * data_size))


@FUZZ
@given(data=st.data())
def test_fuzz_mutations_of_a_real_file(real_file: Path, data: st.DataObject) -> None:
    original = bytearray(real_file.read_bytes())
    for _ in range(data.draw(st.integers(1, 4))):
        position = data.draw(st.integers(0, len(original) - 1))
        original[position] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(original)))
    read_or_refuse(bytes(original[:cut]))


# -- sharded checkpoints --------------------------------------------------------------------


def write_sharded(folder: Path) -> tuple[ShardIndex, dict[str, SafetensorsHeader]]:
    """Two shards written by the official library and their index, as transformers lays them out."""
    shard_tensors = {
        "model-00001-of-00002.safetensors": {
            "model.embed_tokens.weight": np.zeros((16, 4), np.float32),
            "model.layers.0.mlp.up_proj.weight": np.zeros((4, 4), np.float16),
        },
        "model-00002-of-00002.safetensors": {"lm_head.weight": np.zeros((16, 4), np.float32)},
    }
    weight_map: dict[str, str] = {}
    for shard, tensors in shard_tensors.items():
        save_file(tensors, str(folder / shard), metadata={"format": "pt"})
        weight_map.update(dict.fromkeys(tensors, shard))
    total = sum(array.nbytes for tensors in shard_tensors.values() for array in tensors.values())
    index = {"metadata": {"total_size": total, "total_parameters": 160}, "weight_map": weight_map}
    (folder / INDEX_NAME).write_text(json.dumps(index))
    with ByteSource.open(folder / INDEX_NAME, name=INDEX_NAME) as source:
        parsed = read_shard_index(source)
    return parsed, {shard: read_path(folder / shard) for shard in shard_tensors}


def read_index_bytes(document: Any) -> ShardIndex:
    data = json.dumps(document).encode() if not isinstance(document, bytes) else document
    return read_shard_index(ByteSource(io.BytesIO(data), len(data), INDEX_NAME))


def test_real_sharded_checkpoint(tmp_path: Path) -> None:
    index, shards = write_sharded(tmp_path)
    assert index.total_size == 16 * 4 * 4 * 2 + 4 * 4 * 2
    assert index.total_parameters == 160
    assert index.shard_names == ("model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors")
    assert index.weight_map["lm_head.weight"] == "model-00002-of-00002.safetensors"
    check_shards(index, shards, INDEX_NAME)


def assert_shards_refused(index: ShardIndex, shards: dict[str, SafetensorsHeader], *causes: str) -> None:
    with pytest.raises(InvalidModelFileError) as caught:
        check_shards(index, shards, INDEX_NAME)
    message = str(caught.value)
    assert message.startswith(f"{INDEX_NAME}: "), message
    for cause in causes:
        assert cause in message, message


def test_a_missing_shard(tmp_path: Path) -> None:
    index, shards = write_sharded(tmp_path)
    del shards["model-00002-of-00002.safetensors"]
    assert_shards_refused(index, shards, "shard 'model-00002-of-00002.safetensors' is named but missing")


def test_a_tensor_missing_from_its_shard(tmp_path: Path) -> None:
    index, shards = write_sharded(tmp_path)
    moved = ShardIndex(
        index.total_size, None, {**index.weight_map, "lm_head.weight": "model-00001-of-00002.safetensors"}
    )
    assert_shards_refused(moved, shards, "tensor 'lm_head.weight' is mapped to 'model-00001-of-00002.safetensors'")


def test_a_shard_holding_an_unmapped_tensor(tmp_path: Path) -> None:
    index, shards = write_sharded(tmp_path)
    fewer = {name: shard for name, shard in index.weight_map.items() if name != "lm_head.weight"}
    assert_shards_refused(
        ShardIndex(None, None, fewer),
        shards,
        "shard 'model-00002-of-00002.safetensors' holds tensor 'lm_head.weight' but the index does not map it",
    )


def test_total_size_must_match_the_shards(tmp_path: Path) -> None:
    index, shards = write_sharded(tmp_path)
    wrong = ShardIndex((index.total_size or 0) + 2, None, index.weight_map)
    assert_shards_refused(wrong, shards, "field 'metadata.total_size'", "adds up to")


@pytest.mark.parametrize(
    ("shard", "cause"),
    [
        ("../model.safetensors", "a path, not a plain file name"),
        ("/etc/model.safetensors", "a path"),
        ("sub/model.safetensors", "a path"),
        ("sub\\model.safetensors", "a path"),
        ("C:model.safetensors", "drive-qualified"),
        ("..", "not a file name"),
        ("", "an empty file name"),
        ("model.bin", "must be a .safetensors file"),
        (".safetensors", "must be a .safetensors file"),
    ],
)
def test_bad_shard_names(shard: str, cause: str) -> None:
    with pytest.raises(InvalidModelFileError) as caught:
        read_index_bytes({"metadata": {"total_size": 0}, "weight_map": {"w": shard}})
    assert str(caught.value).startswith(f"{INDEX_NAME}: field 'weight_map': tensor 'w' maps to ")
    assert cause in str(caught.value)


@pytest.mark.parametrize(
    ("document", "cause"),
    [
        ({"metadata": {}}, "field 'weight_map': missing"),
        ({"weight_map": []}, "field 'weight_map': expected an object, found a list"),
        ({"weight_map": {"w": 3}}, "tensor 'w' maps to a number"),
        ({"metadata": [], "weight_map": {}}, "field 'metadata': expected an object"),
        ({"metadata": {"total_size": -1}, "weight_map": {}}, "field 'metadata.total_size'"),
        ({"metadata": {"total_size": True}, "weight_map": {}}, "field 'metadata.total_size'"),
        ({"metadata": {"total_parameters": "7B"}, "weight_map": {}}, "field 'metadata.total_parameters'"),
        ([], "must hold a JSON object"),
        (b'{"weight_map": {}, "weight_map": {}}', "duplicate key 'weight_map'"),
        (b"\xff{}", "not UTF-8"),
    ],
)
def test_bad_index_documents(document: Any, cause: str) -> None:
    with pytest.raises(InvalidModelFileError) as caught:
        read_index_bytes(document)
    assert str(caught.value).startswith(f"{INDEX_NAME}: ")
    assert cause in str(caught.value)


def test_index_without_metadata_is_accepted() -> None:
    index = read_index_bytes({"weight_map": {"w": "a.safetensors"}})
    assert index.total_size is None and index.total_parameters is None


# -- kohya-ss and ModelSpec metadata --------------------------------------------------------


def kohya_metadata(**overrides: str) -> dict[str, str]:
    """Metadata as sd-scripts' train_network.py writes it: every value a string."""
    metadata = {
        "ss_base_model_version": "sdxl_base_v1-0",
        "ss_v2": "False",
        "ss_network_module": "networks.lora",
        "ss_network_dim": "16",
        "ss_network_alpha": "8.0",
        "ss_network_args": json.dumps({"conv_dim": 4, "algo": "locon"}),
        "ss_resolution": "(1024, 1024)",
        "ss_clip_skip": "None",
        "ss_num_epochs": "10",
        "ss_steps": "1500",
        "ss_learning_rate": "0.0001",
        "ss_output_name": "my_style",
        "ss_sd_model_name": "sd_xl_base_1.0.safetensors",
        "ss_new_sd_model_hash": "31e35c80fc4829d14f90153f4c74cd59c90b779f6afe05a74cd6120b893f7e5b",
        "ss_tag_frequency": json.dumps(
            {"10_style": {"mystyle": 40, "1girl": 30}, "5_extra": {"1girl": 20, " sky ": 5}}
        ),
        "ss_dataset_dirs": json.dumps({"10_style": {"n_repeats": 10, "img_count": 40}}),
        "ss_training_comment": "trained on my photos",
        "sshs_model_hash": "ab" * 32,
        "sshs_legacy_hash": "1234abcd",
    }
    return {**metadata, **overrides}


def test_kohya_lora_written_to_a_real_file(tmp_path: Path) -> None:
    path = tmp_path / "my_style.safetensors"
    save_file(
        {
            "lora_unet_down_blocks_0_attentions_0_proj_in.lora_down.weight": np.zeros((16, 320), np.float16),
            "lora_unet_down_blocks_0_attentions_0_proj_in.lora_up.weight": np.zeros((320, 16), np.float16),
            "lora_unet_down_blocks_0_attentions_0_proj_in.alpha": np.array(8.0, np.float16),
        },
        str(path),
        metadata=kohya_metadata(),
    )
    kohya = read_kohya(read_path(path).metadata)
    assert kohya == KohyaInfo(
        base_model_version="sdxl_base_v1-0",
        v2=False,
        network_module="networks.lora",
        network_dim=16,
        network_alpha=8.0,
        network_args={"conv_dim": "4", "algo": "locon"},
        resolution=(1024, 1024),
        clip_skip=None,
        epochs=10,
        steps=1500,
        learning_rate=0.0001,
        output_name="my_style",
        sd_model_name="sd_xl_base_1.0.safetensors",
        sd_model_hash="31e35c80fc4829d14f90153f4c74cd59c90b779f6afe05a74cd6120b893f7e5b",
        trigger_words=("1girl", "mystyle", "sky"),
        dataset_dirs=("10_style",),
        training_comment="trained on my photos",
        model_hash="ab" * 32,
        legacy_hash="1234abcd",
        warnings=(),
    )
    assert base_family(kohya, None) == "SDXL"


def test_no_kohya_keys_means_none() -> None:
    assert read_kohya({"format": "pt"}) is None
    assert read_modelspec({"format": "pt"}) is None


@pytest.mark.parametrize("alpha", ["None", "0", "0.0", None])
def test_missing_or_zero_alpha_means_alpha_equals_rank(alpha: str | None) -> None:
    metadata = kohya_metadata(ss_network_alpha=alpha) if alpha is not None else kohya_metadata()
    if alpha is None:
        del metadata["ss_network_alpha"]
    kohya = read_kohya(metadata)
    assert kohya is not None and kohya.network_alpha == 16.0


@pytest.mark.parametrize(
    ("text", "expected"), [("512,512", (512, 512)), ("(512, 768)", (512, 768)), ("640", (640, 640))]
)
def test_kohya_resolution_forms(text: str, expected: tuple[int, int]) -> None:
    kohya = read_kohya(kohya_metadata(ss_resolution=text))
    assert kohya is not None and kohya.resolution == expected


def test_kohya_resolution_from_the_dataset_config() -> None:
    metadata = kohya_metadata(ss_datasets=json.dumps([{"resolution": [768, 512], "subsets": []}]))
    del metadata["ss_resolution"]
    kohya = read_kohya(metadata)
    assert kohya is not None and kohya.resolution == (768, 512) and kohya.warnings == ()


def test_trigger_words_keep_the_top_twenty() -> None:
    tags = {f"tag{i:02d}": 100 - i for i in range(30)}
    kohya = read_kohya({"ss_tag_frequency": json.dumps({"d": tags})})
    assert kohya is not None and kohya.trigger_words == tuple(f"tag{i:02d}" for i in range(20))


@pytest.mark.parametrize(
    ("key", "value", "warning"),
    [
        ("ss_network_dim", "sixteen", "ss_network_dim: expected an integer, found 'sixteen'"),
        ("ss_network_dim", "16.5", "ss_network_dim: expected an integer"),
        ("ss_learning_rate", "fast", "ss_learning_rate: expected a number"),
        ("ss_learning_rate", "nan", "ss_learning_rate: expected a finite number"),
        ("ss_v2", "maybe", "ss_v2: expected True or False"),
        ("ss_resolution", "big", "ss_resolution: expected a resolution"),
        ("ss_tag_frequency", "{broken", "ss_tag_frequency: expected JSON"),
        ("ss_tag_frequency", "[1, 2]", "ss_tag_frequency: expected a JSON object"),
        ("ss_tag_frequency", '{"d": {"a": "many", "b": 2}}', "ss_tag_frequency: skipped 1 entries"),
        ("ss_tag_frequency", '{"d": {"a": NaN}}', "ss_tag_frequency: expected JSON"),
        ("ss_tag_frequency", "[" * 500 + "]" * 500, "ss_tag_frequency: expected JSON"),
        ("ss_network_args", '"conv_dim=4"', "ss_network_args: expected a JSON object"),
        ("ss_dataset_dirs", "None?", "ss_dataset_dirs: expected JSON"),
        ("ss_clip_skip", "x" * 500, "ss_clip_skip: expected an integer, found 'xxxx"),
    ],
)
def test_kohya_junk_values_become_warnings(key: str, value: str, warning: str) -> None:
    kohya = read_kohya(kohya_metadata(**{key: value}))
    assert kohya is not None
    assert any(warning in text for text in kohya.warnings), kohya.warnings
    assert all(len(text) < 200 for text in kohya.warnings)


def modelspec_metadata(**overrides: str) -> dict[str, str]:
    metadata = {
        "modelspec.sai_model_spec": "1.0.1",
        "modelspec.architecture": "stable-diffusion-xl-v1-base/lora",
        "modelspec.implementation": "https://github.com/Stability-AI/generative-models",
        "modelspec.title": "My Style",
        "modelspec.resolution": "1024x1024",
        "modelspec.description": "A style LoRA",
        "modelspec.author": "me",
        "modelspec.date": "2024-05-01T12:00:00Z",
        "modelspec.hash_sha256": "0x" + "0f" * 32,
        "modelspec.license": "CreativeML Open RAIL++-M",
        "modelspec.usage_hint": "use mystyle",
        "modelspec.tags": "style, anime,, painting ",
        "modelspec.trigger_phrase": "mystyle",
        "modelspec.prediction_type": "epsilon",
        "modelspec.timestep_range": "0,999",
        "modelspec.encoder_layer": "2",
        "modelspec.is_negative_embedding": "False",
    }
    return {**metadata, **overrides}


def test_modelspec_keys(tmp_path: Path) -> None:
    path = tmp_path / "my_style.safetensors"
    save_file({"w": np.zeros(4, np.float16)}, str(path), metadata=modelspec_metadata())
    spec = read_modelspec(read_path(path).metadata)
    assert isinstance(spec, ModelSpecInfo)
    assert spec.architecture == "stable-diffusion-xl-v1-base/lora"
    assert spec.resolution == (1024, 1024)
    assert spec.tags == ("style", "anime", "painting")
    assert spec.timestep_range == (0, 999)
    assert spec.encoder_layer == 2 and spec.is_negative_embedding is False
    assert spec.hash_sha256 == "0x" + "0f" * 32
    assert (spec.title, spec.author, spec.date, spec.trigger_phrase) == (
        "My Style",
        "me",
        "2024-05-01T12:00:00Z",
        "mystyle",
    )
    assert spec.warnings == ()
    assert is_adapter(spec) and base_family(None, spec) == "SDXL"


@pytest.mark.parametrize(
    ("key", "value", "warning"),
    [
        ("resolution", "1024", "modelspec.resolution: expected WIDTHxHEIGHT"),
        ("resolution", "1024x", "modelspec.resolution: expected WIDTHxHEIGHT"),
        ("hash_sha256", "0xABC", "modelspec.hash_sha256: expected '0x' and 64 lower-case hex digits"),
        ("date", "yesterday", "modelspec.date: expected an ISO-8601 date"),
        ("encoder_layer", "two", "modelspec.encoder_layer: expected an integer"),
        ("prediction_type", "flow", "modelspec.prediction_type: expected 'v' or 'epsilon'"),
        ("timestep_range", "0-999", "modelspec.timestep_range: expected 'min,max'"),
        ("is_negative_embedding", "sometimes", "modelspec.is_negative_embedding: expected True or False"),
    ],
)
def test_modelspec_junk_values_become_warnings(key: str, value: str, warning: str) -> None:
    spec = read_modelspec(modelspec_metadata(**{f"modelspec.{key}": value}))
    assert spec is not None
    assert any(warning in text for text in spec.warnings), spec.warnings


def test_modelspec_none_strings_are_absent_values() -> None:
    spec = read_modelspec(modelspec_metadata(**{"modelspec.resolution": "None", "modelspec.author": "None"}))
    assert spec is not None and spec.resolution is None and spec.author is None and spec.warnings == ()


@pytest.mark.parametrize(
    ("architecture", "family", "adapter"),
    [
        ("stable-diffusion-v1", "SD 1.5", False),
        ("stable-diffusion-v1/textual-inversion", "SD 1.5", True),
        ("stable-diffusion-v2-768-v/lora", "SD 2", True),
        ("stable-diffusion-v2-512", "SD 2", False),
        ("stable-diffusion-xl-v1-refiner", "SDXL", False),
        ("stable-diffusion-3-medium/lora", "SD3", True),
        ("flux-1-dev/lora", "Flux", True),
        ("flux-1-schnell", "Flux", False),
        ("stable-diffusion-v1-lora", "SD 1.5", True),  # the ModelSpec 1.0.0 spelling
        ("gpt-neo-x", None, False),
    ],
)
def test_modelspec_architecture_families(architecture: str, family: str | None, adapter: bool) -> None:
    spec = read_modelspec({"modelspec.architecture": architecture})
    assert base_family(None, spec) == family
    assert is_adapter(spec) is adapter


@pytest.mark.parametrize(
    ("version", "v2", "family"),
    [
        ("sdxl_base_v1-0", "False", "SDXL"),
        ("sd_v1", "False", "SD 1.5"),
        ("sd_v2_v", "True", "SD 2"),
        (None, "True", "SD 2"),
        (None, "False", "SD 1.5"),
        ("sd3m", "False", "SD3"),
        ("flux1", "False", "Flux"),
        ("chroma", "False", None),
        ("lumina2", "None", None),
    ],
)
def test_kohya_base_families(version: str | None, v2: str, family: str | None) -> None:
    metadata = {"ss_v2": v2} if version is None else {"ss_v2": v2, "ss_base_model_version": version}
    assert base_family(read_kohya(metadata), None) == family


def test_modelspec_wins_over_kohya() -> None:
    kohya = read_kohya({"ss_base_model_version": "sd_v1"})
    spec = read_modelspec({"modelspec.architecture": "flux-1-dev/lora"})
    assert base_family(kohya, spec) == "Flux"
    assert base_family(None, None) is None and not is_adapter(None)


@FUZZ
@given(st.dictionaries(st.sampled_from(sorted(kohya_metadata()) + sorted(modelspec_metadata())), st.text(max_size=30)))
def test_fuzz_metadata_values_never_raise(metadata: dict[str, str]) -> None:
    kohya, spec = read_kohya(metadata), read_modelspec(metadata)
    base_family(kohya, spec)
    is_adapter(spec)
