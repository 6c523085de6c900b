"""One run per output directory: ``<dir>/.lock`` names the run that holds the directory.

The lock is one line of JSON, ``{"host", "pid", "since", "started", "slurm_job"}``: the host name,
the process id, the local time the lock was taken (ISO 8601, to the second), on Linux the process's
start time in clock ticks since boot (optional) and, under Slurm, the job id and restart count.
It is created atomically (``O_CREAT | O_EXCL``), so of two runs started at once one wins. A
second run on the directory is refused while the holder lives; a lock left by a dead process on
this host (SIGKILL, out of memory) is taken over with a warning. A lock of another host cannot be
checked from here, so it is refused too, except one left by an earlier start of the same Slurm job
(``--requeue`` restarts a job under its id, often on another node, once the earlier start ended).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import socket
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from mtbi.errors import MtbiError

logger = logging.getLogger(__name__)

LOCK_FILE = ".lock"


@dataclass(frozen=True)
class Holder:
    """Who holds a lock: ``started`` tells a live holder from a later process that got its pid."""

    host: str
    pid: int
    since: str
    started: int | None = None
    slurm_job: str | None = None  # SLURM_JOB_ID.SLURM_RESTART_COUNT under Slurm

    @classmethod
    def me(cls) -> Holder:
        return cls(socket.gethostname(), os.getpid(), datetime.now().isoformat(timespec="seconds"),
                   _start_ticks(os.getpid()), _slurm_job())

    def is_earlier_start_of_my_slurm_job(self) -> bool:
        """Whether a requeued Slurm job of this process held the lock in an earlier start."""
        mine = _slurm_job()
        if not (mine and self.slurm_job):
            return False
        (job, restart), (held_job, held_restart) = mine.split("."), self.slurm_job.split(".")
        return job == held_job and int(held_restart) < int(restart)

    def is_running(self) -> bool:
        """Whether the holder still runs; only answerable on its own host (the caller checks)."""
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            pass  # another user's process: it exists
        return self.started is None or _start_ticks(self.pid) in (None, self.started)


def _slurm_job() -> str | None:
    """``<job id>.<restart count>`` of the Slurm job this process runs in; None outside Slurm."""
    job = os.environ.get("SLURM_JOB_ID")
    return f"{job}.{os.environ.get('SLURM_RESTART_COUNT', '0')}" if job else None


def _start_ticks(pid: int) -> int | None:
    """When ``pid`` started, in clock ticks since boot (Linux /proc); None where unknown."""
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19])
    except (OSError, IndexError, ValueError):
        return None


class RunLock:
    """The lock of ``directory`` (``<directory>/.lock``)."""

    def __init__(self, directory: str | os.PathLike) -> None:
        self.directory = Path(directory)
        self.path = self.directory / LOCK_FILE
        self.holder: Holder | None = None

    def acquire(self) -> None:
        """Take the lock, taking over a dead holder's; an :class:`MtbiError` naming the holder when
        it runs, or may run (another host)."""
        self.directory.mkdir(parents=True, exist_ok=True)
        me = Holder.me()
        while True:
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                self._remove_if_stale()
                continue
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(json.dumps(dataclasses.asdict(me)) + "\n")
                f.flush()
                os.fsync(f.fileno())
            self.holder = me
            return

    def _remove_if_stale(self) -> None:
        holder = self._read()
        if holder is None:  # removed by its holder meanwhile
            return
        requeued = holder.is_earlier_start_of_my_slurm_job()
        if not requeued and (holder.host != socket.gethostname() or holder.is_running()):
            raise MtbiError(f"{self.directory} is in use by pid {holder.pid} on host {holder.host} since "
                            f"{holder.since} ({self.path}); wait for it or remove the lock if that run is dead")
        logger.warning("%s: taking over the lock of pid %d on host %s (since %s), which no longer runs%s",
                       self.path, holder.pid, holder.host, holder.since,
                       " (an earlier start of this requeued Slurm job)" if requeued else "")
        self.path.unlink(missing_ok=True)

    def _read(self) -> Holder | None:
        """The holder the lock names; None when there is no lock."""
        try:
            return Holder(**json.loads(self.path.read_text(encoding="utf-8")))
        except FileNotFoundError:
            return None
        except (json.JSONDecodeError, TypeError, UnicodeDecodeError) as err:
            raise MtbiError(f"{self.path} is not a lock this version of mtbi reads (or is being written); remove it "
                            f"if no run is using {self.directory}") from err

    def release(self) -> None:
        """Remove the lock if this process still holds it."""
        if self.holder is not None and self._read() == self.holder:
            self.path.unlink()
        self.holder = None

    def __enter__(self) -> RunLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()
