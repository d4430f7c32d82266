"""ONNX model metadata, read from the protobuf wire format without loading any tensor data.

`read_onnx` walks `ModelProto` field by field through a `ByteSource`. Length-delimited fields it
does not need (tensor bytes, attributes, doc strings of nodes, ...) are stepped over by their
length prefix and never read, so a 2 GB model with inline initializers costs a few reads of each
tensor's header. Field numbers follow `onnx/onnx.proto` (model-formats.md section 10); the
`onnx` package is deliberately not used here because it parses the whole protobuf into memory.

Every malformed input becomes an `InvalidModelFileError` naming the file and the field path
(`graph.initializer[3].dims`): varints over 10 bytes, lengths past their message, groups and
undefined wire types, types nested absurdly deep, external-data locations that are absolute or
leave the model folder, and tensor sizes that contradict their dims.
"""

from __future__ import annotations

import codecs
import re
from collections import Counter
from collections.abc import Collection, Iterator
from dataclasses import dataclass, field
from typing import NamedTuple

from modelyard.errors import InvalidModelFileError
from modelyard.inspect._bounded import ByteSource

# Reads are served from a read-ahead window of one page, so walking thousands of small nodes costs
# one system call per page rather than one per field. It stays small because each tensor header
# after a skipped payload refills it: 250 tensors cost 1 MB of reads with 4 KiB, 16 MB with 64 KiB.
_WINDOW_BYTES = 4096

# Names, domains, keys and values are short in every real model; a megabyte is already absurd.
MAX_TEXT_BYTES = 1024 * 1024
# Doc strings can hold whole licences or exporter logs; only the start is worth keeping.
MAX_DOC_STRING_BYTES = 4096
# Real models nest types a few levels at most (a sequence of maps of tensors).
MAX_TYPE_NESTING = 16

_MAX_VARINT_BYTES = 10
_UINT64_LIMIT = 1 << 64
_INT64_MAX = (1 << 63) - 1
_MAX_FIELD_NUMBER = (1 << 29) - 1  # protobuf's largest legal field number

# Protobuf wire types. 3 and 4 (groups) are deprecated and never written by ONNX; 6 and 7 are undefined.
_VARINT, _FIXED64, _LENGTH_DELIMITED, _GROUP_START, _GROUP_END, _FIXED32 = 0, 1, 2, 3, 4, 5
_WIRE_TYPE_NAMES = {_VARINT: "varint", _FIXED64: "fixed64", _LENGTH_DELIMITED: "length-delimited", _FIXED32: "fixed32"}

# TensorProto.DataType: code -> (name as numpy / ml_dtypes spell it, bits per element; None for strings).
# fmt: off
_DTYPES: dict[int, tuple[str, int | None]] = {
    1: ("float32", 32), 2: ("uint8", 8), 3: ("int8", 8), 4: ("uint16", 16), 5: ("int16", 16), 6: ("int32", 32),
    7: ("int64", 64), 8: ("string", None), 9: ("bool", 8), 10: ("float16", 16), 11: ("float64", 64),
    12: ("uint32", 32), 13: ("uint64", 64), 14: ("complex64", 64), 15: ("complex128", 128), 16: ("bfloat16", 16),
    17: ("float8_e4m3fn", 8), 18: ("float8_e4m3fnuz", 8), 19: ("float8_e5m2", 8), 20: ("float8_e5m2fnuz", 8),
    21: ("uint4", 4), 22: ("int4", 4), 23: ("float4_e2m1", 4), 24: ("float8_e8m0", 8), 25: ("uint2", 2),
    26: ("int2", 2), 27: ("float6_e2m3", 6), 28: ("float6_e3m2", 6),
}
# fmt: on
_UNDEFINED_DTYPE = 0
_DATA_LOCATION_DEFAULT, _DATA_LOCATION_EXTERNAL = 0, 1
_DEFAULT_DOMAINS = ("", "ai.onnx")

Shape = tuple[int | str | None, ...]


@dataclass(frozen=True)
class OnnxValue:
    """A graph input or output. `shape` is None when the rank is unknown; a dimension is an int
    (`dim_value`), a str (`dim_param`, e.g. "batch") or None (neither given)."""

    name: str
    elem_type: str | None  # "float32", "int64", ...; "sequence(float32)" etc. for non-tensor types
    shape: Shape | None


