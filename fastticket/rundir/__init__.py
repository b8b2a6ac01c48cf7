"""Run directories: who wrote them, what identifies a run, one job at a time, no leftovers, safe replacement.

    owner.py     the marker file (fastticket_run.json) naming the command that wrote a directory;
                 check_target / claim: refuse the user's files and other commands' runs before any work
    lock.py      RunLock: pid, host, start time and a job token; stale locks taken over with a warning
    replace.py   clean_leftovers (temp files and directories of dead writers), replace_dir (atomic swap)
    identity.py  data / model / code identity recorded in a run's configuration, and their differences
"""

from .identity import code_version, config_differences, fingerprint_dataset, fingerprint_state, model_identity
from .lock import RunLock, lock_scope, read_lock, releases_run_locks
from .owner import LOCK_FILE, MARKER_FILE, check_target, check_writable, claim, owner, read_marker, write_marker
from .replace import check_replaceable, clean_leftovers, remove_tree, replace_dir

__all__ = [
    "MARKER_FILE", "LOCK_FILE", "owner", "read_marker", "write_marker", "check_target", "check_writable", "claim",
    "RunLock", "lock_scope", "read_lock", "releases_run_locks", "clean_leftovers", "check_replaceable",
    "replace_dir", "remove_tree", "code_version", "config_differences", "fingerprint_dataset", "fingerprint_state",
    "model_identity",
]
