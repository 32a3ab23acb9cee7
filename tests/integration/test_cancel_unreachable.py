"""A cancel whose worker does not answer: the run is cancelled at once, its kill is owed.

The run keeps `kill_pending_since` in the queue until its process is confirmed stopped:
retry refuses meanwhile, and a second `run cancel` or `runyard check` sends the kill again
once the worker is back. Real runs on an in-process SSH server that is stopped and started.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
from typing import Any

import pytest
from test_local_runs import (
    _no_stray_runs,  # noqa: F401  (autouse: kills whatever a failing test leaves running)
    run_processes,
    sleepers,
    wait_for,
)
from test_remote_runs import _is, remote, wait_until  # noqa: F401

from fakes.ssh_server import LoopbackSSHServer
from runyard.core.check import check
from runyard.core.control import cancel_run
from runyard.core.dispatch import dispatch
from runyard.core.errors import InputError, OperationalError
from runyard.core.fleet.transports import Fleet
from runyard.core.models import RunStatus
from runyard.core.runs import RunSpec, add_run, find_run, retry_run
from runyard.core.store.workspace_store import WorkspaceStore
from runyard.core.workers import remove_worker

pytestmark = pytest.mark.timeout(120)

Remote = tuple[WorkspaceStore, Fleet, LoopbackSSHServer]


async def running_sleeper(store: WorkspaceStore, fleet: Fleet) -> tuple[str, str]:
    """A run really running on gpu1 (two `sleep`s); returns its id and run directory."""
    run = add_run(store, RunSpec(name="sleeper", worker="gpu1", command="sleep 300 & sleep 301"))
    assert (await dispatch(store, fleet))[0].ok
    await wait_until(lambda: _is(store, fleet, run.id, RunStatus.RUNNING))
    run_dir = find_run(store.runs(), run.id).run_dir
    assert run_dir is not None
    await asyncio.to_thread(wait_for, lambda: sleepers(run.id, run_dir) == 2, what="2 sleeps")
    return run.id, run_dir


def queue_entry(store: WorkspaceStore, run_id: str) -> dict[str, Any]:
    """The run as the queue file holds it."""
    entries = json.loads(store.workspace.queue_path.read_text())
    return next(entry for entry in entries if entry["id"] == run_id)


async def test_cancel_again_kills_the_process_once_the_worker_is_back(
    remote: Remote,  # noqa: F811
    cli: Any,
) -> None:
    store, fleet, server = remote
    run_id, run_dir = await running_sleeper(store, fleet)
    await server.stop()

    failed = await asyncio.to_thread(cli, "run", "cancel", run_id, check=False)
    assert failed.returncode == 1, failed.stderr
    assert "could not be stopped" in failed.stderr
    assert f"`runyard run cancel {run_id}` will stop it once gpu1 answers" in failed.stderr
    entry = queue_entry(store, run_id)
    assert entry["status"] == "cancelled" and entry["kill_pending_since"]
    assert sleepers(run_id, run_dir) == 2, "the run lives on while its worker is away"

    refused = await asyncio.to_thread(cli, "run", "retry", run_id, check=False)
    assert refused.returncode == 2
    assert refused.stderr.count("\n") == 1
    assert "may still be running on gpu1" in refused.stderr
    assert f"`runyard run cancel {run_id}` again" in refused.stderr
    assert queue_entry(store, run_id)["status"] == "cancelled"

    await server.start()
    again = await asyncio.to_thread(cli, "run", "cancel", run_id)
    assert f"cancelled sleeper {run_id} (stopped with SIGTERM)" in again.stdout
    assert run_processes(run_id, run_dir) == {}
    entry = queue_entry(store, run_id)
    assert entry["status"] == "cancelled" and "kill_pending_since" not in entry

    done = await asyncio.to_thread(cli, "run", "cancel", run_id, check=False)
    assert done.returncode == 2 and "nothing to cancel" in done.stderr
    await asyncio.to_thread(cli, "run", "retry", run_id)
    assert queue_entry(store, run_id)["status"] == "pending"


async def test_check_finishes_a_cancel_that_could_not_kill(
    remote: Remote,  # noqa: F811
) -> None:
    store, fleet, server = remote
    run_id, run_dir = await running_sleeper(store, fleet)
    await server.stop()
    with pytest.raises(OperationalError, match="will stop it once gpu1 answers"):
        await cancel_run(store, fleet, run_id)
    with pytest.raises(InputError, match="may still be running on gpu1"):
        retry_run(store, run_id)

    [away] = [c for c in await check(store, fleet) if c.run_id == run_id]
    assert away.error and away.new == RunStatus.CANCELLED
    assert find_run(store.runs(), run_id).kill_pending_since is not None
    assert sleepers(run_id, run_dir) == 2

    await server.start()
    fleet.ssh_pool().reset_backoff("gpu1")
    [back] = [c for c in await check(store, fleet) if c.run_id == run_id]
    assert back.error is None and back.old == back.new == RunStatus.CANCELLED
    assert run_processes(run_id, run_dir) == {}
    run = find_run(store.runs(), run_id)
    assert run.status == RunStatus.CANCELLED and run.kill_pending_since is None
    assert [c for c in await check(store, fleet) if c.run_id == run_id] == []
    assert retry_run(store, run_id).status == RunStatus.PENDING


async def test_worker_remove_waits_for_an_owed_kill_unless_forced(
    remote: Remote,  # noqa: F811
) -> None:
    """The box may still run the process: removing its worker would lose the only way to
    stop it. --force is the way out when the box never comes back."""
    store, fleet, server = remote
    run_id, run_dir = await running_sleeper(store, fleet)
    await server.stop()
    with pytest.raises(OperationalError):
        await cancel_run(store, fleet, run_id)
    with pytest.raises(InputError, match="pass --force if the box is gone for good"):
        remove_worker(store, "gpu1")
    assert "gpu1" in {w.worker_id for w in store.workers()}
    assert remove_worker(store, "gpu1", force=True) == [run_id]
    assert find_run(store.runs(), run_id).kill_pending_since is None
    assert retry_run(store, run_id).status == RunStatus.PENDING
    for pid in run_processes(run_id, run_dir):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


async def test_a_worker_removed_by_hand_lets_cancel_give_up(
    remote: Remote,  # noqa: F811
) -> None:
    """Once its worker has left workers.yaml by hand, check says so, and another cancel
    stops trying (the process may live on there)."""
    store, fleet, server = remote
    run_id, run_dir = await running_sleeper(store, fleet)
    await server.stop()
    with pytest.raises(OperationalError):
        await cancel_run(store, fleet, run_id)
    store.edit_workers(lambda entries: entries.pop(), "test.removed_by_hand")

    [gone] = [c for c in await check(store, fleet) if c.run_id == run_id]
    assert gone.error and f"`runyard run cancel {run_id}` stops trying" in gone.error
    assert (await cancel_run(store, fleet, run_id)).signal == "noworker"
    assert find_run(store.runs(), run_id).kill_pending_since is None
    assert retry_run(store, run_id).status == RunStatus.PENDING
    for pid in run_processes(run_id, run_dir):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
