"""Errors meant for users. The CLI prints their one-line message and exits non-zero; anything else is a bug.

Exit codes: 0 ok, 1 a check failed (a verify budget breached, or a target op set lacks kernels the model
needs), 2 a usage or input error (every other TflcError), 3 an internal error (a bug in tflc: the CLI prints the traceback and asks for a report).
"""

EXIT_OK, EXIT_BUDGET, EXIT_USAGE, EXIT_INTERNAL = 0, 1, 2, 3


class TflcError(Exception):
    """Base class: one line that says what is wrong and what to do."""

    exit_code = EXIT_USAGE


class UsageError(TflcError):
    """Bad command-line usage or option."""


class UnknownFixtureError(TflcError):
    """A `fixtures:NAME` that the registry does not know."""


class SourceError(TflcError):
    """A model source that is missing, unreadable or of an unknown kind."""


class FlatbufferError(TflcError):
    """A .tflite file that is not a valid TFLite flatbuffer (truncated, corrupt, inconsistent)."""


class ConversionError(TflcError):
    """The Keras model could not be lowered to TFLite."""


class PipelineError(TflcError):
    """An unknown pass, an unknown option or a bad option value."""


class BuildFolderError(TflcError):
    """A build folder that is missing a file, has a hash mismatch or a bad manifest."""


class InputError(TflcError):
    """Inputs with a wrong name, shape or dtype for a build."""


class OpsetError(TflcError):
    """Operators that the target op set does not provide (a failed check, like a breached budget)."""

    exit_code = EXIT_BUDGET


class PartitionError(TflcError):
    """A partition request that cannot be satisfied."""


class QuantizationError(TflcError):
    """A quantization request that cannot be satisfied (e.g. int8 without calibration data)."""


class StageError(TflcError):
    """LiteRT refused or failed on a stage file (allocation, XNNPACK setup, an unresolved custom op)."""


class WriteError(TflcError):
    """A file or folder could not be written (full disk, permissions, a missing parent folder)."""


class BudgetExceeded(TflcError):
    """`tflc verify` found an accuracy budget breached."""

    exit_code = EXIT_BUDGET
