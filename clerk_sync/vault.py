"""Secret keys: the value class that never shows itself, and (issue 3) encryption at rest."""

from __future__ import annotations

import hashlib
import re
from typing import Literal

from clerk_sync.errors import SecretKeyFormatError

_KEY_RE = re.compile(r"^sk_(live|test)_[A-Za-z0-9_\-]{1,200}$")


class SecretKey:
    """A Clerk secret key. ``repr``/``str`` show only a masked fingerprint; ``reveal()`` is explicit.

    Only the HTTP client (to build the Authorization header) and the vault (to encrypt) call
    ``reveal()``.
    """

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        value = value.strip()
        if not _KEY_RE.match(value):
            raise SecretKeyFormatError(
                "that is not a Clerk secret key: expected sk_live_… (production) or sk_test_… (development), "
                "as shown under API keys in the Clerk dashboard"
            )
        self._value = value

    def reveal(self) -> str:
        """The plaintext key. Do not log, print or store it."""
        return self._value

    @property
    def environment(self) -> Literal["production", "development"]:
        """Which kind of instance the key belongs to, from its prefix."""
        return "production" if self._value.startswith("sk_live_") else "development"

    @property
    def fingerprint(self) -> str:
        """Masked form safe to display: prefix and the last four characters."""
        prefix = self._value[:8]
        tail = self._value[-4:] if len(self._value) >= 16 else ""
        return f"{prefix}…{tail}"

    @property
    def digest(self) -> str:
        """SHA-256 of the key, for equality checks without the plaintext."""
        return hashlib.sha256(self._value.encode()).hexdigest()

    def __repr__(self) -> str:
        return f"SecretKey({self.fingerprint})"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, SecretKey) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self.digest)

    def __reduce__(self) -> tuple[object, ...]:
        raise TypeError("SecretKey cannot be pickled")
