"""The CLI's commands, one module each.

A command module defines NAME, HELP (one line for `tflc --help`), DESCRIPTION (for `tflc NAME --help`),
`add_arguments(parser)` and `run(args) -> int`, and is listed in `compiler.cli.COMMANDS`.
Heavy imports (TensorFlow, the IR) go inside `run`, so `tflc --help` stays fast.
"""
