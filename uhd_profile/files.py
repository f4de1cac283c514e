"""Writing outputs so that nothing half-written is ever left in place (docs/reliability.md).

* ``check_output_dir`` / ``check_output_file``: a target is usable before any work starts -- not a
  file where a directory is wanted (or the reverse), and inside a writable directory -- or a
  one-line ``UhdProfileError`` (exit 2) names it.
* ``atomic_write_bytes`` / ``atomic_write_text``: a file is written to a temporary name beside the
  target, fsynced and renamed over it, so a reader sees the old file or the new one, never a part.
* ``swap_dir``: a directory built beside its target replaces it in one step (Linux
  ``renameat2(RENAME_EXCHANGE)``; elsewhere two renames, repaired on the next call if cut between).
* ``output_error``: an ``OSError`` met while writing, as one line: a target the user can fix
  (permission, read-only, a file in the way) is a ``UhdProfileError`` (exit 2); the disk filling up
  or an I/O error is a ``WriteError`` (exit 3).

Part of the foundation: imports no layer.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import shutil
import sys
from pathlib import Path

from uhd_profile.errors import UhdProfileError, WriteError

#: errno values that mean "this target cannot be written" (the user chooses another): exit 2
USAGE_ERRNOS = frozenset(
    {errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOTDIR, errno.EISDIR, errno.EEXIST, errno.ENAMETOOLONG, errno.ELOOP}
)


def os_reason(exc: OSError) -> str:
    """``No space left on device (ENOSPC)``: the strerror and the errno's name."""
    name = errno.errorcode.get(exc.errno or 0, "")
    text = exc.strerror or str(exc) or type(exc).__name__
    return f"{text} ({name})" if name else text


