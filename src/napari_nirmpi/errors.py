"""Exceptions raised by napari-nirmpi. Every message names the file/dataset and what was expected."""


class NirmpiError(Exception):
    """Base class of every error this package raises on bad input."""


class MDFError(NirmpiError):
    """A file is not a readable MDF file, or one of its datasets is malformed."""


class ProblemMismatch(NirmpiError):
    """System matrix and measurement (or a parameter) do not fit together."""


class TrainingError(NirmpiError):
    """Training could not continue (e.g. the loss became NaN/Inf)."""


class CheckpointError(NirmpiError):
    """A checkpoint file is foreign, corrupt or of an unsupported version."""


class MDFWarning(UserWarning):
    """A file was read, but something about it deserves the user's attention (see
    docs/reliability.md: "accepted with a warning")."""
