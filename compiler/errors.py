"""Errors meant for users. The CLI prints their one-line message and exits non-zero; anything else is a bug."""


class TflcError(Exception):
    """Base class: one line that says what is wrong and what to do."""

    exit_code = 1


class UsageError(TflcError):
    """Bad command-line usage or option (exit code 2)."""

    exit_code = 2


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
    """Operators that the target op set does not provide."""


class PartitionError(TflcError):
    """A partition request that cannot be satisfied."""


class QuantizationError(TflcError):
    """A quantization request that cannot be satisfied (e.g. int8 without calibration data)."""


class BudgetExceeded(TflcError):
    """`tflc verify` found an accuracy budget breached (exit code 1)."""
