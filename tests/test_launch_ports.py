"""free_ports: a run of consecutive free ports for a server listening on several (`block engine --count`)."""

from __future__ import annotations

import socket

from block import launch


def bindable(first: int, count: int) -> bool:
    held = []
    try:
        for port in range(first, first + count):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            held.append(s)
            s.bind(("127.0.0.1", port))
        return True
    except OSError:
        return False
    finally:
        for s in held:
            s.close()


def test_a_run_with_a_taken_port_is_skipped(monkeypatch) -> None:
    blocker = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    blocker.bind(("127.0.0.1", 0))
    taken = blocker.getsockname()[1]
    real = launch.free_port
    picks = iter([taken - 2])  # the OS's first pick: a run of 4 from there meets the taken port

    def pick(host: str = "127.0.0.1") -> int:
        return next(picks, None) or real(host)

    monkeypatch.setattr(launch, "free_port", pick)
    try:
        first = launch.free_ports(4)
        assert not first <= taken < first + 4
        assert bindable(first, 4)
    finally:
        blocker.close()
