"""napari-nirmpi: MPI reconstruction with Kaczmarz and grid-agnostic neural implicit representations."""

__version__ = "0.1.0"

from .errors import CheckpointError, MDFError, NirmpiError, ProblemMismatch, TrainingError  # noqa: E402
from .grid import Grid  # noqa: E402
from .problem import Problem  # noqa: E402

__all__ = [
    "__version__", "Grid", "Problem",
    "NirmpiError", "MDFError", "ProblemMismatch", "TrainingError", "CheckpointError",
]
