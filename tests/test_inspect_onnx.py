"""read_onnx: metadata of real ONNX models built with the onnx package, and refusal of corrupt
bytes (crafted by hand with the protobuf wire format) with a message naming file, field and cause."""

from __future__ import annotations

import io
from collections.abc import Collection
from pathlib import Path

import numpy as np
import onnx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper

from modelyard.errors import InvalidModelFileError
from modelyard.inspect._bounded import ByteSource
from modelyard.inspect.onnx import (
    MAX_DOC_STRING_BYTES,
    MAX_TEXT_BYTES,
    MAX_TYPE_NESTING,
    OnnxInfo,
    OnnxValue,
    read_onnx,
)

NAME = "model.onnx"


# -- helpers --------------------------------------------------------------------------------


def read_bytes(data: bytes, folder_files: Collection[str] | None = None) -> OnnxInfo:
    return read_onnx(ByteSource(io.BytesIO(data), len(data), NAME), folder_files=folder_files)


def assert_invalid(
    data: bytes, *causes: str, field: str | None = None, folder_files: Collection[str] | None = None
) -> None:
    """`data` is refused with a one-line message naming the file, the field and every cause."""
    with pytest.raises(InvalidModelFileError) as caught:
        read_bytes(data, folder_files)
    message = str(caught.value)
    assert message.startswith(f"{NAME}: "), message
    assert "\n" not in message
    for cause in causes:
        assert cause in message, message
    if field is not None:
        assert caught.value.field == field, message
        assert f"field '{field}'" in message


def varint(value: int) -> bytes:
    out = bytearray()
    while True:
        low, value = value & 0x7F, value >> 7
        if not value:
            return bytes(out) + bytes([low])
        out.append(low | 0x80)


def tag(number: int, wire_type: int) -> bytes:
    return varint(number << 3 | wire_type)


def varint_field(number: int, value: int) -> bytes:
    return tag(number, 0) + varint(value)


def message_field(number: int, payload: bytes) -> bytes:
    return tag(number, 2) + varint(len(payload)) + payload


# The fields around a hand-made graph in a minimal valid model: IR version 8 and opset 17.
IR = varint_field(1, 8)
OPSET = message_field(8, varint_field(2, 17))


def model_with_graph(graph: bytes) -> bytes:
    return IR + message_field(7, graph) + OPSET


def mlp() -> onnx.ModelProto:
    """x[batch, 4] -> MatMul -> Add -> Relu -> MatMul -> Add -> custom Scale -> Reshape -> y."""
    rng = np.random.default_rng(0)
    initializers = [
        numpy_helper.from_array(rng.standard_normal((4, 8)).astype(np.float32), "w1"),
        numpy_helper.from_array(np.zeros(8, np.float32), "b1"),
        numpy_helper.from_array(rng.standard_normal((8, 2)).astype(np.float32), "w2"),
        numpy_helper.from_array(np.zeros(2, np.float32), "b2"),
        numpy_helper.from_array(np.array([-1, 2], np.int64), "shape"),
    ]
    nodes = [
        helper.make_node("MatMul", ["x", "w1"], ["h1"]),
        helper.make_node("Add", ["h1", "b1"], ["h2"]),
        helper.make_node("Relu", ["h2"], ["h3"]),
        helper.make_node("MatMul", ["h3", "w2"], ["h4"]),
        helper.make_node("Add", ["h4", "b2"], ["h5"]),
        helper.make_node("Scale", ["h5"], ["h6"], domain="com.example", factor=2.0),
        helper.make_node("Reshape", ["h6", "shape"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes,
        "mlp",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 2])],
        initializers,
    )
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.example", 1)],
        producer_name="modelyard-tests",
        producer_version="1.0",
        domain="org.example",
        model_version=3,
        doc_string="a two-layer perceptron",
    )
    helper.set_model_props(model, {"author": "tests", "license": "apache-2.0"})
    onnx.checker.check_model(model)
    return model


def with_external(model: onnx.ModelProto, location: str, **entries: str) -> bytes:
    """The model with its first initializer marked EXTERNAL at `location`."""
    tensor = model.graph.initializer[0]
    tensor.ClearField("raw_data")
    tensor.data_location = TensorProto.EXTERNAL
    for key, value in {"location": location, **entries}.items():
        entry = tensor.external_data.add()
        entry.key, entry.value = key, value
    return model.SerializeToString()


# -- real models ----------------------------------------------------------------------------


