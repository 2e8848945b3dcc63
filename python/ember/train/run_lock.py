"""One `ember train` per run folder at a time. A second one started on a run folder in use (a job
relaunched while the first still runs, two commands with one --job.name) would delete or trim
the first's metrics.jsonl, rewind or prune its checkpoints under it, and write its own between
them. The running one holds an exclusive flock on the folder itself (no lock file to leave
behind); the kernel drops it when the process ends, however it ends."""

from __future__ import annotations

import errno
import fcntl
import os
from pathlib import Path

from .config import ConfigError


class RunFolderLock:
    """Held by rank 0 from the moment it knows its run folder until the run ends (a context
    manager: `with RunFolderLock() as lock`)."""

    def __init__(self):
        self.fd: int | None = None

    def acquire(self, run_dir: Path) -> None:
        """Hold run_dir, or refuse (ConfigError) if another process holds it. A second call is a no-op."""
        if self.fd is not None:
            return
        fd = os.open(run_dir, os.O_RDONLY)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                raise ConfigError(
                    f"run folder {run_dir} is in use by another `ember train`: wait for it to end, "
                    "or choose another --job.name"
                ) from None
            return  # a file system without flock (some network mounts): unguarded, as before
        self.fd = fd

    def release(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None

    def __enter__(self) -> RunFolderLock:
        return self

    def __exit__(self, *exc) -> None:
        self.release()