def output_error(exc: OSError, path: str | os.PathLike, what: str, kept: str = "") -> UhdProfileError:
    """The one-line error for ``exc`` met while writing ``path`` (``what`` names the output, e.g.
    ``--out``); ``kept`` says what was left intact (for a ``WriteError``)."""
    reason = os_reason(exc)
    if exc.errno in USAGE_ERRNOS:
        return UhdProfileError(f"{what} {path}: cannot write there: {reason}; choose a writable location")
    return WriteError(f"{what}: could not write {path}: {reason}" + (f"; {kept}" if kept else ""))


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` exists on this host (another user's process counts)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


# --------------------------------------------------------------------------------------------
# Checking targets before the work
# --------------------------------------------------------------------------------------------


def _unwritable(directory: Path) -> str | None:
    """Why files cannot be created in the existing ``directory``, or None. ``os.access`` knows
    permissions (root passes) and read-only mounts."""
    if os.access(directory, os.W_OK | os.X_OK):
        return None
    try:
        if os.statvfs(directory).f_flag & os.ST_RDONLY:
            return "it is on a read-only file system (EROFS)"
    except OSError:
        pass
    return "permission denied (EACCES)"


def _existing_ancestor(p: Path) -> Path:
    q = p.absolute()
    while not q.exists() and q != q.parent:
        q = q.parent
    return q


def check_output_dir(path: str | os.PathLike, what: str) -> Path:
    """``path`` as a directory that can be written (it may not exist yet), or a one-line
    ``UhdProfileError`` naming ``what`` (e.g. ``--out``), the path and the problem."""
    p = Path(path)
    if p.exists() and not p.is_dir():
        raise UhdProfileError(f"{what} {p}: exists and is not a directory; give a directory (a new one, or one of its own)")
    _check_writable_under(p, _existing_ancestor(p), what)
    return p


def _check_writable_under(p: Path, q: Path, what: str) -> None:
    """Refuse ``p`` when its nearest existing ancestor ``q`` is a file or cannot be written in."""
    if not q.is_dir():
        raise UhdProfileError(f"{what} {p}: {q} is a file, so no directory can be made there; choose another location")
    why = _unwritable(q)
    if why:
        raise UhdProfileError(f"{what} {p}: cannot write in {q}: {why}; choose a writable location")


def check_output_file(path: str | os.PathLike, what: str) -> Path:
    """``path`` as a file that can be (over)written, or a one-line ``UhdProfileError``."""
    p = Path(path)
    if p.is_dir():
        raise UhdProfileError(f"{what} {p}: is a directory; give a file name")
    _check_writable_under(p, _existing_ancestor(p.parent), what)
    return p


# --------------------------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------------------------


def fsync_dir(directory: str | os.PathLike) -> None:
    """Make a rename or a new entry in ``directory`` durable (best effort: not every OS can)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_synced(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to a new file ``path`` and fsync it (raises ``OSError``)."""
    with open(path, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())


def atomic_write_bytes(path: str | os.PathLike, data: bytes, what: str = "output", kept: str = "") -> Path:
    """Write ``data`` to ``path`` whole or not at all: a temporary file beside it, fsynced, renamed
    over it. Failures are one-line errors (``output_error``); the temporary file is removed."""
    p = Path(path)
    tmp = p.with_name(f".{p.name}.tmp-{os.getpid()}")
    try:
        p.parent.mkdir(parents=True, exist_ok=True)
        write_synced(tmp, data)
        os.replace(tmp, p)
    except OSError as exc:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise output_error(exc, p, what, kept) from None
    fsync_dir(p.parent)
    return p


def atomic_write_text(path: str | os.PathLike, text: str, what: str = "output", kept: str = "") -> Path:
    """``atomic_write_bytes`` of UTF-8 text."""
    return atomic_write_bytes(path, text.encode("utf-8"), what, kept)


# --------------------------------------------------------------------------------------------
# Replacing a directory in one step
# --------------------------------------------------------------------------------------------

_AT_FDCWD = -100
_RENAME_EXCHANGE = 2


def _rename_exchange(a: Path, b: Path) -> bool:
    """Atomically swap paths ``a`` and ``b`` (Linux ``renameat2``); False when the OS or the file
    system cannot, so the caller falls back to two renames."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        fn = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):
        return False
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    fn.restype = ctypes.c_int
    if fn(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
        return False
    raise OSError(code, os.strerror(code), str(b))


def staging_dir(target: Path, kind: str) -> Path:
    """A fresh hidden sibling of ``target`` to build a replacement in (``kind``: ``new``/``old``);
    its name carries this process's id, so a leftover of a killed process can be recognised."""
    return target.with_name(f".{target.name}.{kind}-{os.getpid()}-{os.urandom(3).hex()}")


def _staged(target: Path) -> list[tuple[Path, str, int]]:
    out = []
    for kind in ("new", "old"):
        for q in target.parent.glob(f".{target.name}.{kind}-*"):
            try:
                pid = int(q.name.rsplit(".", 1)[1].split("-")[1])
            except (IndexError, ValueError):
                continue
            out.append((q, kind, pid))
    return out


def clean_staged(target: str | os.PathLike) -> None:
    """Remove what a killed writer left beside ``target`` (staging directories of dead processes);
    if it was killed between the two renames of the fallback swap, put the old directory back."""
    target = Path(target)
    for q, kind, pid in _staged(target):
        if pid_alive(pid) and pid != os.getpid():
            continue
        if kind == "old" and not target.exists():
            os.rename(q, target)  # the fallback swap was cut between its renames: the old one is whole
            continue
        shutil.rmtree(q, ignore_errors=True)


def swap_dir(new: Path, target: Path) -> None:
    """Put the complete directory ``new`` at ``target``, replacing what is there in one step, and
    delete the old one. Raises ``OSError``."""
    if not target.exists():
        os.rename(new, target)
    elif _rename_exchange(new, target):
        shutil.rmtree(new, ignore_errors=True)  # ``new`` now holds the old directory
    else:
        old = staging_dir(target, "old")
        os.rename(target, old)
        os.rename(new, target)
        shutil.rmtree(old, ignore_errors=True)
    fsync_dir(target.parent)
