"""Runs on SSH workers, end to end, against real SSH servers on 127.0.0.1.

The same run protocol as the local worker, over one pooled connection per worker:
dispatch, check, logs -f, cancel, pull + verify (rsync), a staged reboot, a server
restarted mid-run, a dead worker that costs the others only its timeout, and secrets that
never touch the worker's disk.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from test_local_runs import run_processes, sleepers, wait_for

from fakes.ssh_server import BlackholeServer, LoopbackSSHServer
from runyard.core.check import check
from runyard.core.control import cancel_run, follow_log, read_log
from runyard.core.dispatch import dispatch
from runyard.core.fleet.transports import Fleet
from runyard.core.models import Run, RunStatus, SSHSettings, Worker
from runyard.core.patrol import RUN_LOST, patrol
from runyard.core.pull import pull_run
from runyard.core.runs import RunSpec, add_run, find_run
from runyard.core.store.workspace_store import WorkspaceStore
from runyard.core.telemetry_service import probe_worker
from runyard.core.workers import add_worker
from runyard.core.workspace import Workspace

pytestmark = pytest.mark.timeout(120)


def ssh_worker(name: str, server: LoopbackSSHServer | BlackholeServer, key: Path | None) -> Worker:
    return Worker(
        worker_id=name,
        kind="ssh",
        ssh=SSHSettings(
            host="127.0.0.1",
            port=server.port,
            user=os.environ.get("USER", "root"),
            key=str(key) if key else None,
        ),
        workspace="~/runyard",
    )


def trust_server(client_home: Path, server: LoopbackSSHServer) -> None:
    with (client_home / ".ssh" / "known_hosts").open("a") as handle:
        handle.write(server.known_hosts_line())


async def wait_until(condition: Callable[[], Awaitable[bool]], deadline_s: float = 30) -> None:
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        if await condition():
            return
        await asyncio.sleep(0.05)
    raise AssertionError("condition not met before the deadline")


# A run's env that hands it the secret `secret_in_env` set, as $TOKEN.
TOKEN_FROM_SECRET = {"TOKEN": "${secret:RUNYARD_REMOTE_SECRET}"}


def secret_in_env(monkeypatch: pytest.MonkeyPatch) -> str:
    """A fresh secret in RUNYARD_REMOTE_SECRET, for `${secret:RUNYARD_REMOTE_SECRET}`."""
    secret = "s3cret-" + os.urandom(6).hex()
    monkeypatch.setenv("RUNYARD_REMOTE_SECRET", secret)
    return secret


def token_matches(secret: str) -> str:
    """Shell that prints "matched" when $TOKEN holds `secret` (compared by digest, so the
    value itself is on no command line)."""
    digest = hashlib.sha256(secret.encode()).hexdigest()
    return f'test "$(printf %s "$TOKEN" | sha256sum | cut -c1-64)" = {digest} && echo matched'


async def run_status(store: WorkspaceStore, fleet: Fleet, run_id: str) -> RunStatus:
    await check(store, fleet)
    return find_run(store.runs(), run_id).status


@contextlib.asynccontextmanager
async def fleet_on(
    workspace: Workspace,
    client_home: Path,
    server: LoopbackSSHServer,
    name: str = "gpu1",
    platform: str | None = None,
) -> AsyncIterator[tuple[WorkspaceStore, Fleet]]:
    """The workspace with one trusted ssh worker `name` on `server`, and a fleet to reach it."""
    trust_server(client_home, server)
    store = WorkspaceStore(workspace)
    worker = ssh_worker(name, server, server.client_key_path)
    worker.platform = platform
    add_worker(store, worker)
    fleet = Fleet(workspace.root, store.settings())
    try:
        yield store, fleet
    finally:
        await fleet.close()


@pytest.fixture
async def remote(
    workspace: Workspace, client_home: Path, tmp_path: Path
) -> AsyncIterator[tuple[WorkspaceStore, Fleet, LoopbackSSHServer]]:
    boot_file = tmp_path / "boot_id"
    boot_file.write_text("boot-1\n")
    async with (
        LoopbackSSHServer(
            home=tmp_path / "gpu1", env={"RUNYARD_SIM_BOOT_ID_FILE": str(boot_file)}
        ) as server,
        fleet_on(workspace, client_home, server) as (store, fleet),
    ):
        yield store, fleet, server


def on_gpu1(store: WorkspaceStore, name: str, command: str, **spec: Any) -> Run:
    """Queue a run pinned to the `remote` fixture's worker."""
    return add_run(store, RunSpec(name=name, worker="gpu1", command=command, **spec))


