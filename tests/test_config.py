"""Configuration: defaults, the example file, env overrides and one-line errors."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from clerk_sync.config import Settings, load_settings
from clerk_sync.errors import ConfigError

ROOT = Path(__file__).resolve().parent.parent


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "c.toml"
    path.write_text(text)
    return path


def test_example_file_documents_the_defaults(tmp_path: Path) -> None:
    settings = load_settings(ROOT / "config.example.toml", env={"CLERK_SYNC_STATE_DIR": str(tmp_path)})
    defaults = Settings(state_dir=tmp_path)
    for section in dataclasses.fields(Settings):
        if section.name in ("source",):
            continue
        assert getattr(settings, section.name) == getattr(defaults, section.name), section.name


def test_every_setting_appears_in_the_example() -> None:
    text = (ROOT / "config.example.toml").read_text()
    for section in dataclasses.fields(Settings):
        value = getattr(Settings(), section.name)
        if dataclasses.is_dataclass(value):
            assert f"[{section.name}]" in text, section.name
            for f in dataclasses.fields(value):
                assert f"{f.name} =" in text, f"{section.name}.{f.name}"


def test_database_defaults_to_sqlite_in_state_dir(tmp_path: Path) -> None:
    settings = load_settings(None, env={"CLERK_SYNC_STATE_DIR": str(tmp_path)})
    assert settings.database_url == f"sqlite:///{tmp_path}/clerk-sync.db"


def test_env_overrides_file(tmp_path: Path) -> None:
    path = _write(tmp_path, '[clerk]\napi_url = "https://file.example/v1"\n')
    settings = load_settings(path, env={"CLERK_SYNC_API_URL": "http://127.0.0.1:9/v1"})
    assert settings.clerk.api_url == "http://127.0.0.1:9/v1"


def test_config_env_var_names_the_file(tmp_path: Path) -> None:
    path = _write(tmp_path, "[rate]\nshare = 0.25\n")
    assert load_settings(None, env={"CLERK_SYNC_CONFIG": str(path)}).rate.share == 0.25


@pytest.mark.parametrize(
    ("text", "key", "expected"),
    [
        ("[rate]\nshare = 'half'\n", "rate.share", "must be a number"),
        ("[rate]\nshare = 3\n", "rate.share", "between 0.01 and 1"),
        ("[sync]\npage_size = 501\n", "sync.page_size", "between 1 and 500"),
        ("[events]\ninitial = 'all'\n", "events.initial", "one of 'none', 'created'"),
        ("[http]\ntimout_s = 3\n", "http.timout_s", "unknown key"),
        ("[clerk]\napi_url = 'ftp://x'\n", "clerk.api_url", "http(s) URL"),
        ("[[sinks]]\nkind = 'webhook'\n", "sinks[0].url", "required"),
    ],
)
def test_invalid_values_give_one_line_naming_file_and_key(
    tmp_path: Path, text: str, key: str, expected: str
) -> None:
    path = _write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_settings(path, env={})
    message = str(info.value)
    assert "\n" not in message
    assert str(path) in message
    assert key in message
    assert expected in message
    assert info.value.exit_code == 2


def test_malformed_toml_is_a_config_error(tmp_path: Path) -> None:
    path = _write(tmp_path, "[rate\nshare = 1\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_settings(path, env={})


def test_missing_explicit_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings(tmp_path / "nope.toml", env={})


def test_settings_are_frozen() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        Settings().rate.share = 1.0  # type: ignore[misc]
