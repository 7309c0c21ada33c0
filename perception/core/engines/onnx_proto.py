"""ONNX files at the protobuf wire level, without the `onnx` package.

Two jobs, both small enough not to justify another dependency:

* `check_onnx_file` rejects a missing, empty, truncated or non-ONNX file with a
  one-line reason *before* a runtime sees it (runtimes either crash, print
  megabytes of protobuf errors, or say "INVALID_PROTOBUF" with no hint). It
  walks the top-level `ModelProto` fields and the fields of its `GraphProto`
  by seeking, so it never loads the weights into memory.
* `build_model` writes tiny ONNX models (a few nodes, small initialisers) for
  tests and tools, e.g. a model with a fixed batch or symbolic axes.

Field numbers follow onnx/onnx.proto (IR version 3 and later).
"""

from __future__ import annotations

import os
import struct
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import numpy as np

from perception.core.errors import ModelFileError

__all__ = [
    "Node",
    "OnnxHeader",
    "TensorSpec",
    "ValueInfo",
    "build_model",
    "check_onnx_file",
    "read_onnx_io",
]

# ---------------------------------------------------------------------------
# wire format
_VARINT, _I64, _LEN, _SGROUP, _EGROUP, _I32 = 0, 1, 2, 3, 4, 5

# ModelProto fields and their expected wire types.
_MODEL_FIELDS = {
    1: ("ir_version", _VARINT),
    2: ("producer_name", _LEN),
    3: ("producer_version", _LEN),
    4: ("domain", _LEN),
    5: ("model_version", _VARINT),
    6: ("doc_string", _LEN),
    7: ("graph", _LEN),
    8: ("opset_import", _LEN),
    14: ("metadata_props", _LEN),
    20: ("training_info", _LEN),
    25: ("functions", _LEN),
}
# GraphProto fields.
_GRAPH_FIELDS = {
    1: ("node", _LEN),
    2: ("name", _LEN),
    5: ("initializer", _LEN),
    10: ("doc_string", _LEN),
    11: ("input", _LEN),
    12: ("output", _LEN),
    13: ("value_info", _LEN),
    14: ("quantization_annotation", _LEN),
    15: ("sparse_initializer", _LEN),
    16: ("metadata_props", _LEN),
}
_MAX_IR_VERSION = 64  # far above any released IR (11 in 2025); catches random varints


def _read_varint(f: BinaryIO, end: int) -> int:
    shift = 0
    value = 0
    while True:
        if f.tell() >= end:
            raise EOFError
        b = f.read(1)
        if not b:
            raise EOFError
        byte = b[0]
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value
        shift += 7
        if shift > 63:
            raise ValueError("varint longer than 10 bytes")


def _walk(
    f: BinaryIO, start: int, end: int, known: Mapping[int, tuple[str, int]], where: str
) -> dict[int, list[tuple[int, int, int]]]:
    """Walk the fields of one message in [start, end) by seeking.

    Returns {field_number: [(wire_type, payload_offset, payload_len_or_value)]}.
    Raises ModelFileError naming the byte offset of the first inconsistency.
    """
    fields: dict[int, list[tuple[int, int, int]]] = {}
    f.seek(start)
    while f.tell() < end:
        at = f.tell()
        try:
            key = _read_varint(f, end)
        except (EOFError, ValueError) as exc:
            raise ModelFileError(f"{where}: unreadable field tag at byte {at} ({exc!s})") from None
        number, wire = key >> 3, key & 7
        if number == 0 or wire in (_SGROUP, _EGROUP, 6, 7):
            raise ModelFileError(
                f"{where}: invalid protobuf field (number {number}, wire type {wire}) at byte {at}"
            )
        if number in known and known[number][1] != wire:
            raise ModelFileError(
                f"{where}: field '{known[number][0]}' has wire type {wire}, expected "
                f"{known[number][1]} (at byte {at})"
            )
        try:
            if wire == _VARINT:
                value = _read_varint(f, end)
                fields.setdefault(number, []).append((wire, at, value))
                continue
            length = _read_varint(f, end) if wire == _LEN else (8 if wire == _I64 else 4)
        except (EOFError, ValueError):
            raise ModelFileError(f"{where}: file ends inside the field at byte {at}") from None
        payload = f.tell()
        if payload + length > end:
            name = known.get(number, (f"#{number}",))[0]
            raise ModelFileError(
                f"{where}: field '{name}' at byte {at} needs {length} bytes but only "
                f"{end - payload} remain (file truncated?)"
            )
        fields.setdefault(number, []).append((wire, payload, length))
        f.seek(payload + length)
    return fields


