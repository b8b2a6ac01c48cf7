"""Small shared helpers: atomic writes that follow the umask, temp names that say who wrote them, devices."""

from __future__ import annotations

import hashlib
import os
import socket
import tempfile

TMP_PREFIX = ".tmp-"  # every temporary file or directory fastticket writes starts with this (or .<name>.tmp-)


def atomic_write_text(path, text: str) -> None:
    """Writes `text` (UTF-8) to `path` so that readers see the old file or the whole new one, never a part."""
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_bytes(path, data: bytes) -> None:
    """atomic_write_text for bytes: temp file in the same directory (named by tmp_tag(), so a later run can
    tell a dead writer's leftover from a live one's), mode from the umask, fsync, rename, fsync the directory."""
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=TMP_PREFIX + tmp_tag(), suffix="-" + os.path.basename(path))
    try:
        os.fchmod(fd, 0o666 & ~current_umask())  # mkstemp creates 0600; results follow the umask like any file
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        fsync_path(directory)  # the rename itself survives a crash
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def fsync_path(path: str) -> None:
    """Flushes a file or directory to disk; quietly does nothing where the OS does not allow it."""
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


def current_umask() -> int:
    """The process umask, read without changing it where /proc allows (os.umask can only set it)."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def host_tag(host: str | None = None) -> str:
    """8 hex digits naming a host in file names (host names may hold characters file names should not)."""
    return hashlib.sha256((host or socket.gethostname()).encode("utf-8")).hexdigest()[:8]


def tmp_tag(pid: int | None = None) -> str:
    """'<pid>-<host tag>-': the part of a temporary name that says which process made it."""
    return f"{os.getpid() if pid is None else pid}-{host_tag()}-"


def parse_tmp_tag(text: str) -> tuple[int, str] | None:
    """(pid, host tag) from a name part starting with tmp_tag(), or None when it has none."""
    parts = text.split("-", 2)
    if len(parts) < 3 or not parts[0].isdigit() or len(parts[1]) != 8:
        return None
    return int(parts[0]), parts[1]


def pid_alive(pid: int) -> bool:
    """Whether a process with this id runs on this host (a zombie counts as dead)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # it exists, owned by someone else
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as f:
            return f.read().rsplit(")", 1)[-1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def resolve_device(device):
    """torch.device for `device` (None: cuda when available, else cpu); a device this machine cannot use is
    one ValueError naming it, before any work."""
    import torch

    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        raise ValueError(f"device {device!r} is not a device; allowed: cpu, cuda, cuda:N") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            why = "this torch build has no CUDA" if torch.version.cuda is None else "no GPU is visible"
            raise ValueError(f"device {device!r} is not available: {why}; allowed here: cpu")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ValueError(f"device {device!r} does not exist; this machine has {torch.cuda.device_count()} GPU(s): "
                             f"cuda:0..cuda:{torch.cuda.device_count() - 1}")
    elif dev.type == "mps":
        if not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
            raise ValueError(f"device {device!r} is not available; allowed here: cpu")
    elif dev.type != "cpu":
        raise ValueError(f"device {device!r} is not supported; allowed: cpu, cuda, cuda:N, mps")
    return dev
