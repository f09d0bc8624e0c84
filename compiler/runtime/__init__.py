"""Runtime: run .tflite files and build folders with LiteRT.

- `run_tflite(model, inputs)`: one .tflite (path or bytes), by tensor name.
- `intermediates(model, inputs)`: every main-subgraph tensor after one invoke.
- `StagedModel(build_dir)(inputs)`: a build folder, stage by stage, with checkpoint/resume.
- `load_inputs` / `save_outputs`: .npz helpers for the CLI; `quantize` / `dequantize`: affine helpers.
"""

from compiler.runtime.litert import dequantize, intermediates, interpreter, quantize, run_tflite
from compiler.runtime.staged import Checkpoint, StagedModel, inputs_digest, load_inputs, save_outputs

__all__ = ["run_tflite", "intermediates", "interpreter", "quantize", "dequantize", "StagedModel", "Checkpoint",
           "inputs_digest", "load_inputs", "save_outputs"]
