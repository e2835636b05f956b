"""Pure paging logic: which parameters ask for a page, and what comes after it. No I/O.

Two schemes, as Clerk documents them:

* **cursor** (``/users``): ``starting_after=<id of the previous page's last user>`` with
  ``order_by=+created_at``. A cursor page costs the same however deep it is, and a deletion behind
  the cursor does not shift later rows, so full user walks always use it (never ``offset``).
* **offset** (everything else): ``offset += len(items)``. Stop on a short page, or, for
  ``{data, total_count}`` envelopes, once ``offset >= total_count``.

Also here: the shape check of a list page (``parse_page``), because what counts as "a page" is
part of the paging contract.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal

from clerk_sync.errors import BadResponseError

Params = tuple[tuple[str, str], ...]

CURSOR_ORDER = "+created_at"
"""The only ordering a Clerk cursor accepts that walks oldest-first."""
CURSOR_KEYS = frozenset({"limit", "offset", "starting_after", "order_by"})
OFFSET_KEYS = frozenset({"limit", "offset"})


def _without(params: Iterable[tuple[str, str]], keys: frozenset[str]) -> list[tuple[str, str]]:
    return [(k, v) for k, v in params if k not in keys]


def cursor_params(base: Iterable[tuple[str, str]], page_size: int, after: str | None) -> Params:
    """Query for one cursor page: ``base`` minus paging keys, then limit, order and cursor."""
    params = _without(base, CURSOR_KEYS)
    params += [("limit", str(page_size)), ("order_by", CURSOR_ORDER)]
    if after is not None:
        params.append(("starting_after", after))
    return tuple(params)


def next_cursor(items: list[dict[str, Any]], page_size: int) -> str | None:
    """The cursor for the next page, or None when this page was the last (shorter than a full page)."""
    if len(items) < page_size or not items:
        return None
    return str(items[-1]["id"])


def offset_params(base: Iterable[tuple[str, str]], page_size: int, offset: int) -> Params:
    """Query for one offset page: ``base`` minus paging keys, then limit and offset."""
    params = _without(base, OFFSET_KEYS)
    params += [("limit", str(page_size)), ("offset", str(offset))]
    return tuple(params)


def next_offset(offset: int, n_items: int, page_size: int, total_count: int | None) -> int | None:
    """The offset of the next page, or None when this page was the last."""
    if n_items < page_size or n_items == 0:
        return None
    following = offset + n_items
    if total_count is not None and following >= total_count:
        return None
    return following


@dataclass(frozen=True)
class ParsedPage:
    """A list response, checked: its items and, for ``{data, total_count}`` envelopes, the total."""

    items: list[dict[str, Any]]
    total_count: int | None


def parse_page(body: Any, envelope: Literal["array", "data"], path: str) -> ParsedPage:
    """Check a list response's shape; raise BadResponseError (retriable) when it is wrong."""
    total: int | None = None
    if envelope == "data":
        if not isinstance(body, dict) or not isinstance(body.get("data"), list):
            raise BadResponseError(
                f"Clerk's answer to GET {path} is not a {{data, total_count}} page; retrying"
            )
        raw_total = body.get("total_count")
        if raw_total is not None and (isinstance(raw_total, bool) or not isinstance(raw_total, int)):
            raise BadResponseError(f"Clerk's answer to GET {path} has a non-integer total_count; retrying")
        items = body["data"]
        total = raw_total
    else:
        if not isinstance(body, list):
            raise BadResponseError(f"Clerk's answer to GET {path} is not a JSON array; retrying")
        items = body
    for i, item in enumerate(items):
        if not isinstance(item, dict) or not isinstance(item.get("id"), str) or not item["id"]:
            raise BadResponseError(f"item {i} of Clerk's answer to GET {path} has no string id; retrying")
    return ParsedPage(items, total)
