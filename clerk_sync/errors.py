"""The exception tree. Every error we raise on purpose is a ``ClerkSyncError``.

::

    ClerkSyncError                      one line that says what is wrong and what to do
    ├── ConfigError                     malformed or invalid configuration (exit 2)
    ├── VaultError                      master key and sealed blobs
    │   ├── MasterKeyMissingError       no master key anywhere it is looked for
    │   ├── MasterKeyMismatchError      a stored secret does not decrypt under the keyring
    │   ├── SecretKeyFormatError        not an sk_live_ / sk_test_ key
    │   └── SealedBlobError             tampered, truncated or foreign sealed enrollment
    ├── TenantError
    │   ├── TenantNotFoundError
    │   ├── TenantExistsError           name taken, or instance already enrolled
    │   └── TenantQuarantinedError      key rejected by Clerk; waits for ``enroll --replace``
    ├── ClerkError                      anything that came from talking to Clerk
    │   ├── ClerkFatalError             retrying cannot help
    │   │   ├── KeyRejectedError        401/403: the key is invalid, revoked or not allowed
    │   │   ├── NotFoundError           404
    │   │   ├── BadRequestError         422 and other 4xx: a bug on our side
    │   │   └── ReadOnlyViolationError  a non-GET request was attempted (never sent): a bug
    │   └── ClerkRetriableError         worth another try, within the retry policy
    │       ├── RateLimitedError        429 (carries ``retry_after_s``)
    │       ├── ServerError             5xx
    │       ├── TransportError          connect/read failures and timeouts
    │       └── BadResponseError        truncated or invalid JSON, wrong shape
    │   └── RetriesExhaustedError       a retriable error outlived the retry policy
    ├── StoreError                      database unreachable, schema too new, …
    └── SyncError
        └── PassInterruptedError        a pass stopped at a page boundary (shutdown)

Messages never contain a secret key: errors carry tenant names, instance ids and Clerk's own
error codes, nothing else from the request.
"""

from __future__ import annotations


class ClerkSyncError(Exception):
    """Base of every error clerk-sync raises on purpose; ``str()`` is the one-line message."""

    exit_code: int = 1


class ConfigError(ClerkSyncError):
    """The configuration file or an environment override is malformed or invalid."""

    exit_code = 2


class VaultError(ClerkSyncError):
    """Something is wrong with the master key, a stored secret or a sealed blob."""


class MasterKeyMissingError(VaultError):
    """No master key was found in any of the places it is looked for."""


class MasterKeyMismatchError(VaultError):
    """A stored secret does not decrypt under any key of the configured keyring."""


class SecretKeyFormatError(VaultError):
    """The value given as a Clerk secret key is not shaped like one."""

    exit_code = 2


class SealedBlobError(VaultError):
    """A sealed enrollment blob is tampered with, truncated, or sealed for another service."""


class TenantError(ClerkSyncError):
    """A tenant operation cannot be carried out."""


class TenantNotFoundError(TenantError):
    """No tenant has that name."""


class TenantExistsError(TenantError):
    """The tenant name is taken, or the Clerk instance is already enrolled."""


class TenantQuarantinedError(TenantError):
    """The tenant's key was rejected by Clerk; it is skipped until re-enrolled."""


class ClerkError(ClerkSyncError):
    """An error from Clerk's Backend API or from reaching it."""

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        code: str | None = None,
        trace_id: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.trace_id = trace_id


class ClerkFatalError(ClerkError):
    """Retrying will not help."""


class KeyRejectedError(ClerkFatalError):
    """401 or 403: the secret key is invalid, revoked, or lacks permission."""


class NotFoundError(ClerkFatalError):
    """404: the object does not exist (any more)."""


class BadRequestError(ClerkFatalError):
    """422 or another 4xx: Clerk refused our parameters; this is a bug in clerk-sync."""


class ReadOnlyViolationError(ClerkFatalError):
    """Something tried to send a non-GET request to Clerk; it was stopped before leaving the process."""


class ClerkRetriableError(ClerkError):
    """A transient failure worth retrying within the retry policy."""


class RateLimitedError(ClerkRetriableError):
    """429: the instance's rate limit is exhausted for ``retry_after_s`` seconds."""

    def __init__(self, message: str, *, retry_after_s: float, **kwargs: object) -> None:
        super().__init__(message, status=429, **kwargs)  # type: ignore[arg-type]
        self.retry_after_s = retry_after_s


class ServerError(ClerkRetriableError):
    """5xx from Clerk."""


class TransportError(ClerkRetriableError):
    """The request did not complete: connection refused or reset, DNS, timeout."""


class BadResponseError(ClerkRetriableError):
    """The body is truncated, not JSON, or not the shape the endpoint documents."""


class RetriesExhaustedError(ClerkError):
    """A retriable error persisted past the retry policy's attempts or time."""


class StoreError(ClerkSyncError):
    """The database cannot be used as it is."""


class SyncError(ClerkSyncError):
    """A sync pass could not complete."""


class PassInterruptedError(SyncError):
    """A pass stopped at a page boundary because the process is shutting down."""