def test_reads_the_metadata_of_a_real_mlp(tmp_path: Path) -> None:
    model = mlp()
    path = tmp_path / "mlp.onnx"
    onnx.save_model(model, str(path))
    with ByteSource.open(path) as source:
        info = read_onnx(source)
    assert info.ir_version == model.ir_version == onnx.IR_VERSION
    assert info.opsets == {"ai.onnx": 17, "com.example": 1}
    assert (info.producer_name, info.producer_version, info.domain) == ("modelyard-tests", "1.0", "org.example")
    assert info.model_version == 3
    assert info.doc_string == "a two-layer perceptron"
    assert info.graph_name == "mlp"
    assert info.inputs == (OnnxValue("x", "float32", ("batch", 4)),)
    assert info.outputs == (OnnxValue("y", "float32", ("batch", 2)),)
    assert info.node_count == 7
    assert info.op_types == {"MatMul": 2, "Add": 2, "Relu": 1, "com.example:Scale": 1, "Reshape": 1}
    assert info.initializer_count == 5
    assert info.parameter_count == 4 * 8 + 8 + 8 * 2 + 2 + 2
    assert info.dtype_parameters == {"float32": 58, "int64": 2}
    assert info.external_data == ()
    assert info.metadata_props == {"author": "tests", "license": "apache-2.0"}


def test_graph_inputs_that_are_initializers_are_not_reported_as_inputs() -> None:
    # Before IR version 4 every initializer also had to be a graph input; exporters still do it.
    model = mlp()
    for tensor in model.graph.initializer:
        model.graph.input.append(helper.make_tensor_value_info(tensor.name, tensor.data_type, list(tensor.dims)))
    info = read_bytes(model.SerializeToString())
    assert [value.name for value in info.inputs] == ["x"]


def test_reports_unknown_ranks_unknown_dims_and_non_tensor_types() -> None:
    sequence = helper.make_sequence_type_proto(helper.make_tensor_type_proto(TensorProto.INT64, [3]))
    nested = helper.make_sequence_type_proto(sequence)
    mapping = helper.make_map_type_proto(TensorProto.STRING, helper.make_tensor_type_proto(TensorProto.FLOAT, None))
    optional = helper.make_optional_type_proto(helper.make_tensor_type_proto(TensorProto.BFLOAT16, [1]))
    inputs = [
        helper.make_tensor_value_info("no_rank", TensorProto.FLOAT16, None),
        helper.make_tensor_value_info("unnamed_dim", TensorProto.UINT8, [None, 3, "seq"]),
        helper.make_value_info("seq", nested),
        helper.make_value_info("map", mapping),
        helper.make_value_info("opt", optional),
        helper.make_value_info("untyped", onnx.TypeProto()),
    ]
    graph = helper.make_graph([helper.make_node("Identity", ["no_rank"], ["out"])], "types", inputs, [])
    info = read_bytes(helper.make_model(graph).SerializeToString())
    assert info.inputs == (
        OnnxValue("no_rank", "float16", None),
        OnnxValue("unnamed_dim", "uint8", (None, 3, "seq")),
        OnnxValue("seq", "sequence(sequence(int64))", None),
        OnnxValue("map", "map(string,float32)", None),
        OnnxValue("opt", "optional(bfloat16)", None),
        OnnxValue("untyped", None, None),
    )


def test_counts_only_main_graph_nodes_not_control_flow_bodies() -> None:
    branch = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["y"]), helper.make_node("Relu", ["y"], ["z"])],
        "branch",
        [],
        [helper.make_tensor_value_info("z", TensorProto.FLOAT, [1])],
    )
    node = helper.make_node("If", ["cond"], ["out"], then_branch=branch, else_branch=branch)
    graph = helper.make_graph([node], "control", [helper.make_tensor_value_info("cond", TensorProto.BOOL, [])], [])
    info = read_bytes(helper.make_model(graph).SerializeToString())
    assert (info.node_count, info.op_types) == (1, {"If": 1})
    assert info.inputs == (OnnxValue("cond", "bool", ()),)


