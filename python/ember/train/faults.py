"""Test-only fault injection: with EMBER_TEST_CRASH_AT=POINT the process kills itself (SIGKILL:
no clean-up, like a power cut or an OOM kill) when it reaches POINT. The tests use it to show
that a crash anywhere leaves only checkpoints and exports that load right. Points:

    step:K   right after step K's optimizer step (before its metrics row and checkpoint)
    save:K   while writing step K's checkpoint: the rank's shard file is cut to half, then the kill
    export   while writing model.safetensors: the temporary file is cut to half, then the kill

Unset, as it always is outside the tests, it does nothing.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

from .. import env

ENV = "EMBER_TEST_CRASH_AT"


def crash_point(name: str, torn: Path | None = None) -> None:
    if env.get(ENV) != name:
        return
    if torn is not None:  # what a write cut short leaves on disk
        os.truncate(torn, os.path.getsize(torn) // 2)
    os.kill(os.getpid(), signal.SIGKILL)
