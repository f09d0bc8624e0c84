"""The CLI's commands, one module each.

A command module defines NAME, HELP (one line for `tflc --help`), DESCRIPTION (for `tflc NAME --help`),
`add_arguments(parser)` and `run(args) -> int`, and is listed in `compiler.cli.COMMANDS`.
Heavy imports (TensorFlow, the IR) go inside `run`, so `tflc --help` stays fast.
"""

import argparse


def add_user_code_arguments(parser: argparse.ArgumentParser, when: str) -> None:
    """--import and --unsafe-deserialization, for commands that load a user's Keras model (`when`: the
    moment it is loaded, for the help text)."""
    parser.add_argument("--import", dest="imports", metavar="MODULE_OR_FILE", action="append", default=[],
                        help=f"import this module or .py file before {when}, so the Keras classes it registers "
                             "(@keras.saving.register_keras_serializable) are known; repeatable")
    parser.add_argument("--unsafe-deserialization", action="store_true",
                        help=f"let Keras run the Python code of Lambda layers when {when}: arbitrary code "
                             "execution, only for files you trust")
