"""File helpers shared by the build writer and the runtime: checked opens, hashing, atomic writes, .npz reading.

Build folders come from other people. A file named by a manifest is opened only through `open_member`:
a plain name inside the folder, no symlink (O_NOFOLLOW), no device or FIFO (O_NONBLOCK, then fstat),
with one message whether or not the file exists, so a manifest can neither escape the folder, hang the
reader nor probe which outside files exist.
"""

from __future__ import annotations

import errno
import hashlib
import mmap
import os
import re
import stat
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np

from compiler.errors import BuildFolderError, WriteError

_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_NONBLOCK = getattr(os, "O_NONBLOCK", 0)
_CLOEXEC = getattr(os, "O_CLOEXEC", 0)


def sha256_fd(fd: int) -> str:
    h = hashlib.sha256()
    os.lseek(fd, 0, os.SEEK_SET)
    while chunk := os.read(fd, 1 << 20):
        h.update(chunk)
    os.lseek(fd, 0, os.SEEK_SET)
    return h.hexdigest()


def sha256_file(path: str | os.PathLike) -> str:
    with open(path, "rb") as f:
        return sha256_fd(f.fileno())


def _plain(name: str) -> bool:
    return (isinstance(name, str) and name not in ("", ".", "..") and "/" not in name and "\\" not in name
            and "\0" not in name and not os.path.isabs(name))


@contextmanager
def open_member(folder: str | os.PathLike, name: str, error: type[Exception] = BuildFolderError) -> Iterator[int]:
    """An fd (O_RDONLY) on regular file `name` directly inside `folder`; anything else is one `error` line."""
    bad = error(f"{folder}: {name} is missing or not a regular file inside the folder")
    if not _plain(name):
        raise bad
    try:
        dfd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | _CLOEXEC)
    except OSError:
        raise error(f"{folder}: cannot open the build folder") from None
    try:
        fd = os.open(name, os.O_RDONLY | _NOFOLLOW | _NONBLOCK | _CLOEXEC, dir_fd=dfd)
    except OSError:
        raise bad from None  # missing, a symlink, unreadable: the same words, so nothing is revealed
    finally:
        os.close(dfd)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise bad
        yield fd
    finally:
        os.close(fd)


@contextmanager
def open_regular(path: str | os.PathLike, error: type[Exception]) -> Iterator[int]:
    """An fd on a file the user named (symlinks followed); devices, FIFOs and folders are one `error` line."""
    try:
        fd = os.open(path, os.O_RDONLY | _NONBLOCK | _CLOEXEC)
    except FileNotFoundError:
        raise error(f"{path}: no such file") from None
    except OSError as e:
        raise error(f"{path}: cannot read ({e.strerror or e})") from None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise error(f"{path}: not a regular file")
        yield fd
    finally:
        os.close(fd)


