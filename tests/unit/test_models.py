"""Domain records: the run state machine, research-os worker entries, run round trips."""

from __future__ import annotations

import io
import json

import pytest
from ruamel.yaml import YAML

from fakes.research_os import RESEARCH_OS_WORKER
from runyard.core.errors import InputError
from runyard.core.models import (
    ACTIVE_STATES,
    FINISHED_STATES,
    TRANSITIONS,
    FieldError,
    PullRecord,
    Run,
    RunStatus,
    Worker,
    can_transition,
)
from runyard.core.runs import RunSpec, add_run, retry_run, set_status
from runyard.core.store.workspace_store import WorkspaceStore

P, D, R = RunStatus.PENDING, RunStatus.DISPATCHED, RunStatus.RUNNING
DONE, FAILED, LOST, CANCELLED = (
    RunStatus.DONE,
    RunStatus.FAILED,
    RunStatus.LOST,
    RunStatus.CANCELLED,
)

LEGAL = {
    (P, D), (P, CANCELLED),
    (D, R), (D, DONE), (D, FAILED), (D, LOST), (D, CANCELLED), (D, P),
    (R, DONE), (R, FAILED), (R, LOST), (R, CANCELLED),
    (DONE, P), (FAILED, P), (LOST, P), (CANCELLED, P),
}  # fmt: skip


# ---------------------------------------------------------------- state machine


def test_the_contract_states_are_exactly_the_seven() -> None:
    assert {s.value for s in RunStatus} == {
        "pending", "dispatched", "running", "done", "failed", "lost", "cancelled",
    }  # fmt: skip
    assert set(TRANSITIONS) == set(RunStatus)
    assert {D, R} == ACTIVE_STATES
    assert {DONE, FAILED, LOST, CANCELLED} == FINISHED_STATES


@pytest.mark.parametrize("old", list(RunStatus))
@pytest.mark.parametrize("new", list(RunStatus))
def test_every_transition_is_legal_or_illegal_as_designed(old: RunStatus, new: RunStatus) -> None:
    assert can_transition(old, new) is ((old, new) in LEGAL)


@pytest.mark.parametrize(
    ("old", "new"),
    [(P, R), (P, DONE), (P, LOST), (R, P), (R, D), (DONE, FAILED), (FAILED, DONE),
     (CANCELLED, R), (LOST, R), (DONE, R)],
)  # fmt: skip
def test_set_status_refuses_an_illegal_move_and_leaves_the_run_alone(
    store: WorkspaceStore, old: RunStatus, new: RunStatus
) -> None:
    run = Run(id="r1", name="n1", command="true", status=old)
    with pytest.raises(InputError, match=f"is {old.value}; it cannot become {new.value}"):
        set_status(store, run, new)
    assert run.status == old
    assert run.ended_at is None
    assert not [e for e in store.events.read() if e["event"] == "run.status"]


def test_set_status_records_a_legal_move_in_the_event_log(store: WorkspaceStore) -> None:
    run = Run(id="r1", name="n1", command="true", status=R)
    set_status(store, run, DONE, exit_code=0)
    assert run.status == DONE
    assert run.ended_at  # finishing stamps the end time
    events = [e for e in store.events.read() if e["event"] == "run.status"]
    assert events[-1]["run"] == "r1"
    assert (events[-1]["old"], events[-1]["new"], events[-1]["exit_code"]) == ("running", "done", 0)


def test_retry_of_a_pending_or_running_run_is_refused(store: WorkspaceStore) -> None:
    run = add_run(store, RunSpec(command="true", name="not-finished"))
    with pytest.raises(InputError, match="only finished runs can be retried"):
        retry_run(store, run.id)
    assert store.runs()[0].status == P


# ---------------------------------------------------------------- workers


def _load_yaml(text: str) -> object:
    return YAML(typ="rt").load(io.StringIO(text))


def test_research_os_worker_entry_loads_as_is() -> None:
    entries = _load_yaml(RESEARCH_OS_WORKER)
    assert isinstance(entries, list)
    worker = Worker.from_dict(entries[0], (0,))
    assert worker.worker_id == "vastai_auto_20260531_003650"
    assert worker.instance_id == 38664456
    assert worker.kind == "ssh"
    assert worker.enabled is True
    assert worker.worker_pool == "vastai"
    assert worker.ssh is not None
    assert (worker.ssh.host, worker.ssh.port, worker.ssh.user, worker.ssh.key) == (
        "ssh1.vast.ai", 24456, "root", "~/.ssh/vastai_id_ed25519",
    )  # fmt: skip
    assert worker.workspace == "/root"
    assert worker.resources.gpu == 1
    assert worker.resources.disk_gb == 32
    assert worker.health.heartbeat_command == "echo ok"
    assert worker.health.busy_command == "pgrep -f python || true"
    # `>-` folds the two lines into one and strips the final newline.
    assert worker.notes == (
        "AUTO-RENTED at 2026-05-31 00:35:14. RTX A4000, $0.094/hr, DLP/$=230.8. Washington, US."
    )
    assert worker.slots == 1  # runyard's default: one training run per box


