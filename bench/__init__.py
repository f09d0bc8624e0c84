"""Benchmarks behind `make bench`: the paper's Table 1 and Figure 4 (peak memory, load and inference time), and
native vs converter front-end compiles (wall time, peak RSS, ops, inference time of the builds).

- `bench.convert`: fixture → cached float .tflite (imports TensorFlow, as the compile section's compiles do);
- `bench.suite`: scenarios, cached compiles (`python -m compiler compile`), fresh-process measurements;
- `bench.measure`: one run of a build folder in this process, VmHWM/RssAnon/RssFile from /proc;
- `bench.peak`: runs `tflc compile` (any module) in a fresh process and records that process's own VmHWM;
- `bench.report`: ratios, markdown tables, Figure 4 PNG, the compile section's table.
"""
