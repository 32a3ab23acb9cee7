"""runyard.yaml's `vast:` section, and where the API URL and key come from."""

from __future__ import annotations

from pathlib import Path

import pytest

from runyard.core.errors import FileFormatError
from runyard.core.providers.vast.settings import (
    DEFAULT_API_URL,
    VastSettings,
    load_vast_settings,
    resolve_credentials,
)
from runyard.core.workspace import Workspace


@pytest.fixture
def clean_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for name in ("VAST_API_KEY", "VAST_URL"):
        monkeypatch.delenv(name, raising=False)
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home / ".config"))
    return home


def test_defaults_without_a_section(workspace: Workspace) -> None:
    settings = load_vast_settings(workspace.settings_path, [])
    assert settings.pool == "vastai" and settings.watcher.max_instances == 1
    assert settings.ssh_endpoint == "proxy" and settings.retries == 3


def test_section_is_typed_and_unknown_keys_warn(workspace: Workspace) -> None:
    with workspace.settings_path.open("a") as handle:
        handle.write(
            "vast:\n  pool: gpus\n  disk_gb: 50\n  colour: blue\n"
            "  watcher:\n    max_dph: 0.2\n    gpu_names: [RTX 3060, RTX A4000]\n"
        )
    warnings: list[str] = []
    settings = load_vast_settings(workspace.settings_path, warnings)
    assert settings.pool == "gpus" and settings.disk_gb == 50.0
    assert settings.watcher.max_dph == 0.2
    assert settings.watcher.gpu_names == ["RTX 3060", "RTX A4000"]
    assert warnings == ["unknown setting 'vast.colour' ignored"]


@pytest.mark.parametrize(
    ("text", "field"),
    [
        ("vast:\n  watcher:\n    max_dph: cheap\n", "vast.watcher.max_dph"),
        ("vast:\n  ssh_endpoint: carrier-pigeon\n", "vast.ssh_endpoint"),
        ("vast:\n  watcher:\n    gpu_names: RTX 3060\n", "vast.watcher.gpu_names"),
        ("vast:\n  retries: 0\n", "vast.retries"),
    ],
)
def test_bad_values_name_file_line_and_field(workspace: Workspace, text: str, field: str) -> None:
    workspace.settings_path.write_text("default_pool: default\n" + text)
    with pytest.raises(FileFormatError) as caught:
        load_vast_settings(workspace.settings_path, [])
    assert caught.value.field == field
    assert caught.value.line is not None and caught.value.line >= 2


def test_environment_wins_then_runyard_yaml_then_the_cli_files(
    clean_env: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cli_file = clean_env / ".config" / "vastai" / "vast_api_key"
    cli_file.parent.mkdir(parents=True)
    cli_file.write_text("from-cli-file\n")
    settings = VastSettings(api_url="http://127.0.0.1:9/", api_key_file="keys/vast")
    found = resolve_credentials(settings, tmp_path)
    assert (found.url, found.key, found.key_source) == (
        "http://127.0.0.1:9",
        "from-cli-file",
        str(cli_file),
    )

    (tmp_path / "keys").mkdir()
    (tmp_path / "keys" / "vast").write_text("from-workspace-setting")
    assert resolve_credentials(settings, tmp_path).key == "from-workspace-setting"

    monkeypatch.setenv("VAST_API_KEY", "from-env")
    monkeypatch.setenv("VAST_URL", "http://example.invalid/")
    found = resolve_credentials(settings, tmp_path)
    assert (found.url, found.key, found.key_source) == (
        "http://example.invalid",
        "from-env",
        "VAST_API_KEY",
    )
    assert "from-env" not in repr(found)  # the key never shows in a repr


def test_legacy_key_file_and_default_url(clean_env: Path, tmp_path: Path) -> None:
    (clean_env / ".vast_api_key").write_text("legacy\n")
    found = resolve_credentials(VastSettings(), tmp_path)
    assert (found.url, found.key) == (DEFAULT_API_URL, "legacy")