@dataclass(frozen=True)
class OnnxInfo:
    """What an ONNX file says about itself. Counts cover the main graph, not subgraphs of
    control-flow nodes (If/Loop/Scan bodies), which are skipped with the node attributes."""

    ir_version: int
    opsets: dict[str, int]
    producer_name: str
    producer_version: str
    domain: str
    model_version: int
    doc_string: str
    graph_name: str
    inputs: tuple[OnnxValue, ...]
    outputs: tuple[OnnxValue, ...]
    node_count: int
    op_types: dict[str, int]
    initializer_count: int
    parameter_count: int
    dtype_parameters: dict[str, int]
    external_data: tuple[str, ...]
    metadata_props: dict[str, str]


class _Field(NamedTuple):  # a tuple, because one is built per field walked
    """One field of a message: for a varint, `value` is the number; for the other wire types it
    is the length of the payload (unread), which begins at `start`."""

    name: str | None  # from the message's field table; None for fields this reader ignores
    wire_type: int
    value: int
    start: int

    @property
    def end(self) -> int:
        return self.start + self.value


class _Wire:
    """Protobuf wire-format reads through a ByteSource. Every length is checked against the end
    of the enclosing message (itself checked against the file) before anything is read."""

    def __init__(self, source: ByteSource) -> None:
        self.source = source
        self._window = b""
        self._window_start = 0

    def error(self, message: str, path: str) -> InvalidModelFileError:
        return self.source.error(message, field=path or None)

    def read(self, offset: int, length: int, path: str) -> bytes:
        if length == 0:
            return b""
        window_offset = offset - self._window_start
        if window_offset >= 0 and window_offset + length <= len(self._window):
            return self._window[window_offset : window_offset + length]
        if length > _WINDOW_BYTES:
            return self.source.read(offset, length, path or "the model")
        fill = max(length, min(_WINDOW_BYTES, self.source.remaining(offset)))
        self._window = self.source.read(offset, fill, path or "the model")
        self._window_start = offset
        return self._window[:length]

    def varint(self, offset: int, end: int, path: str) -> tuple[int, int]:
        """The varint at `offset` and the offset after it; it must end before `end`."""
        # Fast path: most tags and lengths are single bytes already in the window.
        window_offset = offset - self._window_start
        if offset < end and 0 <= window_offset < len(self._window) and self._window[window_offset] < 0x80:
            return self._window[window_offset], offset + 1
        chunk = self.read(offset, min(_MAX_VARINT_BYTES, end - offset), path)
        value = 0
        for index, byte in enumerate(chunk):
            value |= (byte & 0x7F) << (7 * index)
            if byte < 0x80:
                if value >= _UINT64_LIMIT:
                    raise self.error(f"varint at byte {offset} does not fit in 64 bits", path)
                return value, offset + index + 1
        if len(chunk) == _MAX_VARINT_BYTES:
            raise self.error(f"varint at byte {offset} is longer than {_MAX_VARINT_BYTES} bytes", path)
        raise self.error(f"varint at byte {offset} runs past the end of its message (truncated or corrupt)", path)

    def fields(self, start: int, end: int, path: str, names: dict[int, str]) -> Iterator[_Field]:
        """The fields of the message in bytes start..end, in file order, without their payloads.
        `names` maps the field numbers this reader uses to their onnx.proto names."""
        offset = start
        while offset < end:
            tag_offset = offset
            tag, offset = self.varint(offset, end, path)
            number, wire_type = tag >> 3, tag & 7
            if number == 0 or number > _MAX_FIELD_NUMBER:
                raise self.error(f"field number {number} at byte {tag_offset} is not a legal protobuf field", path)
            name = names.get(number)
            if wire_type == _VARINT:
                value, offset = self.varint(offset, end, path)
                yield _Field(name, wire_type, value, offset)
                continue
            if wire_type in (_GROUP_START, _GROUP_END):
                raise self.error(f"{_where(number, name, tag_offset)} is a protobuf group, which ONNX never uses", path)
            if wire_type not in (_FIXED64, _LENGTH_DELIMITED, _FIXED32):
                raise self.error(f"{_where(number, name, tag_offset)} has undefined wire type {wire_type}", path)
            if wire_type == _LENGTH_DELIMITED:
                length, offset = self.varint(offset, end, path)
            else:
                length = 8 if wire_type == _FIXED64 else 4
            if length > end - offset:
                raise self.error(
                    f"{_where(number, name, tag_offset)} claims {length} bytes but only {end - offset} remain "
                    "in its message (truncated or corrupt)",
                    path,
                )
            # Fixed-width values are never needed here, so they are stepped over like payloads.
            yield _Field(name, wire_type, length, offset)
            offset += length

    def _expect(self, item: _Field, wire_type: int, path: str) -> None:
        if item.wire_type != wire_type:
            found = _WIRE_TYPE_NAMES.get(item.wire_type, str(item.wire_type))
            raise self.error(f"has wire type {found}, expected {_WIRE_TYPE_NAMES[wire_type]}", path)

    def int64(self, item: _Field, path: str) -> int:
        """An int64/int32/enum field; negative numbers are sign-extended to 64 bits on the wire."""
        self._expect(item, _VARINT, path)
        return item.value - _UINT64_LIMIT if item.value > _INT64_MAX else item.value

    def int64s(self, item: _Field, path: str) -> Iterator[int]:
        """A repeated int64 field, which writers may emit one value per field or packed."""
        if item.wire_type != _LENGTH_DELIMITED:
            yield self.int64(item, path)
            return
        offset = item.start
        while offset < item.end:
            value, offset = self.varint(offset, item.end, path)
            yield value - _UINT64_LIMIT if value > _INT64_MAX else value

    def span(self, item: _Field, path: str) -> tuple[int, int]:
        """The byte range of an embedded message."""
        self._expect(item, _LENGTH_DELIMITED, path)
        return item.start, item.end

    def text(self, item: _Field, path: str) -> str:
        self._expect(item, _LENGTH_DELIMITED, path)
        if item.value > MAX_TEXT_BYTES:
            raise self.error(f"is {item.value} bytes of text; more than {MAX_TEXT_BYTES} is not plausible", path)
        try:
            return self.read(item.start, item.value, path).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise self.error(f"is not UTF-8 text (byte {exc.start})", path) from None

    def text_prefix(self, item: _Field, path: str, max_bytes: int) -> str:
        """At most `max_bytes` of a text field, cut at a character boundary and marked with '…'."""
        self._expect(item, _LENGTH_DELIMITED, path)
        data = self.read(item.start, min(item.value, max_bytes), path)
        decoder = codecs.getincrementaldecoder("utf-8")()
        try:
            # final=False keeps a character split by the cut pending instead of failing on it.
            text = decoder.decode(data, final=item.value <= max_bytes)
        except UnicodeDecodeError as exc:
            raise self.error(f"is not UTF-8 text (byte {exc.start})", path) from None
        return text if item.value <= max_bytes else text + "…"


