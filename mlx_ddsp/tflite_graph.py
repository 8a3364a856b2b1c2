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
        name = b.CreateString("main")
        tensor_vector, operator_vector = _table_vector(b, tensors), _table_vector(b, operators)
        inputs, outputs = _ints(b, self.inputs), _ints(b, self.outputs)
        tflite.SubGraphStart(b)
        tflite.SubGraphAddTensors(b, tensor_vector)
        tflite.SubGraphAddInputs(b, inputs)
        tflite.SubGraphAddOutputs(b, outputs)
        tflite.SubGraphAddOperators(b, operator_vector)
        tflite.SubGraphAddName(b, name)
        subgraph = tflite.SubGraphEnd(b)
        subgraphs, opcode_vector, buffer_vector = (_table_vector(b, [subgraph]), _table_vector(b, opcodes),
                                                   _table_vector(b, buffers))
        text = b.CreateString(description)
        tflite.ModelStart(b)
        tflite.ModelAddVersion(b, SCHEMA_VERSION)
        tflite.ModelAddOperatorCodes(b, opcode_vector)
        tflite.ModelAddSubgraphs(b, subgraphs)
        tflite.ModelAddDescription(b, text)
        tflite.ModelAddBuffers(b, buffer_vector)
        b.Finish(tflite.ModelEnd(b), file_identifier=b"TFL3")
        return bytes(b.Output())


def _ints(b: flatbuffers.Builder, values) -> int:
    return b.CreateNumpyVector(np.asarray(values, dtype=np.int32))


def _table_vector(b: flatbuffers.Builder, offsets: list[int]) -> int:
    b.StartVector(4, len(offsets), 4)
    for offset in reversed(offsets):
        b.PrependUOffsetTRelative(offset)
    return b.EndVector()


def _buffer(b: flatbuffers.Builder, data: bytes) -> int:
    vector = None
    if data:  # the bytes, aligned as TFLite's converter aligns them (kernels may read them in place)
        b.StartVector(1, len(data), BUFFER_ALIGNMENT)
        b.head = b.Head() - len(data)
        b.Bytes[b.Head() : b.Head() + len(data)] = data
        b.vectorNumElems = len(data)
        vector = b.EndVector()
    tflite.BufferStart(b)
    if vector is not None:
        tflite.BufferAddData(b, vector)
    return tflite.BufferEnd(b)


def _tensor(b: flatbuffers.Builder, tensor: dict) -> int:
    name, shape = b.CreateString(tensor["name"]), _ints(b, tensor["shape"])
    tflite.TensorStart(b)
    tflite.TensorAddShape(b, shape)
    tflite.TensorAddType(b, TENSOR_TYPES[tensor["dtype"]])
    tflite.TensorAddBuffer(b, tensor["buffer"])
    tflite.TensorAddName(b, name)
    return tflite.TensorEnd(b)


def _options(b: flatbuffers.Builder, options: tuple) -> tuple[int, int]:
    """("XOptions", {"Field": value}) -> (union type, table offset), through the schema's generated builders."""
    table, fields = options
    getattr(tflite, f"{table}Start")(b)
    for field, value in fields.items():
        getattr(tflite, f"{table}Add{field}")(b, value)
    return getattr(tflite.BuiltinOptions, table), getattr(tflite, f"{table}End")(b)


def _operator(b: flatbuffers.Builder, opcode: int, inputs: list[int], outputs: list[int], options) -> int:
    input_vector, output_vector = _ints(b, inputs), _ints(b, outputs)
    option_type, option_table = _options(b, options) if options else (None, None)
    tflite.OperatorStart(b)
    tflite.OperatorAddOpcodeIndex(b, opcode)
    tflite.OperatorAddInputs(b, input_vector)
    tflite.OperatorAddOutputs(b, output_vector)
    if options:
        tflite.OperatorAddBuiltinOptionsType(b, option_type)
        tflite.OperatorAddBuiltinOptions(b, option_table)
    return tflite.OperatorEnd(b)


def _opcode(b: flatbuffers.Builder, code: int) -> int:
    tflite.OperatorCodeStart(b)
    tflite.OperatorCodeAddDeprecatedBuiltinCode(b, min(code, tflite.BuiltinOperator.PLACEHOLDER_FOR_GREATER_OP_CODES))
    tflite.OperatorCodeAddBuiltinCode(b, code)
    tflite.OperatorCodeAddVersion(b, 1)
    return tflite.OperatorCodeEnd(b)
