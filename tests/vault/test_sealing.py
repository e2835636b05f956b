"""Sealed enrollment: only the service's private key opens a blob; tampering is detected."""

from __future__ import annotations

import base64

import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from clerk_sync.errors import SealedBlobError
from clerk_sync.vault import (
    SEALED_PREFIX,
    SecretKey,
    format_public_key,
    generate_service_keypair,
    parse_public_key,
    seal,
    unseal,
)
from tests.vault.conftest import assert_no_secret


@pytest.fixture
def pair() -> tuple[bytes, X25519PrivateKey]:
    public_raw, private_raw = generate_service_keypair()
    return public_raw, X25519PrivateKey.from_private_bytes(private_raw)


def _flip(blob: str, index: int) -> str:
    raw = bytearray(base64.urlsafe_b64decode(blob[len(SEALED_PREFIX) :] + "=="))
    raw[index] ^= 0x01
    return SEALED_PREFIX + base64.urlsafe_b64encode(bytes(raw)).decode().rstrip("=")


def test_round_trip_and_blob_is_text(pair: tuple[bytes, X25519PrivateKey], live_key: SecretKey) -> None:
    public_raw, private = pair
    blob = seal(public_raw, live_key)
    assert blob.startswith(SEALED_PREFIX) and blob.isascii() and "\n" not in blob
    assert_no_secret(blob)
    assert unseal(private, blob) == live_key


def test_blob_survives_email_wrapping_text_around_it(
    pair: tuple[bytes, X25519PrivateKey], live_key: SecretKey
) -> None:
    public_raw, private = pair
    blob = seal(public_raw, live_key)
    assert unseal(private, f"Hi,\n\nhere it is:\n\n   {blob}\n\nthanks\n") == live_key


def test_each_seal_differs(pair: tuple[bytes, X25519PrivateKey], live_key: SecretKey) -> None:
    assert seal(pair[0], live_key) != seal(pair[0], live_key)


@pytest.mark.parametrize("index", [0, 31, 32, 39, 40, 51, 52, -1])
def test_any_flipped_byte_is_rejected(
    pair: tuple[bytes, X25519PrivateKey], live_key: SecretKey, index: int
) -> None:
    public_raw, private = pair
    with pytest.raises(SealedBlobError) as info:
        unseal(private, _flip(seal(public_raw, live_key), index))
    assert_no_secret(str(info.value))


def test_blob_for_another_service_is_rejected(
    pair: tuple[bytes, X25519PrivateKey], live_key: SecretKey
) -> None:
    other_public, _ = generate_service_keypair()
    with pytest.raises(SealedBlobError, match="made for another public key"):
        unseal(pair[1], seal(other_public, live_key))


@pytest.mark.parametrize("text", ["", "hello", SEALED_PREFIX + "AAAA", SEALED_PREFIX + "!!!!"])
def test_garbage_and_truncated_blobs(pair: tuple[bytes, X25519PrivateKey], text: str) -> None:
    with pytest.raises(SealedBlobError):
        unseal(pair[1], text)


def test_truncated_real_blob(pair: tuple[bytes, X25519PrivateKey], live_key: SecretKey) -> None:
    blob = seal(pair[0], live_key)
    with pytest.raises(SealedBlobError):
        unseal(pair[1], blob[:-10])


def test_public_key_text_form(pair: tuple[bytes, X25519PrivateKey]) -> None:
    text = format_public_key(pair[0])
    assert parse_public_key(f"# from the operator\n{text}\n") == pair[0]
    with pytest.raises(SealedBlobError, match="not a clerk-sync public key"):
        parse_public_key("ssh-ed25519 AAAA")
