"""Small request bodies written by the task sending the request, appended to its headers.

aiohttp writes a request body from a task of its own: a Task per request and, before Python
3.12, two more event-loop turns (its start, its done callbacks). That was a tenth of the SDK's
CPU per ``create_api_key`` on Python 3.11. The SDK's bodies are small bytes known before the
request starts, so aiohttp is left to send a request without body, and the body goes out in the
same write as the headers.
"""

from __future__ import annotations

from typing import Any, Final

import aiohttp
from aiohttp.connector import Connection
from aiohttp.payload import BytesPayload

__all__ = ["InlineBodyRequest"]

_INLINE_MAX: Final = 64 * 1024  # beyond this, one more write costs little next to the copy


class InlineBodyRequest(aiohttp.ClientRequest):
    """A ClientRequest that appends a small bytes body to the write of its headers."""

    async def send(self, conn: Connection) -> aiohttp.ClientResponse:
        body = self._body
        protocol = conn.protocol
        transport = None if protocol is None else protocol.transport
        if (
            type(body) is not BytesPayload
            or body.size is None
            or body.size > _INLINE_MAX
            or self._continue is not None
            or self.chunked is not None  # the headers' write would end the body
            or self.compress
            or protocol is None
            or transport is None
            or protocol.writing_paused
        ):
            return await super().send(conn)
        joined = _HeadersWithBody(transport, body._value)
        self._body = None  # aiohttp then writes the headers only (Content-Length still counts the body)
        protocol.transport = joined  # type: ignore[assignment]
        try:
            response = await super().send(conn)
        finally:
            if protocol.transport is not None:  # not if the connection was lost meanwhile
                protocol.transport = transport
            self._body = body  # for whatever sends this request again (aiohttp's resend, redirects)
        if not joined.sent:  # an aiohttp that writes headers some other way: fail, never hang
            conn.close()
            raise aiohttp.ClientConnectionError("the request body could not be written")
        return response


class _HeadersWithBody:
    """The connection's transport, which appends the body to the write that ends the headers."""

    def __init__(self, transport: Any, body: bytes) -> None:
        self._transport = transport
        self._body = body
        self.sent = False

    def write(self, data: bytes) -> None:
        if not self.sent and data.endswith(b"\r\n\r\n"):
            self.sent = True
            data += self._body
        self._transport.write(data)

    def is_closing(self) -> bool:
        return bool(self._transport.is_closing())

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)
