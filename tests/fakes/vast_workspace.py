"""Tests only: a SIMULATED Vast marketplace wired into a test workspace's runyard.yaml.

Test modules import the fixtures by their function names (`sim_fixture`, `vast_fixture`);
pytest knows them as `sim` and `vast`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from runyard.core.providers.vast.service import VastService
from runyard.core.store.workspace_store import WorkspaceStore
from runyard.core.workspace import Workspace
from runyard.sim.vast_api import SimVast


def vast_yaml(sim: SimVast, key_file: Path, watcher: Mapping[str, Any] | None = None) -> str:
    """A `vast:` section pointing at `sim`, with fast polls and short timeouts."""
    lines = [
        "",
        "vast:  # the SIMULATED marketplace of the tests",
        f"  api_url: {sim.url}",
        f"  api_key_file: {key_file}",
        f"  ssh_key: {sim.client_key_path}",
        "  poll_seconds: 0.05",
        "  boot_timeout_seconds: 20",
        "  request_timeout_seconds: 5",
        "  retries: 2",
        "  disk_gb: 16",
    ]
    if watcher:
        lines.append("  watcher:")
        for key, value in watcher.items():
            shown = (
                "[" + ", ".join(f'"{v}"' for v in value) + "]" if isinstance(value, list) else value
            )
            lines.append(f"    {key}: {shown}")
    return "\n".join(lines) + "\n"


def configure_vast(
    workspace: Workspace, sim: SimVast, watcher: Mapping[str, Any] | None = None
) -> None:
    """Point the workspace at `sim`: the key in a file outside the workspace, as a user has it."""
    key_file = sim.root / "vast_api_key"
    key_file.write_text(sim.api_key + "\n")
    with workspace.settings_path.open("a") as handle:
        handle.write(vast_yaml(sim, key_file, watcher))


@pytest.fixture(name="sim")
async def sim_fixture(
    tmp_path: Path, client_home: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[SimVast]:
    """A marketplace on 127.0.0.1; no Vast key or URL leaks in from the environment."""
    for name in ("VAST_API_KEY", "VAST_URL", "XDG_CONFIG_HOME"):
        monkeypatch.delenv(name, raising=False)
    async with SimVast(tmp_path / "vast-sim", boot_seconds=0.05) as market:
        yield market


@pytest.fixture(name="vast")
def vast_fixture(workspace: Workspace, sim: SimVast) -> VastService:
    configure_vast(workspace, sim)
    return VastService(WorkspaceStore(workspace))