async def test_dispatch_check_logs_pull_on_an_ssh_worker(
    remote: tuple[WorkspaceStore, Fleet, LoopbackSSHServer],
) -> None:
    store, fleet, server = remote
    run = on_gpu1(
        store,
        "remote-good",
        'for i in 1 2 3; do echo "Epoch $i/3 | loss=0.$((4-i))"; sleep 0.1; done; '
        'echo weights > "$RUNYARD_OUTPUT_DIR/model.bin"',
    )
    bad = on_gpu1(store, "remote-bad", "echo nope; exit 7")
    outcomes = await dispatch(store, fleet)
    assert [o.run_id for o in outcomes] == [run.id]  # one slot: the other waits
    assert outcomes[0].ok and outcomes[0].pid
    # The run directory lives on the worker, under its own HOME.
    assert (server.home / "runyard" / ".runyard" / "runs" / run.id / "1" / "run.sh").is_file()

    followed = b"".join(
        [chunk async for chunk in follow_log(store, fleet, run.id, 10, poll_seconds=0.05)]
    )
    assert b"Epoch 3/3 | loss=0.1" in followed

    await wait_until(lambda: _is(store, fleet, run.id, RunStatus.DONE))
    done = find_run(store.runs(), run.id)
    assert done.exit_code == 0 and done.metrics["loss"] == pytest.approx(0.1)
    assert b"Epoch 1/3" in await read_log(store, fleet, run.id, None)

    await dispatch(store, fleet)
    await wait_until(lambda: _is(store, fleet, bad.id, RunStatus.FAILED))
    assert find_run(store.runs(), bad.id).exit_code == 7

    pulled = await pull_run(store, fleet, run.id)
    assert pulled.verified, pulled.problems
    result = store.workspace.result_dir(run.id)
    assert (result / "outputs" / "model.bin").read_text() == "weights\n"
    manifest = json.loads((result / "manifest.json").read_text())
    assert all(f["sha256_worker"] == f["sha256_local"] for f in manifest["files"])
    assert {f["path"] for f in manifest["files"]} >= {"log", "outputs/model.bin"}


async def test_pull_is_not_verified_when_a_declared_output_glob_matched_nothing(
    remote: tuple[WorkspaceStore, Fleet, LoopbackSSHServer],
) -> None:
    """QA's case: `--outputs 'ckpt/*.pt' --outputs 'nomatch/*.bin'` is not a verified pull."""
    store, fleet, server = remote
    run = on_gpu1(
        store,
        "half-promised",
        "mkdir -p ckpt && echo weights > ckpt/a.pt",
        outputs=["ckpt/*.pt", "nomatch/*.bin"],
    )
    await dispatch(store, fleet)
    await wait_until(lambda: _is(store, fleet, run.id, RunStatus.DONE))

    pulled = await pull_run(store, fleet, run.id)
    workdir = server.home / "runyard"  # the run's workdir: the worker's workspace
    assert pulled.verified is False
    assert pulled.problems == [
        f"--outputs 'nomatch/*.bin' matched no file under {workdir} (the run's workdir) on gpu1"
    ]
    result = store.workspace.result_dir(run.id)
    assert (result / "files" / "ckpt" / "a.pt").read_text() == "weights\n"  # the match came
    manifest = json.loads((result / "manifest.json").read_text())
    assert manifest["verified"] is False and manifest["problems"] == pulled.problems
    assert all(f["ok"] for f in manifest["files"])  # the transfer itself was intact
    record = find_run(store.runs(), run.id).pull
    assert record is not None and record.verified is False

    # Once every declared glob matches a file, the same pull verifies.
    (workdir / "nomatch").mkdir()
    (workdir / "nomatch" / "late.bin").write_bytes(b"bin")
    again = await pull_run(store, fleet, run.id)
    assert again.verified, again.problems
    assert (result / "files" / "nomatch" / "late.bin").read_bytes() == b"bin"


async def _is(store: WorkspaceStore, fleet: Fleet, run_id: str, status: RunStatus) -> bool:
    return await run_status(store, fleet, run_id) == status


async def test_cancel_kills_the_remote_process_group(
    remote: tuple[WorkspaceStore, Fleet, LoopbackSSHServer],
) -> None:
    store, fleet, _ = remote
    run = on_gpu1(store, "sleeper", "sleep 300 & sleep 301")
    await dispatch(store, fleet)
    await wait_until(lambda: _is(store, fleet, run.id, RunStatus.RUNNING))
    run_dir = find_run(store.runs(), run.id).run_dir
    assert run_dir is not None
    await asyncio.to_thread(wait_for, lambda: sleepers(run.id, run_dir) == 2, what="2 sleeps")
    outcome = await cancel_run(store, fleet, run.id)
    assert outcome.signal in ("term", "kill")
    assert find_run(store.runs(), run.id).status == RunStatus.CANCELLED
    assert run_processes(run.id, run_dir) == {}


