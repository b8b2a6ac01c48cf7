"""Which fastticket command wrote a directory: the marker file every run or export directory holds.

    DIR/fastticket_run.json   {"format": "fastticket.run", "version": 1, "command": "search", "created": ...,
                               "fastticket": "0.1.0", "files": [...] (exports: what the export wrote)}

A directory without it is the user's: no command writes into it unless it is empty.
"""

from __future__ import annotations

import json
import os
import time

from ..utils import atomic_write_text

MARKER_FILE = "fastticket_run.json"
LOCK_FILE = "fastticket.lock"
MARKER_FORMAT = "fastticket.run"
COMMANDS = ("search", "share", "adapt", "export", "ticket", "reproduce")
RESUMABLE = ("search", "reproduce")  # commands that continue a run in the same directory


def read_marker(directory) -> dict | None:
    """The marker of `directory` (None when it has none); a marker that is not ours is one ValueError."""
    path = os.path.join(os.fspath(directory), MARKER_FILE)
    try:
        with open(path, encoding="utf-8") as f:
            marker = json.load(f)
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise ValueError(f"{path} is not readable as a fastticket marker ({exc}); move it away if it is not ours") from None
    if not isinstance(marker, dict) or marker.get("format") != MARKER_FORMAT or marker.get("command") not in COMMANDS:
        raise ValueError(f"{path} is not a fastticket marker (expected format {MARKER_FORMAT!r} and a command in {COMMANDS})")
    return marker


def owner(directory) -> str | None:
    """The command that wrote `directory` (None: no marker, i.e. not written by fastticket)."""
    marker = read_marker(directory)
    return None if marker is None else marker["command"]


def write_marker(directory, command: str, **extra) -> None:
    from .. import __version__

    if command not in COMMANDS:
        raise ValueError(f"command {command!r} is unknown; allowed: {COMMANDS}")
    marker = {"format": MARKER_FORMAT, "version": 1, "command": command, "fastticket": __version__,
              "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), **extra}
    atomic_write_text(os.path.join(os.fspath(directory), MARKER_FILE), json.dumps(marker, indent=1, sort_keys=True))


def check_target(directory, command: str, *, resume: bool = False) -> None:
    """Refuses, before any work, an output directory `command` may not write into: a file, a directory that
    is not writable, a non-empty directory without our marker (the user's files), another command's run,
    or (without resume) an earlier run of the same command. Writes nothing."""
    directory = os.fspath(directory)
    if os.path.lexists(directory) and not os.path.isdir(directory):
        raise ValueError(f"output directory {directory!r} exists and is not a directory")
    check_writable(directory)
    if not os.path.isdir(directory):
        return
    entries = sorted(set(os.listdir(directory)) - {MARKER_FILE, LOCK_FILE})
    found = owner(directory)
    if found is None:
        if entries:
            raise ValueError(f"output directory {directory!r} is not empty and has no {MARKER_FILE} (it holds "
                             f"{_some(entries)}): fastticket writes only into new or empty directories and its own runs; "
                             f"refusing to write into it: choose a new or empty directory")
        return
    if found != command:
        raise ValueError(f"output directory {directory!r} holds a `fastticket {found}` run; `fastticket {command}` "
                         f"does not write into it: choose another directory")
    if entries and not resume:
        hint = "pass --resume (resume=True) to continue it, or" if command in RESUMABLE else "refusing to overwrite it:"
        raise ValueError(f"output directory {directory!r} already holds a `fastticket {command}` run; {hint} choose another directory")


def claim(directory, command: str, *, resume: bool = False) -> str:
    """check_target, then creates `directory` (and parents) and records `command` in its marker."""
    check_target(directory, command, resume=resume)
    directory = os.fspath(directory)
    try:
        os.makedirs(directory, exist_ok=True)
        if owner(directory) is None:
            write_marker(directory, command)
    except OSError as exc:
        raise ValueError(f"cannot write output directory {directory!r}: {exc.strerror or exc}") from None
    return directory


def check_writable(directory) -> None:
    """`directory`, or the nearest ancestor that exists, must be a directory this process may write."""
    path = os.path.abspath(os.fspath(directory))
    while not os.path.lexists(path):
        parent = os.path.dirname(path)
        if parent == path:
            break
        path = parent
    if not os.path.isdir(path):
        raise ValueError(f"cannot create output directory {os.fspath(directory)!r}: {path!r} is not a directory")
    if not os.access(path, os.W_OK | os.X_OK):
        raise ValueError(f"cannot write output directory {os.fspath(directory)!r}: {path!r} is not writable")


def _some(names: list[str]) -> str:
    return ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")
