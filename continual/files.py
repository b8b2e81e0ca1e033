"""Files written safely: atomic writes, the user's file mode, content checksums, run locks.

Everything ``continual`` writes (results, ``config.json``, checkpoints, pretrained backbones,
figures, ``compare.md``/``.csv``) goes through :func:`atomic_write_bytes`:

- **Atomic**: written to a temporary file ``.NAME.XXXXXXXX.tmp`` in the same folder, flushed to
  disk, then renamed over ``NAME`` (and the folder flushed, where the file system allows); a
  reader never sees a half-written file and a good file is only ever replaced whole. On any
  failure the temporary file is removed; one left by a kill is removed by the next process that
  takes the run's lock (:func:`remove_temporaries`).
- **Mode**: the file gets the mode the user's umask gives a normal file (``0o666 & ~umask``),
  not ``tempfile``'s private 0600, so colleagues can read results on a shared machine when the
  umask says so.
- **Errors**: a failed write (read-only file system, no permission, full disk, a path under a
  file...) raises :class:`~continual.errors.ContinualError` naming the path and the cause, and for
  a full disk how much was needed and how much is free.

Checksums (:func:`with_checksum`, :func:`checksum_problem`) are SHA-256 digests of an object's
*content* (each tensor's dtype, shape and bytes; plain values; the nesting), stored in the saved
dict itself under ``"sha256"``, so a checkpoint stays one self-contained file that loads with
``torch.load(..., weights_only=True)`` and is written with one rename: there is no moment at which
a file and its digest disagree, whatever the moment of a kill. Verification recomputes the digest
of what was loaded: any change to the loaded content (a flipped bit in a tensor, a changed value,
a lost or added entry, a damaged digest) fails; a damaged byte that does not change the content
(zip padding) is harmless and passes.

:class:`FolderLock` is an exclusive ``fcntl.flock`` on ``FOLDER/.lock``, held while a process
works in a run's folder, so two processes never write one run's checkpoints or result at once.
Not checked: locks on file systems without ``flock`` support (some network file systems give
every process the lock, others refuse to lock: then the run goes on unlocked) and on platforms
without ``fcntl`` (there the lock is a no-op).
"""

from __future__ import annotations

import errno
import hashlib
import io
import os
import shutil
import tempfile
from pathlib import Path

from .errors import ContinualError

CHECKSUM_KEY = "sha256"
LOCK_NAME = ".lock"


# ------------------------------------------------------------------------------------------ writing
def file_mode() -> int:
    """The mode a new normal file gets under the process's umask: ``0o666 & ~umask``."""
    try:  # Linux: read the umask without changing it (os.umask would, for a moment, for every thread)
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return 0o666 & ~int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return 0o666 & ~mask


def _size(n: float) -> str:
    for unit in ("bytes", "KB", "MB", "GB", "TB"):
        if n < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1000
    raise AssertionError


def write_error(exc: OSError, path: str | Path, *, needed: int | None = None) -> ContinualError:
    """A one-line :class:`ContinualError` for a failed write: ``<path>: <cause>``.

    ``path`` is the file or folder the user asked for (the failing part of it when the error
    names one, e.g. a folder that cannot be created); for a full disk the message adds how much
    the write needed (``needed``) and how much is free.
    """
    where = Path(exc.filename) if exc.filename and not str(exc.filename).endswith(".tmp") else Path(path)
    if isinstance(exc, FileExistsError) and where.exists() and not where.is_dir():
        cause = "exists and is not a folder"
    else:
        cause = exc.strerror or str(exc) or type(exc).__name__
        cause = cause[0].lower() + cause[1:] if cause[:1].isupper() and cause[1:2].islower() else cause
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        parts = [f"needed {_size(needed)}"] if needed is not None else []
        folder = where if where.is_dir() else where.parent
        try:
            parts.append(f"{_size(shutil.disk_usage(folder).free)} free")
        except OSError:
            pass
        cause += f" ({', '.join(parts)})" if parts else ""
    return ContinualError(f"{where}: {cause}")


def _mkdir(folder: Path) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise write_error(exc, folder) from None


def atomic_write_bytes(path: str | Path, data: bytes | memoryview) -> Path:
    """Write ``data`` to ``path`` atomically (see the module docstring), creating its folder.

    Raises:
        ContinualError: the write failed; the message names ``path`` and the cause. Nothing is
            left behind and an existing ``path`` is unchanged.
    """
    path = Path(path)
    _mkdir(path.parent)
    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), file_mode())
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        tmp = None
        _fsync_folder(path.parent)
    except OSError as exc:
        _remove(tmp)
        tmp = None
        raise write_error(exc, path, needed=len(data)) from None
    finally:
        _remove(tmp)  # any other failure (KeyboardInterrupt...)
    return path


