"""The run lock: one job at a time writes a run directory.

    DIR/fastticket.lock   {"pid", "host", "started", "token", "command"}

A job is one process, or a launcher (rank 0) with many worker processes on several hosts: the launcher holds
the lock (`with RunLock(dir) as lock:`) and hands `lock.token` to its workers, which join it
(`with RunLock(dir, token=token, join=True):`) instead of taking it. A second job is refused with the holder's
pid, host and start time. A lock whose pid is dead on this host is stale (kill -9, a crash): it is taken
over with a warning. A lock from another host cannot be checked; it is refused with the way to clear it.

The lock file appears whole (hard link of a complete temp file) or not at all. Taking over a stale lock goes
through a short guard file, so two processes that find the same stale lock cannot both take it.
"""

from __future__ import annotations

import atexit
import functools
import json
import os
import socket
import threading
import time
import uuid
import warnings

from ..utils import TMP_PREFIX, atomic_write_text, pid_alive, tmp_tag
from .owner import LOCK_FILE

_held: list["RunLock"] = []  # locks this process owns (released at exit; kill -9 leaves them stale)
_scopes = threading.local()


class RunLock:
    def __init__(self, directory, *, token: str | None = None, join: bool = False, command: str = "search"):
        if join and not token:
            raise ValueError("join=True needs token=: the token of the lock the job's launcher holds")
        self.directory = os.fspath(directory)
        self.path = os.path.join(self.directory, LOCK_FILE)
        self.token = token or uuid.uuid4().hex
        self.join, self.command, self.owned = join, command, False

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()

    def acquire(self) -> "RunLock":
        """Takes the lock (or, with join=True, checks that the job's launcher holds it); ValueError if another
        live job holds it."""
        for _ in range(50):
            info = _read(self.path)
            if info is None and not self.join and self._create():
                self.owned = True
                _held.append(self)
                stack = getattr(_scopes, "stack", None)
                if stack:
                    stack[-1].append(self)
                return self
            if info is None:
                if self.join:
                    raise ValueError(f"{self.directory!r} is not locked: workers join the lock their launcher holds "
                                     f"(RunLock(dir) in the launcher first)")
                continue  # it vanished or was being replaced: look again
            if info.get("token") == self.token:
                return self  # our job's lock: a worker joins it
            if info.get("host") == socket.gethostname() and not pid_alive(int(info.get("pid", -1))):
                self._take_over(info)
                continue
            raise ValueError(f"{self.directory!r} is in use: {_describe(info)} holds {self.path}; wait for it to "
                             f"finish, or remove that file if the process is gone")
        raise ValueError(f"could not take the lock {self.path}: it keeps changing; is another job starting?")

    def release(self) -> None:
        """Removes the lock if this object took it and it is still ours; a worker's release does nothing."""
        if not self.owned:
            return
        self.owned = False
        if self in _held:
            _held.remove(self)
        info = _read(self.path)
        if info is not None and info.get("token") == self.token:
            try:
                os.unlink(self.path)
            except FileNotFoundError:
                pass

    def _create(self) -> bool:
        info = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                "token": self.token, "command": self.command}
        tmp = os.path.join(self.directory, f"{TMP_PREFIX}{tmp_tag()}{uuid.uuid4().hex[:8]}-{LOCK_FILE}")
        atomic_write_text(tmp, json.dumps(info, sort_keys=True))
        try:
            os.link(tmp, self.path)  # fails if a lock exists; never shows a half-written one
            return True
        except FileExistsError:
            return False
        except OSError:  # a file system without hard links: exclusive create (a reader may see it empty briefly)
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                return False
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(json.dumps(info, sort_keys=True))
            return True
        finally:
            os.unlink(tmp)

    def _take_over(self, stale: dict) -> None:
        guard = self.path + ".takeover"
        try:
            fd = os.open(guard, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            holder = _read(guard) or {}
            if not pid_alive(int(holder.get("pid", -1))) and holder.get("host") == socket.gethostname():
                _unlink(guard)  # a taker that died mid-takeover
            else:
                time.sleep(0.05)  # someone else is taking it over right now
            return
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(json.dumps({"pid": os.getpid(), "host": socket.gethostname()}))
        try:
            if _read(self.path) == stale:  # still the same stale lock, not a fresh one
                warnings.warn(f"{self.directory}: taking over the lock of a process that is gone ({_describe(stale)})",
                              stacklevel=4)
                _unlink(self.path)
        finally:
            _unlink(guard)


def lock_scope():
    """Context manager: every RunLock this thread takes inside it is released when it ends (return or raise)."""
    import contextlib

    @contextlib.contextmanager
    def scope():
        stack = _scopes.__dict__.setdefault("stack", [])
        taken: list[RunLock] = []
        stack.append(taken)
        try:
            yield taken
        finally:
            stack.pop()
            for lock in reversed(taken):
                lock.release()

    return scope()


def releases_run_locks(fn):
    """Decorator: the run locks `fn` takes (e.g. in ResultStore.start) are released when it returns or raises."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        with lock_scope():
            return fn(*args, **kwargs)

    return wrapper


def read_lock(directory) -> dict | None:
    """The lock record of `directory` (None when unlocked)."""
    return _read(os.path.join(os.fspath(directory), LOCK_FILE))


def _read(path: str) -> dict | None:
    for _ in range(20):
        try:
            with open(path, encoding="utf-8") as f:
                text = f.read()
        except FileNotFoundError:
            return None
        try:
            info = json.loads(text)
            if isinstance(info, dict):
                return info
        except ValueError:
            pass
        time.sleep(0.01)  # being written by a file system without hard links
    raise ValueError(f"lock file {path} is not valid JSON; remove it if no fastticket process uses that directory")


def _describe(info: dict) -> str:
    return (f"`fastticket {info.get('command', '?')}` pid {info.get('pid')} on host {info.get('host')!r}, "
            f"started {info.get('started')}")


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


@atexit.register
def _release_all() -> None:
    for lock in list(_held):
        lock.release()