def read_fd(fd: int, max_bytes: int, label: str, error: type[Exception] = BuildFolderError) -> bytes:
    """All of a file's bytes, refusing (before reading further) anything past `max_bytes`."""
    chunks, n = [], 0
    while chunk := os.read(fd, 1 << 20):
        n += len(chunk)
        if n > max_bytes:
            raise error(f"{label}: more than the cap of {max_bytes:,} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def read_member(folder: str | os.PathLike, name: str, max_bytes: int) -> bytes:
    with open_member(folder, name) as fd:
        return read_fd(fd, max_bytes, f"{Path(folder) / name}")


def map_fd(fd: int, label: str, error: type[Exception]) -> mmap.mmap:
    """A read-only map of a regular file (the map outlives the fd)."""
    if os.fstat(fd).st_size == 0:
        raise error(f"{label}: empty file, not a TFLite flatbuffer")
    return mmap.mmap(fd, 0, access=mmap.ACCESS_READ)


def fd_path(fd: int, fallback: str | os.PathLike) -> str:
    """A path that opens exactly the file behind `fd` (Linux /proc), so a library that wants a path reads
    the file we checked, not whatever a rename swapped in since; else the original path."""
    p = f"/proc/self/fd/{fd}"
    return p if os.path.exists(p) else os.fspath(fallback)


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


def write_error(path: str | os.PathLike, e: OSError) -> WriteError:
    reason = e.strerror or str(e)
    if e.errno in (errno.ENOSPC, errno.EDQUOT):
        reason += "; free some space and run again"
    return WriteError(f"{path}: cannot write it ({reason})")


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
        raise write_error(path, e) from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


DATA_CAP = int(os.environ.get("TFLC_MAX_DATA_BYTES", 8 << 30))  # calibration/verify data: generous, not unbounded
Expect = dict  # input name -> expected shape (a tuple of ints; None where any size is accepted)


def read_npz(path: str | os.PathLike, error: type[Exception], *, expect: Expect | None = None,
             max_bytes: int = DATA_CAP, single: str | None = None) -> dict[str, np.ndarray]:
    """Arrays of an .npz (or an .npy, named `single`) by name, checked before anything is decompressed.

    Each member's name, dtype and shape come from its .npy header (a few hundred bytes). Unknown names
    (when `expect` is given), shapes other than expected, object arrays and a declared total above
    `max_bytes` are an `error` line, so a small file that inflates to gigabytes is refused unread."""
    with open_regular(path, error) as fd:
        return read_npz_fd(fd, str(path), error, expect=expect, max_bytes=max_bytes, single=single)


def read_npz_fd(fd: int, label: str, error: type[Exception], *, expect: Expect | None = None,
                max_bytes: int = DATA_CAP, single: str | None = None) -> dict[str, np.ndarray]:
    import zipfile

    with os.fdopen(os.dup(fd), "rb") as f:
        f.seek(0)
        is_npy = f.read(6) == b"\x93NUMPY"
        f.seek(0)
        try:
            if is_npy:
                if single is None:
                    raise error(f"{label}: an .npy holds one array; this needs an .npz keyed by input name")
                _npy_header(f, single, label, error, expect, max_bytes)
                f.seek(0)
                return {single: np.lib.format.read_array(f, allow_pickle=False)}
            with zipfile.ZipFile(f) as zf:
                infos = zf.infolist()
                total = 0
                for info in infos:
                    with zf.open(info) as m:
                        total += _npy_header(m, _member_name(info, infos, label, error, expect), label, error,
                                             expect, max_bytes - total)
                out = {}
                for info in infos:
                    with zf.open(info) as m:
                        out[info.filename[:-4]] = np.lib.format.read_array(m, allow_pickle=False)
                return out
        except error:
            raise
        except Exception as e:  # zipfile/ValueError/OSError/EOFError all mean "not a readable npz"
            first = str(e).splitlines()[0] if str(e) else type(e).__name__
            raise error(f"{label}: not a readable .npz file ({first})") from None


def _member_name(info, infos: list, label: str, error: type[Exception], expect: Expect | None) -> str:
    name = info.filename
    if not name.endswith(".npy") or sum(i.filename == name for i in infos) > 1:
        raise error(f"{label}: member {name!r} is not one .npy array")
    key = name[:-4]
    if expect is not None and key not in expect:
        raise error(f"{label}: unknown input {key!r}; the build's inputs are {', '.join(expect)}")
    return key


def _npy_header(f, name: str, label: str, error: type[Exception], expect: Expect | None, budget: int) -> int:
    """Check one .npy header (leaving `f` at the data); returns the array's declared byte size."""
    import math

    fmt = np.lib.format
    version = fmt.read_magic(f)
    reader = fmt.read_array_header_1_0 if version == (1, 0) else fmt.read_array_header_2_0
    shape, _fortran, dtype = reader(f)
    if dtype.hasobject:
        raise error(f"{label}: array {name!r} holds Python objects; only numeric arrays are read")
    want = tuple(expect[name]) if expect is not None and name in expect else None
    if want is not None and (len(shape) != len(want) or any(w is not None and w != d for w, d in zip(want, shape))):
        raise error(f"{label}: input {name!r}: shape {tuple(expect[name])} expected, got {tuple(shape)}")
    nbytes = math.prod(shape) * dtype.itemsize
    if nbytes > budget:
        raise error(f"{label}: array {name!r} declares {nbytes:,} bytes, more than this file may hold")
    return nbytes


# ------------------------------------------------------------------------------------------ keyed cache

def cache_dir() -> Path:
    """tflc's per-user cache folder ($TFLC_CACHE_DIR, else $XDG_CACHE_HOME/tflc, else ~/.cache/tflc)."""
    if os.environ.get("TFLC_CACHE_DIR"):
        return Path(os.environ["TFLC_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "tflc"


_KEY: bytes | None = None


def secret_key() -> bytes:
    """A per-user secret (32 random bytes, file mode 0600 in the cache folder) for HMACs over what tflc
    trusts later: checkpoints and "this stage file passed validation". It lives outside build and
    checkpoint folders, so whoever edits those cannot forge a record. Without a usable cache folder the
    key lives for this process only (nothing is trusted across runs then)."""
    global _KEY
    if _KEY is None:
        try:
            _KEY = _load_or_create_key(cache_dir() / "key")
        except OSError:
            _KEY = os.urandom(32)
    return _KEY


def _load_or_create_key(path: Path) -> bytes:
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NOFOLLOW, 0o600)
    except FileExistsError:
        pass
    else:
        with os.fdopen(fd, "wb") as f:
            f.write(os.urandom(32))
            f.flush()
            os.fsync(f.fileno())
    fd = os.open(path, os.O_RDONLY | _NOFOLLOW | _NONBLOCK)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_mode & 0o077 or st.st_uid != os.getuid():
            raise PermissionError(f"{path}: not a private key file")
        key = os.read(fd, 33)
    finally:
        os.close(fd)
    if len(key) != 32:
        raise PermissionError(f"{path}: not a 32-byte key")
    return key


def mac(*parts: str) -> str:
    """HMAC-SHA256 (hex) of the parts under the user's secret key."""
    import hmac

    return hmac.new(secret_key(), "\0".join(parts).encode(), hashlib.sha256).hexdigest()


def mac_ok(expected: Any, *parts: str) -> bool:
    import hmac

    return isinstance(expected, str) and hmac.compare_digest(expected, mac(*parts))


# ------------------------------------------------------------------------------------------ stale temp files

def pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's live process
    return True


_TEMP = re.compile(r"\.(?P<target>.+)\.(?P<kind>tmp|old)-(?P<pid>\d+)")


def stale(folder: Path, kinds: tuple[str, ...] = ("tmp",)) -> list[tuple[Path, str, str]]:
    """(path, target name, kind) of `.NAME.tmp-PID` / `.NAME.old-PID` entries in `folder` whose PID is no
    longer running: what a killed tflc left behind."""
    out = []
    try:
        names = os.listdir(folder)
    except OSError:
        return out
    for name in names:
        m = _TEMP.fullmatch(name)
        if m and m["kind"] in kinds and int(m["pid"]) != os.getpid() and not pid_alive(int(m["pid"])):
            out.append((folder / name, m["target"], m["kind"]))
    return out


def _say(line: str) -> None:
    import sys

    print(f"tflc: {line}", file=sys.stderr, flush=True)


def _remove(p: Path) -> None:
    import shutil

    if p.is_dir() and not p.is_symlink():
        shutil.rmtree(p, ignore_errors=True)
    else:
        p.unlink(missing_ok=True)


def recover_folder(out: Path) -> None:
    """Undo what a killed compile left next to build folder `out`: a `.X.old-PID` whose swap never finished
    becomes X again when X is missing (the previous build is never lost); other leftovers are removed."""
    for p, target, kind in stale(out.parent, ("tmp", "old")):
        if target != out.name:
            continue
        if kind == "old" and p.is_dir() and not os.path.lexists(out):
            os.replace(p, out)
            fsync_dir(out.parent)
            _say(f"restored {out} from {p.name}, left by a tflc that was killed while replacing it")
        else:
            _remove(p)
            _say(f"removed {p}, left by a tflc that was killed (pid {p.name.rsplit('-', 1)[1]})")


def check_output_folder(out: Path, source: str | None, force: bool) -> None:
    """Refuse an -o that would lose something: the current folder, the source model, or a folder that is
    not a tflc build (unless `force`)."""
    from compiler.errors import UsageError
    from compiler.manifest import MANIFEST, load

    target = out.resolve()
    cwd = Path.cwd().resolve()
    if target == cwd or target in cwd.parents:
        raise UsageError(f"-o {out}: is or contains the current folder; choose a new folder such as build/NAME")
    if source and not source.startswith("fixtures:"):
        src = Path(source).resolve()
        if src == target or target in src.parents:
            raise UsageError(f"-o {out}: is or contains the source {source}; choose another folder")
    if not os.path.lexists(out) or force:
        return
    if not out.is_dir() or out.is_symlink():
        raise UsageError(f"-o {out}: exists and is not a folder; remove it or pass --force")
    if not any(out.iterdir()):
        return
    try:
        if (out / MANIFEST).exists():
            load(out)
            return
    except Exception:  # noqa: BLE001  (any failure means "not a build we wrote")
        pass
    raise UsageError(f"-o {out}: is not a tflc build folder (no valid {MANIFEST}), so it would be deleted; "
                     "choose another folder or pass --force")


def export_tempdir():
    """A TemporaryDirectory for the Keras export, named with our PID; first removes those whose tflc died."""
    import tempfile

    tmp = Path(tempfile.gettempdir())
    try:
        names = os.listdir(tmp)
    except OSError:
        names = []
    for name in names:
        parts = name.split("-")
        if name.startswith("tflc-export-") and len(parts) >= 4 and parts[2].isdigit() \
                and not pid_alive(int(parts[2])) and int(parts[2]) != os.getpid():
            _remove(tmp / name)
    return tempfile.TemporaryDirectory(prefix=f"tflc-export-{os.getpid()}-")
