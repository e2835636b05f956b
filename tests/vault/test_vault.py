"""Master keys, the keyring and encryption of tenant keys bound to their row."""

from __future__ import annotations

import base64
import os
import stat
from pathlib import Path

import pytest

from clerk_sync.config import Settings, VaultSettings
from clerk_sync.errors import MasterKeyMismatchError, MasterKeyMissingError, SecretKeyFormatError, TenantError
from clerk_sync.store.models import Tenant
from clerk_sync.vault import (
    MASTER_KEY_ENV,
    OLD_MASTER_KEYS_ENV,
    Keyring,
    MasterKey,
    SecretKey,
    load_keyring,
    master_key_id,
    read_master_key_file,
    write_master_key_file,
)
from tests.vault.conftest import LIVE_KEY, assert_no_secret


def _tenant(tenant_id: int, name: str, key_id: str, blob: bytes) -> Tenant:
    return Tenant(id=tenant_id, name=name, key_id=key_id, key_ciphertext=blob, created_ms=1, updated_ms=1)


RAW = bytes(range(32))


@pytest.mark.parametrize(
    "text",
    [
        RAW.hex(),
        RAW.hex().upper(),
        base64.b64encode(RAW).decode(),
        base64.urlsafe_b64encode(RAW).decode(),
        base64.urlsafe_b64encode(RAW).decode().rstrip("="),
        "  " + base64.b64encode(RAW).decode() + "\n",
    ],
)
def test_master_key_accepts_hex_and_both_base64_alphabets(text: str) -> None:
    key = MasterKey.parse(text, "test")
    assert key.key_id == master_key_id(RAW)
    assert MasterKey.parse(key.encoded(), "again").key_id == key.key_id


def test_key_id_is_16_hex_of_domain_separated_sha256() -> None:
    import hashlib

    assert master_key_id(RAW) == hashlib.sha256(b"clerk-sync key id" + RAW).hexdigest()[:16]


@pytest.mark.parametrize("text", ["", "short", RAW.hex()[:-2], base64.b64encode(RAW[:31]).decode(), "z" * 64])
def test_invalid_master_key_is_refused_without_echoing_it(text: str) -> None:
    with pytest.raises(MasterKeyMissingError) as info:
        MasterKey.parse(text, "$CLERK_SYNC_MASTER_KEY")
    assert "$CLERK_SYNC_MASTER_KEY" in str(info.value)
    if len(text) > 4:
        assert text not in str(info.value)


def test_master_key_repr_shows_only_id(master: MasterKey) -> None:
    assert master.encoded() not in repr(master)
    assert master.key_id in repr(master)


def test_key_file_is_created_0600_and_never_overwritten(tmp_path: Path, master: MasterKey) -> None:
    path = tmp_path / "master.key"
    write_master_key_file(path, master)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert read_master_key_file(path).key_id == master.key_id
    with pytest.raises(MasterKeyMissingError, match="refusing to overwrite"):
        write_master_key_file(path, MasterKey.generate())
    assert read_master_key_file(path).key_id == master.key_id


def _settings(tmp_path: Path, **vault: object) -> Settings:
    return Settings(state_dir=tmp_path / "state", vault=VaultSettings(**vault))  # type: ignore[arg-type]


def test_keyring_source_order(tmp_path: Path) -> None:
    keys = {name: MasterKey.generate() for name in ("env", "config", "creds", "state")}
    (tmp_path / "state").mkdir()
    write_master_key_file(tmp_path / "state" / "master.key", keys["state"])
    creds = tmp_path / "creds"
    creds.mkdir()
    write_master_key_file(creds / "master-key", keys["creds"])
    write_master_key_file(tmp_path / "config.key", keys["config"])
    configured = _settings(tmp_path, master_key_file=tmp_path / "config.key")
    plain = _settings(tmp_path)
    env = {MASTER_KEY_ENV: keys["env"].encoded(), "CREDENTIALS_DIRECTORY": str(creds)}

    assert load_keyring(configured, env).primary.key_id == keys["env"].key_id
    env.pop(MASTER_KEY_ENV)
    assert load_keyring(configured, env).primary.key_id == keys["config"].key_id
    assert load_keyring(plain, env).primary.key_id == keys["creds"].key_id
    assert load_keyring(plain, {}).primary.key_id == keys["state"].key_id


def test_missing_master_key_says_where_it_looked(tmp_path: Path) -> None:
    with pytest.raises(MasterKeyMissingError) as info:
        load_keyring(_settings(tmp_path), {})
    message = str(info.value)
    assert MASTER_KEY_ENV in message and "vault.master_key_file" in message and "clerk-sync init" in message


def test_configured_key_file_that_is_missing_is_an_error_not_a_fallback(tmp_path: Path) -> None:
    (tmp_path / "state").mkdir()
    write_master_key_file(tmp_path / "state" / "master.key", MasterKey.generate())
    with pytest.raises(MasterKeyMissingError, match=r"typo\.key does not exist"):
        load_keyring(_settings(tmp_path, master_key_file=tmp_path / "typo.key"), {})


