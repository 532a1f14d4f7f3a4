"""idx files (the MNIST on-disk format): checked reading, atomic writing, and safe gunzip.

An idx file is a big-endian header (magic, then one uint32 size per dimension) followed by the raw
values. MNIST-style files hold uint8 values: magic 2051 (0x0803) for images (N, H, W) and 2049
(0x0801) for labels (N,). Every failure is a `DataError` naming the file, what is wrong and the fix,
so a corrupt or truncated download never surfaces as a stack trace from inside a loader.
"""

from __future__ import annotations

import gzip
import math
import os
import shutil
import struct
import tempfile
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

import numpy as np
import torch
from torch import Tensor

from .base import DataError

IMAGES_MAGIC = 2051  # uint8, 3 dimensions
LABELS_MAGIC = 2049  # uint8, 1 dimension
_DEFAULT_FIX = "delete the file's folder and prepare the data again (`bench data prepare`, or any fit)"


def _fail(path: Path, problem: str, fix: str) -> DataError:
    return DataError(f"{path}: {problem}; fix: {fix}")


def idx_shape(path: Path, magic: int, fix: str = _DEFAULT_FIX) -> tuple[int, ...]:
    """The dimensions the header of `path` declares, after checking its magic and the file's size.

    Reads only the header, so it is cheap enough to run on every `prepare`.
    """
    n_dims = magic & 0xFF
    header_size = 4 * (1 + n_dims)
    try:
        size = path.stat().st_size
        with path.open("rb") as f:
            header = f.read(header_size)
    except FileNotFoundError:
        raise _fail(path, "file is missing", fix) from None
    except OSError as e:
        raise _fail(path, f"cannot be read ({e.strerror})", fix) from None
    if len(header) < 4:
        raise _fail(path, f"truncated: {size} bytes, not even an idx header", fix)
    found = struct.unpack(">I", header[:4])[0]
    if found != magic:
        raise _fail(path, f"not an idx file with magic {magic} (found {found})", fix)
    if len(header) < header_size:
        raise _fail(path, f"truncated header ({size} bytes)", fix)
    shape = struct.unpack(f">{n_dims}I", header[4:])
    expected = header_size + math.prod(shape)
    if size != expected:
        what = "truncated" if size < expected else "has trailing bytes"
        raise _fail(path, f"{what}: {size} bytes, header {tuple(shape)} needs {expected}", fix)
    return tuple(shape)


def read_idx(path: Path, magic: int, fix: str = _DEFAULT_FIX) -> Tensor:
    """The uint8 tensor stored in `path`, shaped as its header says."""
    shape = idx_shape(path, magic, fix)
    offset = 4 * (1 + len(shape))
    data = np.fromfile(path, dtype=np.uint8, offset=offset)
    if data.size != math.prod(shape):  # the file changed between the check and the read
        raise _fail(path, f"holds {data.size} values, header {shape} needs {math.prod(shape)}", fix)
    return torch.from_numpy(data.reshape(shape))


def idx_bytes(values: np.ndarray | Tensor) -> bytes:
    """`values` (uint8, 1 or 3 dimensions) encoded as an idx file."""
    array = values.numpy() if isinstance(values, Tensor) else values
    if array.dtype != np.uint8 or array.ndim not in (1, 3):
        raise ValueError(f"idx files here hold uint8 labels (N,) or images (N, H, W); got {array.dtype} {array.shape}")
    magic = IMAGES_MAGIC if array.ndim == 3 else LABELS_MAGIC
    return struct.pack(f">{1 + array.ndim}I", magic, *array.shape) + np.ascontiguousarray(array).tobytes()


def atomic_write(path: Path, write: Callable[[BinaryIO], object]) -> None:
    """Create `path` through `write(file)` on a temporary file in the same folder, then rename it.

    A reader never sees a half-written file, and an interrupted write leaves no file at `path`.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_idx(path: Path, values: np.ndarray | Tensor) -> None:
    """Write `values` (uint8 labels (N,) or images (N, H, W)) to `path` as an idx file, atomically."""
    data = idx_bytes(values)
    atomic_write(path, lambda f: f.write(data))


def gunzip(src: Path, dst: Path, fix: str) -> None:
    """Decompress `src` into `dst` atomically; a corrupt or truncated archive raises `DataError`."""

    def copy(out: BinaryIO) -> None:
        with gzip.open(src, "rb") as f:
            shutil.copyfileobj(f, out, length=1 << 20)

    try:
        atomic_write(dst, copy)
    except (OSError, EOFError, zlib.error) as e:  # gzip.BadGzipFile is an OSError
        raise _fail(src, f"not a valid gzip archive ({type(e).__name__}: {e})", fix) from None
