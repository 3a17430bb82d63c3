"""One writer per run folder: :class:`RunLock` holds ``RUN/.lock`` and records its holder in the ``RUN/.lock.json``
sidecar; :class:`RunLocked` names the holder when another process has it (see :mod:`prunebench.store`)."""

from __future__ import annotations

import errno
import json
import os
import platform
import shlex
import shutil
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from prunebench.core import PruneBenchError
from prunebench.records import _now, _suppress, atomic_write_text, read_json

if TYPE_CHECKING:
    from prunebench.store import ResultStore

LOCK_NAME, LOCK_INFO_NAME = ".lock", ".lock.json"
_HELD: dict[Path, int] = {}  # run folders this process holds the lock of (a nested lock() of the same folder is a no-op)


class RunLocked(PruneBenchError):
    """Another process holds the run folder's lock."""


class RunLock:
    """One writer per run folder: ``RUN/.lock`` held with ``filelock`` (an OS lock, released when the process
    exits, even by SIGKILL), its holder in ``RUN/.lock.json``. ``wait``: False fails at once with
    :class:`RunLocked` naming the holder, True waits as long as it takes, a number waits that many seconds.
    While held, the store is in repair mode and the folder's leftover ``.tmp`` files are removed."""

    def __init__(self, store: ResultStore, wait: bool | float = False, command: str | None = None):
        self.store = store
        self.path = store.root / LOCK_NAME
        self.info_path = store.root / LOCK_INFO_NAME
        self.wait = wait
        self.command = command if command is not None else " ".join(shlex.quote(a) for a in [Path(sys.argv[0]).name, *sys.argv[1:]])
        self.created = False
        self._lock: Any = None

    def holder(self) -> str:
        info, problem = read_json(self.info_path)
        if problem or not isinstance(info, dict):
            return "another process (no holder recorded)"
        return f"pid {info.get('pid')} on {info.get('host')}, started {info.get('started')}: {info.get('command')}"

    def acquire(self) -> RunLock:
        from filelock import FileLock, Timeout

        root = self.store.root
        self._was_repair = self.store.repair
        held = root.resolve()
        if held in _HELD:  # this process holds it already (e.g. `prunebench run` around Sweep.run)
            _HELD[held] += 1
            self._nested = held
            self.store.repair = True
            return self
        if root.exists() and not root.is_dir():
            raise PruneBenchError(f"--output {root} is a file, not a folder; choose another --output (a folder path)")
        self.created = not root.exists()
        try:
            root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise PruneBenchError(f"cannot create the run folder {root}: {exc.strerror or exc}; {os_error_fix(exc)}") from None
        timeout = -1 if self.wait is True else (0 if self.wait is False else float(self.wait))
        self._lock = FileLock(str(self.path), timeout=timeout)
        try:
            self._lock.acquire()
        except Timeout:
            raise RunLocked(
                f"{root} is in use by another prunebench run ({self.holder()}); wait for it, queue behind it with --wait, or choose another --output"
            ) from None
        except OSError as exc:
            raise PruneBenchError(f"cannot lock the run folder {root}: {exc.strerror or exc}; {os_error_fix(exc)}") from None
        _HELD[held] = 1
        self._nested = None
        try:  # the first write into the folder: a full disk or a read-only folder shows here, before any result
            info = {"pid": os.getpid(), "host": platform.node(), "started": _now(), "command": self.command}
            atomic_write_text(self.info_path, json.dumps(info) + "\n")
        except BaseException:
            self.release(failed=True)
            raise
        self.store.repair = True
        self.store.clean_stale_tmp(0)
        return self

    def release(self, failed: bool = False) -> None:
        if getattr(self, "_nested", None) is not None:
            _HELD[self._nested] -= 1
            self.store.repair = self._was_repair
            self._nested = None
            return
        if self._lock is None:
            return
        _HELD.pop(self.store.root.resolve(), None)
        self.store.repair = self._was_repair
        with _suppress():
            self.info_path.unlink()
        self._lock.release()
        self._lock = None
        if failed and self.created:  # a bad input found after the folder was made: leave nothing behind
            with _suppress():
                leftovers = {p.name for p in self.store.root.iterdir()}
                if leftovers <= {LOCK_NAME, LOCK_INFO_NAME}:
                    shutil.rmtree(self.store.root)

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, exc_type, *exc: Any) -> None:
        self.release(failed=exc_type is not None)


def os_error_fix(exc: BaseException) -> str:
    """What to do about an OSError, in a few words."""
    code = getattr(exc, "errno", None)
    if code in (errno.ENOSPC, errno.EDQUOT):
        return "free disk space or choose another --output on a disk with room"
    if code in (errno.EACCES, errno.EPERM, errno.EROFS):
        return "choose a writable --output or fix the folder's permissions"
    if code in (errno.EEXIST, errno.ENOTDIR, errno.EISDIR):
        return "a file is in the way of a folder (or the reverse); choose another --output"
    if code == errno.ENOENT:
        return "check that the path exists"
    return "check the path and the disk"
