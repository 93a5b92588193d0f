"""Connection limits on the real server: idle or slow connections are closed after the request-
head timeout, and one client's open connections cannot lock the others out (#17 severe 5)."""

from __future__ import annotations

import json
import socket
import time

import httpx

from .server import launched

LIMITS = ["--set", "server.header_timeout_s=1", "--set", "server.max_connections_per_client=6"]


def _connect(port: int, source: str = "127.0.0.1") -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=5, source_address=(source, 0))
    return sock


def _read_all(sock: socket.socket) -> bytes:
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    return data


def _error(raw: bytes) -> tuple[int, dict]:
    head, _, body = raw.partition(b"\r\n\r\n")
    return int(head.split()[1]), json.loads(body)["error"]


def test_idle_and_slow_connections_are_closed_and_one_client_cannot_lock_out_others(tmp_path) -> None:
    with launched(LIMITS, tmp_path / "server.log", preload=False) as server:
        port = int(server["base"].rsplit(":", 1)[1])
        idle = [_connect(port) for _ in range(6)]
        refused = _connect(port)
        status, error = _error(_read_all(refused))  # answered at accept, before any byte is sent
        assert (status, error["code"], error["type"]) == (429, "too_many_connections", "rate_limit_exceeded")
        # Another client is served meanwhile (all of 127.0.0.0/8 is loopback).
        other = _connect(port, "127.0.0.2")
        other.sendall(b"GET /healthz HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
        assert _read_all(other).startswith(b"HTTP/1.1 200")
        # A request head that never completes (slowloris) is cut at the timeout, like the idle ones.
        slow = _connect(port, "127.0.0.2")
        slow.sendall(b"GET /healthz HTTP/1.1\r\nhost: x\r\n")
        started = time.monotonic()
        status, error = _error(_read_all(slow))
        assert (status, error["code"]) == (408, "request_timeout") and time.monotonic() - started < 4
        for sock in idle:
            assert _error(_read_all(sock))[0] == 408
        assert httpx.get(server["base"] + "/healthz").status_code == 200  # the slots are free again


def test_an_oversized_request_head_is_431_and_a_large_body_is_not(tmp_path) -> None:
    with launched(LIMITS, tmp_path / "server.log", preload=False) as server:
        port = int(server["base"].rsplit(":", 1)[1])
        big = _connect(port)
        big.sendall(b"GET /healthz HTTP/1.1\r\nhost: x\r\nx-big: " + b"a" * 200_000 + b"\r\n\r\n")
        status, error = _error(_read_all(big))
        assert (status, error["code"]) == (431, "headers_too_large")
        # A body far larger than the head limit, sent with its head in one write, is read as a body.
        body = b'{"model": "gemma-3-270m", "prompt": "' + b"x" * 300_000 + b'", "max_tokens": 1}'
        response = httpx.post(server["base"] + "/v1/completions", content=body,
                              headers={"content-type": "application/json"}, timeout=120)
        assert response.status_code != 431, response.text
