"""`tflc ops FILE|DIR`: the command itself lives in kernels/cli.py, next to the catalogue it reads."""

from kernels.cli import add_arguments, run  # noqa: F401

NAME = "ops"
HELP = "list the kernels (op, version) a model needs; check them against a target"
DESCRIPTION = ("List every (op, version) a .tflite or build folder needs, check it against a target op set, and "
               "print a table, JSON or C++ registration source.")
