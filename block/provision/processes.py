"""Child processes in their own process groups, stopped by group id (never by name).

Every process a provider starts gets a new session, so stopping it also stops whatever it started
(a hook script's children, an engine's workers), and a Ctrl-C aimed at the router's terminal group
does not hit them before the router can drain and stop them in order.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal


async def stop_group(proc: asyncio.subprocess.Process, grace_s: float = 5.0) -> int | None:
    """SIGTERM the process group, wait up to `grace_s`, then SIGKILL it. The exit status."""
    if proc.returncode is None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            return await asyncio.wait_for(proc.wait(), grace_s)
        except TimeoutError:
            pass
    # The leader may be gone while its group lives on: kill the group either way.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(TimeoutError):
        return await asyncio.wait_for(proc.wait(), grace_s)
    return proc.returncode
