"""Benchmark: walk N users from the simulator over loopback and print JSON figures.

    python -m benchmarks.walk --users 50000 --limit-per-10s 100 --share 1.0
    python -m benchmarks.walk --users 100000 --limit-per-10s 100000      # memory, cursor only
    python -m benchmarks.walk --users 50000 --storm 20                   # a 429 storm mid-walk

The simulator runs in a subprocess, so ``client_peak_rss_mb`` is the client's alone. The walk is
what a sync pass does: ``GET /instance``, then the users cursor walk, 500 per page, through an
``InstanceBudget`` of ``floor(share * limit)`` requests per 10 s.

``budget_utilisation`` = requests / (budget * max(seconds, 10) / 10): the fraction of the budget's
windows the walk filled (a walk shorter than one window is measured against one window).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from typing import Any

import httpx

from benchmarks.common import inject_fault, max_in_any_window, peak_rss_mb, sim_stats, start_simulator
from clerk_sync.clerk.budget import InstanceBudget
from clerk_sync.clerk.client import ClerkClient, ClientOptions
from clerk_sync.clerk.walk import walk
from clerk_sync.logs import setup_logging
from clerk_sync.resources import USERS
from clerk_sync.vault import SecretKey

BENCH_KEY = "sk_test_benchwalk"


class SendTimes(httpx.AsyncBaseTransport):
    """Records when each request leaves the client (for the client-side window peak)."""

    def __init__(self, inner: httpx.AsyncBaseTransport) -> None:
        self.inner = inner
        self.times: list[float] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.times.append(time.monotonic())
        return await self.inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self.inner.aclose()


async def run_walk(api_url: str, args: argparse.Namespace) -> dict[str, Any]:
    budget = InstanceBudget(args.limit_per_10s, args.share)
    transport = SendTimes(httpx.AsyncHTTPTransport(retries=0))
    options = ClientOptions(retry_attempts=50, retry_max_s=600.0)
    users = pages = 0
    storm_injected = False
    started = time.monotonic()
    async with ClerkClient(
        SecretKey(BENCH_KEY), api_url, budget, options, transport, label="bench"
    ) as client:
        instance = await client.get_instance()
        async for page in walk(client, USERS, page_size=args.page_size):
            users += len(page.items)
            pages += 1
            if args.storm and not storm_injected and pages == args.storm_after_page:
                await asyncio.to_thread(
                    inject_fault, api_url, kind="429", count=args.storm, retry_after_s=args.storm_retry_after
                )
                storm_injected = True
    seconds = time.monotonic() - started
    requests = client.stats.requests
    return {
        "instance": instance.get("id"),
        "users": users,
        "pages": pages,
        "requests": requests,
        "retries": client.stats.retries,
        "seconds": round(seconds, 2),
        "pages_per_s": round(pages / seconds, 2),
        "budget": budget.capacity_per_10s,
        "budget_utilisation": round(requests / (budget.capacity_per_10s * max(seconds, 10.0) / 10.0), 3),
        "client_peak_sent_in_any_10s": max_in_any_window(transport.times, 10.0),
        "rate_limited_429": client.stats.rate_limited,
        "storm_injected_429": args.storm if storm_injected else 0,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--users", type=int, default=50_000)
    parser.add_argument(
        "--limit-per-10s", type=int, default=100, help="the simulator's (and the budget's) limit"
    )
    parser.add_argument("--share", type=float, default=1.0)
    parser.add_argument("--page-size", type=int, default=500)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--storm", type=int, default=0, help="inject this many 429s mid-walk")
    parser.add_argument("--storm-after-page", type=int, default=10)
    parser.add_argument("--storm-retry-after", type=float, default=1.0)
    parser.add_argument("--verbose", action="store_true", help="show the client's log lines (429s, retries)")
    args = parser.parse_args()
    setup_logging("text", "info" if args.verbose else "error")

    with start_simulator(users=args.users, seed=args.seed, limit_per_10s=args.limit_per_10s) as api_url:
        result = asyncio.run(run_walk(api_url, args))
        stats = sim_stats(api_url, BENCH_KEY)
    result.update(
        {
            "peak_requests_in_any_10s": stats.get("max_requests_in_any_10s"),
            "sim_refused_429": stats.get("refused_429"),
            "sim_injected": stats.get("injected"),
            "offset_requests": stats.get("offset_requests"),
            "cursor_requests": stats.get("cursor_requests"),
            "non_get_requests": stats.get("non_get"),
            "client_peak_rss_mb": peak_rss_mb(),
        }
    )
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
