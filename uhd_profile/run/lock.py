"""One writer per run directory: an exclusive lock file held by every writer (docs/reliability.md).

``RunLock(run_dir, "sweep")`` takes ``RUN_DIR/run.lock`` with ``fcntl.flock(LOCK_EX)`` and writes
the holder into it (PID, host, start time, command). A second writer -- another ``sweep --resume``,
a ``merge`` into the directory, a ``report`` into ``RUN_DIR/report`` -- is refused in one line
naming that holder. The kernel drops a flock when its process dies (even ``kill -9``), so a lock
file left by a dead writer is stale by construction: the next writer takes the flock and says
whose lock it took over. Two processes taking over the same stale lock race for the flock, and
the kernel lets exactly one win; the loser is refused naming the winner. A releasing writer
unlinks the file while still holding the flock, so a process that opened the old file before the
unlink checks, once it holds the flock, that the path is still its file, and retries if not.

Within one process the lock is re-entrant (a sweep that writes its own report holds it once).
``active_writer(run_dir)`` tells a reader whether a live writer holds the directory (a probe
with a shared flock, let go at once; writers retry for ``WAIT_S`` so a probe never refuses them).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import socket
import sys
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from uhd_profile.errors import UhdProfileError
from uhd_profile.files import check_output_dir, output_error, pid_alive

LOCK_FILE = "run.lock"
WAIT_S = 0.5
"""How long a writer retries a busy lock before refusing (a reader's probe holds it for microseconds)."""


@dataclass(frozen=True)
class Holder:
    """Who holds (or held) a run directory's lock."""

    pid: int
    host: str
    started_utc: str
    purpose: str  # sweep, merge, report, ...
    command: str

    def describe(self) -> str:
        return f"PID {self.pid} on {self.host} ({self.purpose}, since {self.started_utc}: {self.command})"

    @classmethod
    def mine(cls, purpose: str) -> Holder:
        cmd = " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]) if sys.argv and sys.argv[0] else "python"
        return cls(
            pid=os.getpid(),
            host=socket.gethostname(),
            started_utc=datetime.now(timezone.utc).isoformat(timespec="seconds"),
            purpose=purpose,
            command=cmd[:300],
        )

    @classmethod
    def parse(cls, data: bytes) -> Holder | None:
        try:
            d = json.loads(data)
            return cls(int(d["pid"]), str(d["host"]), str(d["started_utc"]), str(d["purpose"]), str(d["command"]))
        except (ValueError, KeyError, TypeError):
            return None

    def to_bytes(self) -> bytes:
        return (json.dumps(self.__dict__, sort_keys=True) + "\n").encode()


class RunLocked(UhdProfileError):
    """Another live writer holds the run directory (exit 2)."""


_HELD: dict[str, list] = {}  # realpath -> [fd, depth, Holder]
_GUARD = threading.Lock()


def _forget_held_in_child() -> None:
    """In a forked child (a sweep's counting processes): close the inherited lock descriptors, so
    that the lock goes with the writer that took it (a flock lives while any descriptor of it is
    open: a child outliving a killed sweep would otherwise keep the directory locked)."""
    for fd, *_ in _HELD.values():
        with contextlib.suppress(OSError):
            os.close(fd)
    _HELD.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_held_in_child)


def _key(run_dir: Path) -> str:
    return os.path.realpath(run_dir)


def _read_holder(fd: int) -> Holder | None:
    try:
        return Holder.parse(os.pread(fd, 4096, 0))
    except OSError:
        return None


class RunLock:
    """The exclusive writer lock of ``run_dir`` (see module docstring). Use as a context manager,
    or ``acquire()`` / ``release()``. ``took_over`` is the stale holder replaced, if any."""

    def __init__(self, run_dir: str | os.PathLike, purpose: str, what: str = "run directory") -> None:
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / LOCK_FILE
        self.purpose, self.what = purpose, what
        self.took_over: Holder | None = None
        self._created_dir = False
        self._held = False

    def acquire(self) -> RunLock:
        """Take the lock (creating ``run_dir`` if needed) or raise ``RunLocked`` naming the holder."""
        check_output_dir(self.run_dir, self.what)
        key = _key(self.run_dir) if self.run_dir.exists() else None
        with _GUARD:
            if key is not None and key in _HELD:
                _HELD[key][1] += 1
                self._held = True
                return self
        if not self.run_dir.exists():
            try:
                self.run_dir.mkdir(parents=True)
                self._created_dir = True
            except FileExistsError:
                pass
            except OSError as exc:
                raise output_error(exc, self.run_dir, self.what) from None
        key = key if key is not None else _key(self.run_dir)
        fd = self._flock()
        holder = Holder.mine(self.purpose)
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, holder.to_bytes(), 0)
            os.fsync(fd)
        except OSError:
            pass  # the lock is held all the same; only the refusal message of others loses its holder
        with _GUARD:
            _HELD[key] = [fd, 1, holder]
        self._held = True
        return self

    def _flock(self) -> int:
        deadline = time.monotonic() + WAIT_S
        while True:
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
            except OSError as exc:
                raise output_error(exc, self.path, self.what) from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = _read_holder(fd)
                os.close(fd)
                if time.monotonic() < deadline:
                    time.sleep(0.02)
                    continue
                who = holder.describe() if holder else "another process (it has not written its name yet)"
                raise RunLocked(
                    f"{self.run_dir} is being written by {who}; one writer at a time: wait for it to finish "
                    f"(or stop it), or choose another directory"
                ) from None
            except OSError as exc:
                os.close(fd)
                if exc.errno in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS):
                    raise UhdProfileError(
                        f"{self.path}: cannot lock it ({exc.strerror}); a run directory must be on a file system with "
                        "file locks (a local disk, NFSv4, Lustre with flock): choose another directory"
                    ) from None
                raise output_error(exc, self.path, self.what) from None
            # the holder before us may have unlinked the file between our open and our flock
            try:
                same = os.stat(self.path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if not same:
                os.close(fd)
                continue
            self.took_over = _read_holder(fd)  # a holder named in a free lock file died holding it
            return fd

    def release(self) -> None:
        """Let the lock go (the outermost release in this process unlinks the lock file)."""
        if not self._held:
            return
        self._held = False
        key = _key(self.run_dir)
        with _GUARD:
            entry = _HELD.get(key)
            if entry is None:
                return
            entry[1] -= 1
            if entry[1] > 0:
                return
            del _HELD[key]
        fd = entry[0]
        with contextlib.suppress(OSError):
            os.unlink(self.path)  # while still holding the flock: see the module docstring
        os.close(fd)
        if self._created_dir:
            with contextlib.suppress(OSError):
                self.run_dir.rmdir()  # only if this writer made it and left nothing in it

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


def active_writer(run_dir: str | os.PathLike) -> Holder | None:
    """The live writer holding ``run_dir`` (this process included), or None."""
    run_dir = Path(run_dir)
    with _GUARD:
        entry = _HELD.get(_key(run_dir)) if run_dir.exists() else None
        if entry is not None:
            return entry[2]
    try:
        fd = os.open(run_dir / LOCK_FILE, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return _read_holder(fd) or Holder(0, "?", "?", "?", "?")
        except OSError:
            return None
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


def stale_note(lock: RunLock) -> str | None:
    """A note for a stale lock taken over, or None."""
    h = lock.took_over
    if h is None:
        return None
    state = "no longer running" if h.host == socket.gethostname() and not pid_alive(h.pid) else "no longer holding it"
    return f"took over the stale lock of {lock.run_dir}: {h.describe()} is {state}"
