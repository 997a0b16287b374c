"""Temporary folders of a server process that never outlive it for long.

A server makes temporary folders (per-session folders, the example galleries' cache).
:class:`TempFolders` names each after its owner, a token held by an exclusive ``flock``
on a lock file for as long as the process lives. They are removed when the process
exits (``cleanup``, registered with :mod:`atexit`), and a process killed before it could
clean up (``kill -9``, a crash, a power cut) leaves a lock file nobody holds: the next
start's :func:`sweep` removes its folders. Folders of a process that is still running
are never touched, so several servers may share one temporary directory.

:func:`own_gradio_cache` gives Gradio's upload cache (``GRADIO_TEMP_DIR``) the same treatment:
a folder of this process inside it, removed at exit and swept at the next start.
"""

from __future__ import annotations

import atexit
import fcntl
import logging
import os
import re
import secrets
import shutil
import tempfile
from collections.abc import MutableMapping
from pathlib import Path

logger = logging.getLogger(__name__)

__all__ = ["TempFolders", "own_gradio_cache", "sweep"]

_LOCK = re.compile(r"^cmce-owner-(?P<token>[0-9a-z]+)\.lock$")


def _owner_alive(lock_path: Path) -> bool:
    """Whether a process still holds ``lock_path``'s lock (a lock file that vanished counts as alive)."""
    try:
        fd = os.open(lock_path, os.O_RDWR)
    except FileNotFoundError:
        return True  # its owner is cleaning up right now
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # closing drops a lock we may just have taken
    return False


def sweep(root: str | os.PathLike | None = None) -> list[Path]:
    """Remove the temporary folders of cmce processes that died without cleaning up.

    Args:
        root: the temporary directory (default: :func:`tempfile.gettempdir`).

    Returns:
        The folders (and lock files) removed.
    """
    base = Path(root or tempfile.gettempdir())
    removed: list[Path] = []
    try:
        locks = [p for p in base.iterdir() if _LOCK.match(p.name)]
    except OSError as e:
        logger.warning("cannot list %s to sweep old temporary folders: %s", base, e)
        return removed
    for lock in locks:
        if _owner_alive(lock):
            continue
        token = _LOCK.match(lock.name)["token"]
        for folder in base.glob(f"cmce-*-{token}-*"):
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(folder)
        lock.unlink(missing_ok=True)
        removed.append(lock)
    if removed:
        logger.info("removed %d temporary folders left by cmce processes that died: %s",
                    len(removed), ", ".join(p.name for p in removed))
    return removed


class TempFolders:
    """This process's temporary folders: ``cmce-<kind>-<token>-*`` in ``root``.

    Creating one sweeps what dead processes left (``sweep_on_start``), takes the owner
    lock and registers ``cleanup`` to run at exit.
    """

    def __init__(self, root: str | os.PathLike | None = None, *, sweep_on_start: bool = True):
        self.root = Path(root or tempfile.gettempdir())
        if sweep_on_start:
            sweep(self.root)
        self.token = f"{os.getpid():x}{secrets.token_hex(4)}"
        self.lock_path = self.root / f"cmce-owner-{self.token}.lock"
        self._fd: int | None = os.open(self.lock_path, os.O_CREAT | os.O_RDWR, 0o600)
        fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        self._pid = os.getpid()
        atexit.register(self.cleanup)

    def mkdtemp(self, kind: str) -> Path:
        """A new folder ``cmce-<kind>-<token>-XXXX`` (``kind``: letters, e.g. ``session``)."""
        if not kind.isalpha():
            raise ValueError(f"kind must be letters only, got {kind!r}")
        return Path(tempfile.mkdtemp(prefix=f"cmce-{kind}-{self.token}-", dir=self.root))

    def folders(self) -> list[Path]:
        """This process's folders that exist now."""
        return sorted(self.root.glob(f"cmce-*-{self.token}-*"))

    def cleanup(self) -> None:
        """Remove every folder of this process and its lock file (idempotent)."""
        if self._fd is None or os.getpid() != self._pid:  # a forked child never removes its parent's folders
            return
        for folder in self.folders():
            shutil.rmtree(folder, ignore_errors=True)
        self.lock_path.unlink(missing_ok=True)
        os.close(self._fd)
        self._fd = None
        logger.info("temporary folders of this process removed from %s", self.root)


def own_gradio_cache(environ: MutableMapping[str, str] | None = None) -> TempFolders:
    """Point ``GRADIO_TEMP_DIR`` at a folder of this process, inside the one it named.

    Gradio writes every upload and every file it serves there and never empties it at start or
    stop; as a :class:`TempFolders` folder (``cmce-gradio-<token>-*``) it is removed at exit and,
    after a ``kill -9``, at the next start. Call it before the Gradio app's components are made
    (each reads the variable when it is created).

    Args:
        environ: the environment to read and set (default ``os.environ``).

    Returns:
        The TempFolders owning the folder (its ``folders()`` is ``[the folder]``).
    """
    env = os.environ if environ is None else environ
    root = Path(env.get("GRADIO_TEMP_DIR") or Path(tempfile.gettempdir()) / "gradio")
    root.mkdir(parents=True, exist_ok=True)
    owner = TempFolders(root)
    env["GRADIO_TEMP_DIR"] = str(owner.mkdtemp("gradio"))
    return owner
