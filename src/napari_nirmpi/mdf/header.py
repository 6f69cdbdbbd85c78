"""Typed, bounded access to the datasets of one open HDF5 file, and small read helpers.

Every problem becomes an MDFError naming the file and the dataset. Limits here keep a corrupt
or crafted header from allocating memory or hanging (see docs/reliability.md).
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Iterator

import h5py
import numpy as np

from ..errors import MDFError

_PIECE_ELEMENTS = 1 << 21  # ~16 MB of complex64 per h5py read: bounds peak memory above the result
_MIN_PIECE = 1 << 14       # ... but reads are not made smaller than this (per-call overhead)
_SMALL_EXTRA = 1 << 16     # /_nirmpi datasets up to this many elements are read into `extras`
_MAX_SAMPLES = 1 << 26     # sampling points per period; real receivers use ~1e3-1e5
_MAX_HEADER_ELEMENTS = 1 << 24  # header/flag datasets (per-frame flags, SNR, TF) are far smaller
_MAX_CHUNK_BYTES = 256 << 20    # one HDF5 chunk is decompressed whole: a 2 GB chunk is a bomb
_MAX_LINK_HOPS = 16             # soft links followed per name before calling it a loop
_MAX_ABS = 1e15   # |sample| after unit conversion; real signals are < 1e6 and float32 sums of
                  # squares overflow at ~1.8e19, so larger values are corruption, not signal
_DEFAULT_MEMORY = 1 << 30       # bytes one read may allocate unless NIRMPI_MAX_MEMORY says more


def memory_limit() -> int:
    """Bytes one array read from a file may take: NIRMPI_MAX_MEMORY (e.g. "4G"), default 1 GiB."""
    text = os.environ.get("NIRMPI_MAX_MEMORY", "").strip()
    if not text:
        return _DEFAULT_MEMORY
    mult = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
    try:
        unit = text[-1].upper()
        n = float(text[:-1]) * mult[unit] if unit in mult else float(text)
    except (ValueError, IndexError):
        raise MDFError(f"NIRMPI_MAX_MEMORY: expected bytes such as 4G or 500M, got {text!r}") from None
    if not n > 0:
        raise MDFError(f"NIRMPI_MAX_MEMORY: must be positive, got {text!r}")
    return int(n)


def fmt_bytes(n: int | float) -> str:
    for unit, size in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= size:
            return f"{n / size:.3g} {unit}"
    return f"{int(n)} bytes"


def check_alloc(path, nbytes: int, what: str) -> None:
    """Refuse a read whose result would exceed memory_limit(); Python ints, no overflow."""
    limit = memory_limit()
    if int(nbytes) > limit:
        raise MDFError(f"{path}: {what} needs {fmt_bytes(nbytes)} of memory, above the limit of "
                       f"{fmt_bytes(limit)}; read fewer frames/rows or raise NIRMPI_MAX_MEMORY")


def _prod(shape) -> int:
    n = 1
    for s in shape:
        n *= int(s)
    return n


def display_path(path) -> str:
    """A path as one printable line (control characters such as newlines escaped)."""
    s = str(path)
    return s if s.isprintable() else repr(s)[1:-1]


class _Header:
    """Typed access to the datasets of one open h5py.File; every problem is an MDFError.

    Names are resolved component by component: soft links inside the file are followed (up
    to _MAX_LINK_HOPS), a dangling soft link or a loop is refused, and external links are never
    followed (they would open another file the user did not name)."""

    def __init__(self, h5: h5py.File, path: Path):
        self.h5, self.path = h5, path
        self._resolved: dict[str, tuple[str | None, bool | None]] = {}

    def err(self, name: str, what: str) -> MDFError:
        return MDFError(f"{display_path(self.path)}: dataset {name}: {what}")

    def _resolve(self, name: str, hops: int = 0) -> tuple[str | None, bool | None]:
        """-> (hard path, True dataset / False group) or (None, None) when absent."""
        key = "/" + name.strip("/")
        if key in self._resolved:
            return self._resolved[key]
        if hops > _MAX_LINK_HOPS:
            raise self.err(key, f"soft links nest deeper than {_MAX_LINK_HOPS} (a link loop)")
        parts = [p for p in key.split("/") if p and p != "."]
        cur = "/"
        result: tuple[str | None, bool | None] = ("/", False)
        for i, part in enumerate(parts):
            try:
                group = self.h5[cur]
                link = group.get(part, getlink=True)
                if link is None:
                    result = (None, None)
                    break
                if isinstance(link, h5py.ExternalLink):
                    raise self.err(key, f"{(cur.rstrip('/') + '/' + part)} is an external link to "
                                        f"{link.filename}:{link.path}; external links are not followed "
                                        f"(copy the data into this file)")
                if isinstance(link, h5py.SoftLink):
                    target = link.path if link.path.startswith("/") else cur.rstrip("/") + "/" + link.path
                    rest = "/".join(parts[i + 1:])
                    full = target.rstrip("/") + ("/" + rest if rest else "")
                    try:
                        result = self._resolve(full, hops + 1)
                    except MDFError as e:
                        if "link loop" in str(e):
                            raise self.err(key, f"soft link {cur.rstrip('/')}/{part} -> {link.path} "
                                                f"is part of a link loop") from None
                        raise
                    if result[0] is None:
                        raise self.err(key, f"soft link {cur.rstrip('/')}/{part} -> {link.path} "
                                            f"points to nothing (dangling link)")
                    break
                cls = group.get(part, getclass=True)
            except MDFError:
                raise
            except (KeyError, OSError, RuntimeError, ValueError, TypeError) as e:
                raise MDFError(f"{display_path(self.path)}: the HDF5 tree cannot be read at {key} "
                               f"({type(e).__name__}: {e})") from None
            cur = cur.rstrip("/") + "/" + part
            if cls is h5py.Dataset:
                result = (cur, True) if i == len(parts) - 1 else (None, None)
                if i < len(parts) - 1:
                    break
            elif cls is h5py.Group:
                result = (cur, False)
            else:  # a named datatype: neither a group nor a dataset
                result = (None, None)
                break
        self._resolved[key] = result
        return result

    def _kind(self, name: str) -> bool | None:
        """True for a dataset, False for a group, None if absent."""
        return self._resolve(name)[1]

    def has(self, name: str) -> bool:
        return self._kind(name) is True

    def has_group(self, name: str) -> bool:
        return self._kind(name) is False

    def dataset(self, name: str) -> h5py.Dataset:
        hard, kind = self._resolve(name)
        if kind is None:
            raise self.err(name, "missing (required by MDF v2)")
        if kind is False:
            raise self.err(name, "expected a dataset, found a group")
        try:
            obj = self.h5[hard]
        except (KeyError, OSError, RuntimeError, ValueError, TypeError) as e:
            raise self.err(name, f"cannot be opened ({type(e).__name__}: {e})") from None
        if not isinstance(obj, h5py.Dataset):
            raise self.err(name, f"expected a dataset, found {type(obj).__name__}")
        return obj

    def check_chunks(self, name: str, d: h5py.Dataset) -> None:
        """Refuse chunks whose decompressed size is a memory bomb (read whole by HDF5)."""
        try:
            chunks = d.chunks
            itemsize = d.dtype.itemsize
        except (OSError, RuntimeError, ValueError, TypeError) as e:
            raise self.err(name, f"layout cannot be read ({type(e).__name__}: {e})") from None
        if chunks is not None and _prod(chunks) * itemsize > _MAX_CHUNK_BYTES:
            raise self.err(name, f"HDF5 chunk shape {tuple(chunks)} decompresses to "
                                 f"{fmt_bytes(_prod(chunks) * itemsize)} per chunk, above "
                                 f"{fmt_bytes(_MAX_CHUNK_BYTES)}; rewrite the file with smaller chunks")

    def raw(self, name: str) -> np.ndarray:
        d = self.dataset(name)
        if _prod(d.shape or ()) > _MAX_HEADER_ELEMENTS:  # header datasets are small (Python ints: no wrap-around)
            raise self.err(name, f"implausibly large for a header dataset: shape {d.shape}")
        self.check_chunks(name, d)
        try:
            return np.asarray(d[()])
        except (OSError, RuntimeError, ValueError, TypeError) as e:
            raise self.err(name, f"cannot be read ({type(e).__name__}: {e})") from None

    def numbers(self, name: str, *, integer=False, shape=None, finite=True) -> np.ndarray:
        a = self.raw(name)
        if a.dtype.kind not in "iufb":
            raise self.err(name, f"expected {'integers' if integer else 'numbers'}, got dtype {a.dtype}")
        if shape is not None and a.shape != tuple(shape):
            raise self.err(name, f"expected shape {tuple(shape)}, got {a.shape}")
        if a.dtype.kind == "f":
            if finite and not np.all(np.isfinite(a)):
                raise self.err(name, "contains NaN or Inf")
            if integer:
                if not np.all(np.isfinite(a)) or np.any(a != np.round(a)) or np.any(np.abs(a) > 2.0 ** 62):
                    raise self.err(name, f"expected integers, got {a.ravel()[:6]}")
                a = a.astype(np.int64)
        elif integer:
            if a.dtype.kind == "u" and a.size and int(a.max()) > 2 ** 63 - 1:
                raise self.err(name, f"integer {int(a.max())} is out of range")
            a = a.astype(np.int64)
        return a

    def scalar(self, name: str, *, integer=False, positive=False, default=None):
        """A scalar stored 0-d (as the spec and MPIFiles.jl) or as a one-element array."""
        if default is not None and not self.has(name):
            return default
        a = self.numbers(name, integer=integer)
        if a.size != 1:
            raise self.err(name, f"expected a single value, got shape {a.shape}")
        v = int(a.ravel()[0]) if integer else float(a.ravel()[0])
        if positive and not v > 0:
            raise self.err(name, f"expected a positive value, got {v}")
        return v

    def flag(self, name: str, default: bool | None = None) -> bool:
        """An Int8 flag (0/1); HDF5 booleans (h5py enum) are accepted too."""
        if not self.has(name):
            if default is None:
                raise self.err(name, "missing (required Int8 flag)")
            return default
        v = self.scalar(name, integer=True)
        if v not in (0, 1):
            raise self.err(name, f"expected a flag 0 or 1, got {v}")
        return bool(v)

    def string(self, name: str, default: str | None = None) -> str:
        """Fixed- or variable-length, 0-d or a one-element array; padding stripped."""
        if not self.has(name):
            if default is None:
                raise self.err(name, "missing (required string)")
            return default
        a = self.raw(name)
        v = a.ravel()[0] if a.size >= 1 else None
        if isinstance(v, (bytes, np.bytes_)):
            try:
                return bytes(v).decode("utf-8").rstrip("\x00 ")
            except UnicodeDecodeError:
                raise self.err(name, "string is not valid UTF-8") from None
        if isinstance(v, str):
            return v.rstrip("\x00 ")
        raise self.err(name, f"expected a string, got dtype {a.dtype}")

    def complex_array(self, name: str, shape: tuple[int, ...]) -> np.ndarray:
        a = self.raw(name)
        if a.dtype.kind == "c" and a.shape == shape:
            out = a.astype(np.complex128)
        elif a.dtype.kind in "iuf" and a.shape == shape + (2,):
            out = a[..., 0].astype(np.float64) + 1j * a[..., 1].astype(np.float64)
        else:
            raise self.err(name, f"expected complex {shape} ({{r, i}} compound) or float "
                                 f"{shape + (2,)}, got {a.dtype} {a.shape}")
        if not np.all(np.isfinite(out)):
            raise self.err(name, "contains NaN or Inf")
        return out


def _meander_permutation(size_xyz: tuple[int, int, int]) -> np.ndarray:
    """0-based stored foreground index of each x-fastest grid position for a meandering
    (snake) scan: a line runs backwards when the sum of the slower 0-based indices is odd."""
    nx, ny, nz = size_xyz
    iz, iy, ix = np.meshgrid(np.arange(nz), np.arange(ny), np.arange(nx), indexing="ij")
    sx = np.where((iy + iz) % 2 == 1, nx - 1 - ix, ix)
    sy = np.where(iz % 2 == 1, ny - 1 - iy, iy)
    return (sx + nx * (sy + ny * iz)).ravel()


def _lenient_flag(h: _Header, name: str) -> bool:
    try:
        return h.flag(name, default=False)
    except MDFError:
        return False


def _per_channel(h: _Header, name: str, D: int, J: int) -> np.ndarray:
    """Drive-field strength/phase (J x D x F in v2.1; older D or J x D): first period, first F."""
    a = h.numbers(name)
    if a.ndim == 3 and a.shape[1] == D and a.shape[0] >= 1 and a.shape[2] >= 1:
        return a[0, :, 0]
    if a.ndim == 2 and a.shape[0] == D:
        return a[:, 0]
    if a.ndim == 2 and a.shape[1] == D:
        return a[0, :]
    if a.ndim == 1 and a.shape[0] == D:
        return a
    raise h.err(name, f"expected shape (J={J}, D={D}, F), got {a.shape}")


def _to_complex(a: np.ndarray) -> np.ndarray:
    """A float (..., 2) array (real, imag) as complex without a copy where possible."""
    if a.dtype == np.float32 or a.dtype == np.float64:
        a = np.ascontiguousarray(a)
        return a.view(np.complex64 if a.dtype == np.float32 else np.complex128)[..., 0]
    a = a.astype(np.float32 if a.dtype.itemsize <= 2 else np.float64)
    return a.view(np.complex64 if a.dtype == np.float32 else np.complex128)[..., 0]


def _as_index(ix: np.ndarray):
    """Sorted unique index array -> slice when contiguous (a cheaper h5py selection)."""
    if len(ix) and int(ix[-1]) - int(ix[0]) + 1 == len(ix):
        return slice(int(ix[0]), int(ix[-1]) + 1)
    return ix


def _chunks(ix: np.ndarray, size: int) -> Iterator[tuple[slice, np.ndarray]]:
    size = max(1, int(size))
    for s in range(0, len(ix), size):
        yield slice(s, min(s + size, len(ix))), ix[s:s + size]


def _sorted_request(values, n: int, what: str, path: Path) -> tuple[np.ndarray, np.ndarray | None]:
    """Validate integer indices in [0, n); return (sorted unique, reorder map or None)."""
    a = np.asarray(values)
    if a.ndim == 0:
        a = a.reshape(1)
    if a.ndim != 1 or (a.size and a.dtype.kind not in "iu"):
        if a.size and a.dtype.kind == "f" and np.all(a == np.round(a)):
            a = a.astype(np.int64)
        else:
            raise MDFError(f"{path}: {what} must be a 1-D list of integers, got {values!r}")
    a = a.astype(np.int64)
    if a.size and (a.min() < 0 or a.max() >= n):
        raise MDFError(f"{path}: {what} must lie in [0, {n - 1}], got {a.min()}..{a.max()}")
    u = np.unique(a)
    if len(u) == len(a) and np.all(u == a):
        return u, None
    return u, np.searchsorted(u, a)




def _h5open(path: Path) -> h5py.File:
    """Open read-only; only regular files (a FIFO or device named .mdf would block or stream)."""
    shown = display_path(path)
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise MDFError(f"{shown}: file does not exist") from None
    except OSError as e:
        raise MDFError(f"{shown}: cannot be accessed ({e.strerror})") from None
    if stat.S_ISDIR(st.st_mode):
        raise MDFError(f"{shown}: is a directory, expected an MDF (HDF5) file")
    if not stat.S_ISREG(st.st_mode):
        kind = ("a FIFO (named pipe)" if stat.S_ISFIFO(st.st_mode) else "a socket" if stat.S_ISSOCK(st.st_mode)
                else "a device" if stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode) else "not a regular file")
        raise MDFError(f"{shown}: is {kind}, expected a regular MDF (HDF5) file")
    try:
        return h5py.File(path, "r")
    except FileNotFoundError:
        raise MDFError(f"{shown}: file does not exist") from None
    except IsADirectoryError:
        raise MDFError(f"{shown}: is a directory, expected an MDF (HDF5) file") from None
    except (OSError, RuntimeError, ValueError) as e:
        raise MDFError(f"{shown}: not a readable HDF5 file ({e})") from None
