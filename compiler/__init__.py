"""tflc: compile large Keras models into partitioned, quantized LiteRT flatbuffers for phones."""
__version__ = "0.1.0"
