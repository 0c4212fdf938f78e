"""One exception hierarchy. Messages name the file/option and the fix.

``cli`` maps every ``XauditError`` to exit code 2 with a one-line message;
anything else is an unexpected error (exit 1).
"""


class XauditError(Exception):
    """Base class: bad input or usage that the user can fix (CLI exit 2)."""

    exit_code = 2


class ModelLoadError(XauditError):
    """A model file/bundle could not be loaded (missing, corrupt, unknown format)."""


class ImageError(XauditError):
    """An image could not be read or decoded."""


class LabelError(XauditError):
    """Labels do not fit the model (count differs from output width, unreadable file)."""


class CaptureFormatError(XauditError):
    """A capture file/record does not follow the SageMaker data-capture schema."""


class BaselineError(XauditError):
    """A baseline file is missing, malformed, or belongs to another model."""


class UnsupportedOperation(XauditError):
    """The model cannot do what was asked (e.g. gradients on a black-box model)."""


class TrackingError(XauditError):
    """The MLflow tracking store cannot be reached or written."""
