"""Benchmarks behind `make bench`: the paper's Table 1 and Figure 4 (peak memory, load and inference time).

- `bench.convert`: fixture → cached float .tflite (the only step that imports TensorFlow);
- `bench.suite`: scenarios, cached compiles (`python -m compiler compile`), fresh-process measurements;
- `bench.measure`: one run of a build folder in this process, VmHWM/RssAnon/RssFile from /proc;
- `bench.report`: ratios, markdown tables, Figure 4 PNG.
"""
