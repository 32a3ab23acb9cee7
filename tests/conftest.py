"""Fixtures shared by every test: a fresh workspace and a way to run the real CLI."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
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


@pytest.fixture(scope="session", autouse=True)
def _private_tmux() -> Iterator[None]:
    """Runs on tmux-profile workers (Vast) start tmux sessions: on a private server, never
    the operator's, and killed at the end. A short path: tmux sockets have a length limit."""
    directory = tempfile.mkdtemp(prefix="ry-tmux-")
    saved = {name: os.environ.get(name) for name in ("TMUX", "TMUX_TMPDIR")}
    os.environ.pop("TMUX", None)
    os.environ["TMUX_TMPDIR"] = directory
    yield
    if shutil.which("tmux"):
        subprocess.run(["tmux", "kill-server"], capture_output=True, check=False)
    for name, value in saved.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value
    shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture(scope="session", autouse=True)
def _no_run_outlives_the_session(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Runs are detached by design, so a test that forgets one leaves it running for hours.

    At the end of the session, kill every process whose command line points into this
    session's temp folder (run wrappers, commands, simulated workers).
    """
    yield
    base = str(tmp_path_factory.getbasetemp()).encode()
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            if base in (proc / "cmdline").read_bytes():
                os.kill(int(proc.name), 9)
        except (OSError, ValueError):
            continue
