"""Secret keys at rest: the value class that never shows itself, the master keyring, and sealing.

Encryption of stored Clerk keys is AES-256-GCM (``cryptography``'s ``AESGCM``) with a random 96-bit
nonce per encryption. The associated data binds a ciphertext to the row it is stored in:
``b"clerk-sync/tenant/v1|<tenant id>"``. The tenant *id* (not its name) is bound because it never
changes, so a rename keeps the key readable, while a ciphertext copied onto another tenant row fails
authentication. The stored blob is ``nonce || ciphertext+tag``; the row's ``key_id`` names the master
key that encrypted it, so a keyring of new + old keys can read both during a rotation.

Master key sources, first match wins (see ``locate_master_key``): ``$CLERK_SYNC_MASTER_KEY``,
``vault.master_key_file``, ``$CREDENTIALS_DIRECTORY/master-key`` (systemd ``LoadCredential=``),
``<state_dir>/master.key``. Keys still accepted for decryption during a rotation come from
``vault.old_key_files`` and ``$CLERK_SYNC_OLD_MASTER_KEYS`` (comma-separated). A key is 32 random
bytes written as base64 (standard or URL-safe, padding optional) or 64 hex characters.

Sealed enrollment lets a customer encrypt their Clerk key on their own machine for this service
only: X25519 with an ephemeral key, HKDF-SHA256 over the shared secret with both public keys in
``info``, then AES-256-GCM. The blob is text (``clerk-sync-sealed:v1:<base64url>``), safe to email.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from clerk_sync.errors import (
    MasterKeyMismatchError,
    MasterKeyMissingError,
    SealedBlobError,
    SecretKeyFormatError,
    TenantError,
)

if TYPE_CHECKING:
    from clerk_sync.config import Settings
    from clerk_sync.store.models import ServiceKey, Tenant

_KEY_RE = re.compile(r"^sk_(live|test)_[A-Za-z0-9_\-]{1,200}$")

MASTER_KEY_ENV = "CLERK_SYNC_MASTER_KEY"
OLD_MASTER_KEYS_ENV = "CLERK_SYNC_OLD_MASTER_KEYS"
CREDENTIAL_NAME = "master-key"
STATE_KEY_FILE = "master.key"
MASTER_KEY_BYTES = 32
NONCE_BYTES = 12

_TENANT_AAD = b"clerk-sync/tenant/v1|"
_SERVICE_AAD = b"clerk-sync/service-key/v1|"


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


# --- master keys -------------------------------------------------------------------------------


def master_key_id(raw: bytes) -> str:
    """Public identifier of a master key: first 16 hex chars of a domain-separated SHA-256."""
    return hashlib.sha256(b"clerk-sync key id" + raw).hexdigest()[:16]


class MasterKey:
    """32 secret bytes plus where they came from; ``repr`` shows only the key id and source."""

    __slots__ = ("_raw", "key_id", "source")

    def __init__(self, raw: bytes, source: str) -> None:
        if len(raw) != MASTER_KEY_BYTES:
            raise MasterKeyMissingError(f"the master key from {source} is not {MASTER_KEY_BYTES} bytes")
        self._raw = raw
        self.key_id = master_key_id(raw)
        self.source = source

    @classmethod
    def parse(cls, text: str, source: str) -> MasterKey:
        """Decode base64 (standard or URL-safe) or hex text; the error never repeats the text."""
        value = text.strip()
        raw: bytes | None = None
        if re.fullmatch(r"[0-9a-fA-F]{64}", value):
            raw = bytes.fromhex(value)
        elif re.fullmatch(r"[A-Za-z0-9+/_\-]{42,44}={0,2}", value):
            padded = value.rstrip("=") + "=" * (-len(value.rstrip("=")) % 4)
            try:
                raw = base64.urlsafe_b64decode(padded.replace("+", "-").replace("/", "_"))
            except (binascii.Error, ValueError):
                raw = None
        if raw is None or len(raw) != MASTER_KEY_BYTES:
            raise MasterKeyMissingError(
                f"the master key from {source} is not valid: expected {MASTER_KEY_BYTES} bytes as base64 "
                "or 64 hex characters (make one with `clerk-sync keys generate`)"
            )
        return cls(raw, source)

    @classmethod
    def generate(cls) -> MasterKey:
        """A new random key."""
        return cls(secrets.token_bytes(MASTER_KEY_BYTES), "generated")

    def encoded(self) -> str:
        """The text form written to key files (URL-safe base64 with padding)."""
        return base64.urlsafe_b64encode(self._raw).decode()

    def aead(self) -> AESGCM:
        """The AES-256-GCM cipher of this key."""
        return AESGCM(self._raw)

    def __repr__(self) -> str:
        return f"MasterKey(id={self.key_id}, source={self.source})"

    __str__ = __repr__

    def __reduce__(self) -> tuple[object, ...]:
        raise TypeError("MasterKey cannot be pickled")


def read_master_key_file(path: Path) -> MasterKey:
    """Load a key file; a missing or unreadable file is a MasterKeyMissingError naming the path."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise MasterKeyMissingError(f"master key file {path} does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "not text"
        raise MasterKeyMissingError(f"cannot read master key file {path}: {reason}") from None
    return MasterKey.parse(text, str(path))


