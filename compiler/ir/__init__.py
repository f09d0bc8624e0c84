"""tflc's graph IR. See core.py for the classes and flatbuffer.py for reading and writing .tflite."""
from compiler.ir.core import (Buffer, Model, Operator, Quantization, SignatureDef, Subgraph, Tensor,  # noqa: F401
                              numpy_dtype, op_name, tensor_type_of, type_name)
