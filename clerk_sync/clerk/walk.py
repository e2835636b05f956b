"""Page walkers: list a resource page by page, yielding each page as it arrives.

Memory stays one page deep: a walker holds the page it is yielding and nothing else, so a walk of
100k users costs what one 500-user page costs. Which parameters to send next is decided by the pure
functions in ``paging.py``; a wrong-shaped page raises ``BadResponseError`` inside the client's
retry loop, so it is fetched again like a truncated one.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from functools import partial
from typing import Any

from clerk_sync.clerk import paging
from clerk_sync.clerk.client import ClerkClient
from clerk_sync.resources import Resource

DEFAULT_PAGE_SIZE = 500


@dataclass(frozen=True)
class Page:
    """One page of a walk."""

    items: list[dict[str, Any]]
    total_count: int | None
    """Clerk's ``total_count`` for ``{data, total_count}`` envelopes, else None."""
    next_cursor: str | None
    """Resume token: pass it as ``after_cursor`` to continue after this page; None on the last page.
    For cursor walks the last item's id, for offset walks the next offset as a string."""
    request_params: tuple[tuple[str, str], ...]
    """The query this page was fetched with."""
    walk_params: tuple[tuple[str, str], ...] = ()
    """The resource's ``extra_walks`` parameter set this page belongs to; () for the base walk."""
    number: int = 0
    """Position of the page in its walk, from 0 (counting from the resume point)."""

    @property
    def last(self) -> bool:
        """True for the final page of its walk."""
        return self.next_cursor is None


async def walk(
    client: ClerkClient,
    resource: Resource,
    page_size: int = DEFAULT_PAGE_SIZE,
    params: Iterable[tuple[str, str]] = (),
    after_cursor: str | None = None,
    start_offset: int = 0,
    *,
    include_extra: bool = True,
) -> AsyncIterator[Page]:
    """Every page of ``resource``: the base walk (resumable), then each of its ``extra_walks``."""
    params = tuple(params)
    async for page in walk_one(client, resource, page_size, params, after_cursor, start_offset):
        yield page
    if include_extra:
        for extra in resource.extra_walks:
            async for page in walk_one(client, resource, page_size, params, walk_params=extra):
                yield page


async def walk_one(
    client: ClerkClient,
    resource: Resource,
    page_size: int = DEFAULT_PAGE_SIZE,
    params: Iterable[tuple[str, str]] = (),
    after_cursor: str | None = None,
    start_offset: int = 0,
    *,
    walk_params: tuple[tuple[str, str], ...] = (),
) -> AsyncIterator[Page]:
    """The pages of one parameter set of ``resource`` (base params + ``params`` + ``walk_params``).

    ``resource.paging == "cursor"`` walks by ``starting_after`` (resume with ``after_cursor``);
    anything else walks by offset (resume with ``start_offset``, or a page's ``next_cursor``).
    """
    if not 1 <= page_size <= 500:
        raise ValueError("page_size must be between 1 and 500 (Clerk's limit)")
    base = (*resource.base_params, *params, *walk_params)
    check = partial(paging.parse_page, envelope=resource.envelope, path=resource.path)
    number = 0
    if resource.paging == "cursor":
        cursor = after_cursor
        while True:
            query = paging.cursor_params(base, page_size, cursor)
            parsed = await client.get_json(resource.path, query, validate=check)
            cursor = paging.next_cursor(parsed.items, page_size)
            yield Page(parsed.items, parsed.total_count, cursor, query, walk_params, number)
            if cursor is None:
                return
            number += 1
    offset: int | None = int(after_cursor) if after_cursor is not None else start_offset
    while offset is not None:
        query = paging.offset_params(base, page_size, offset)
        parsed = await client.get_json(resource.path, query, validate=check)
        offset = paging.next_offset(offset, len(parsed.items), page_size, parsed.total_count)
        token = None if offset is None else str(offset)
        yield Page(parsed.items, parsed.total_count, token, query, walk_params, number)
        number += 1