def write_master_key_file(path: Path, key: MasterKey) -> None:
    """Create ``path`` with mode 0600 holding ``key``; never overwrites an existing file."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise MasterKeyMissingError(f"{path} already exists; refusing to overwrite a key file") from None
    except OSError as exc:
        raise MasterKeyMissingError(f"cannot create key file {path}: {exc.strerror}") from None
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(key.encoded() + "\n")


@dataclass(frozen=True)
class MasterKeyLocation:
    """Where the primary master key is (or would be) read from."""

    kind: Literal["env", "config", "credentials", "state_dir"]
    path: Path | None
    """The file, or None for the environment variable."""

    def describe(self) -> str:
        """Human description for messages."""
        return f"${MASTER_KEY_ENV}" if self.path is None else str(self.path)


def locate_master_key(settings: Settings, env: Mapping[str, str]) -> MasterKeyLocation | None:
    """The first configured master key source, by the documented order, or None if there is none.

    An explicitly configured ``vault.master_key_file`` is returned even when missing, so that a
    typo is reported instead of silently falling through to another key.
    """
    if env.get(MASTER_KEY_ENV):
        return MasterKeyLocation("env", None)
    if settings.vault.master_key_file is not None:
        return MasterKeyLocation("config", settings.vault.master_key_file)
    creds = env.get("CREDENTIALS_DIRECTORY")
    if creds and (Path(creds) / CREDENTIAL_NAME).is_file():
        return MasterKeyLocation("credentials", Path(creds) / CREDENTIAL_NAME)
    state_file = settings.state_dir / STATE_KEY_FILE
    if state_file.is_file():
        return MasterKeyLocation("state_dir", state_file)
    return None


def _missing_message(settings: Settings) -> str:
    return (
        f"no master key: set ${MASTER_KEY_ENV}, vault.master_key_file, a systemd credential "
        f"'{CREDENTIAL_NAME}', or create {settings.state_dir / STATE_KEY_FILE} with `clerk-sync init`"
    )


class Keyring:
    """The primary master key (encrypts) and older keys (still decrypt during a rotation)."""

    def __init__(self, primary: MasterKey, old: tuple[MasterKey, ...] = ()) -> None:
        self.primary = primary
        self.old = tuple(k for k in old if k.key_id != primary.key_id)
        self._by_id = {k.key_id: k for k in (*self.old, primary)}

    @property
    def key_ids(self) -> tuple[str, ...]:
        """Ids of every key in the ring, primary first."""
        return (self.primary.key_id, *(k.key_id for k in self.old))

    def has(self, key_id: str | None) -> bool:
        """Whether a ciphertext made with ``key_id`` can be decrypted here."""
        return key_id in self._by_id

    def with_primary(self, new: MasterKey) -> Keyring:
        """A keyring where ``new`` encrypts and every current key still decrypts."""
        return Keyring(new, (self.primary, *self.old))

    # tenants

    def encrypt_for_tenant(self, tenant_id: int, key: SecretKey) -> tuple[str, bytes]:
        """Encrypt a Clerk key for the tenant row ``tenant_id``; returns (key id, nonce || ciphertext)."""
        return self._encrypt(key.reveal().encode(), _TENANT_AAD + str(tenant_id).encode())

    def decrypt_tenant_key(self, tenant: Tenant) -> SecretKey:
        """The tenant's Clerk key; MasterKeyMismatchError (naming the tenant) if it cannot be read."""
        if tenant.key_ciphertext is None or tenant.id is None:
            raise TenantError(
                f"tenant {tenant.name} has no stored key (status {tenant.key_status}): "
                f"enroll it again with `clerk-sync enroll {tenant.name} --replace`"
            )
        plain = self._decrypt(
            tenant.key_ciphertext,
            tenant.key_id,
            _TENANT_AAD + str(tenant.id).encode(),
            f"tenant {tenant.name}",
        )
        try:
            return SecretKey(plain.decode())
        except (UnicodeDecodeError, SecretKeyFormatError):
            raise MasterKeyMismatchError(
                f"cannot decrypt the key of tenant {tenant.name}: the stored value is not a Clerk key"
            ) from None

    # service key pair

    def encrypt_service_private(self, row_id: int, private_raw: bytes) -> tuple[str, bytes]:
        """Encrypt the X25519 private key of service_key row ``row_id``."""
        return self._encrypt(private_raw, _SERVICE_AAD + str(row_id).encode())

    def decrypt_service_private(self, row: ServiceKey) -> X25519PrivateKey:
        """The service's private key for opening sealed blobs."""
        assert row.id is not None
        raw = self._decrypt(
            row.private_ciphertext, row.key_id, _SERVICE_AAD + str(row.id).encode(), "the service key pair"
        )
        return X25519PrivateKey.from_private_bytes(raw)

    # internals

    def _encrypt(self, plain: bytes, aad: bytes) -> tuple[str, bytes]:
        nonce = secrets.token_bytes(NONCE_BYTES)
        return self.primary.key_id, nonce + self.primary.aead().encrypt(nonce, plain, aad)

    def _decrypt(self, blob: bytes, key_id: str | None, aad: bytes, what: str) -> bytes:
        key = self._by_id.get(key_id or "")
        if key is None:
            raise MasterKeyMismatchError(
                f"cannot decrypt the key of {what}: the master key does not match the one it was encrypted "
                f"with (key id {key_id}, configured {', '.join(self.key_ids)}); configure the right key or, "
                "during a rotation, the old one in vault.old_key_files"
            )
        try:
            return key.aead().decrypt(blob[:NONCE_BYTES], blob[NONCE_BYTES:], aad)
        except (InvalidTag, ValueError):
            raise MasterKeyMismatchError(
                f"cannot decrypt the key of {what}: the stored ciphertext does not authenticate under master "
                f"key {key_id} (it was altered or copied from another row); enroll the key again"
            ) from None

    def __repr__(self) -> str:
        return f"Keyring(primary={self.primary.key_id}, old={[k.key_id for k in self.old]})"