@dataclass(frozen=True)
class OnnxHeader:
    """What `check_onnx_file` learnt on the way."""

    ir_version: int
    producer_name: str
    opsets: dict[str, int]
    n_nodes: int
    n_initializers: int
    size: int


def _read_str(f: BinaryIO, offset: int, length: int) -> str:
    f.seek(offset)
    return f.read(length).decode("utf-8", errors="replace")


def check_onnx_file(path: str | os.PathLike[str]) -> OnnxHeader:
    """Raise ModelFileError unless `path` is a structurally sound ONNX model.

    Checks: exists, is a regular file, readable, non-empty, the top-level
    message parses as a ModelProto with an IR version, an opset and a graph
    with at least one output, and no field runs past the end of the file
    (truncation). It does not validate operators: the runtime does that.
    """
    p = Path(path)
    if not p.exists():
        raise ModelFileError(f"model file not found: {p}")
    if not p.is_file():
        raise ModelFileError(f"model path is not a regular file: {p}")
    try:
        size = p.stat().st_size
        f = p.open("rb")
    except OSError as exc:
        raise ModelFileError(f"model file unreadable: {p}: {exc.strerror or exc}") from None
    if size == 0:
        f.close()
        raise ModelFileError(f"model file is empty (0 bytes): {p}")
    where = f"not a valid ONNX model: {p}"
    with f:
        head = f.read(8)
        for magic, kind in _FOREIGN_MAGIC:
            if head.startswith(magic):
                raise ModelFileError(f"{where}: file starts like {kind}, expected an ONNX protobuf")
        top = _walk(f, 0, size, _MODEL_FIELDS, where)
        if 1 not in top:
            raise ModelFileError(f"{where}: no ir_version field (is this an ONNX file?)")
        ir_version = top[1][0][2]
        if not 1 <= ir_version <= _MAX_IR_VERSION:
            raise ModelFileError(f"{where}: ir_version {ir_version} is out of range 1..64")
        if 7 not in top:
            raise ModelFileError(f"{where}: no graph field (is this an ONNX file?)")
        if 8 not in top:
            raise ModelFileError(f"{where}: no opset_import field")
        opsets: dict[str, int] = {}
        for _, off, length in top[8]:
            sub = _walk(f, off, off + length, {1: ("domain", _LEN), 2: ("version", _VARINT)}, where)
            domain = _read_str(f, *sub[1][0][1:]) if 1 in sub else ""
            opsets[domain] = sub[2][0][2] if 2 in sub else 0
        _, goff, glen = top[7][-1]
        graph = _walk(f, goff, goff + glen, _GRAPH_FIELDS, where + " (graph)")
        if 12 not in graph:
            raise ModelFileError(f"{where}: the graph declares no outputs")
        producer = _read_str(f, *top[2][0][1:]) if 2 in top else ""
    return OnnxHeader(
        ir_version=ir_version,
        producer_name=producer,
        opsets=opsets,
        n_nodes=len(graph.get(1, ())),
        n_initializers=len(graph.get(5, ())),
        size=size,
    )


_FOREIGN_MAGIC = (
    (b"\x89PNG", "a PNG image"),
    (b"\xff\xd8\xff", "a JPEG image"),
    (b"PK\x03\x04", "a zip archive (a PyTorch .pt/.pt2 file?)"),
    (b"\x80\x02", "a Python pickle"),
    (b"ftrt", "a TensorRT plan"),
    (b"{", "a JSON document"),
    (b"<", "an XML/HTML document"),
    (b"\x7fELF", "an ELF binary"),
    (b"#!", "a script"),
)

# ---------------------------------------------------------------------------
# writer (tests and tools)

_NP_TO_ONNX = {
    np.dtype(np.float32): 1,
    np.dtype(np.uint8): 2,
    np.dtype(np.int8): 3,
    np.dtype(np.int32): 6,
    np.dtype(np.int64): 7,
    np.dtype(np.bool_): 9,
    np.dtype(np.float16): 10,
    np.dtype(np.float64): 11,
}


