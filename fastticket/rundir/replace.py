"""Leftovers of killed processes, and replacing an output directory atomically.

Temporary names carry the writer's pid and host (utils.tmp_tag): `.tmp-<pid>-<host>-...` files
(utils.atomic_write_bytes) and `.<name>.tmp-<pid>-<host>-...` / `.<name>.old-<pid>-<host>-...` directories
(replace_dir). clean_leftovers removes those whose writer is dead on this host, and nothing else: a live
writer's temp and another host's are left alone.

replace_dir(path, write): write(tmp) fills a fresh sibling directory, which then takes `path`'s place. Where
`path` already exists, the two are swapped with renameat2(RENAME_EXCHANGE) (Linux): one atomic step, so at
every instant `path` is either the old directory or the new one, and the old one is then removed from its
temporary name. Without RENAME_EXCHANGE (another OS or a file system that refuses it) the old one is renamed
aside, the new one renamed in (the old one is renamed back if that fails, and a later run restores it if a
kill came in between). A symlink that is switched would avoid the gap too, but it would turn the user's
directory into a link (copies, rsync and `rm -r` then treat it differently); the exchange keeps a plain directory.
"""

from __future__ import annotations

import ctypes
import os
import shutil
import tempfile
import uuid

from ..utils import TMP_PREFIX, current_umask, fsync_path, host_tag, parse_tmp_tag, pid_alive, tmp_tag
from .owner import LOCK_FILE, MARKER_FILE, owner, read_marker, write_marker

_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


def stale(tag_text: str) -> bool:
    """Whether the writer named at the start of `tag_text` (pid-hosttag-...) is dead on this host."""
    tag = parse_tmp_tag(tag_text)
    return tag is not None and tag[1] == host_tag() and not pid_alive(tag[0])


def clean_leftovers(directory, recursive: bool = True) -> list[str]:
    """Removes what killed fastticket processes left in `directory` (and, recursively, its subdirectories):
    temp files and temp directories of dead writers, a takeover guard of a dead process; restores an old
    directory that a killed replacement had renamed aside. Returns the paths it removed or restored."""
    done = []
    for root, dirs, files in os.walk(os.fspath(directory)):
        for name in files:
            path = os.path.join(root, name)
            if name.startswith(TMP_PREFIX) and stale(name[len(TMP_PREFIX):]):
                _unlink(path)
                done.append(path)
            elif name == LOCK_FILE + ".takeover" and _dead_guard(path):
                _unlink(path)
                done.append(path)
        for name in list(dirs):
            leftover = _leftover_dir(root, name)
            if leftover is not None:
                dirs.remove(name)
                done.append(leftover)
        if not recursive:
            break
    return done


def _leftover_dir(root: str, name: str) -> str | None:
    """Handles `.<target>.tmp-<tag>` / `.<target>.old-<tag>` of a dead writer; returns what it did or None."""
    if not name.startswith("."):
        return None
    for kind in (".tmp-", ".old-"):
        target, sep, tag = name[1:].rpartition(kind)
        if sep and target and stale(tag):
            path = os.path.join(root, name)
            if kind == ".old-" and not os.path.lexists(os.path.join(root, target)):
                os.rename(path, os.path.join(root, target))  # killed between the two renames: put it back
                return os.path.join(root, target)
            if _ours(path):
                remove_tree(path)
                return path
    return None


def _ours(path: str) -> bool:
    """A directory we may delete: empty, or holding our marker."""
    try:
        return not os.listdir(path) or os.path.isfile(os.path.join(path, MARKER_FILE))
    except OSError:
        return False


def remove_tree(path: str) -> None:
    """rmtree that removes the top-level marker last: a removal cut short by a kill still says it is ours."""
    for name in os.listdir(path):
        if name == MARKER_FILE:
            continue
        entry = os.path.join(path, name)
        if os.path.isdir(entry) and not os.path.islink(entry):
            shutil.rmtree(entry)
        else:
            os.unlink(entry)
    _unlink(os.path.join(path, MARKER_FILE))
    os.rmdir(path)


