"""MDF (MPI Data Format) reading, writing and validation.

Reading is lazy: `open()` reads the header only; `MDFFile.read_*` open the HDF5 file read-only
for the duration of one call and slice `/measurement/data` to the requested channels,
frequencies and frames. MDF v2.x in all its published layouts is read, and MDF v1 through a
translation into the same model (`compat.py`; docs/mdf-support.md has the table). Writers
produce MDF v2.1.0 files exactly as the specification's tables say (0-d scalars, complex data
as the {r, i} compound) and replace the target atomically; `validate()` checks any file
against those tables (`nirmpi validate FILE`).

Conventions (see docs/architecture.md): frequency-domain data = rfft(time signal) / V;
full-axis frequency index k is at k * bandwidth / (K - 1) Hz, K = V // 2 + 1.
`/measurement/frequencySelection` holds 1-based indices (MDF spec: a subset of {1, ..., L};
MPIFiles.jl writes Julia indices); in memory we use 0-based full-axis indices.

Modules: acquisition (the shared drive-field/receiver description), header (bounded, link-aware
dataset access), read (MDFFile), compat (older layouts), write, validate.
"""

from __future__ import annotations

from ..errors import MDFError, MDFWarning
from .acquisition import Acquisition
from .header import memory_limit
from .read import ExtraRef, MDFFile, open  # noqa: A004 - `open` is the module's contract name
from .validate import Deviation, validate
from .write import MDF_VERSION, write_calibration, write_measurement, write_reconstruction

# `open` is public (mdf.open) but left out of __all__ so that a star import cannot shadow the builtin
__all__ = [
    "Acquisition", "MDFFile", "ExtraRef", "write_calibration", "write_measurement",
    "write_reconstruction", "MDF_VERSION", "MDFError", "MDFWarning", "validate", "Deviation",
    "memory_limit",
]