def test_old_keys_from_config_and_env(tmp_path: Path) -> None:
    primary, old_file, old_env = MasterKey.generate(), MasterKey.generate(), MasterKey.generate()
    write_master_key_file(tmp_path / "old.key", old_file)
    settings = _settings(tmp_path, old_key_files=(tmp_path / "old.key",))
    env = {MASTER_KEY_ENV: primary.encoded(), OLD_MASTER_KEYS_ENV: f" {old_env.encoded()} ,"}
    ring = load_keyring(settings, env)
    assert ring.key_ids == (primary.key_id, old_file.key_id, old_env.key_id)


def test_round_trip(keyring: Keyring, live_key: SecretKey) -> None:
    key_id, blob = keyring.encrypt_for_tenant(7, live_key)
    assert key_id == keyring.primary.key_id
    assert_no_secret(blob)
    assert keyring.decrypt_tenant_key(_tenant(7, "acme", key_id, blob)) == live_key


def test_each_encryption_uses_a_fresh_nonce(keyring: Keyring, live_key: SecretKey) -> None:
    assert keyring.encrypt_for_tenant(7, live_key)[1] != keyring.encrypt_for_tenant(7, live_key)[1]


def test_ciphertext_copied_to_another_tenant_row_fails(keyring: Keyring, live_key: SecretKey) -> None:
    key_id, blob = keyring.encrypt_for_tenant(7, live_key)
    with pytest.raises(MasterKeyMismatchError) as info:
        keyring.decrypt_tenant_key(_tenant(8, "mallory", key_id, blob))
    assert "tenant mallory" in str(info.value)
    assert_no_secret(str(info.value))


def test_tampered_ciphertext_fails(keyring: Keyring, live_key: SecretKey) -> None:
    key_id, blob = keyring.encrypt_for_tenant(7, live_key)
    bad = bytearray(blob)
    bad[20] ^= 1
    with pytest.raises(MasterKeyMismatchError, match="does not authenticate"):
        keyring.decrypt_tenant_key(_tenant(7, "acme", key_id, bytes(bad)))


def test_wrong_master_key_names_tenant_and_key_id(keyring: Keyring, live_key: SecretKey) -> None:
    key_id, blob = keyring.encrypt_for_tenant(7, live_key)
    other = Keyring(MasterKey.generate())
    with pytest.raises(MasterKeyMismatchError) as info:
        other.decrypt_tenant_key(_tenant(7, "acme", key_id, blob))
    message = str(info.value)
    assert message.startswith(
        "cannot decrypt the key of tenant acme: the master key does not match the one it was encrypted with"
    )
    assert key_id in message and "vault.old_key_files" in message
    assert_no_secret(message)


def test_missing_key_id_fails_cleanly(keyring: Keyring, live_key: SecretKey) -> None:
    _, blob = keyring.encrypt_for_tenant(7, live_key)
    with pytest.raises(MasterKeyMismatchError):
        Keyring(MasterKey.generate()).decrypt_tenant_key(_tenant(7, "acme", "", blob))


def test_old_key_in_ring_still_decrypts(live_key: SecretKey) -> None:
    old, new = MasterKey.generate(), MasterKey.generate()
    key_id, blob = Keyring(old).encrypt_for_tenant(3, live_key)
    ring = Keyring(new, (old,))
    assert ring.decrypt_tenant_key(_tenant(3, "acme", key_id, blob)) == live_key
    assert ring.encrypt_for_tenant(3, live_key)[0] == new.key_id


def test_tenant_without_key_says_to_re_enroll(keyring: Keyring) -> None:
    tenant = Tenant(id=1, name="acme", key_status="removed", created_ms=1, updated_ms=1)
    with pytest.raises(TenantError, match="enroll acme --replace"):
        keyring.decrypt_tenant_key(tenant)


def test_secret_key_never_shows_itself(live_key: SecretKey) -> None:
    assert_no_secret(repr(live_key) + str(live_key) + f"{live_key}" + live_key.fingerprint)
    assert live_key.fingerprint == "sk_live_…Zz91"
    with pytest.raises(TypeError):
        import pickle

        pickle.dumps(live_key)


@pytest.mark.parametrize(
    "value", ["pk_live_abc", "sk_prod_abc", "sk_live_", "sk_live_a b", "Bearer sk_live_x"]
)
def test_secret_key_format(value: str) -> None:
    with pytest.raises(SecretKeyFormatError) as info:
        SecretKey(value)
    assert "expected sk_live_" in str(info.value)
    if value != "sk_live_":
        assert value not in str(info.value)


def test_env_key_value_is_not_in_repr_of_keyring(live_key: SecretKey) -> None:
    master = MasterKey.parse(os.urandom(32).hex(), "x")
    assert master.encoded() not in repr(Keyring(master))
    assert LIVE_KEY not in repr(Keyring(master))
