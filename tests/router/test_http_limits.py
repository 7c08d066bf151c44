"""Request-head size limit and head/body read timeouts in front of clients (block.http_limits), against
a real `block router` process in front of a real `block engine`, and on the engine and the sidecar."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from block.launch import ManagedServer, block_command, router_ready

HEADER_TIMEOUT_S = 1.0
BODY_TIMEOUT_S = 1.0
CLOSE_BOUND_S = 8.0  # generous: the behaviour is a 1 s timeout, the machine may be busy


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ManagedServer]:
    logs = tmp_path_factory.mktemp("limits")
    with block_command("engine", ["engine", "--profile", "tiny-fast", "--log-level", "warning"], logs) as e:
        yield e


@pytest.fixture(scope="module")
def router(engine: ManagedServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ManagedServer]:
    args = ["router", "--instance", engine.url, "--policy", "round-robin", "--log-level", "warning"]
    args += ["--header-timeout-s", str(HEADER_TIMEOUT_S), "--body-timeout-s", str(BODY_TIMEOUT_S)]
    logs = tmp_path_factory.mktemp("limits")
    with block_command("router", args, logs, health=router_ready(1)) as r:
        yield r


def connect(server: ManagedServer) -> socket.socket:
    sock = socket.create_connection((server.host, server.port), timeout=CLOSE_BOUND_S)
    sock.settimeout(CLOSE_BOUND_S)
    return sock


def read_until_closed(sock: socket.socket, limit_s: float = CLOSE_BOUND_S) -> bytes:
    """What the server sends until it closes the connection (b"" tail on reset), at most `limit_s`."""
    out = b""
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            break
        except TimeoutError:
            raise AssertionError(f"still open after {limit_s} s; got {out[:200]!r}") from None
        if not chunk:
            break
        out += chunk
    return out


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def completion(url: str) -> httpx.Response:
    body = {"prompt": "hello there", "max_tokens": 2}  # no model: the served one
    return httpx.post(url + "/v1/completions", json=body, timeout=30)


def test_normal_requests_still_work(router: ManagedServer) -> None:
    for _ in range(3):
        r = completion(router.url)
        assert r.status_code == 200 and r.json()["choices"]
    # A normal request whose head and body arrive in separate writes, well within the timeouts.
    sock = connect(router)
    body = b'{"prompt": "hi", "max_tokens": 1}'
    sock.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n")
    sock.sendall(b"Content-Length: %d\r\nConnection: close\r\n\r\n" % len(body))
    time.sleep(0.2)
    sock.sendall(body)
    assert read_until_closed(sock).startswith(b"HTTP/1.1 200")


def test_a_huge_header_gets_431_and_is_never_buffered(router: ManagedServer) -> None:
    assert router.proc is not None
    before = rss_bytes(router.proc.pid)
    sent = 0
    sock = connect(router)
    sock.sendall(b"GET /v1/models HTTP/1.1\r\nHost: x\r\nX-Big: ")
    chunk = b"a" * (1 << 20)
    try:
        for _ in range(48):  # up to 48 MiB of one header line, never terminated
            sock.sendall(chunk)
            sent += len(chunk)
    except OSError:
        pass  # closed on us: expected once the limit is passed
    reply = read_until_closed(sock)
    sock.close()
    assert reply == b"" or reply.startswith(b"HTTP/1.1 431"), reply[:200]
    grew = rss_bytes(router.proc.pid) - before
    assert grew < 16 << 20, f"router RSS grew by {grew >> 20} MiB after {sent >> 20} MiB of header"
    assert completion(router.url).status_code == 200


def test_a_1_mib_header_gets_431(router: ManagedServer) -> None:
    sock = connect(router)
    sock.sendall(b"GET /v1/models HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * (1 << 20) + b"\r\n\r\n")
    reply = read_until_closed(sock)
    assert reply.startswith(b"HTTP/1.1 431"), reply[:200]
    assert b'"error"' in reply and b"larger than 65536 bytes" in reply


def trickle_until_closed(socks: list[socket.socket], first: bytes, limit_s: float) -> list[float]:
    """Send `first` on each, then a header byte on each every 0.1 s until the server closes them all;
    the seconds each lasted."""
    started = time.monotonic()
    lasted: dict[int, float] = {}
    for sock in socks:
        sock.sendall(first)
        sock.setblocking(False)
    while len(lasted) < len(socks) and time.monotonic() - started < limit_s:
        time.sleep(0.1)
        for i, sock in enumerate(socks):
            if i in lasted:
                continue
            try:
                closed = sock.recv(65536) == b""
            except BlockingIOError:
                closed = False
            except ConnectionResetError:
                closed = True
            if not closed:
                try:
                    sock.send(b"X")
                except OSError:
                    closed = True
            if closed:
                lasted[i] = time.monotonic() - started
    assert len(lasted) == len(socks), f"trickling connections still open after {limit_s} s"
    return [lasted[i] for i in range(len(socks))]


def test_trickling_headers_are_cut_after_the_header_timeout(router: ManagedServer) -> None:
    socks = [connect(router) for _ in range(3)]
    try:
        lasted = trickle_until_closed(socks, b"GET /v1/models HTTP/1.1\r\nX-Slow: ", CLOSE_BOUND_S)
    finally:
        for s in socks:
            s.close()
    assert all(HEADER_TIMEOUT_S * 0.5 <= t < CLOSE_BOUND_S for t in lasted), lasted


def test_a_silent_connection_is_closed(router: ManagedServer) -> None:
    sock = connect(router)
    started = time.monotonic()
    assert read_until_closed(sock) == b""
    assert HEADER_TIMEOUT_S * 0.5 <= time.monotonic() - started < CLOSE_BOUND_S


def test_the_next_request_on_a_kept_alive_connection_is_timed_too(router: ManagedServer) -> None:
    sock = connect(router)
    sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
    assert sock.recv(65536).startswith(b"HTTP/1.1 200")
    try:
        (lasted,) = trickle_until_closed([sock], b"GET /health HTTP/1.1\r\n", CLOSE_BOUND_S)
    finally:
        sock.close()
    assert HEADER_TIMEOUT_S * 0.5 <= lasted < CLOSE_BOUND_S


def test_a_stalled_body_gets_408(router: ManagedServer) -> None:
    sock = connect(router)
    sock.sendall(
        b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b'Content-Length: 100\r\n\r\n{"model": '
    )
    started = time.monotonic()
    reply = read_until_closed(sock)
    sock.close()
    assert reply.startswith(b"HTTP/1.1 408"), reply[:200]
    assert b"request body not received within 1 s" in reply
    assert time.monotonic() - started < CLOSE_BOUND_S
    assert completion(router.url).status_code == 200  # the router is fine


def test_the_engine_and_the_sidecar_have_the_same_limits(
    engine: ManagedServer, tmp_path_factory: pytest.TempPathFactory
) -> None:
    logs = tmp_path_factory.mktemp("limits")
    with block_command("predictor", ["predictor", "--engine", engine.url], logs) as sidecar:
        for server in (engine, sidecar):
            sock = connect(server)
            sock.sendall(b"GET /health HTTP/1.1\r\nX-Big: " + b"a" * (1 << 20) + b"\r\n\r\n")
            reply = read_until_closed(sock)
            sock.close()
            assert reply.startswith(b"HTTP/1.1 431"), (server.name, reply[:200])