def test_reads_a_model_saved_with_external_data(tmp_path: Path) -> None:
    path = tmp_path / "mlp.onnx"
    onnx.save_model(
        mlp(),
        str(path),
        save_as_external_data=True,
        all_tensors_to_one_file=True,
        location="mlp.onnx.data",
        size_threshold=0,
    )
    assert (tmp_path / "mlp.onnx.data").stat().st_size >= 60 * 4
    with ByteSource.open(path, name=NAME) as source:
        info = read_onnx(source, folder_files=["mlp.onnx", "mlp.onnx.data"])
        assert info.external_data == ("mlp.onnx.data",)
        assert (info.initializer_count, info.parameter_count) == (5, 60)
        assert info.dtype_parameters == {"float32": 58, "int64": 2}
        with pytest.raises(InvalidModelFileError) as caught:
            read_onnx(source, folder_files=["mlp.onnx"])
    message = str(caught.value)
    assert message.startswith(f"{NAME}: field 'graph.initializer[0].external_data.location'")
    assert "'mlp.onnx.data' is not a file in the model's folder" in message


def test_external_locations_are_normalized_to_forward_slashes() -> None:
    data = with_external(mlp(), "./weights\\w1.bin")
    assert read_bytes(data, folder_files=["weights/w1.bin"]).external_data == ("weights/w1.bin",)


@pytest.mark.parametrize(
    ("location", "cause"),
    [
        ("../../etc/passwd", "'../../etc/passwd' escapes the model's folder with '..'"),
        ("weights/../../secret", "escapes the model's folder"),
        ("..\\outside.bin", "escapes the model's folder"),
        ("/abs", "'/abs' is an absolute path"),
        ("\\\\server\\share\\w.bin", "is an absolute path"),
        ("C:weights.bin", "is an absolute path"),
        ("", "is empty or contains a NUL character"),
        ("w.bin\x00.txt", "is empty or contains a NUL character"),
    ],
)
def test_refuses_external_locations_outside_the_model_folder(location: str, cause: str) -> None:
    assert_invalid(with_external(mlp(), location), cause, field="graph.initializer[0].external_data.location")


def test_refuses_external_tensors_without_location_or_with_bad_sizes() -> None:
    model = mlp()
    model.graph.initializer[0].data_location = TensorProto.EXTERNAL
    assert_invalid(
        model.SerializeToString(),
        "EXTERNAL but external_data has no location",
        field="graph.initializer[0].data_location",
    )
    assert_invalid(
        with_external(mlp(), "w.bin", offset="-4"),
        "'-4' is not a non-negative decimal byte count",
        field="graph.initializer[0].external_data.offset",
    )
    assert_invalid(
        with_external(mlp(), "w.bin", length="12"),
        "is 12 bytes but the dims give 32 elements of float32 (128 bytes)",
        field="graph.initializer[0].external_data.length",
    )
    assert read_bytes(with_external(mlp(), "w.bin", offset="0", length="128")).external_data == ("w.bin",)