def _varint(value: int) -> bytes:
    if value < 0:
        value += 1 << 64  # int64 two's complement, as protobuf encodes it
    out = bytearray()
    while True:
        b = value & 0x7F
        value >>= 7
        if value:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def _key(number: int, wire: int) -> bytes:
    return _varint(number << 3 | wire)


def _len_field(number: int, payload: bytes) -> bytes:
    return _key(number, _LEN) + _varint(len(payload)) + payload


def _str_field(number: int, text: str) -> bytes:
    return _len_field(number, text.encode())


def _int_field(number: int, value: int) -> bytes:
    return _key(number, _VARINT) + _varint(int(value))


def _tensor(name: str, array: np.ndarray) -> bytes:
    array = np.ascontiguousarray(array)
    if array.dtype not in _NP_TO_ONNX:
        raise TypeError(f"build_model: unsupported initializer dtype {array.dtype}")
    out = b"".join(_int_field(1, d) for d in array.shape)
    out += _int_field(2, _NP_TO_ONNX[array.dtype])
    out += _str_field(8, name)
    out += _len_field(9, array.astype(array.dtype.newbyteorder("<"), copy=False).tobytes())
    return out


def _attribute(name: str, value: object) -> bytes:
    out = _str_field(1, name)
    if isinstance(value, bool | int | np.integer):
        return out + _int_field(3, int(value)) + _int_field(20, 2)
    if isinstance(value, float | np.floating):
        return out + _key(2, _I32) + struct.pack("<f", float(value)) + _int_field(20, 1)
    if isinstance(value, str):
        return out + _str_field(4, value) + _int_field(20, 3)
    if isinstance(value, np.ndarray):
        return out + _len_field(5, _tensor("", value)) + _int_field(20, 4)
    if isinstance(value, Sequence) and all(isinstance(v, int | np.integer) for v in value):
        return out + b"".join(_int_field(8, int(v)) for v in value) + _int_field(20, 7)
    if isinstance(value, Sequence) and all(isinstance(v, float | int) for v in value):
        packed = b"".join(_key(7, _I32) + struct.pack("<f", float(v)) for v in value)
        return out + packed + _int_field(20, 6)
    raise TypeError(f"build_model: unsupported attribute {name}={value!r}")


@dataclass(frozen=True)
class ValueInfo:
    """A graph input/output: name, numpy dtype, dims (int, or str for a symbolic axis)."""

    name: str
    dtype: type | np.dtype = np.float32
    shape: Sequence[int | str | None] = ()

    def encode(self) -> bytes:
        dims = b""
        for d in self.shape:
            if isinstance(d, str):
                dims += _len_field(1, _str_field(2, d))
            elif d is None:
                dims += _len_field(1, b"")
            else:
                dims += _len_field(1, _int_field(1, d))
        tensor_type = _int_field(1, _NP_TO_ONNX[np.dtype(self.dtype)]) + _len_field(2, dims)
        return _str_field(1, self.name) + _len_field(2, _len_field(1, tensor_type))


@dataclass(frozen=True)
class Node:
    """One operator: `Node("Conv", ["x", "w"], ["y"], {"pads": [1, 1, 1, 1]})`."""

    op_type: str
    inputs: Sequence[str]
    outputs: Sequence[str]
    attributes: Mapping[str, object] = field(default_factory=dict)
    domain: str = ""

    def encode(self, index: int) -> bytes:
        out = b"".join(_str_field(1, i) for i in self.inputs)
        out += b"".join(_str_field(2, o) for o in self.outputs)
        out += _str_field(3, f"{self.op_type.lower()}_{index}")
        out += _str_field(4, self.op_type)
        out += b"".join(_len_field(5, _attribute(k, v)) for k, v in self.attributes.items())
        if self.domain:
            out += _str_field(7, self.domain)
        return out


