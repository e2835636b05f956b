"""Pure paging logic: parameters per page, when to stop, page shape checks."""

from __future__ import annotations

import pytest

from clerk_sync.clerk import paging
from clerk_sync.errors import BadResponseError


def users(*ids: str) -> list[dict[str, str]]:
    return [{"id": i} for i in ids]


def test_cursor_params_force_created_at_order_and_never_send_offset() -> None:
    base = [("order_by", "-updated_at"), ("offset", "40"), ("limit", "10"), ("email_address", "a@b.c")]

    assert paging.cursor_params(base, 500, None) == (
        ("email_address", "a@b.c"),
        ("limit", "500"),
        ("order_by", "+created_at"),
    )
    assert paging.cursor_params(base, 500, "user_9")[-1] == ("starting_after", "user_9")


def test_cursor_continues_after_a_full_page_from_its_last_id() -> None:
    assert paging.next_cursor(users("u1", "u2", "u3"), 3) == "u3"


@pytest.mark.parametrize("items", [users("u1", "u2"), []], ids=["short", "empty"])
def test_cursor_stops_on_a_short_page(items: list[dict[str, str]]) -> None:
    assert paging.next_cursor(items, 3) is None


def test_offset_params_keep_filters_and_repeatable_keys() -> None:
    base = [("status", "revoked"), ("user_id", "a"), ("user_id", "b"), ("offset", "7")]
    assert paging.offset_params(base, 100, 200) == (
        ("status", "revoked"),
        ("user_id", "a"),
        ("user_id", "b"),
        ("limit", "100"),
        ("offset", "200"),
    )


@pytest.mark.parametrize(
    ("offset", "n", "size", "total", "expected"),
    [
        (0, 10, 10, None, 10),  # full bare page: there may be more
        (10, 3, 10, None, None),  # short page: done
        (0, 0, 10, None, None),  # empty page: done
        (0, 10, 10, 25, 10),
        (20, 5, 10, 25, None),  # short and at the total
        (10, 10, 10, 20, None),  # full page that reaches total_count: no extra request
        (10, 10, 10, 100, 20),
    ],
)
def test_next_offset(offset: int, n: int, size: int, total: int | None, expected: int | None) -> None:
    assert paging.next_offset(offset, n, size, total) == expected


def test_parse_array_page() -> None:
    page = paging.parse_page([{"id": "u1", "x": 1}], "array", "/users")
    assert page.items == [{"id": "u1", "x": 1}]
    assert page.total_count is None


def test_parse_data_page() -> None:
    page = paging.parse_page({"data": [{"id": "org_1"}], "total_count": 9}, "data", "/organizations")
    assert page.items == [{"id": "org_1"}]
    assert page.total_count == 9


@pytest.mark.parametrize(
    ("body", "envelope"),
    [
        ({"data": []}, "array"),
        ([], "data"),
        ({"data": {"id": "x"}, "total_count": 1}, "data"),
        ({"data": [], "total_count": "9"}, "data"),
        ([{"id": 5}], "array"),
        ([{"name": "no id"}], "array"),
        ([{"id": ""}], "array"),
        (["u1"], "array"),
        (None, "array"),
    ],
)
def test_wrong_shapes_are_bad_responses(body: object, envelope: str) -> None:
    with pytest.raises(BadResponseError, match="/things"):
        paging.parse_page(body, envelope, "/things")  # type: ignore[arg-type]