def load_keyring(settings: Settings, env: Mapping[str, str] | None = None) -> Keyring:
    """The keyring from the documented sources; raises MasterKeyMissingError if there is no key."""
    env = os.environ if env is None else env
    where = locate_master_key(settings, env)
    if where is None:
        raise MasterKeyMissingError(_missing_message(settings))
    if where.path is None:
        primary = MasterKey.parse(env[MASTER_KEY_ENV], f"${MASTER_KEY_ENV}")
    else:
        primary = read_master_key_file(where.path)
    old = [read_master_key_file(p) for p in settings.vault.old_key_files]
    for i, text in enumerate(t for t in env.get(OLD_MASTER_KEYS_ENV, "").split(",") if t.strip()):
        old.append(MasterKey.parse(text, f"${OLD_MASTER_KEYS_ENV}[{i}]"))
    return Keyring(primary, tuple(old))


# --- sealed enrollment ------------------------------------------------------------------------

SEALED_PREFIX = "clerk-sync-sealed:v1:"
PUBLIC_PREFIX = "clerk-sync-public:v1:"
_SEALED_RE = re.compile(re.escape(SEALED_PREFIX) + r"([A-Za-z0-9_\-]+=*)")
_PUBLIC_RE = re.compile(re.escape(PUBLIC_PREFIX) + r"([A-Za-z0-9_\-]+=*)")
_HINT_BYTES = 8


def _b64u(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _unb64u(text: str) -> bytes:
    text = text.rstrip("=")
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def public_key_fingerprint(public_raw: bytes) -> str:
    """Short id of a service public key, shown on both sides so people can compare."""
    return hashlib.sha256(b"clerk-sync public key" + public_raw).hexdigest()[:16]


def generate_service_keypair() -> tuple[bytes, bytes]:
    """A new X25519 pair as (public raw 32 bytes, private raw 32 bytes)."""
    private = X25519PrivateKey.generate()
    return _public_raw(private.public_key()), private.private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
    )