def test_worker_to_dict_round_trips_and_keeps_research_os_field_order() -> None:
    entries = _load_yaml(RESEARCH_OS_WORKER)
    assert isinstance(entries, list)
    worker = Worker.from_dict(entries[0])
    data = worker.to_dict()
    assert list(data)[:6] == [
        "worker_id", "instance_id", "kind", "enabled", "worker_pool", "ssh",
    ]  # fmt: skip
    assert Worker.from_dict(data) == worker


@pytest.mark.parametrize(
    ("entry", "field", "message"),
    [
        ({"kind": "local"}, "worker_id", "is required"),
        ({"worker_id": "a", "slots": 0}, "slots", ">= 1"),
        ({"worker_id": "a", "slots": "many"}, "slots", "integer"),
        ({"worker_id": "a", "enabled": "yes"}, "enabled", "true or false"),
        ({"worker_id": "a", "kind": "ssh"}, "ssh.host", "is required"),
        (
            {"worker_id": "a", "kind": "ssh", "ssh": {"host": "h", "port": "x"}},
            "ssh.port",
            "integer",
        ),
        ({"worker_id": "a", "kind": "docker"}, "kind", "'local' or 'ssh'"),
        ({"worker_id": "bad name!"}, "worker_id", "not a valid worker name"),
    ],
)
def test_worker_field_errors_name_the_field(entry: dict, field: str, message: str) -> None:
    with pytest.raises(FieldError) as info:
        Worker.from_dict(entry, (3,))
    assert info.value.path == (3, *field.split("."))
    assert message in info.value.message


# ---------------------------------------------------------------- runs


def _full_run() -> Run:
    return Run(
        id="r0a1b2c3",
        name="resnet-seed-1",
        command="python train.py --lr 3e-4 'quoted arg' \"$HOME\" `date`",
        project="vision",
        pool="gpu",
        pinned_worker="box-1",
        priority=7,
        env={"SEED": "1", "TOKEN": "${secret:HF_TOKEN}", "UNICODE": "naïve ☃"},
        workdir="competitions/demo",
        outputs=["model/*.pt", "preds.csv"],
        metrics_regex=r"loss=(?P<loss>[0-9.]+)",
        verify_command="test -s outputs/model.pt",
        status=RunStatus.FAILED,
        worker="box-1",
        attempts=2,
        exit_code=7,
        pid=4242,
        boot_id="890d5d68-f7e6-4896-9f8c-2ec0accec422",
        run_dir="/root/.runyard/runs/r0a1b2c3/2",
        created_at="2026-05-31T00:35:14Z",
        dispatched_at="2026-05-31T00:36:00Z",
        started_at="2026-05-31T00:36:01Z",
        ended_at="2026-05-31T01:00:00Z",
        metrics={"epoch": 3.0, "loss": 0.48, "val_loss": 0.51},
        history=[{"attempt": 1, "status": "lost", "worker": "box-2", "exit_code": None}],
        error="boom",
        pull=PullRecord(at="2026-05-31T01:01:00Z", files=3, bytes=1234, verified=False,
                        problems=["log: sha256 differs from the worker's"]),
    )  # fmt: skip


@pytest.mark.parametrize("with_pull", [True, False], ids=["pulled", "plain"])
def test_run_round_trips_through_to_dict_and_from_dict(with_pull: bool) -> None:
    run = _full_run()
    if not with_pull:
        run.pull = None
    assert Run.from_dict(run.to_dict()) == run
    # ... and through the JSON text the queue file holds.
    assert Run.from_dict(json.loads(json.dumps(run.to_dict(), ensure_ascii=False))) == run


def test_minimal_run_round_trips_with_defaults() -> None:
    run = Run.from_dict({"id": "r1", "name": "a", "command": "true"})
    assert run.status == RunStatus.PENDING
    assert run.attempts == 0 and run.metrics == {} and run.env == {} and run.pull is None
    assert Run.from_dict(run.to_dict()) == run


def test_run_to_dict_carries_the_cli_contract_fields() -> None:
    data = _full_run().to_dict()
    for key in ("id", "name", "status", "worker", "exit_code", "attempts", "metrics"):
        assert key in data
    assert data["status"] == "failed"


@pytest.mark.parametrize(
    ("patch", "field", "message"),
    [
        ({"status": "finished"}, "status", "unknown status 'finished'"),
        ({"id": None}, "id", "is required"),
        ({"command": None}, "command", "is required"),
        ({"priority": "high"}, "priority", "integer"),
        ({"attempts": -1}, "attempts", ">= 0"),
        ({"metrics": {"loss": "low"}}, "metrics.loss", "number"),
        ({"env": {"A": 1}}, "env.A", "string"),
        ({"env": {"1BAD": "x"}}, "env.1BAD", "not a valid environment variable"),
        ({"name": "has space"}, "name", "not a valid run name"),
    ],
)
@pytest.mark.parametrize("with_pull", [True, False], ids=["pulled", "plain"])
def test_run_field_errors_name_the_field(
    patch: dict, field: str, message: str, with_pull: bool
) -> None:
    base = _full_run()
    if not with_pull:
        base.pull = None  # the common shape of a queue entry
    data = {**base.to_dict(), **patch}
    data = {k: v for k, v in data.items() if v is not None}
    with pytest.raises(FieldError) as info:
        Run.from_dict(data, (5,))
    assert info.value.path == (5, *field.split("."))
    assert message in info.value.message
