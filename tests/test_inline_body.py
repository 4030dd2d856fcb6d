"""Request bodies written with their headers (``_inline_body``): what reaches the server, once."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import aiohttp.http_writer
import pytest

from illumass import APIConnectionError
from illumass._inline_body import InlineBodyRequest
from illumass._request import Request
from illumass._transport import AttemptFailed, Transport

pytestmark = pytest.mark.anyio

_REPLY = b'{"result":{"ok":true}}'


class _Recorder(asyncio.Protocol):
    """A one-connection HTTP/1.1 server that keeps each chunk it receives, then answers 200."""

    def __init__(self, requests: list[list[bytes]]) -> None:
        self.chunks: list[bytes] = []
        requests.append(self.chunks)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.chunks.append(data)
        raw = b"".join(self.chunks)
        head, found, body = raw.partition(b"\r\n\r\n")
        if not found:
            return
        lines = head.lower().split(b"\r\n")
        length = next((int(line[15:]) for line in lines if line.startswith(b"content-length:")), 0)
        if len(body) >= length:
            self.transport.write(
                b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                b"Content-Length: %d\r\n\r\n%s" % (len(_REPLY), _REPLY)
            )


@pytest.fixture
async def recorder() -> AsyncIterator[tuple[str, list[list[bytes]]]]:
    requests: list[list[bytes]] = []
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: _Recorder(requests), "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}/v4", requests
    finally:
        server.close()


@pytest.fixture
def body_tasks(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """How many times aiohttp started its own body writer (a task of its own)."""
    started: list[int] = []
    write_bytes = aiohttp.ClientRequest.write_bytes

    def spy(self: aiohttp.ClientRequest, *args: Any, **kwargs: Any) -> Any:
        started.append(1)
        return write_bytes(self, *args, **kwargs)

    monkeypatch.setattr(aiohttp.ClientRequest, "write_bytes", spy)
    return started


def _transport(url: str) -> Transport:
    return Transport(url, timeout=5.0, max_connections=2, max_response_size=1 << 20, trust_env=False)


async def _send(url: str, request: Request) -> None:
    transport = _transport(url)
    try:
        response = await transport.send(request, None)
        assert response.status == 200 and response.data == {"result": {"ok": True}}
    finally:
        await transport.aclose()


async def test_a_small_body_leaves_in_the_same_write_as_its_headers(
    recorder: tuple[str, list[list[bytes]]], body_tasks: list[int]
) -> None:
    url, requests = recorder
    body = b'{"description":"one write"}'
    await _send(url, Request("POST", "/api-keys/_create", {"_id": "k1"}, body))
    [chunks] = requests
    assert len(chunks) == 1, chunks  # one write on loopback arrives as one chunk
    head, _, sent = chunks[0].partition(b"\r\n\r\n")
    assert sent == body
    assert b"Content-Length: %d" % len(body) in head
    assert not body_tasks


@pytest.mark.parametrize("size", [64 * 1024 + 1, 300 * 1024])
async def test_a_large_body_is_sent_whole_and_once(
    recorder: tuple[str, list[list[bytes]]], body_tasks: list[int], size: int
) -> None:
    url, requests = recorder
    body = b'{"description":"' + b"x" * (size - 18) + b'"}'
    await _send(url, Request("POST", "/api-keys/_create", None, body))
    [chunks] = requests
    assert b"".join(chunks).partition(b"\r\n\r\n")[2] == body
    assert body_tasks == [1]  # aiohttp's own way


async def test_a_chunked_body_is_left_to_aiohttp(
    recorder: tuple[str, list[list[bytes]]], body_tasks: list[int]
) -> None:
    # The headers' write of a chunked request also ends its body: nothing may follow it.
    url, requests = recorder
    async with aiohttp.ClientSession(request_class=InlineBodyRequest) as session:
        response = await session.post(url, data=b'{"a":1}', chunked=True)
        response.release()
        assert response.status == 200
    assert body_tasks == [1]
    assert b"".join(requests[0]).partition(b"\r\n\r\n")[2].startswith(b"7\r\n")


async def test_a_request_without_body_is_unchanged(recorder: tuple[str, list[list[bytes]]]) -> None:
    url, requests = recorder
    await _send(url, Request("DELETE", "/api-keys/k1"))
    [chunks] = requests
    head, _, sent = b"".join(chunks).partition(b"\r\n\r\n")
    assert head.startswith(b"DELETE /v4/api-keys/k1 HTTP/1.1") and sent == b""


async def test_an_aiohttp_that_writes_headers_elsewhere_fails_the_attempt_at_once(
    recorder: tuple[str, list[list[bytes]]], monkeypatch: pytest.MonkeyPatch
) -> None:
    # A future aiohttp might write the headers outside send(): the body must then not be lost
    # silently (the request would wait for its timeout), nor be written ahead of the headers.
    url, requests = recorder
    monkeypatch.setattr(aiohttp.http_writer.StreamWriter, "set_eof", lambda self: None)
    transport = _transport(url)
    started = time.monotonic()
    try:
        with pytest.raises(AttemptFailed) as failed:
            await transport.send(Request("POST", "/api-keys/_create", None, b"{}"), None)
    finally:
        await transport.aclose()
    assert time.monotonic() - started < 2.0
    assert isinstance(failed.value.error, APIConnectionError)
    assert b"".join(chunk for chunks in requests for chunk in chunks) == b""  # nothing was written
