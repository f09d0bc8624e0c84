"""`tflc verify DIR --data D`: accuracy loss of a build; the command itself lives in compiler/verify.py."""

from compiler.verify import add_arguments, run  # noqa: F401

NAME = "verify"
HELP = "measure accuracy loss of a build against the float model it was compiled from"
DESCRIPTION = ("Run the build with the staged runtime on evaluation data and compare it with the float model (the "
               "recorded .keras/SavedModel source or fixture, or reference arrays). "
               "Exit 0 within budget, 1 when a budget is breached, 2 on usage or input errors.")
