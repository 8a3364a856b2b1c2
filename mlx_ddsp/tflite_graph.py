"""A float32 TensorFlow Lite graph, built op by op and written as a `.tflite` flatbuffer without TensorFlow.

    graph = Graph()
    x = graph.input("x", [1, 4])
    y = graph.op("LOGISTIC", [x], [1, 4])
    graph.output(y, "y")
    data = graph.to_bytes()              # a model the TFLite / LiteRT interpreter loads

The tables are TFLite's schema (`schema.fbs`), built with the `flatbuffers` runtime and the schema's generated
Python code from the `tflite` package (the `export` extra: `pip install -e ".[export]"`). Every operator is a
builtin at version 1 (float32 kernels every TFLite runtime has); constants live in the file's buffers, 16-byte
aligned as TFLite's converter lays them out. Options are given by their schema names, e.g.
`("ConcatenationOptions", {"Axis": 1})`.
"""

from __future__ import annotations

import numpy as np

try:
    import flatbuffers
    import tflite
except ImportError as e:  # pragma: no cover - the message is the point
    raise ImportError('writing .tflite files needs the export extra: pip install -e ".[export]"') from e

TENSOR_TYPES = {np.dtype(np.float32): tflite.TensorType.FLOAT32, np.dtype(np.int32): tflite.TensorType.INT32,
                np.dtype(np.bool_): tflite.TensorType.BOOL}
SCHEMA_VERSION = 3  # TFLite's schema version, the one every current runtime reads
BUFFER_ALIGNMENT = 16


class Graph:
    """One subgraph: tensors (inputs, constants, intermediates), builtin operators, inputs and outputs."""

    def __init__(self) -> None:
        self.tensors: list[dict] = []  # {"name", "shape", "dtype", "buffer"}
        self.buffers: list[bytes] = [b""]  # buffer 0 is the empty buffer every non-constant tensor points to
        self.operators: list[tuple[int, list[int], list[int], tuple | None]] = []
        self.opcodes: list[int] = []  # builtin operator codes, in the order operators first use them
        self.inputs: list[int] = []
        self.outputs: list[int] = []

    def _tensor(self, name: str, shape, dtype, buffer: int = 0) -> int:
        self.tensors.append({"name": name, "shape": [int(d) for d in shape], "dtype": np.dtype(dtype),
                             "buffer": buffer})
        return len(self.tensors) - 1

    def input(self, name: str, shape) -> int:
        """A float32 input tensor of the subgraph (the name is the one interpreters report)."""
        index = self._tensor(name, shape, np.float32)
        self.inputs.append(index)
        return index

    def const(self, array, name: str, dtype=np.float32) -> int:
        """A constant tensor holding `array` (float32 unless dtype says otherwise)."""
        array = np.ascontiguousarray(array, dtype=dtype)
        self.buffers.append(array.tobytes())
        return self._tensor(name, array.shape, array.dtype, len(self.buffers) - 1)

    def op(self, builtin: str, inputs: list[int], shape, name: str | None = None, options: tuple | None = None,
           dtype=np.float32) -> int:
        """Add builtin operator `builtin` (a name of tflite.BuiltinOperator) with one output of `shape`."""
        return self.multi_op(builtin, inputs, [shape], [name], options, dtype)[0]

    def multi_op(self, builtin: str, inputs: list[int], shapes: list, names: list[str | None],
                 options: tuple | None = None, dtype=np.float32) -> list[int]:
        """An operator with several outputs (SPLIT, SPLIT_V), one per shape."""
        code = getattr(tflite.BuiltinOperator, builtin)
        if code not in self.opcodes:
            self.opcodes.append(code)
        outputs = [self._tensor(name or f"{builtin.lower()}_{len(self.tensors)}", shape, dtype)
                   for shape, name in zip(shapes, names)]
        self.operators.append((self.opcodes.index(code), list(inputs), outputs, options))
        return outputs

    def output(self, tensor: int, name: str) -> None:
        """Make `tensor` an output of the subgraph, named `name`."""
        self.tensors[tensor]["name"] = name
        self.outputs.append(tensor)

    def to_bytes(self, description: str = "mlx_ddsp") -> bytes:
        """The model as a .tflite flatbuffer (file identifier "TFL3")."""
        b = flatbuffers.Builder(1024 + sum(len(data) for data in self.buffers))
        buffers = [_buffer(b, data) for data in self.buffers]
        tensors = [_tensor(b, t) for t in self.tensors]
        operators = [_operator(b, *op) for op in self.operators]
        opcodes = [_opcode(b, code) for code in self.opcodes]
        subgraph = _table(b, "SubGraph", {"Tensors": _table_vector(b, tensors), "Inputs": _ints(b, self.inputs),
                                          "Outputs": _ints(b, self.outputs),
                                          "Operators": _table_vector(b, operators), "Name": b.CreateString("main")})
        model = _table(b, "Model", {"Version": SCHEMA_VERSION, "OperatorCodes": _table_vector(b, opcodes),
                                    "Subgraphs": _table_vector(b, [subgraph]),
                                    "Description": b.CreateString(description),
                                    "Buffers": _table_vector(b, buffers)})
        b.Finish(model, file_identifier=b"TFL3")
        return bytes(b.Output())


