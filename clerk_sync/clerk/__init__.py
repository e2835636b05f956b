"""Everything that speaks HTTP to Clerk: a GET-only client, per-instance pacing, page walkers.

::

    budget.py     InstanceBudget (no 10 s window above budget), BudgetRegistry (one per instance)
    transport.py  GetOnlyTransport: nothing but GET leaves the process
    client.py     ClerkClient: auth headers, error mapping, retries (tenacity), stats
    paging.py     pure next-page logic (cursor and offset) and the page shape check
    walk.py       async walkers yielding one page at a time
"""

from clerk_sync.clerk.budget import BudgetRegistry, InstanceBudget
from clerk_sync.clerk.client import ClerkClient, ClientOptions, RequestStats
from clerk_sync.clerk.transport import GetOnlyTransport
from clerk_sync.clerk.walk import Page, walk, walk_one

__all__ = [
    "BudgetRegistry",
    "ClerkClient",
    "ClientOptions",
    "GetOnlyTransport",
    "InstanceBudget",
    "Page",
    "RequestStats",
    "walk",
    "walk_one",
]
