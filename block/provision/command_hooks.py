"""Provider `command`: shell hooks, so Kubernetes, Ray, Slurm or any script does the work.

- scale-up: `--scale-up-cmd CMD` runs through the shell; the last non-empty line it prints on stdout that
  starts with http:// or https:// is the new instance's base URL (it need not be ready yet: the router
  health-checks it). Exit status 0 required.
- scale-down: `--scale-down-cmd CMD` runs with the URL appended as the last argument and in the
  environment as BLOCK_INSTANCE_URL; called only after the instance's requests have finished.
Both also get BLOCK_PROVISION_ACTION (scale_up / scale_down). Each runs in its own process group and is
killed (the whole group) after `timeout_s`.
"""

from __future__ import annotations

import asyncio
import os
import shlex

from block.launch import stop_group
from block.provision.provider import ProvisionError


async def run_hook(cmd: str, env: dict[str, str], timeout_s: float) -> str:
    proc = await asyncio.create_subprocess_shell(
        cmd,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, **env},
        start_new_session=True,
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout_s)
    except TimeoutError:
        await stop_group(proc, grace_s=1.0)
        raise ProvisionError(f"hook timed out after {timeout_s:g} s: {cmd}") from None
    except asyncio.CancelledError:
        await stop_group(proc, grace_s=1.0)
        raise
    if proc.returncode != 0:
        tail = err.decode(errors="replace").strip()[-300:]
        raise ProvisionError(f"hook exited {proc.returncode}: {cmd}: {tail}")
    return out.decode(errors="replace")


def url_from_output(text: str) -> str:
    for line in reversed(text.splitlines()):
        line = line.strip()
        if line.startswith(("http://", "https://")):
            return line.rstrip("/")
    raise ProvisionError("scale-up hook printed no http(s):// URL on stdout")


class CommandHooks:
    name = "command"

    def __init__(self, scale_up_cmd: str, scale_down_cmd: str | None, timeout_s: float = 300.0) -> None:
        if not scale_up_cmd:
            raise ValueError("the command provider needs --scale-up-cmd")
        self.scale_up_cmd = scale_up_cmd
        self.scale_down_cmd = scale_down_cmd
        self.timeout_s = timeout_s

    async def acquire(self) -> str:
        out = await run_hook(self.scale_up_cmd, {"BLOCK_PROVISION_ACTION": "scale_up"}, self.timeout_s)
        return url_from_output(out)

    async def release(self, url: str) -> None:
        if not self.scale_down_cmd:
            return  # nothing to call: the instance is simply no longer routed to
        cmd = f"{self.scale_down_cmd} {shlex.quote(url)}"
        env = {"BLOCK_PROVISION_ACTION": "scale_down", "BLOCK_INSTANCE_URL": url}
        await run_hook(cmd, env, self.timeout_s)

    def standby(self) -> list[str]:
        return []

    async def close(self) -> None:
        return None  # instances the hooks made belong to the orchestrator: they outlive the router
