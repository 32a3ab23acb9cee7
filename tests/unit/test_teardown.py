"""The teardown gate: verified pulls or nothing, the exact name, the profile's consequences.

The same rule serves the console's modal and the CLI verbs; here it is tested on the core
functions and through the CLI handler.
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys
from pathlib import Path

import pytest

from runyard.cli import teardown_verbs
from runyard.core.errors import InputError, OperationalError
from runyard.core.models import PullRecord, Run, RunStatus, SSHSettings, Worker
from runyard.core.profiles import load_profile
from runyard.core.store.workspace_store import WorkspaceStore
from runyard.core.teardown import (
    TeardownAction,
    TeardownPlan,
    audit_run,
    authorize,
    execute_teardown,
    load_plan,
    plan_teardown,
)
from runyard.core.workers import add_worker
from runyard.core.workspace import Workspace

ENDED = "2025-01-02T10:00:00Z"
PULLED_AFTER = "2025-01-02T10:05:00Z"
PULLED_BEFORE = "2025-01-02T09:55:00Z"

VAST = Worker(
    worker_id="vast1",
    kind="ssh",
    worker_pool="vastai",
    ssh=SSHSettings(host="ssh8.vast.invalid", port=26248, user="root"),
    platform="vast",
    price_dph=2.0,
    instance_id=37906248,
)


def run_on(
    worker: str,
    run_id: str = "r1",
    *,
    status: RunStatus = RunStatus.DONE,
    pulled_at: str | None = PULLED_AFTER,
    verified: bool = True,
    ended_at: str | None = ENDED,
) -> Run:
    pull = None
    if pulled_at is not None:
        problems = [] if verified else ["model.pt: sha256 differs from the worker's"]
        pull = PullRecord(at=pulled_at, files=3, bytes=100, verified=verified, problems=problems)
    return Run(
        id=run_id,
        name=f"train-{run_id}",
        command="python train.py",
        status=status,
        worker=worker,
        attempts=1,
        run_dir=f"/root/runyard/.runyard/runs/{run_id}/1",
        ended_at=ended_at if status not in (RunStatus.RUNNING, RunStatus.DISPATCHED) else None,
        pull=pull,
    )


def vast_plan(
    runs: list[Run],
    action: TeardownAction = TeardownAction.DESTROY,
    uptime: float | None = 7200.0,
) -> TeardownPlan:
    return plan_teardown(VAST, runs, load_profile(None, "vast"), action, uptime)


# ---------------------------------------------------------------- the rule


def test_verified_pull_after_the_end_is_safe() -> None:
    plan = vast_plan([run_on("vast1")])
    assert plan.allowed and plan.blockers == ()
    assert plan.runs[0].safe and plan.runs[0].verified


@pytest.mark.parametrize(
    ("run", "reason"),
    [
        (run_on("vast1", pulled_at=None), "is not pulled"),
        (run_on("vast1", verified=False), "not verified: model.pt: sha256 differs"),
        (run_on("vast1", pulled_at=PULLED_BEFORE), "pulled before it ended"),
        (run_on("vast1", status=RunStatus.RUNNING, pulled_at=None), "is running"),
        (run_on("vast1", status=RunStatus.FAILED, pulled_at=None), "is not pulled"),
    ],
)
def test_anything_unpulled_unverified_or_unfinished_refuses(run: Run, reason: str) -> None:
    plan = vast_plan([run_on("vast1", "r0"), run])
    assert not plan.allowed
    assert len(plan.blockers) == 1 and reason in plan.blockers[0]
    with pytest.raises(OperationalError, match="refusing to destroy worker 'vast1'"):
        authorize(plan, "vast1")


def test_runs_elsewhere_do_not_count_and_retried_attempts_are_superseded() -> None:
    retried = run_on("other", "r2", pulled_at=None, status=RunStatus.PENDING)
    retried.worker = None
    retried.history.append({"attempt": 1, "status": "failed", "worker": "vast1"})
    plan = vast_plan([run_on("other", "r9", pulled_at=None), retried])
    assert plan.allowed
    assert [r.run_id for r in plan.runs] == ["r2"]
    assert plan.runs[0].superseded


@pytest.mark.parametrize("typed", [None, "", "vast", "VAST1", " vast1", "vast1 "])
def test_only_the_exact_name_authorizes(typed: str | None) -> None:
    plan = vast_plan([run_on("vast1")])
    with pytest.raises(InputError, match="exact name"):
        authorize(plan, typed)
    authorize(plan, "vast1")  # no exception


def test_audit_of_a_run_on_another_worker_is_superseded() -> None:
    result = audit_run(run_on("vast2"), "vast1")
    assert result.superseded and result.safe


# ---------------------------------------------------------------- consequences and cost


def test_destroy_on_vast_loses_the_disk_and_cannot_be_undone() -> None:
    plan = vast_plan([])
    assert plan.verb == "destroy" and not plan.reversible
    assert any(line.startswith("LOST: instance disk") for line in plan.consequences)
    assert any("forgotten-box" in m or "bills 24/7" in m for m in plan.standing_dangers)


def test_stop_on_vast_warns_that_storage_still_bills() -> None:
    plan = vast_plan([], TeardownAction.STOP)
    assert plan.verb == "stop" and plan.reversible
    assert any(line.startswith("KEPT: instance disk") for line in plan.consequences)
    assert any("still bills storage" in line for line in plan.consequences)


def test_cost_so_far_is_price_times_uptime() -> None:
    assert vast_plan([], uptime=5400.0).cost_so_far == pytest.approx(3.0)
    assert vast_plan([], uptime=None).cost_so_far is None


def test_local_worker_has_nothing_to_tear_down_but_can_be_disabled() -> None:
    local = Worker(worker_id="local")
    plan = plan_teardown(local, [], load_profile(None, "local"), TeardownAction.DESTROY)
    assert plan.allowed and plan.verb is None
    assert "nothing" in " ".join(plan.consequences).lower()


def test_manual_steps_name_the_instance_for_platforms_without_an_api() -> None:
    plan = vast_plan([])
    assert any("37906248" in step for step in plan.manual_steps)


# ---------------------------------------------------------------- execution on a workspace


def _workspace_with(store: WorkspaceStore, runs: list[Run]) -> None:
    add_worker(store, VAST)
    with store.queue_transaction() as queue:
        queue.extend(runs)


def test_execute_disables_the_worker_and_keeps_the_file_readable(store: WorkspaceStore) -> None:
    _workspace_with(store, [run_on("vast1")])
    outcome = asyncio.run(execute_teardown(store, "vast1", TeardownAction.DESTROY, "vast1"))
    assert outcome.disabled
    assert store.worker("vast1").enabled is False
    assert "# runyard workers." in store.workspace.workers_path.read_text()  # comments kept
    assert any(e["event"] == "worker.teardown" for e in store.events.read())


def test_execute_replans_so_a_pull_invalidated_since_the_modal_refuses(
    store: WorkspaceStore,
) -> None:
    _workspace_with(store, [run_on("vast1")])
    assert load_plan(store, "vast1", TeardownAction.DESTROY).allowed
    with store.queue_transaction() as queue:
        queue[0].pull = PullRecord(at=PULLED_AFTER, files=1, bytes=1, verified=False)
    with pytest.raises(OperationalError, match="not verified"):
        asyncio.run(execute_teardown(store, "vast1", TeardownAction.DESTROY, "vast1"))
    assert store.worker("vast1").enabled is True


# ---------------------------------------------------------------- the CLI obeys the same gate


def _cli(workspace: Workspace, *argv: str) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--workspace")
    worker = parser.add_subparsers(dest="verb").add_parser("worker").add_subparsers()
    teardown_verbs.register(worker)
    args = parser.parse_args(["--workspace", str(workspace.root), "worker", *argv])
    result: int = args.handler(args)
    return result


def test_cli_refuses_an_unverified_pull(
    store: WorkspaceStore, capsys: pytest.CaptureFixture[str]
) -> None:
    _workspace_with(store, [run_on("vast1", verified=False)])
    with pytest.raises(OperationalError, match="not verified"):
        _cli(store.workspace, "teardown", "vast1", "--yes")
    out = capsys.readouterr().out
    assert "NO r1 train-r1 done" in out and "LOST: instance disk" in out
    assert store.worker("vast1").enabled is True


def test_cli_without_a_terminal_or_yes_asks_for_the_name(store: WorkspaceStore) -> None:
    _workspace_with(store, [run_on("vast1")])
    with pytest.raises(InputError, match="pass --yes"):
        _cli(store.workspace, "stop", "vast1")
    assert store.worker("vast1").enabled is True


def test_cli_with_yes_disables_after_the_gate(
    store: WorkspaceStore, capsys: pytest.CaptureFixture[str]
) -> None:
    _workspace_with(store, [run_on("vast1")])
    assert _cli(store.workspace, "teardown", "vast1", "--yes") == 0
    assert store.worker("vast1").enabled is False
    assert "destroy the box yourself (instance 37906248)" in capsys.readouterr().out


def test_runyard_binary_refuses_when_the_lead_has_wired_the_verbs(store: WorkspaceStore) -> None:
    """Through `python -m runyard` once main.py registers these verbs (exit 1: refused)."""
    _workspace_with(store, [run_on("vast1", pulled_at=None)])
    help_text = subprocess.run(
        [sys.executable, "-m", "runyard", "worker", "--help"], capture_output=True, text=True
    ).stdout
    if "teardown" not in help_text:
        pytest.skip("runyard worker teardown is not wired into cli/main.py yet")
    proc = subprocess.run(
        [sys.executable, "-m", "runyard", "--workspace", str(store.workspace.root),
         "worker", "teardown", "vast1", "--yes"],
        capture_output=True, text=True, cwd=Path(store.workspace.root),
    )  # fmt: skip
    assert proc.returncode == 1, proc.stderr
    assert "is not pulled" in proc.stderr