def _where(number: int, name: str | None, offset: int) -> str:
    return f"field {number}" + (f" ({name})" if name else "") + f" at byte {offset}"


@dataclass
class _GraphParts:
    """What the graph walk collects; a second `graph` field merges into it, as protobuf merges
    repeated occurrences of a singular message."""

    name: str = ""
    node_count: int = 0
    op_types: Counter[str] = field(default_factory=Counter)
    inputs: list[OnnxValue] = field(default_factory=list)
    outputs: list[OnnxValue] = field(default_factory=list)
    initializer_names: set[str] = field(default_factory=set)
    initializer_count: int = 0
    parameter_count: int = 0
    dtype_parameters: Counter[str] = field(default_factory=Counter)
    external_data: dict[str, None] = field(default_factory=dict)  # an ordered set of locations


# Field tables from onnx/onnx.proto: the fields each reader uses. Other fields are stepped over,
# among them graph.value_info (13) and graph.sparse_initializer (15), and node.attribute (5) with
# the subgraphs of If/Loop/Scan.
# fmt: off
_MODEL_FIELDS = {1: "ir_version", 2: "producer_name", 3: "producer_version", 4: "domain", 5: "model_version",
                 6: "doc_string", 7: "graph", 8: "opset_import", 14: "metadata_props"}
