"""`worker setup` and `sync` against a real SSH server on 127.0.0.1."""

from __future__ import annotations

import os
import stat
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from fakes.ssh_server import LoopbackSSHServer
from runyard.core.fleet.rsync import push_workspace
from runyard.core.fleet.transports import Fleet
from runyard.core.models import SSHSettings, Worker
from runyard.core.setup import setup_worker
from runyard.core.store.workspace_store import WorkspaceStore
from runyard.core.workers import add_worker
from runyard.core.workspace import Workspace


@pytest.fixture
async def box(
    workspace: Workspace, client_home: Path, tmp_path: Path
) -> AsyncIterator[tuple[WorkspaceStore, Fleet, Worker, LoopbackSSHServer]]:
    async with LoopbackSSHServer(home=tmp_path / "box") as server:
        (client_home / ".ssh" / "known_hosts").write_text(server.known_hosts_line())
        store = WorkspaceStore(workspace)
        worker = Worker(
            worker_id="box",
            kind="ssh",
            ssh=SSHSettings(
                "127.0.0.1",
                server.port,
                os.environ.get("USER", "root"),
                str(server.client_key_path),
            ),
            workspace="~/proj",
        )
        add_worker(store, worker)
        fleet = Fleet(workspace.root, store.settings())
        try:
            yield store, fleet, worker, server
        finally:
            await fleet.close()


async def test_setup_reports_tools_and_streams_credentials_privately(
    box: tuple[WorkspaceStore, Fleet, Worker, LoopbackSSHServer], tmp_path: Path
) -> None:
    store, fleet, worker, server = box
    env_file = tmp_path / "creds.env"
    env_file.write_text("WANDB_API_KEY=wandb-secret-123\nexport HF_TOKEN='hf secret 456'\n")
    report = await setup_worker(fleet, worker, env_file=env_file)
    assert report.ok, report.problems
    assert report.tools["bash"] and report.tools["rsync"]
    assert report.credentials == ["HF_TOKEN", "WANDB_API_KEY"]  # names only
    assert (server.home / "proj" / ".runyard" / "runs").is_dir()
    creds = server.home / ".config" / "runyard" / "credentials.env"
    assert stat.S_IMODE(creds.stat().st_mode) == 0o600
    assert "wandb-secret-123" in creds.read_text()
    # Never in the shared workspace, on either side.
    for root in (server.home / "proj", store.workspace.root):
        for path in root.rglob("*"):
            assert not path.is_file() or b"wandb-secret-123" not in path.read_bytes()


async def test_runs_see_credentials_from_setup(
    box: tuple[WorkspaceStore, Fleet, Worker, LoopbackSSHServer], tmp_path: Path
) -> None:
    from runyard.core.check import check
    from runyard.core.control import read_log
    from runyard.core.dispatch import dispatch
    from runyard.core.runs import RunSpec, add_run, find_run

    store, fleet, worker, _ = box
    env_file = tmp_path / "creds.env"
    env_file.write_text("HF_TOKEN=hf-abc\n")
    assert (await setup_worker(fleet, worker, env_file=env_file)).ok
    run = add_run(
        store,
        RunSpec(
            name="needs-token", worker="box", command='test "$HF_TOKEN" = hf-abc && echo has-token'
        ),
    )
    await dispatch(store, fleet)
    for _ in range(200):
        await check(store, fleet)
        if find_run(store.runs(), run.id).status.value == "done":
            break
    assert find_run(store.runs(), run.id).status.value == "done"
    assert b"has-token" in await read_log(store, fleet, run.id, None)


async def test_sync_pushes_code_and_skips_state_data_and_outputs(
    box: tuple[WorkspaceStore, Fleet, Worker, LoopbackSSHServer],
) -> None:
    store, fleet, worker, server = box
    root = store.workspace.root
    (root / "train.py").write_text("print('hi')\n")
    (root / "competitions" / "demo" / "data").mkdir(parents=True)
    (root / "competitions" / "demo" / "data" / "big.bin").write_bytes(b"x" * 1000)
    (root / "competitions" / "demo" / "train.py").write_text("# comp\n")
    (root / ".git").mkdir()
    (root / ".git" / "HEAD").write_text("ref\n")
    (root / "outputs" / "old").mkdir(parents=True)
    (root / "outputs" / "old" / "ckpt").write_text("ckpt")
    (root / "__pycache__").mkdir()
    (root / "__pycache__" / "x.pyc").write_bytes(b"\0")
    target = await push_workspace(fleet, worker, root)
    assert target == "~/proj"
    remote = server.home / "proj"
    assert (remote / "train.py").read_text() == "print('hi')\n"
    assert (remote / "competitions" / "demo" / "train.py").exists()
    assert (remote / "runyard.yaml").exists()
    for skipped in (
        ".git",
        "outputs",
        "__pycache__",
        "competitions/demo/data",
        ".runyard/lock",
        "results",
    ):
        assert not (remote / skipped).exists(), skipped