def _ints(b: flatbuffers.Builder, values) -> int:
    return b.CreateNumpyVector(np.asarray(values, dtype=np.int32))


def _table_vector(b: flatbuffers.Builder, offsets: list[int]) -> int:
    b.StartVector(4, len(offsets), 4)
    for offset in reversed(offsets):
        b.PrependUOffsetTRelative(offset)
    return b.EndVector()


def _table(b: flatbuffers.Builder, table: str, fields: dict) -> int:
    """One table of the schema, e.g. ("Tensor", {"Shape": offset, "Type": 0}), through its generated builders
    (`tflite.TensorStart`, `tflite.TensorAddShape`, ...). Offsets in `fields` (strings, vectors, tables) must be
    built before: flatbuffers forbids nesting."""
    getattr(tflite, f"{table}Start")(b)
    for field, value in fields.items():
        getattr(tflite, f"{table}Add{field}")(b, value)
    return getattr(tflite, f"{table}End")(b)


def _buffer(b: flatbuffers.Builder, data: bytes) -> int:
    if not data:
        return _table(b, "Buffer", {})
    b.StartVector(1, len(data), BUFFER_ALIGNMENT)  # the bytes, aligned as TFLite's converter aligns them
    b.head = b.Head() - len(data)
    b.Bytes[b.Head() : b.Head() + len(data)] = data
    b.vectorNumElems = len(data)
    return _table(b, "Buffer", {"Data": b.EndVector()})


def _tensor(b: flatbuffers.Builder, tensor: dict) -> int:
    name, shape = b.CreateString(tensor["name"]), _ints(b, tensor["shape"])
    return _table(b, "Tensor", {"Shape": shape, "Type": TENSOR_TYPES[tensor["dtype"]], "Buffer": tensor["buffer"],
                                "Name": name})


def _operator(b: flatbuffers.Builder, opcode: int, inputs: list[int], outputs: list[int], options) -> int:
    fields = {"OpcodeIndex": opcode, "Inputs": _ints(b, inputs), "Outputs": _ints(b, outputs)}
    if options:  # ("XOptions", {"Field": value}): the union's type and its table
        table, option_fields = options
        fields.update(BuiltinOptionsType=getattr(tflite.BuiltinOptions, table),
                      BuiltinOptions=_table(b, table, option_fields))
    return _table(b, "Operator", fields)


def _opcode(b: flatbuffers.Builder, code: int) -> int:
    deprecated = min(code, tflite.BuiltinOperator.PLACEHOLDER_FOR_GREATER_OP_CODES)
    return _table(b, "OperatorCode", {"DeprecatedBuiltinCode": deprecated, "BuiltinCode": code, "Version": 1})
