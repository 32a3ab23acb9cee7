"""Fixtures shared by every test: a fresh workspace and a way to run the real CLI."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from runyard.core.store.workspace_store import WorkspaceStore
from runyard.core.workspace import Workspace, init_workspace


@pytest.fixture
def workspace(tmp_path: Path) -> Workspace:
    ws, _ = init_workspace(tmp_path / "ws")
    return ws


@pytest.fixture
def store(workspace: Workspace) -> WorkspaceStore:
    return WorkspaceStore(workspace)


class CLI:
    """Runs `python -m runyard` as a separate process, as a user or script would."""

    def __init__(self, workspace: Path) -> None:
        self.workspace = workspace

    def __call__(
        self, *args: str, check: bool = True, timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "RUNYARD_WORKSPACE": str(self.workspace)}
        proc = subprocess.run(
            [sys.executable, "-m", "runyard", *args],
            capture_output=True,
            text=True,
            env=env,
            timeout=timeout,
            cwd=self.workspace,
        )
        if check and proc.returncode != 0:
            raise AssertionError(
                f"runyard {' '.join(args)} exited {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
            )
        return proc


@pytest.fixture
def cli(workspace: Workspace) -> Iterator[CLI]:
    yield CLI(workspace.root)
