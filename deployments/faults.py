"""Test-only fault hooks of the MusicGen deployment, steered by files in one directory.

Off unless the deployment's ``user_config`` carries ``fault_injection`` (the fault tests set it;
``serve_config.yaml`` and ``build_app``'s defaults never do). With it, files in ``control_dir``
make real faults happen on purpose, deterministically:

    hold              while it exists, generation requests wait inside the replica before the
                      engine runs: a long generation that the test ends by deleting the file
    unhealthy-<pid>   the replica running in process <pid> fails its health check, so Serve
                      replaces that replica (and only that one)
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from pydantic import BaseModel, ConfigDict

from musicfn.errors import EngineError

HOLD_FILE = "hold"
_POLL_S = 0.05


class FaultInjection(BaseModel):
    """Where the control files live."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    control_dir: str

    @property
    def directory(self) -> Path:
        return Path(self.control_dir)

    async def hold(self) -> None:
        """Wait while the ``hold`` file exists."""
        while (self.directory / HOLD_FILE).exists():
            await asyncio.sleep(_POLL_S)

    def check_health(self) -> None:
        """Raise EngineError when this process is marked unhealthy."""
        if (self.directory / unhealthy_marker(os.getpid())).exists():
            raise EngineError("engine device probe failed (injected fault)",
                              code="engine_unhealthy")


def unhealthy_marker(pid: int) -> str:
    """The control file that makes the replica in process ``pid`` fail its health check."""
    return f"unhealthy-{pid}"