async def test_staged_reboot_makes_the_run_lost(
    remote: tuple[WorkspaceStore, Fleet, LoopbackSSHServer], tmp_path: Path
) -> None:
    store, fleet, _ = remote
    run = on_gpu1(store, "long", "sleep 300")
    await dispatch(store, fleet)
    await wait_until(lambda: _is(store, fleet, run.id, RunStatus.RUNNING))
    (tmp_path / "boot_id").write_text("boot-2\n")  # the box came back from a reboot
    assert await run_status(store, fleet, run.id) == RunStatus.LOST
    assert find_run(store.runs(), run.id).error == "worker rebooted"
    await cancel_run_process(store, fleet, run.id)


async def cancel_run_process(store: WorkspaceStore, fleet: Fleet, run_id: str) -> None:
    """The staged reboot did not really kill the process: clean it up."""
    run = find_run(store.runs(), run_id)
    assert run.run_dir and run.worker
    from runyard.core.protocol import build_cancel

    await fleet.executor(store.worker(run.worker)).run(build_cancel(run.run_dir, 1))


async def test_run_survives_a_server_restart(
    remote: tuple[WorkspaceStore, Fleet, LoopbackSSHServer],
) -> None:
    store, fleet, server = remote
    gate = server.home / "gate"
    run = add_run(
        store,
        RunSpec(
            name="survivor",
            worker="gpu1",
            command=f"while [ ! -e {gate} ]; do sleep 0.05; done; echo finished",
        ),
    )
    await dispatch(store, fleet)
    await wait_until(lambda: _is(store, fleet, run.id, RunStatus.RUNNING))
    await server.stop()  # the connection drops; the detached run goes on
    gate.touch()
    await server.restart()
    fleet.ssh_pool().reset_backoff("gpu1")
    await wait_until(lambda: _is(store, fleet, run.id, RunStatus.DONE))
    assert b"finished" in await read_log(store, fleet, run.id, None)


async def test_dead_worker_costs_the_others_only_its_timeout(
    workspace: Workspace, client_home: Path, tmp_path: Path
) -> None:
    settings_path = workspace.settings_path
    settings_path.write_text(
        settings_path.read_text().replace("connect_timeout: 10", "connect_timeout: 1")
    )
    async with LoopbackSSHServer(home=tmp_path / "ok1") as ok1, BlackholeServer() as dead:
        trust_server(client_home, ok1)
        store = WorkspaceStore(workspace)
        add_worker(store, ssh_worker("ok1", ok1, ok1.client_key_path))
        add_worker(store, ssh_worker("dead", dead, ok1.client_key_path))
        good = add_run(store, RunSpec(name="on-ok", worker="ok1", command="echo fine"))
        stuck = add_run(store, RunSpec(name="on-dead", worker="dead", command="echo never"))
        fleet = Fleet(workspace.root, store.settings())
        try:
            start = time.monotonic()
            outcomes = {o.run_id: o for o in await dispatch(store, fleet)}
            elapsed = time.monotonic() - start
        finally:
            await fleet.close()
        assert outcomes[good.id].ok
        assert not outcomes[stuck.id].ok and outcomes[stuck.id].error
        assert elapsed < 1 + 3, f"dispatch took {elapsed:.1f}s with a 1s connect timeout"
        runs = {r.id: r for r in store.runs()}
        assert runs[stuck.id].status == RunStatus.PENDING  # back in the queue, not lost
        assert runs[good.id].status in (RunStatus.RUNNING, RunStatus.DISPATCHED)


async def test_secret_never_reaches_the_workers_disk(
    remote: tuple[WorkspaceStore, Fleet, LoopbackSSHServer], monkeypatch: pytest.MonkeyPatch
) -> None:
    store, fleet, server = remote
    secret = secret_in_env(monkeypatch)
    spec = RunSpec(token_matches(secret), name="uses-secret", worker="gpu1", env=TOKEN_FROM_SECRET)
    run = add_run(store, spec)
    await dispatch(store, fleet)
    await wait_until(lambda: _is(store, fleet, run.id, RunStatus.DONE))
    assert b"matched" in await read_log(store, fleet, run.id, None)
    for root in (server.home, store.workspace.root):
        for path in root.rglob("*"):
            if path.is_file():
                assert secret.encode() not in path.read_bytes(), f"secret leaked into {path}"


