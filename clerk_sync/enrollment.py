"""Enrollment: prove a Clerk key works, then store it encrypted as a tenant.

The CLI reads the key (prompt, stdin, file or sealed blob) and calls ``enroll``; the network call
(``GET /instance``) goes through ``ClerkClient`` so the budget, GET-only transport and error
mapping are the same as the daemon's. ``transport`` lets tests inject the simulator's ASGI app.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

import httpx

from clerk_sync.clerk.budget import InstanceBudget, instance_limit
from clerk_sync.clerk.client import ClerkClient, ClientOptions
from clerk_sync.config import Settings
from clerk_sync.errors import ClerkError, KeyRejectedError, TenantError
from clerk_sync.logs import log
from clerk_sync.store.db import Database
from clerk_sync.store.models import Tenant
from clerk_sync.store.tenants import KEY_REMOVED, InstanceInfo, TenantStore
from clerk_sync.vault import Keyring, SecretKey

logger = logging.getLogger("clerk_sync.enrollment")

VERIFY_ATTEMPTS = 3
VERIFY_MAX_S = 30.0
"""An operator is waiting: give up on an unreachable Clerk quickly, unlike the daemon."""


@dataclass(frozen=True)
class EnrollOptions:
    """How to enroll: verify with Clerk, replace an existing tenant's key, share an instance."""

    verify: bool = True
    replace: bool = False
    allow_shared_instance: bool = False
    api_url: str | None = None
    """Per-tenant API URL (default ``clerk.api_url``)."""


async def fetch_instance(
    settings: Settings,
    key: SecretKey,
    *,
    api_url: str | None = None,
    label: str | None = None,
    transport: httpx.AsyncBaseTransport | None = None,
) -> InstanceInfo:
    """``GET /instance`` with ``key``: the instance id, and its environment (else the key's prefix)."""
    limit = instance_limit(key.environment, settings.rate.limit_per_10s)
    budget = InstanceBudget(limit, settings.rate.share)
    options = ClientOptions.from_settings(
        settings,
        retry_attempts=min(settings.http.retry_attempts, VERIFY_ATTEMPTS),
        retry_max_s=min(settings.http.retry_max_s, VERIFY_MAX_S),
    )
    url = api_url or settings.clerk.api_url
    async with ClerkClient(key, url, budget, options, transport=transport, label=label) as client:
        body = await client.get_instance()
    environment = body.get("environment_type")
    if environment not in ("production", "development"):
        environment = key.environment
    return InstanceInfo(instance_id=str(body["id"]), environment=environment)


def verify_key(
    settings: Settings,
    key: SecretKey,
    *,
    api_url: str | None = None,
    label: str | None = None,
    transport: httpx.AsyncBaseTransport | None = None,
) -> InstanceInfo:
    """Blocking ``fetch_instance`` for the CLI; KeyRejectedError if Clerk refuses the key."""
    return asyncio.run(fetch_instance(settings, key, api_url=api_url, label=label, transport=transport))


def enroll(
    settings: Settings,
    db: Database,
    keyring: Keyring,
    name: str,
    key: SecretKey,
    options: EnrollOptions,
    *,
    transport: httpx.AsyncBaseTransport | None = None,
) -> Tenant:
    """Verify ``key`` (unless told not to) and store it as tenant ``name``, new or replaced."""
    # A leading '-' would read as an option in every command that names the tenant afterwards.
    if (
        not name
        or len(name) > 100
        or not name[0].isalnum()
        or not name.replace("-", "").replace("_", "").replace(".", "").isalnum()
    ):
        raise TenantError(
            f"tenant names are letters, digits, '-', '_' and '.', starting with a letter or digit (got {name!r})"
        )
    store = TenantStore(db)
    existing = None
    if options.replace:
        existing = store.get(name)
    api_url = options.api_url or (existing.api_url if existing else None)
    if options.verify:
        try:
            info = verify_key(settings, key, api_url=api_url, label=name, transport=transport)
        except KeyRejectedError as exc:
            raise KeyRejectedError(
                f"cannot enroll {name}: {exc}", status=exc.status, code=exc.code, trace_id=exc.trace_id
            ) from None
        except ClerkError as exc:
            raise ClerkError(
                f"cannot verify the key for {name}: {exc} (retry later, or enroll with --no-verify)",
                status=exc.status,
                code=exc.code,
            ) from None
    else:
        info = InstanceInfo(instance_id=None, environment=key.environment)
    if existing is not None:
        tenant = store.replace_key(
            name,
            key,
            keyring,
            info,
            api_url=options.api_url,
            allow_shared_instance=options.allow_shared_instance,
        )
        event = "tenant.key_replaced" if existing.key_status != KEY_REMOVED else "tenant.reenrolled"
    else:
        tenant = store.create(
            name,
            key,
            keyring,
            info,
            api_url=options.api_url,
            allow_shared_instance=options.allow_shared_instance,
        )
        event = "tenant.enrolled"
    log(
        logger,
        event,
        tenant=name,
        instance=tenant.instance_id,
        environment=tenant.environment,
        fingerprint=tenant.key_fingerprint,
        verified=options.verify,
    )
    return tenant


def verify_tenant(
    settings: Settings,
    db: Database,
    keyring: Keyring,
    name: str,
    *,
    transport: httpx.AsyncBaseTransport | None = None,
) -> Tenant:
    """Check a stored key against Clerk: record its instance, or quarantine it if Clerk refuses."""
    store = TenantStore(db)
    tenant = store.get(name)
    assert tenant.id is not None
    key = keyring.decrypt_tenant_key(tenant)
    try:
        info = verify_key(settings, key, api_url=tenant.api_url, label=name, transport=transport)
    except KeyRejectedError as exc:
        store.mark_key_rejected(tenant.id, exc.code or (str(exc.status) if exc.status else None))
        log(logger, "tenant.key_rejected", tenant=name, code=exc.code, status=exc.status)
        raise
    if tenant.instance_id and info.instance_id != tenant.instance_id:
        raise TenantError(
            f"the key of {name} now belongs to Clerk instance {info.instance_id}, not {tenant.instance_id}; "
            f"re-enroll it with `clerk-sync enroll {name} --replace`"
        )
    store.record_instance(tenant.id, info)
    log(logger, "tenant.verified", tenant=name, instance=info.instance_id, environment=info.environment)
    return store.get(name)