def check_replaceable(path, command: str) -> str:
    """The absolute `path` if replace_dir(path, ..., command) may put a new directory there: it does not
    exist, is an empty directory, or is an earlier output of `command` holding only what that wrote.
    ValueError otherwise (nothing is written)."""
    from .owner import check_writable

    path = os.path.abspath(os.path.expanduser(os.fspath(path)))
    if os.path.islink(path):
        raise ValueError(f"{command} path {path!r} is a symbolic link; give the directory it points to, or a new path")
    if os.path.lexists(path) and not os.path.isdir(path):
        raise ValueError(f"{command} path {path!r} exists and is not a directory")
    cwd = os.getcwd()
    if path == cwd or cwd.startswith(path + os.sep):  # swapped out, it would leave the shell in a deleted folder
        raise ValueError(f"{command} path {path!r} is the working directory or holds it; allowed: a directory "
                         f"beside or below it")
    check_writable(path)
    check_writable(os.path.dirname(path))  # the new directory is made beside it, then swapped in
    if not os.path.isdir(path) or not os.listdir(path):
        return path
    found = owner(path)
    if found != command:
        what = f"a `fastticket {found}` run" if found else f"files that fastticket did not write (no {MARKER_FILE})"
        raise ValueError(f"{command} path {path!r} holds {what}; refusing to replace it: choose a new or empty directory")
    wrote = set(read_marker(path).get("files") or ())
    extra = sorted(set(os.listdir(path)) - wrote - {MARKER_FILE})
    if extra:
        raise ValueError(f"{command} path {path!r} is an earlier {command} but also holds files it did not write "
                         f"({', '.join(extra[:5])}); refusing to replace it: move them away or choose another directory")
    return path


def replace_dir(path, write, command: str = "export") -> str:
    """Runs write(tmp) on a fresh sibling directory and puts it at `path` atomically (see the module
    docstring); refuses a `path` that check_replaceable refuses. A failure leaves `path` as it was."""
    path = check_replaceable(path, command)
    parent, name = os.path.split(path)
    os.makedirs(parent, exist_ok=True)
    clean_leftovers_of(parent, name)
    tmp = tempfile.mkdtemp(dir=parent, prefix=f".{name}.tmp-{tmp_tag()}")
    swapped = False
    try:
        write_marker(tmp, command)  # first: a leftover of a kill is provably ours
        write(tmp)
        write_marker(tmp, command, files=sorted(set(os.listdir(tmp)) - {MARKER_FILE}))
        os.chmod(tmp, 0o777 & ~current_umask())  # mkdtemp makes 0700
        _fsync_tree(tmp)
        if os.path.isdir(path):
            _swap(tmp, path, parent, name)
            swapped = True
            remove_tree(tmp)  # now the old directory
        else:
            os.rename(tmp, path)
            swapped = True
        fsync_path(parent)
    except BaseException:
        if not swapped and os.path.isdir(tmp):
            remove_tree(tmp)
        raise
    return path


def clean_leftovers_of(parent: str, name: str) -> list[str]:
    """clean_leftovers for the temp/old siblings of `parent/name` only (not the whole parent)."""
    done = []
    for entry in os.listdir(parent):
        if entry.startswith(f".{name}.tmp-") or entry.startswith(f".{name}.old-"):
            leftover = _leftover_dir(parent, entry)
            if leftover is not None:
                done.append(leftover)
    return done


def _swap(new: str, path: str, parent: str, name: str) -> None:
    """Exchanges `new` and `path` (both directories): atomically where the OS can, else rename aside and in."""
    if exchange(new, path):
        return
    old = os.path.join(parent, f".{name}.old-{tmp_tag()}{uuid.uuid4().hex[:8]}")
    os.rename(path, old)
    try:
        os.rename(new, path)
    except BaseException:
        os.rename(old, path)
        raise
    os.rename(old, new)  # the caller removes `new`, which now holds the old directory


def exchange(a: str, b: str) -> bool:
    """renameat2(a, b, RENAME_EXCHANGE): True if done; False where the OS or file system cannot."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    if renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in (22, 38, 95):  # EINVAL, ENOSYS, EOPNOTSUPP: not supported here
        return False
    raise OSError(err, os.strerror(err), b)


def _fsync_tree(directory: str) -> None:
    for root, _, files in os.walk(directory):
        for name in files:
            fsync_path(os.path.join(root, name))
        fsync_path(root)


def _dead_guard(path: str) -> bool:
    import json
    import socket

    try:
        with open(path, encoding="utf-8") as f:
            info = json.load(f)
        return info.get("host") == socket.gethostname() and not pid_alive(int(info.get("pid", -1)))
    except (OSError, ValueError, TypeError):
        return False


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