async def test_cli_worker_status_on_ssh_and_local_workers(
    remote: tuple[WorkspaceStore, Fleet, LoopbackSSHServer], client_home: Path
) -> None:
    store, _, _ = remote
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "runyard",
        "worker",
        "status",
        "--json",
        env={
            **os.environ,
            "RUNYARD_WORKSPACE": str(store.workspace.root),
            "HOME": str(client_home),
        },
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await proc.communicate()
    assert proc.returncode == 0, err.decode()
    statuses = {s["name"]: s for s in json.loads(out)}
    assert statuses["gpu1"]["reachable"] and statuses["gpu1"]["latency_ms"] > 0
    assert statuses["local"]["reachable"]
    for status in statuses.values():
        assert {"name", "reachable", "error", "latency_ms", "gpus", "disk"} <= status.keys()
        assert status["disk"]["used_pct"] is not None and "inodes_used_pct" in status["disk"]


async def test_full_flow_against_openssh_sshd(
    workspace: Workspace, client_home: Path, client_key: Path, openssh_server: Any, tmp_path: Path
) -> None:
    """Dispatch, follow, check, cancel and an rsync pull through Debian's real sshd."""
    (client_home / ".ssh" / "known_hosts").write_text(openssh_server.known_hosts_line())
    store = WorkspaceStore(workspace)
    worker = ssh_worker("box", openssh_server, client_key)
    worker.workspace = str(tmp_path / "box-workspace")  # never the real root's home
    worker.slots = 2
    add_worker(store, worker)
    good = add_run(
        store,
        RunSpec(
            name="sshd-good",
            worker="box",
            command='echo "Epoch 1/1 | acc=0.93"; head -c 100000 /dev/urandom > "$RUNYARD_OUTPUT_DIR/blob"',
        ),
    )
    long = add_run(store, RunSpec(name="sshd-long", worker="box", command="sleep 300"))
    fleet = Fleet(workspace.root, store.settings())
    try:
        outcomes = await dispatch(store, fleet)
        assert all(o.ok for o in outcomes), [o.error for o in outcomes]
        followed = b"".join(
            [c async for c in follow_log(store, fleet, good.id, 10, poll_seconds=0.05)]
        )
        assert b"Epoch 1/1 | acc=0.93" in followed
        await wait_until(lambda: _is(store, fleet, good.id, RunStatus.DONE))
        assert find_run(store.runs(), good.id).metrics["acc"] == pytest.approx(0.93)
        pulled = await pull_run(store, fleet, good.id)
        assert pulled.verified, pulled.problems
        blob = store.workspace.result_dir(good.id) / "outputs" / "blob"
        assert blob.stat().st_size == 100000
        assert (await run_status(store, fleet, long.id)) == RunStatus.RUNNING
        long_dir = find_run(store.runs(), long.id).run_dir
        assert long_dir is not None and sleepers(long.id, long_dir) == 1
        await cancel_run(store, fleet, long.id)
        assert run_processes(long.id, long_dir) == {}
    finally:
        await fleet.close()


async def test_a_workspace_relative_to_the_login_directory_works(
    remote: tuple[WorkspaceStore, Fleet, LoopbackSSHServer],
) -> None:
    """`workspace: rel ws/runs` in workers.yaml means under the worker's login directory."""
    store, fleet, server = remote
    relative = ssh_worker("rel", server, server.client_key_path)
    relative.workspace = "rel ws/runs"
    add_worker(store, relative)
    run = add_run(
        store,
        RunSpec(name="relative", worker="rel", command='echo made > "$RUNYARD_OUTPUT_DIR/x"'),
    )
    [outcome] = await dispatch(store, fleet)
    assert outcome.ok and outcome.pid
    await wait_until(lambda: _is(store, fleet, run.id, RunStatus.DONE))
    assert find_run(store.runs(), run.id).exit_code == 0
    assert (server.home / "rel ws" / "runs" / "outputs" / "relative" / "x").read_text() == "made\n"


async def test_ticks_of_status_and_check_share_the_workers_one_shell(
    remote: tuple[WorkspaceStore, Fleet, LoopbackSSHServer],
) -> None:
    """What the console does every few seconds opens no channel (no login, no ~/.bashrc on
    the worker): the probe and the run check go through its shell. The patrol takes a
    channel of its own, so a probe stuck in that shell cannot hold it up."""
    store, fleet, server = remote
    run = on_gpu1(store, "long", "sleep 30")
    assert (await dispatch(store, fleet))[0].ok
    worker = store.workers()[-1]
    assert worker.worker_id == "gpu1"

    async def tick() -> None:
        snapshot, _, error = await probe_worker(fleet, worker, 10)
        assert error is None and snapshot is not None and snapshot.heartbeat_ok
        assert [c.run_id for c in await check(store, fleet)] == [run.id]

    await tick()
    opened = server.commands_started
    for _ in range(3):
        await tick()
    assert server.commands_started == opened
    for _ in range(2):
        assert RUN_LOST not in {a.kind for a in await patrol(store, fleet, [worker])}
    assert server.commands_started == opened + 2
    assert find_run(store.runs(), run.id).status == RunStatus.RUNNING
    await cancel_run(store, fleet, run.id)