def _fsync_folder(folder: Path) -> None:
    """Make the rename itself durable (power loss); best effort: not every file system can."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _remove(tmp: str | None) -> None:
    if tmp is not None:
        try:
            os.unlink(tmp)
        except OSError:
            pass


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically; see :func:`atomic_write_bytes`."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_torch_save(obj: object, path: str | Path, *, checksum: bool = False) -> Path:
    """``torch.save`` of ``obj`` to ``path`` atomically; see :func:`atomic_write_bytes`.

    The object is serialised in memory first, so a write error is one the file system reports
    (with the size that was needed), never a failure inside ``torch.save``'s writer.

    Args:
        obj: what to save (tensors and plain values, to load with ``weights_only=True``).
        path: the file.
        checksum: store the SHA-256 digest of the content under ``"sha256"`` (``obj`` must be a
            dict; see :func:`with_checksum`).
    """
    import torch

    if checksum:
        obj = with_checksum(obj)  # type: ignore[arg-type]
    buf = io.BytesIO()
    torch.save(obj, buf)
    return atomic_write_bytes(path, buf.getbuffer())


def check_writable(folder: str | Path) -> Path:
    """Create ``folder`` if needed and write and remove a probe file in it, so a run learns that
    it cannot save its results before it trains rather than after.

    Raises:
        ContinualError: naming the folder (or the part of its path) and why it cannot be written.
    """
    folder = Path(folder)
    _mkdir(folder)
    try:
        fd, probe = tempfile.mkstemp(dir=folder, prefix=".continual-probe.", suffix=".tmp")
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise write_error(exc, folder) from None
    return folder


def remove_temporaries(folder: Path, names: tuple[str, ...] | None = None) -> list[Path]:
    """Remove the temporary files a killed write left in ``folder`` (``.NAME.XXXXXXXX.tmp``).

    Only for a folder whose writers are excluded by a lock the caller holds: a temporary file of a
    write in progress in another process would otherwise be taken from under it.

    Args:
        folder: the folder (missing: nothing to do).
        names: the file names whose temporaries go (``("result.json",)``); ``None``: every
            ``.*.tmp`` file in the folder.

    Returns:
        The files removed.
    """
    removed = []
    try:
        entries = list(folder.iterdir())
    except OSError:
        return removed
    for p in entries:
        n = p.name
        if not (n.startswith(".") and n.endswith(".tmp")):
            continue
        if names is not None and not any(n.startswith(f".{name}.") for name in names):
            continue
        try:
            p.unlink()
            removed.append(p)
        except OSError:
            pass
    return removed


# ---------------------------------------------------------------------------------------- checksums
def _feed(h, obj) -> None:
    """Hash ``obj``'s content into ``h``: a tagged, length-prefixed encoding (unambiguous)."""
    import numpy as np
    import torch

    if obj is None:
        h.update(b"N")
    elif isinstance(obj, bool):
        h.update(b"B1" if obj else b"B0")
    elif isinstance(obj, int):
        h.update(b"I%d;" % obj)
    elif isinstance(obj, float):
        h.update(b"F" + float.hex(obj).encode() + b";")
    elif isinstance(obj, str):
        data = obj.encode("utf-8", "surrogatepass")
        h.update(b"S%d:" % len(data) + data)
    elif isinstance(obj, (bytes, bytearray)):
        h.update(b"Y%d:" % len(obj) + bytes(obj))
    elif isinstance(obj, torch.Tensor):
        if obj.layout != torch.strided or obj.is_quantized:
            raise TypeError(f"cannot checksum a {obj.layout} tensor")
        t = obj.detach().resolve_conj().resolve_neg().cpu().contiguous().reshape(-1)
        h.update(b"T" + str(t.dtype).encode() + b"%s;%d:" % (str(tuple(obj.shape)).encode(), t.numel() * t.element_size()))
        if t.numel():
            h.update(t.view(torch.uint8).numpy().data)
    elif isinstance(obj, (torch.dtype, torch.device)):
        h.update(b"O" + str(obj).encode() + b";")
    elif isinstance(obj, np.ndarray):
        a = np.ascontiguousarray(obj)
        h.update(b"A" + str(a.dtype).encode() + b"%s;%d:" % (str(a.shape).encode(), a.nbytes) + a.tobytes())
    elif isinstance(obj, np.generic):
        h.update(b"G" + str(obj.dtype).encode() + b":" + obj.tobytes())
    elif isinstance(obj, dict):
        h.update(b"D%d;" % len(obj))
        for key, value in obj.items():
            _feed(h, key)
            _feed(h, value)
    elif isinstance(obj, (list, tuple)):
        h.update((b"L%d;" if isinstance(obj, list) else b"U%d;") % len(obj))
        for value in obj:
            _feed(h, value)
    else:
        raise TypeError(f"cannot checksum a {type(obj).__name__}")