_OPSET_FIELDS = {1: "domain", 2: "version"}
_ENTRY_FIELDS = {1: "key", 2: "value"}
_GRAPH_FIELDS = {1: "node", 2: "name", 5: "initializer", 11: "input", 12: "output"}
_NODE_FIELDS = {4: "op_type", 7: "domain"}
_VALUE_INFO_FIELDS = {1: "name", 2: "type"}
_TYPE_FIELDS = {1: "tensor_type", 4: "sequence_type", 5: "map_type", 7: "opaque_type", 8: "sparse_tensor_type",
                9: "optional_type"}
_TENSOR_TYPE_FIELDS = {1: "elem_type", 2: "shape"}  # TypeProto.Tensor and TypeProto.SparseTensor
_WRAPPED_TYPE_FIELDS = {1: "elem_type"}  # TypeProto.Sequence and TypeProto.Optional
_MAP_TYPE_FIELDS = {1: "key_type", 2: "value_type"}
_SHAPE_FIELDS = {1: "dim"}
_DIMENSION_FIELDS = {1: "dim_value", 2: "dim_param"}
_TENSOR_FIELDS = {1: "dims", 2: "data_type", 8: "name", 9: "raw_data", 13: "external_data", 14: "data_location"}
# fmt: on


def read_onnx(source: ByteSource, *, folder_files: Collection[str] | None = None) -> OnnxInfo:
    """The metadata of the ONNX model in `source`, read without reading tensor data.

    `folder_files` lists the files next to the model (paths relative to the model's folder,
    '/'-separated); when given, every external-data location must be one of them.
    """
    wire = _Wire(source)
    folder = None if folder_files is None else {_normalized_location(name) for name in folder_files}
    ir_version: int | None = None
    texts = {"producer_name": "", "producer_version": "", "domain": ""}
    model_version = 0
    doc_string = ""
    graph: _GraphParts | None = None
    opsets: dict[str, int] = {}
    metadata: dict[str, str] = {}
    for item in wire.fields(0, source.size, "", _MODEL_FIELDS):
        match item.name:
            case "ir_version":
                ir_version = wire.int64(item, "ir_version")
            case "producer_name" | "producer_version" | "domain":
                texts[item.name] = wire.text(item, item.name)
            case "model_version":
                model_version = wire.int64(item, "model_version")
            case "doc_string":
                doc_string = wire.text_prefix(item, "doc_string", MAX_DOC_STRING_BYTES)
            case "graph":
                if graph is None:
                    graph = _GraphParts()
                _read_graph(wire, item, graph, folder)
            case "opset_import":
                _add_opset(wire, item, f"opset_import[{len(opsets)}]", opsets)
            case "metadata_props":
                _add_entry(wire, item, f"metadata_props[{len(metadata)}]", metadata)
    if graph is None:
        raise source.error("has no graph (ModelProto field 7); it is not an ONNX model, or it is truncated")
    if ir_version is None:
        raise wire.error("is missing; every ONNX model states its IR version", "ir_version")
    # IR version 3 introduced opset_import; the ONNX checker requires it from then on.
    if ir_version >= 3 and not opsets:
        raise wire.error("is empty; a model with IR version 3 or later must import an opset", "opset_import")
    return OnnxInfo(
        ir_version=ir_version,
        opsets=opsets,
        producer_name=texts["producer_name"],
        producer_version=texts["producer_version"],
        domain=texts["domain"],
        model_version=model_version,
        doc_string=doc_string,
        graph_name=graph.name,
        inputs=tuple(value for value in graph.inputs if value.name not in graph.initializer_names),
        outputs=tuple(graph.outputs),
        node_count=graph.node_count,
        op_types=dict(graph.op_types),
        initializer_count=graph.initializer_count,
        parameter_count=graph.parameter_count,
        dtype_parameters=dict(graph.dtype_parameters),
        external_data=tuple(graph.external_data),
        metadata_props=metadata,
    )


