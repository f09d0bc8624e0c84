"""File helpers shared by the build writer and the runtime: hashing, atomic writes, .npz reading."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any, Callable

import numpy as np

from compiler.errors import WriteError


def sha256_file(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def fsync_dir(path: Path) -> None:
    """Make a rename in `path` durable (best effort: some filesystems refuse fsync on folders)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write(path: str | os.PathLike, write: Callable[[Any], None]) -> None:
    """Write via a temp file in the same folder, fsync, then rename over `path`: a crash leaves
    either the old file or the complete new one, never a partial file."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise WriteError(f"{path}: cannot write it ({e.strerror or e})") from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def read_npz(path: str | os.PathLike, error: type[Exception]) -> dict[str, np.ndarray]:
    """Arrays of an .npz by name; `error` (a TflcError subclass) for a missing or unreadable file."""
    p = Path(path)
    if not p.is_file():
        raise error(f"{p}: no such file")
    try:
        with np.load(p, allow_pickle=False) as z:
            return {k: np.asarray(z[k]) for k in z.files}
    except Exception as e:  # zipfile/ValueError/OSError all mean "not a readable npz"
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise error(f"{p}: not a readable .npz file ({first})") from None