def content_digest(obj: object) -> str:
    """The SHA-256 hex digest of ``obj``'s content: nested dicts (in order), lists, tuples,
    tensors (dtype, shape, bytes; not the device or the strides), numbers, strings, ``None``.

    >>> import torch
    >>> content_digest({"w": torch.zeros(2)}) == content_digest({"w": torch.zeros(2, dtype=torch.float32)})
    True
    >>> content_digest({"w": torch.zeros(2)}) == content_digest({"w": torch.zeros(1, 2)})
    False

    Raises:
        TypeError: for a value it cannot encode (what ``weights_only`` loading refuses anyway).
    """
    h = hashlib.sha256()
    _feed(h, obj)
    return h.hexdigest()


def with_checksum(state: dict) -> dict:
    """A copy of ``state`` with the digest of its content under ``"sha256"`` (the last key)."""
    body = {k: v for k, v in state.items() if k != CHECKSUM_KEY}
    return {**body, CHECKSUM_KEY: content_digest(body)}


def checksum_problem(state: object) -> str | None:
    """``None`` if ``state`` (as loaded) carries a digest that matches its content, else what is
    wrong: ``"no checksum"`` or ``"checksum mismatch"``."""
    if not isinstance(state, dict) or not isinstance(state.get(CHECKSUM_KEY), str):
        return "no checksum"
    try:
        digest = content_digest({k: v for k, v in state.items() if k != CHECKSUM_KEY})
    except (TypeError, RecursionError):
        return "checksum mismatch"
    return None if digest == state[CHECKSUM_KEY] else "checksum mismatch"


# ------------------------------------------------------------------------------------------- locks
class FolderLock:
    """An exclusive lock on a folder: ``fcntl.flock`` on ``FOLDER/.lock``, for this process.

    The lock is released when :meth:`release` is called or the process ends, a SIGKILL included
    (the kernel drops it), so a crash never leaves a folder locked. The lock file holds the pid
    of the holder (for the message another process shows) and is removed on release; the folder
    too if this lock created it and it is empty then.

    Example:
        >>> import tempfile
        >>> with FolderLock(tempfile.mkdtemp(), what="run demo"):
        ...     pass  # the folder is ours here
    """

    def __init__(self, folder: str | Path, *, what: str = "a run"):
        self.folder = Path(folder)
        self.what = what
        self.holder: int | None = None  # another process's pid, after a failed acquire
        self._fd: int | None = None
        self._created = False

    @property
    def path(self) -> Path:
        return self.folder / LOCK_NAME

    def acquire(self) -> bool:
        """Take the lock without waiting; ``False`` (and :attr:`holder` set) if another process
        holds it.

        Raises:
            ContinualError: if the folder or the lock file cannot be created.
        """
        try:
            import fcntl
        except ModuleNotFoundError:  # no flock on this platform: no lock
            return True
        if self._fd is not None:
            return True
        self._created = self._created or not self.folder.exists()
        while True:
            _mkdir(self.folder)  # again after a holder that removed it on release
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
            except OSError as exc:
                raise write_error(exc, self.path) from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                if exc.errno in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS):  # a file system without locks
                    os.close(fd)
                    return True  # not checked there (see the module docstring)
                if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                    os.close(fd)
                    raise write_error(exc, self.path) from None
                self.holder = _read_pid(fd)
                os.close(fd)
                return False
            try:  # the holder before us may have removed the file: then ours is a stale inode
                same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        os.ftruncate(fd, 0)
        os.write(fd, b"%d\n" % os.getpid())
        self._fd, self.holder = fd, None
        return True

    def release(self) -> None:
        """Remove the lock file and release the lock (and the folder, if this lock created it and
        it is empty)."""
        if self._fd is None:
            return
        try:
            os.unlink(self.path)  # while still holding it: see the inode check in acquire()
        except OSError:
            pass
        os.close(self._fd)
        self._fd = None
        if self._created:
            try:
                self.folder.rmdir()
            except OSError:
                pass

    def busy_message(self) -> str:
        pid = f"pid {self.holder}" if self.holder else "pid unknown"
        return f"{self.what} is already in progress in {self.folder} ({pid})"

    def __enter__(self) -> FolderLock:
        if not self.acquire():
            raise ContinualError(self.busy_message())
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def _read_pid(fd: int) -> int | None:
    try:
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
        return int(text) if text.isdigit() else None
    except OSError:
        return None