def _add_opset(wire: _Wire, item: _Field, path: str, opsets: dict[str, int]) -> None:
    """OperatorSetIdProto; the empty domain is the default domain, reported as `ai.onnx`."""
    domain, version = "", None
    for part in wire.fields(*wire.span(item, path), path, _OPSET_FIELDS):
        if part.name == "domain":
            domain = wire.text(part, f"{path}.domain")
        elif part.name == "version":
            version = wire.int64(part, f"{path}.version")
    domain = domain or "ai.onnx"
    if version is None or version < 1:
        raise wire.error(f"imports domain '{domain}' without a positive version", path)
    # The ONNX checker keeps the last of repeated imports; two different versions are ambiguous.
    if opsets.get(domain, version) != version:
        raise wire.error(f"imports domain '{domain}' again, as version {version} after {opsets[domain]}", path)
    opsets[domain] = version


def _add_entry(wire: _Wire, item: _Field, path: str, entries: dict[str, str]) -> None:
    """A metadata_props entry; the ONNX checker refuses duplicate keys."""
    key, value = _read_entry(wire, item, path)
    if key in entries:
        raise wire.error(f"repeats the key '{key}'", path)
    entries[key] = value


def _read_entry(wire: _Wire, item: _Field, path: str) -> tuple[str, str]:
    """StringStringEntryProto: a key and a value, both text."""
    key, value = "", ""
    for part in wire.fields(*wire.span(item, path), path, _ENTRY_FIELDS):
        if part.name == "key":
            key = wire.text(part, f"{path}.key")
        elif part.name == "value":
            value = wire.text(part, f"{path}.value")
    return key, value


def _read_graph(wire: _Wire, item: _Field, graph: _GraphParts, folder: set[str] | None) -> None:
    for part in wire.fields(*wire.span(item, "graph"), "graph", _GRAPH_FIELDS):
        match part.name:
            case "node":
                op_type = _read_node(wire, part, f"graph.node[{graph.node_count}]")
                graph.node_count += 1
                graph.op_types[op_type] += 1
            case "name":
                graph.name = wire.text(part, "graph.name")
            case "initializer":
                tensor = _read_tensor(wire, part, f"graph.initializer[{graph.initializer_count}]", folder)
                graph.initializer_count += 1
                graph.initializer_names.add(tensor.name)
                graph.parameter_count += tensor.elements
                graph.dtype_parameters[_dtype_name(tensor.dtype_code)] += tensor.elements
                if tensor.location is not None and tensor.data_location == _DATA_LOCATION_EXTERNAL:
                    graph.external_data[tensor.location] = None
            case "input":
                graph.inputs.append(_read_value_info(wire, part, f"graph.input[{len(graph.inputs)}]"))
            case "output":
                graph.outputs.append(_read_value_info(wire, part, f"graph.output[{len(graph.outputs)}]"))


def _read_node(wire: _Wire, item: _Field, path: str) -> str:
    """The node's op_type, qualified by its domain unless that is the default one: "Conv",
    "com.microsoft:FusedMatMul"."""
    op_type, domain = "", ""
    for part in wire.fields(*wire.span(item, path), path, _NODE_FIELDS):
        if part.name == "op_type":
            op_type = wire.text(part, f"{path}.op_type")
        elif part.name == "domain":
            domain = wire.text(part, f"{path}.domain")
    if not op_type:
        raise wire.error("has no op_type", path)
    return op_type if domain in _DEFAULT_DOMAINS else f"{domain}:{op_type}"


def _read_value_info(wire: _Wire, item: _Field, path: str) -> OnnxValue:
    name = ""
    elem_type: str | None = None
    shape: Shape | None = None
    for part in wire.fields(*wire.span(item, path), path, _VALUE_INFO_FIELDS):
        if part.name == "name":
            name = wire.text(part, f"{path}.name")
        elif part.name == "type":
            elem_type, shape = _read_type(wire, part, f"{path}.type", depth=1)
    return OnnxValue(name=name, elem_type=elem_type, shape=shape)


