"""Standard Webhooks / Svix signatures, so receivers can verify our events with Clerk's own tooling.

``v1,<base64(HMAC-SHA256(key, f"{msg_id}.{timestamp_s}.{body}"))>``, where the key is the base64
part of a ``whsec_…`` secret. Both header families are sent: ``svix-*`` (what Clerk's receivers
already check) and ``webhook-*`` (the Standard Webhooks names).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets

from clerk_sync.errors import ConfigError

PREFIX = "whsec_"


class SigningSecret:
    """A ``whsec_…`` webhook signing secret; repr never shows it."""

    __slots__ = ("_key",)

    def __init__(self, value: str) -> None:
        value = value.strip()
        raw = value[len(PREFIX) :] if value.startswith(PREFIX) else value
        try:
            key = base64.b64decode(raw, validate=True)
        except ValueError:
            raise ConfigError(
                "webhook signing secret must be whsec_<base64> (as Svix / Clerk show it)"
            ) from None
        if not 24 <= len(key) <= 64:
            raise ConfigError("webhook signing secret must decode to 24..64 bytes")
        self._key = key

    @classmethod
    def generate(cls) -> str:
        """A new secret in ``whsec_`` form (32 random bytes)."""
        return PREFIX + base64.b64encode(secrets.token_bytes(32)).decode()

    def sign(self, msg_id: str, timestamp_s: int, body: bytes) -> str:
        """The ``v1,<signature>`` value for one delivery."""
        signed = f"{msg_id}.{timestamp_s}.".encode() + body
        digest = hmac.new(self._key, signed, hashlib.sha256).digest()
        return "v1," + base64.b64encode(digest).decode()

    def headers(self, msg_id: str, timestamp_s: int, body: bytes) -> dict[str, str]:
        """Both header families for one delivery."""
        signature = self.sign(msg_id, timestamp_s, body)
        out: dict[str, str] = {}
        for family in ("svix", "webhook"):
            out[f"{family}-id"] = msg_id
            out[f"{family}-timestamp"] = str(timestamp_s)
            out[f"{family}-signature"] = signature
        return out

    def verify(self, msg_id: str, timestamp_s: int, body: bytes, signature_header: str) -> bool:
        """True if any ``v1,`` signature in the (space-separated) header matches."""
        expected = self.sign(msg_id, timestamp_s, body)
        return any(hmac.compare_digest(expected, candidate) for candidate in signature_header.split())

    def __repr__(self) -> str:
        return "SigningSecret(whsec_…)"
