"""The transport guard that makes the Clerk client read-only by construction."""

from __future__ import annotations

import httpx

from clerk_sync.errors import ReadOnlyViolationError


class GetOnlyTransport(httpx.AsyncBaseTransport):
    """Wraps a transport and refuses every method but GET before a byte is sent.

    clerk-sync must never change a customer's Clerk instance. The client only exposes
    ``get_json``, but this guard sits below everything (event hooks, ``send``, a future
    careless ``post``), so no code path above it can send anything else.
    """

    def __init__(self, inner: httpx.AsyncBaseTransport) -> None:
        self.inner = inner

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if request.method != "GET":
            raise ReadOnlyViolationError(
                f"refused to send {request.method} {request.url.path}: clerk-sync only reads from Clerk "
                "(GET); this is a bug in clerk-sync, please report it"
            )
        return await self.inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self.inner.aclose()