def _read_type(wire: _Wire, item: _Field, path: str, depth: int) -> tuple[str | None, Shape | None]:
    """TypeProto, a oneof (the last one written wins, as in protobuf). Only tensor types have a
    shape; sequences, optionals and maps are described by name, e.g. "sequence(float32)"."""
    if depth > MAX_TYPE_NESTING:
        raise wire.error(f"nests types more than {MAX_TYPE_NESTING} levels deep", path)
    elem_type: str | None = None
    shape: Shape | None = None
    for part in wire.fields(*wire.span(item, path), path, _TYPE_FIELDS):
        part_path = f"{path}.{part.name}"
        match part.name:
            case "tensor_type":
                elem_type, shape = _read_tensor_type(wire, part, part_path)
            case "sparse_tensor_type":
                inner, shape = _read_tensor_type(wire, part, part_path)
                elem_type = f"sparse({inner or '?'})"
            case "sequence_type" | "optional_type":
                inner = _read_wrapped_type(wire, part, part_path, depth)
                elem_type, shape = f"{part.name.removesuffix('_type')}({inner or '?'})", None
            case "map_type":
                elem_type, shape = _read_map_type(wire, part, part_path, depth), None
            case "opaque_type":
                elem_type, shape = None, None  # a domain-specific type without an element type
    return elem_type, shape


def _read_tensor_type(wire: _Wire, item: _Field, path: str) -> tuple[str | None, Shape | None]:
    elem_type: str | None = None
    shape: Shape | None = None
    for part in wire.fields(*wire.span(item, path), path, _TENSOR_TYPE_FIELDS):
        if part.name == "elem_type":
            code = wire.int64(part, f"{path}.elem_type")
            elem_type = None if code == _UNDEFINED_DTYPE else _dtype_name(code)
        elif part.name == "shape":
            shape = _read_shape(wire, part, f"{path}.shape")
    return elem_type, shape


def _read_wrapped_type(wire: _Wire, item: _Field, path: str, depth: int) -> str | None:
    inner: str | None = None
    for part in wire.fields(*wire.span(item, path), path, _WRAPPED_TYPE_FIELDS):
        if part.name == "elem_type":
            inner, _ = _read_type(wire, part, f"{path}.elem_type", depth + 1)
    return inner


def _read_map_type(wire: _Wire, item: _Field, path: str, depth: int) -> str:
    key: str | None = None
    value: str | None = None
    for part in wire.fields(*wire.span(item, path), path, _MAP_TYPE_FIELDS):
        if part.name == "key_type":
            key = _dtype_name(wire.int64(part, f"{path}.key_type"))
        elif part.name == "value_type":
            value, _ = _read_type(wire, part, f"{path}.value_type", depth + 1)
    return f"map({key or '?'},{value or '?'})"


def _read_shape(wire: _Wire, item: _Field, path: str) -> Shape:
    """TensorShapeProto: one Dimension per axis, each a dim_value, a dim_param or neither."""
    dims: list[int | str | None] = []
    for part in wire.fields(*wire.span(item, path), path, _SHAPE_FIELDS):
        if part.name != "dim":
            continue
        dim_path = f"{path}.dim[{len(dims)}]"
        dim: int | str | None = None
        for choice in wire.fields(*wire.span(part, dim_path), dim_path, _DIMENSION_FIELDS):
            if choice.name == "dim_value":
                dim = wire.int64(choice, f"{dim_path}.dim_value")
            elif choice.name == "dim_param":
                dim = wire.text(choice, f"{dim_path}.dim_param")
        dims.append(dim)
    return tuple(dims)


@dataclass
class _TensorFields:
    """The TensorProto fields `_read_tensor` needs."""

    name: str = ""
    dtype_code: int = _UNDEFINED_DTYPE
    elements: int = 1  # a tensor without dims is a scalar
    raw_data_bytes: int | None = None
    location: str | None = None
    external_length: int | None = None
    data_location: int = _DATA_LOCATION_DEFAULT


def _read_tensor(wire: _Wire, item: _Field, path: str, folder: set[str] | None) -> _TensorFields:
    """An initializer's name, type and element count (from its dims) and where its data lives.
    Of raw_data only the length prefix is read; the data itself never is."""
    found = _TensorFields()
    for part in wire.fields(*wire.span(item, path), path, _TENSOR_FIELDS):
        part_path = f"{path}.{part.name}"
        match part.name:
            case "dims":
                found.elements = _multiply_dims(wire, part, part_path, found.elements)
            case "data_type":
                found.dtype_code = wire.int64(part, part_path)
            case "name":
                found.name = wire.text(part, part_path)
            case "raw_data":
                wire.span(part, part_path)  # checks the wire type; the bytes stay unread
                found.raw_data_bytes = part.value
            case "external_data":
                _read_external_entry(wire, part, part_path, found, folder)
            case "data_location":
                found.data_location = wire.int64(part, part_path)
    _check_tensor(wire, found, path)
    return found