def build_model(
    nodes: Iterable[Node],
    inputs: Iterable[ValueInfo],
    outputs: Iterable[ValueInfo],
    initializers: Mapping[str, np.ndarray] | None = None,
    *,
    metadata: Mapping[str, str] | None = None,
    opset: int = 17,
    ir_version: int = 8,
    graph_name: str = "graph",
    producer_name: str = "perception.onnx_proto",
) -> bytes:
    """Serialise a small ONNX ModelProto; write the bytes to a `.onnx` file."""
    graph = b"".join(_len_field(1, n.encode(i)) for i, n in enumerate(nodes))
    graph += _str_field(2, graph_name)
    for name, array in (initializers or {}).items():
        graph += _len_field(5, _tensor(name, np.asarray(array)))
    graph += b"".join(_len_field(11, v.encode()) for v in inputs)
    graph += b"".join(_len_field(12, v.encode()) for v in outputs)
    model = _int_field(1, ir_version) + _str_field(2, producer_name) + _str_field(3, "0")
    model += _len_field(7, graph)
    model += _len_field(8, _str_field(1, "") + _int_field(2, opset))
    for k, v in (metadata or {}).items():
        model += _len_field(14, _str_field(1, k) + _str_field(2, v))
    return model


# ---------------------------------------------------------------------------
# graph inputs/outputs and metadata, read without a runtime


@dataclass(frozen=True)
class TensorSpec:
    """A graph input or output: dims are ints, or str for a symbolic axis ('' unnamed)."""

    name: str
    elem_type: int
    dims: tuple[int | str, ...]

    @property
    def shape(self) -> tuple[int, ...]:
        """Dims with -1 for every dynamic axis."""
        return tuple(d if isinstance(d, int) and d > 0 else -1 for d in self.dims)


def _parse_value_info(f: BinaryIO, off: int, length: int, where: str) -> TensorSpec:
    vi = _walk(f, off, off + length, {1: ("name", _LEN), 2: ("type", _LEN)}, where)
    name = _read_str(f, *vi[1][0][1:]) if 1 in vi else ""
    elem = 0
    dims: tuple[int | str, ...] = ()
    if 2 in vi:
        _, toff, tlen = vi[2][0]
        tp = _walk(f, toff, toff + tlen, {1: ("tensor_type", _LEN)}, where)
        if 1 in tp:
            _, ttoff, ttlen = tp[1][0]
            tt = _walk(
                f, ttoff, ttoff + ttlen, {1: ("elem_type", _VARINT), 2: ("shape", _LEN)}, where
            )
            elem = tt[1][0][2] if 1 in tt else 0
            if 2 in tt:
                _, soff, slen = tt[2][0]
                shape = _walk(f, soff, soff + slen, {1: ("dim", _LEN)}, where)
                out: list[int | str] = []
                for _, doff, dlen in shape.get(1, ()):
                    dim = _walk(
                        f,
                        doff,
                        doff + dlen,
                        {1: ("dim_value", _VARINT), 2: ("dim_param", _LEN)},
                        where,
                    )
                    if 1 in dim:
                        out.append(int(dim[1][0][2]))
                    elif 2 in dim:
                        out.append(_read_str(f, *dim[2][0][1:]))
                    else:
                        out.append("")
                dims = tuple(out)
    return TensorSpec(name, int(elem), dims)


def read_onnx_io(
    path: str | os.PathLike[str],
) -> tuple[list[TensorSpec], list[TensorSpec], dict[str, str]]:
    """(inputs without initialisers, outputs, metadata_props) of an ONNX file.

    Lets engines that do not read ONNX themselves (TensorRT plans, the
    cache) know the model's declared I/O and its metadata (e.g. class names).
    """
    check_onnx_file(path)
    where = f"not a valid ONNX model: {path}"
    size = Path(path).stat().st_size
    with open(path, "rb") as f:
        top = _walk(f, 0, size, _MODEL_FIELDS, where)
        meta: dict[str, str] = {}
        for _, off, length in top.get(14, ()):
            kv = _walk(f, off, off + length, {1: ("key", _LEN), 2: ("value", _LEN)}, where)
            key = _read_str(f, *kv[1][0][1:]) if 1 in kv else ""
            meta[key] = _read_str(f, *kv[2][0][1:]) if 2 in kv else ""
        _, goff, glen = top[7][-1]
        graph = _walk(f, goff, goff + glen, _GRAPH_FIELDS, where)
        init_names = set()
        for _, off, length in graph.get(5, ()):
            t = _walk(f, off, off + length, {8: ("name", _LEN)}, where)
            if 8 in t:
                init_names.add(_read_str(f, *t[8][0][1:]))
        inputs = [_parse_value_info(f, o, n, where) for _, o, n in graph.get(11, ())]
        outputs = [_parse_value_info(f, o, n, where) for _, o, n in graph.get(12, ())]
    return [i for i in inputs if i.name not in init_names], outputs, meta