def _public_raw(public: X25519PublicKey) -> bytes:
    return public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def format_public_key(public_raw: bytes) -> str:
    """The one-line text form handed to customers."""
    return PUBLIC_PREFIX + _b64u(public_raw)


def parse_public_key(text: str) -> bytes:
    """Find a ``clerk-sync-public:v1:`` key in ``text`` (extra text around it is ignored)."""
    match = _PUBLIC_RE.search(text)
    raw = b""
    if match:
        try:
            raw = _unb64u(match.group(1))
        except (binascii.Error, ValueError):
            raw = b""
    if len(raw) != 32:
        raise SealedBlobError(
            f"that is not a clerk-sync public key: expected a line starting with {PUBLIC_PREFIX} "
            "(the output of `clerk-sync keys public`)"
        )
    return raw


def _seal_context(ephemeral_raw: bytes, recipient_raw: bytes) -> bytes:
    return SEALED_PREFIX.encode() + ephemeral_raw + recipient_raw


def _seal_aead(shared: bytes, context: bytes) -> AESGCM:
    hkdf = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=context)
    return AESGCM(hkdf.derive(shared))


def seal(recipient_public_raw: bytes, key: SecretKey) -> str:
    """Encrypt ``key`` so only the holder of the service private key can open it.

    Blob: ephemeral public (32) || recipient hint (8) || nonce (12) || ciphertext+tag.
    """
    recipient = X25519PublicKey.from_public_bytes(recipient_public_raw)
    ephemeral = X25519PrivateKey.generate()
    ephemeral_raw = _public_raw(ephemeral.public_key())
    context = _seal_context(ephemeral_raw, recipient_public_raw)
    hint = bytes.fromhex(public_key_fingerprint(recipient_public_raw))[:_HINT_BYTES]
    nonce = secrets.token_bytes(NONCE_BYTES)
    ciphertext = _seal_aead(ephemeral.exchange(recipient), context).encrypt(
        nonce, key.reveal().encode(), context + hint
    )
    return SEALED_PREFIX + _b64u(ephemeral_raw + hint + nonce + ciphertext)


def unseal(private: X25519PrivateKey, text: str) -> SecretKey:
    """Open a sealed blob made for ``private``'s public key; SealedBlobError if it does not verify."""
    match = _SEALED_RE.search(text)
    if not match:
        raise SealedBlobError(
            f"no sealed key found: expected text starting with {SEALED_PREFIX} (the output of `clerk-sync seal`)"
        )
    try:
        blob = _unb64u(match.group(1))
    except (binascii.Error, ValueError):
        raise SealedBlobError("the sealed key is damaged (not valid base64); ask for it again") from None
    if len(blob) < 32 + _HINT_BYTES + NONCE_BYTES + 16:
        raise SealedBlobError("the sealed key is truncated; ask the customer to send the whole line again")
    ephemeral_raw = blob[:32]
    hint = blob[32 : 32 + _HINT_BYTES]
    nonce = blob[32 + _HINT_BYTES : 32 + _HINT_BYTES + NONCE_BYTES]
    ciphertext = blob[32 + _HINT_BYTES + NONCE_BYTES :]
    own_raw = _public_raw(private.public_key())
    own_fp = public_key_fingerprint(own_raw)
    if hint != bytes.fromhex(own_fp)[:_HINT_BYTES]:
        raise SealedBlobError(
            f"the sealed key was made for another public key ({hint.hex()}…), not this service's "
            f"({own_fp}); ask the customer to seal it with the output of `clerk-sync keys public`"
        )
    context = _seal_context(ephemeral_raw, own_raw)
    try:
        shared = private.exchange(X25519PublicKey.from_public_bytes(ephemeral_raw))
        plain = _seal_aead(shared, context).decrypt(nonce, ciphertext, context + hint)
    except (InvalidTag, ValueError):
        raise SealedBlobError(
            "the sealed key does not verify: it was altered or damaged in transit; ask for it again"
        ) from None
    try:
        return SecretKey(plain.decode())
    except (UnicodeDecodeError, SecretKeyFormatError):
        raise SealedBlobError("the sealed content is not a Clerk secret key") from None