def _multiply_dims(wire: _Wire, item: _Field, path: str, elements: int) -> int:
    """`elements` times the dims in this field, refusing negative dims and counts past int64
    (the checked multiplication of model-formats.md section 0)."""
    for dim in wire.int64s(item, path):
        if dim < 0:
            raise wire.error(f"has the negative dimension {dim}", path)
        elements *= dim
        if elements > _INT64_MAX:
            raise wire.error(f"multiply to more than {_INT64_MAX} elements", path)
    return elements


def _read_external_entry(wire: _Wire, item: _Field, path: str, found: _TensorFields, folder: set[str] | None) -> None:
    """One external_data entry: `location` (relative to the model's folder), `offset` and
    `length` (decimal byte counts), or another key such as `checksum`, which is ignored."""
    key, value = _read_entry(wire, item, path)
    if key == "location":
        found.location = _checked_location(wire, value, f"{path}.location", folder)
    elif key in ("offset", "length"):
        if not value.isascii() or not value.isdigit():
            raise wire.error(f"'{value}' is not a non-negative decimal byte count", f"{path}.{key}")
        if key == "length":
            found.external_length = int(value)


def _check_tensor(wire: _Wire, found: _TensorFields, path: str) -> None:
    if found.dtype_code == _UNDEFINED_DTYPE:
        raise wire.error("is missing or UNDEFINED; an initializer must have a data type", f"{path}.data_type")
    if found.data_location not in (_DATA_LOCATION_DEFAULT, _DATA_LOCATION_EXTERNAL):
        raise wire.error(f"is {found.data_location}, neither DEFAULT (0) nor EXTERNAL (1)", f"{path}.data_location")
    external = found.data_location == _DATA_LOCATION_EXTERNAL
    if external and found.location is None:
        raise wire.error("is EXTERNAL but external_data has no location", f"{path}.data_location")
    expected = _data_bytes(found.dtype_code, found.elements)
    stored = [("raw_data", found.raw_data_bytes), ("external_data.length", found.external_length if external else None)]
    for field_name, size in stored:
        if expected is not None and size is not None and size != expected:
            raise wire.error(
                f"is {size} bytes but the dims give {found.elements} elements of "
                f"{_dtype_name(found.dtype_code)} ({expected} bytes)",
                f"{path}.{field_name}",
            )


def _data_bytes(dtype_code: int, elements: int) -> int | None:
    """The byte size of `elements` values of a whole-byte type, or None when this reader does
    not check it (strings, sub-byte types with their packing rules, unknown codes)."""
    bits = _DTYPES.get(dtype_code, ("", None))[1]
    if bits is None or bits % 8:
        return None
    return elements * (bits // 8)


def _dtype_name(code: int) -> str:
    # New data types appear with new ONNX releases; name them rather than refuse the model.
    return _DTYPES[code][0] if code in _DTYPES else f"unknown({code})"


_WINDOWS_DRIVE = re.compile(r"^[A-Za-z]:")
_SEPARATORS = re.compile(r"[/\\]")


def _checked_location(wire: _Wire, location: str, path: str, folder: set[str] | None) -> str:
    """An external-data location, '/'-separated; it must stay inside the model's folder and,
    when the folder's files are known, name one of them (model-formats.md section 0)."""
    if not location or "\x00" in location:
        raise wire.error("is empty or contains a NUL character", path)
    if location.startswith(("/", "\\")) or _WINDOWS_DRIVE.match(location):
        raise wire.error(f"'{location}' is an absolute path; external data must lie in the model's folder", path)
    if ".." in _SEPARATORS.split(location):
        raise wire.error(f"'{location}' escapes the model's folder with '..'", path)
    normalized = _normalized_location(location)
    if folder is not None and normalized not in folder:
        raise wire.error(f"'{location}' is not a file in the model's folder", path)
    return normalized


def _normalized_location(location: str) -> str:
    """`./data\\w.bin` -> `data/w.bin`: writers on Windows may use backslashes."""
    return "/".join(part for part in _SEPARATORS.split(location) if part not in ("", "."))