def test_a_long_doc_string_is_cut_at_a_character_boundary() -> None:
    model = mlp()
    model.doc_string = "a" + "é" * 5000  # the cut at MAX_DOC_STRING_BYTES falls inside an 'é'
    info = read_bytes(model.SerializeToString())
    assert info.doc_string == "a" + "é" * ((MAX_DOC_STRING_BYTES - 1) // 2) + "…"


def test_reads_packed_dims_and_tensors_without_data() -> None:
    packed = message_field(1, varint(3) + varint(5))  # dims [3, 5], packed as proto3 writers do
    tensor = packed + varint_field(2, TensorProto.INT8) + message_field(8, b"t")
    info = read_bytes(model_with_graph(message_field(5, tensor)))
    assert (info.parameter_count, info.dtype_parameters) == (15, {"int8": 15})
    assert info.opsets == {"ai.onnx": 17}


def test_a_graph_spanning_many_read_windows_is_read_exactly() -> None:
    # Thousands of nodes, and a text and a tensor larger than the read-ahead window: fields and
    # varints straddle window edges, and the result must match what onnx itself parses.
    nodes = [
        helper.make_node(("Relu", "Sigmoid", "Tanh")[i % 3], [f"t{i}"], [f"t{i + 1}"], name=f"node_{i:05d}" * 3)
        for i in range(4000)
    ]
    big = numpy_helper.from_array(np.ones((300, 100), np.float32), "big")
    graph = helper.make_graph(
        nodes,
        "long",
        [helper.make_tensor_value_info("t0", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("t4000", TensorProto.FLOAT, [1])],
        [big],
    )
    model = helper.make_model(graph, producer_name="p" * 100_000)
    data = model.SerializeToString()
    assert len(data) > 5 * 64 * 1024
    info = read_bytes(data)
    parsed = onnx.load_from_string(data)
    assert info.node_count == len(parsed.graph.node) == 4000
    assert info.op_types == {"Relu": 1334, "Sigmoid": 1333, "Tanh": 1333}
    assert (info.producer_name, info.parameter_count) == (parsed.producer_name, 30_000)
    assert info.outputs == (OnnxValue("t4000", "float32", (1,)),)


class _CountingSource(ByteSource):
    """A real ByteSource that also counts the bytes it was asked for."""

    bytes_read = 0

    def read(self, offset: int, length: int, what: str) -> bytes:
        self.bytes_read += length
        return super().read(offset, length, what)


def test_inline_tensor_data_is_stepped_over_without_reading_it(tmp_path: Path) -> None:
    # 1.5 GiB of float32 raw_data, left as a hole in a sparse file: only the headers are read.
    data_bytes = 3 * 2**29
    header = varint_field(1, 3 * 2**27) + varint_field(2, TensorProto.FLOAT) + message_field(8, b"big")
    tensor_prefix = header + tag(9, 2) + varint(data_bytes)
    tensor_size = len(tensor_prefix) + data_bytes
    graph_prefix = message_field(2, b"huge") + tag(5, 2) + varint(tensor_size) + tensor_prefix
    graph_size = len(graph_prefix) + data_bytes
    path = tmp_path / "huge.onnx"
    with path.open("wb") as handle:
        handle.write(IR + tag(7, 2) + varint(graph_size) + graph_prefix)
        handle.seek(data_bytes, io.SEEK_CUR)
        handle.write(OPSET)
    with path.open("rb") as handle:
        source = _CountingSource(handle, path.stat().st_size, NAME)
        info = read_onnx(source)
    assert (info.graph_name, info.parameter_count, info.opsets) == ("huge", 3 * 2**27, {"ai.onnx": 17})
    assert source.bytes_read < 256 * 1024


# -- corrupt bytes --------------------------------------------------------------------------


def test_truncated_models_are_refused() -> None:
    data = mlp().SerializeToString()
    for cut in (1, 3, len(data) // 2, len(data) - 1):
        assert_invalid(data[:cut], "(truncated or corrupt)")
    assert_invalid(data[: len(data) // 2], "field 7 (graph) at byte")
    # A graph whose last field lost its value: the bytes after it belong to the model, not the graph.
    graph = message_field(2, b"g") + tag(20, 0)
    assert_invalid(IR + message_field(7, graph) + OPSET, "runs past the end of its message", field="graph")
    assert_invalid(b"", "has no graph")
    assert_invalid(IR, "has no graph")


def test_overlong_and_oversized_varints_are_refused() -> None:
    assert_invalid(b"\x08" + b"\xff" * 10 + b"\x01", "varint at byte 1 is longer than 10 bytes")
    assert_invalid(b"\x08" + b"\xff" * 9 + b"\x7f", "varint at byte 1 does not fit in 64 bits")
    tensor = tag(1, 0) + b"\x80" * 11
    assert_invalid(model_with_graph(message_field(5, tensor)), "longer than 10 bytes", field="graph.initializer[0]")


def test_lengths_beyond_the_message_are_refused() -> None:
    assert_invalid(tag(7, 2) + varint(1000) + b"\x00" * 5, "field 7 (graph) at byte 0", "claims 1000 bytes but only 5")
    # A node whose op_type claims more bytes than the node holds, though the file has them.
    node = tag(4, 2) + varint(50) + b"Relu"
    graph = message_field(1, node) + message_field(2, b"x" * 100)
    assert_invalid(model_with_graph(graph), "field 4 (op_type)", "claims 50 bytes but only 4", field="graph.node[0]")


def test_undefined_wire_types_groups_and_field_zero_are_refused() -> None:
    data = mlp().SerializeToString()
    assert_invalid(data + tag(99, 7) + b"\x00", "field 99 at byte", "has undefined wire type 7")
    assert_invalid(data + tag(99, 6), "undefined wire type 6")
    assert_invalid(data + tag(99, 3) + tag(99, 4), "is a protobuf group")
    assert_invalid(model_with_graph(tag(2, 3)), "field 2 (name)", "group", field="graph")
    assert_invalid(b"\x00\x00", "field number 0 at byte 0 is not a legal protobuf field")


def test_fields_with_the_wrong_wire_type_are_refused() -> None:
    assert_invalid(message_field(1, b"8"), "has wire type length-delimited, expected varint", field="ir_version")
    assert_invalid(model_with_graph(varint_field(1, 5)), "expected length-delimited", field="graph.node[0]")


def test_deep_type_nesting_is_refused() -> None:
    deep = helper.make_tensor_type_proto(TensorProto.FLOAT, [1])
    for _ in range(MAX_TYPE_NESTING + 5):
        deep = helper.make_sequence_type_proto(deep)
    graph = helper.make_graph([], "deep", [helper.make_value_info("x", deep)], [])
    with pytest.raises(InvalidModelFileError) as caught:
        read_bytes(helper.make_model(graph).SerializeToString())
    assert f"nests types more than {MAX_TYPE_NESTING} levels deep" in str(caught.value)
    assert str(caught.value).startswith(f"{NAME}: field 'graph.input[0].type.sequence_type.elem_type.sequence_type")


def test_inconsistent_tensors_are_refused() -> None:
    model = mlp()
    model.graph.initializer[1].raw_data = b"\x00" * 8
    assert_invalid(
        model.SerializeToString(),
        "is 8 bytes but the dims give 8 elements of float32 (32 bytes)",
        field="graph.initializer[1].raw_data",
    )
    model = mlp()
    model.graph.initializer[2].dims.append(-3)
    assert_invalid(model.SerializeToString(), "has the negative dimension -3", field="graph.initializer[2].dims")
    model = mlp()
    model.graph.initializer[3].ClearField("raw_data")
    model.graph.initializer[3].ClearField("dims")
    model.graph.initializer[3].dims.extend([2**40, 2**40])
    assert_invalid(model.SerializeToString(), "multiply to more than", field="graph.initializer[3].dims")
    model = mlp()
    model.graph.initializer[4].data_type = TensorProto.UNDEFINED
    assert_invalid(model.SerializeToString(), "missing or UNDEFINED", field="graph.initializer[4].data_type")
    tensor = varint_field(1, 2) + varint_field(2, TensorProto.FLOAT) + varint_field(14, 5)  # no such DataLocation
    assert_invalid(
        model_with_graph(message_field(5, tensor)),
        "is 5, neither DEFAULT (0) nor EXTERNAL (1)",
        field="graph.initializer[0].data_location",
    )


def test_inconsistent_model_fields_are_refused() -> None:
    model = mlp()
    model.ClearField("ir_version")
    assert_invalid(model.SerializeToString(), "is missing", field="ir_version")
    model = mlp()
    model.ClearField("opset_import")
    assert_invalid(model.SerializeToString(), "must import an opset", field="opset_import")
    model = mlp()
    model.opset_import.append(helper.make_opsetid("ai.onnx", 13))
    assert_invalid(
        model.SerializeToString(), "imports domain 'ai.onnx' again, as version 13 after 17", field="opset_import[2]"
    )
    model = mlp()
    helper.set_model_props(model, {"author": "a"})
    model.metadata_props.append(onnx.StringStringEntryProto(key="author", value="b"))
    assert_invalid(model.SerializeToString(), "repeats the key 'author'", field="metadata_props[1]")
    model = mlp()
    model.graph.node[2].op_type = ""
    assert_invalid(model.SerializeToString(), "has no op_type", field="graph.node[2]")


def test_bad_text_is_refused() -> None:
    assert_invalid(
        message_field(2, b"\xff\xfe") + model_with_graph(b""), "is not UTF-8 text (byte 0)", field="producer_name"
    )
    model = mlp()
    model.producer_name = "p" * (MAX_TEXT_BYTES + 1)
    assert_invalid(model.SerializeToString(), f"is {MAX_TEXT_BYTES + 1} bytes of text", field="producer_name")


# -- any bytes at all -----------------------------------------------------------------------

VALID = mlp().SerializeToString()


def read_or_refuse(data: bytes) -> None:
    try:
        read_bytes(data)
    except InvalidModelFileError as exc:
        assert str(exc).startswith(f"{NAME}: ")


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400))
def test_random_bytes_give_metadata_or_a_model_file_error(data: bytes) -> None:
    read_or_refuse(data)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(st.tuples(st.integers(0, len(VALID) - 1), st.integers(0, 255)), min_size=1, max_size=8),
    st.integers(0, len(VALID)),
)
def test_mutated_models_give_metadata_or_a_model_file_error(changes: list[tuple[int, int]], cut: int) -> None:
    data = bytearray(VALID)
    for position, value in changes:
        data[position] = value
    read_or_refuse(bytes(data))
    read_or_refuse(bytes(data[:cut]))
