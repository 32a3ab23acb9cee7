"""`worker setup` and `sync` against a real SSH server on 127.0.0.1."""

from __future__ import annotations

import asyncio
import os
import shutil
import stat
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from fakes.ssh_server import LoopbackSSHServer
from runyard.core.errors import FileFormatError
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
    if shutil.which("tmux"):
        assert report.tools["tmux"].startswith("tmux "), report.tools  # `-V`, not a usage text
    assert report.credentials == ["HF_TOKEN", "WANDB_API_KEY"]  # names only
    assert (server.home / "proj" / ".runyard" / "runs").is_dir()
    creds = server.home / ".config" / "runyard" / "credentials.env"
    assert stat.S_IMODE(creds.stat().st_mode) == 0o600
    assert "wandb-secret-123" in creds.read_text()
    # Never in the shared workspace, on either side.
    for root in (server.home / "proj", store.workspace.root):
        for path in root.rglob("*"):
            assert not path.is_file() or b"wandb-secret-123" not in path.read_bytes()


async def set_up_with_credentials(fleet: Fleet, worker: Worker, path: Path, text: str) -> None:
    """`worker setup --env-file PATH` with `text` in it, which must succeed."""
    await asyncio.to_thread(path.write_text, text)
    report = await setup_worker(fleet, worker, env_file=path)
    assert report.ok, report.problems


async def test_a_bad_env_file_leaves_the_workers_credentials_alone(
    box: tuple[WorkspaceStore, Fleet, Worker, LoopbackSSHServer], tmp_path: Path
) -> None:
    _, fleet, worker, server = box
    await set_up_with_credentials(fleet, worker, tmp_path / "creds.env", "HF_TOKEN=hf-abc\n")
    creds = server.home / ".config" / "runyard" / "credentials.env"
    before = creds.read_bytes()
    for content in (b"HF_TOKEN=caf\xe9\n", b"HF_TOKEN=x\nBAD LINE\n", b"# nothing\n"):
        bad = tmp_path / "bad.env"
        bad.write_bytes(content)
        with pytest.raises(FileFormatError):
            await setup_worker(fleet, worker, env_file=bad)
        assert creds.read_bytes() == before


async def test_runs_see_credentials_from_setup(
    box: tuple[WorkspaceStore, Fleet, Worker, LoopbackSSHServer], tmp_path: Path
) -> None:
    from runyard.core.check import check
    from runyard.core.control import read_log
    from runyard.core.dispatch import dispatch
    from runyard.core.runs import RunSpec, add_run, find_run

    store, fleet, worker, _ = box
    await set_up_with_credentials(fleet, worker, tmp_path / "creds.env", "HF_TOKEN=hf-abc\n")
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


async def test_sync_skips_secrets_data_checkpoints_and_venvs_but_not_code_packages(
    box: tuple[WorkspaceStore, Fleet, Worker, LoopbackSSHServer],
) -> None:
    """QA's case: a top-level data/big.bin, .env and checkpoints/m.pt must stay here.

    `data`, `results`, `wandb` are skipped at the top level only, so packages of code with
    those names still go; generated names (outputs, checkpoints) and secrets at any depth.
    """
    store, fleet, worker, server = box
    root = store.workspace.root
    skipped = {
        "data/big.bin": b"x" * 1000,
        ".env": b"HF_TOKEN=s3cr3t-env\n",
        ".env.local": b"WANDB_API_KEY=s3cr3t-env-local\n",
        ".envrc": b"export A=s3cr3t-envrc\n",
        ".netrc": b"machine api.wandb.ai password s3cr3t-netrc\n",
        "kaggle.json": b'{"key": "s3cr3t-kaggle"}\n',
        "deploy.pem": b"s3cr3t-pem\n",
        "src/pkg/.env": b"NESTED=s3cr3t-nested\n",
        "checkpoints/m.pt": b"weights",
        "exp/ckpt/step1.pt": b"weights",
        "exp/outputs/preds.csv": b"1\n",
        "datasets/train.csv": b"a,b\n",
        "wandb/run-1/files.txt": b"log\n",
        "competitions/demo/submissions/s.csv": b"id\n",
        "venv/pyvenv.cfg": b"home = /usr/bin\n",
        "venv/lib/site.py": b"",
        ".venv-dashboard/pyvenv.cfg": b"",
    }
    kept = {  # code, including packages named like the top-level folders that are skipped
        "train.py": b"print('hi')\n",
        "src/pkg/data/__init__.py": b"LOADER = 1\n",
        "src/pkg/results/__init__.py": b"",
        "src/pkg/wandb/__init__.py": b"",
        "env/__init__.py": b"GYM = 1\n",  # an RL env package, not a virtualenv
        "competitions/demo/train.py": b"# comp\n",
    }
    for relative, content in {**skipped, **kept}.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)

    await push_workspace(fleet, worker, root)

    remote = server.home / "proj"
    pushed = {str(p.relative_to(remote)) for p in remote.rglob("*") if p.is_file()}
    assert set(kept) <= pushed
    assert set(skipped) & pushed == set()
    for top in ("data", "checkpoints", "venv", ".venv-dashboard", "wandb", "datasets"):
        assert not (remote / top).exists(), top
    for path in remote.rglob("*"):
        assert not path.is_file() or b"s3cr3t" not in path.read_bytes(), path


async def test_sync_exclude_flags_add_to_the_defaults_and_rsync_filter_brings_data_back(
    box: tuple[WorkspaceStore, Fleet, Worker, LoopbackSSHServer],
) -> None:
    store, fleet, worker, server = box
    root = store.workspace.root
    (root / "data").mkdir()
    (root / "data" / "vocab.txt").write_text("a\nb\n")
    (root / "data" / "huge.parquet").write_bytes(b"p" * 100)
    (root / "notes.md").write_text("# notes\n")
    (root / "train.py").write_text("print('hi')\n")
    (root / ".env").write_text("HF_TOKEN=hf-secret\n")

    await push_workspace(fleet, worker, root, ["notes.md"])
    remote = server.home / "proj"
    assert (remote / "train.py").exists()
    assert not (remote / "notes.md").exists()  # the caller's --exclude
    assert not (remote / "data").exists() and not (remote / ".env").exists()  # the defaults

    # A workspace's own `.rsync-filter` (rsync -F) is read first, so it can bring data back;
    # the caller's --exclude still applies inside it, and the secrets stay behind.
    (root / ".rsync-filter").write_text("+ /data/\n")
    await push_workspace(fleet, worker, root, ["*.parquet"])
    assert (remote / "data" / "vocab.txt").read_text() == "a\nb\n"
    assert not (remote / "data" / "huge.parquet").exists()
    assert not (remote / ".env").exists()


async def test_setup_of_an_unreachable_worker_claims_no_credentials(
    box: tuple[WorkspaceStore, Fleet, Worker, LoopbackSSHServer], tmp_path: Path
) -> None:
    _, fleet, worker, server = box
    await server.stop()
    path = tmp_path / "creds.env"
    await asyncio.to_thread(path.write_text, "HF_TOKEN=x\n")
    report = await setup_worker(fleet, worker, env_file=path)
    assert not report.ok and report.problems
    assert report.credentials == []  # nothing was installed, so none is listed
