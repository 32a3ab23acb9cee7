"""The `vast:` section of runyard.yaml, and where the API's URL and key come from.

Precedence, for both the URL and the key: the environment first (`VAST_URL`,
`VAST_API_KEY`, as the vastai CLI reads them), then runyard.yaml (`vast.api_url`,
`vast.api_key_file`), then the vastai CLI's defaults (https://console.vast.ai; the key
file `$XDG_CONFIG_HOME/vastai/vast_api_key` or `~/.vast_api_key`). The key is held only
in memory: never printed, logged or written to the workspace.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from runyard.core.errors import InputError
from runyard.core.models import FieldError
from runyard.core.settings import parse_section
from runyard.core.store.documents import load_yaml, yaml_field_error

DEFAULT_API_URL = "https://console.vast.ai"
SECTION = "vast"


@dataclass
class WatcherSettings:
    """Thresholds of the auto-renting watcher: it rents only what passes every one."""

    poll_seconds: float = 300.0
    max_dph: float = 0.10  # $/hour of one offer
    min_dlp_per_dollar: float = 0.0  # DLPerf per $/hour
    gpu_names: list[str] = field(default_factory=list)  # empty: any GPU
    num_gpus: int | None = None
    min_reliability: float = 0.95
    max_instances: int = 1  # live instances on the account, rented or not
    budget_dph: float = 0.50  # the whole account's burn rate, $/hour, after renting
    max_rentals_per_poll: int = 1
    interruptible: bool = False
    query: str = ""  # extra vastai query text, e.g. "cuda_vers>=12.1 inet_down>200"
    setup: bool = True  # bootstrap each rented box (`runyard worker setup`)


@dataclass
class VastSettings:
    """runyard.yaml `vast:`: the API, how rented boxes become workers, and the watcher."""

    api_url: str | None = None
    api_key_file: str | None = None
    pool: str = "vastai"
    ssh_user: str = "root"
    ssh_key: str | None = None  # private key for rented boxes; its .pub is attached on rent
    ssh_endpoint: str = "proxy"  # proxy: ssh_host/ssh_port; direct: public IP + mapped 22
    workspace: str = "~/runyard"
    image: str = "pytorch/pytorch:2.4.0-cuda12.4-cudnn9-runtime"
    disk_gb: float = 32.0
    request_timeout_seconds: float = 30.0
    retries: int = 3  # tries per API request on 429, 502-504 and connection errors
    boot_timeout_seconds: float = 900.0  # rent: created -> running with SSH answering
    poll_seconds: float = 5.0  # rent and start: how often the instance is looked at
    blacklist_file: str = "vast-blacklist.txt"
    watcher: WatcherSettings = field(default_factory=WatcherSettings)


def parse_vast_settings(data: Any, warnings: list[str]) -> VastSettings:
    """The typed section from the raw `vast:` mapping; `FieldError` names a bad field."""
    settings = parse_section(VastSettings, data, (SECTION,), warnings)
    names = settings.watcher.gpu_names
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise FieldError((SECTION, "watcher", "gpu_names"), "must be a list of GPU names")
    if settings.ssh_endpoint not in ("proxy", "direct"):
        raise FieldError(
            (SECTION, "ssh_endpoint"),
            f"must be 'proxy' or 'direct', not {settings.ssh_endpoint!r}",
        )
    for name in ("request_timeout_seconds", "boot_timeout_seconds", "poll_seconds"):
        if getattr(settings, name) <= 0:
            raise FieldError((SECTION, name), "must be greater than 0")
    if settings.retries < 1:
        raise FieldError((SECTION, "retries"), "must be at least 1")
    if settings.watcher.poll_seconds <= 0:
        raise FieldError((SECTION, "watcher", "poll_seconds"), "must be greater than 0")
    return settings


def load_vast_settings(settings_path: Path, warnings: list[str]) -> VastSettings:
    """The `vast:` section of a workspace's runyard.yaml (defaults when absent)."""
    doc = load_yaml(settings_path) if settings_path.exists() else None
    section = doc.get(SECTION) if isinstance(doc, Mapping) else None
    try:
        return parse_vast_settings(section, warnings)
    except FieldError as exc:
        raise yaml_field_error(settings_path, doc, exc) from None


@dataclass(frozen=True)
class VastCredentials:
    """The API's base URL and key. The key never appears in `repr` or in any message."""

    url: str
    key: str = field(repr=False)
    key_source: str  # where the key came from, for messages ("VAST_API_KEY", a path)


def cli_key_files() -> list[Path]:
    """Where the vastai CLI keeps the key: the XDG file, then the legacy one."""
    config_home = os.environ.get("XDG_CONFIG_HOME") or str(Path("~/.config").expanduser())
    return [Path(config_home) / "vastai" / "vast_api_key", Path("~/.vast_api_key").expanduser()]


def resolve_api_url(settings: VastSettings) -> str:
    url = os.environ.get("VAST_URL") or settings.api_url or DEFAULT_API_URL
    return url.rstrip("/")


def resolve_credentials(settings: VastSettings, workspace_root: Path) -> VastCredentials:
    """URL and key by the precedence above; `InputError` when no key is found."""
    url = resolve_api_url(settings)
    key = os.environ.get("VAST_API_KEY", "").strip()
    if key:
        return VastCredentials(url, key, "VAST_API_KEY")
    candidates: list[Path] = []
    if settings.api_key_file:
        candidates.append(workspace_root / Path(settings.api_key_file).expanduser())
    candidates += cli_key_files()
    for path in candidates:
        try:
            key = path.read_text(encoding="utf-8").strip()
        except FileNotFoundError:
            continue
        except OSError as exc:
            raise InputError(f"cannot read the Vast API key file {path}: {exc.strerror}") from None
        if key:
            return VastCredentials(url, key, str(path))
    where = ", ".join(str(p) for p in candidates)
    raise InputError(
        f"no Vast API key: set VAST_API_KEY, or save the key with `vastai set api-key` "
        f"(looked in {where})"
    )
