"""Reconcile planning (pure) and applying it to workers.yaml and the queue."""

from __future__ import annotations

from runyard.core.models import Run, RunStatus, SSHSettings, Worker
from runyard.core.providers.base import Endpoint, InstanceState, ProviderInstance
from runyard.core.providers.vast.reconcile import Drift, apply_plan, inventory, plan_reconcile
from runyard.core.store.workspace_store import WorkspaceStore

WORKERS_YAML = """\
# my rented boxes
- worker_id: local
  kind: local
- worker_id: vastai_worker_2   # the 3060
  instance_id: 37906248
  kind: ssh
  enabled: true
  worker_pool: vastai
  ssh: {host: ssh8.vast.ai, port: 26249, user: root, key: ~/.ssh/vastai_id_ed25519}
  workspace: /root
  notes: >-
    hand written note
- worker_id: gone_box
  instance_id: 38614511
  kind: ssh
  worker_pool: vastai
  ssh:
    host: ssh1.vast.ai  # proxy host
    port: 24456
"""


def instance(
    instance_id: int,
    state: InstanceState = InstanceState.RUNNING,
    host: str = "ssh8.vast.ai",
    port: int = 26248,
    price: float = 0.0659,
) -> ProviderInstance:
    return ProviderInstance(
        id=instance_id,
        state=state,
        status_text=state.value,
        ssh=Endpoint(host, port) if state is InstanceState.RUNNING else None,
        price_dph=price,
        storage_dph=0.01,
        gpu_name="RTX 3060",
        num_gpus=1,
        machine_id=1,
        label="",
        started_at=None,
    )


def vast_worker(name: str, instance_id: int, port: int = 26248, enabled: bool = True) -> Worker:
    return Worker(
        worker_id=name,
        kind="ssh",
        enabled=enabled,
        worker_pool="vastai",
        ssh=SSHSettings("ssh8.vast.ai", port, "root"),
        instance_id=instance_id,
        price_dph=0.0659,
    )


def active_run(run_id: str, worker: str) -> Run:
    return Run(run_id, f"run-{run_id}", "sleep 1", status=RunStatus.RUNNING, worker=worker,
               attempts=1, run_dir="/root/.runyard/runs/x/1")  # fmt: skip


def test_port_change_is_planned() -> None:
    plan = plan_reconcile([vast_worker("w", 1, port=26249)], [instance(1)], [])
    assert [f.drift for f in plan.findings] == [Drift.PORT_CHANGED]
    assert plan.patches["w"].changes() == {"ssh.port": 26248}
    assert plan.lost_runs == {}


def test_host_change_price_change_and_consistent_workers() -> None:
    workers = [vast_worker("moved", 1), vast_worker("fine", 2)]
    live = [instance(1, host="ssh5.vast.ai", price=0.07), instance(2)]
    plan = plan_reconcile(workers, live, [])
    drifts = {(f.worker, f.drift) for f in plan.findings}
    assert drifts == {
        ("moved", Drift.HOST_CHANGED),
        ("moved", Drift.PRICE_CHANGED),
        ("fine", Drift.OK),
    }
    assert plan.patches["moved"].changes() == {"ssh.host": "ssh5.vast.ai", "price_dph": 0.07}


def test_gone_and_exited_instances_disable_workers_and_lose_active_runs() -> None:
    workers = [
        vast_worker("gone", 1),
        vast_worker("exited", 2),
        vast_worker("idle_gone", 3, enabled=False),
    ]
    runs = [active_run("r1", "gone"), active_run("r2", "exited")]
    plan = plan_reconcile(workers, [instance(2, state=InstanceState.EXITED)], runs)
    by_worker = {f.worker: f for f in plan.findings}
    assert by_worker["gone"].drift is Drift.GONE and by_worker["gone"].fixable
    assert by_worker["exited"].drift is Drift.DOWN
    assert not by_worker["idle_gone"].fixable  # already disabled, nothing ran there
    assert plan.patches["gone"].enabled is False and "idle_gone" not in plan.patches
    assert set(plan.lost_runs) == {"r1", "r2"}


def test_untracked_duplicates_idle_billing_and_loading() -> None:
    workers = [vast_worker("a", 1), vast_worker("b", 1), vast_worker("off", 2, enabled=False),
               vast_worker("boot", 3)]  # fmt: skip
    live = [instance(1), instance(2), instance(3, state=InstanceState.PROVISIONING), instance(9)]
    plan = plan_reconcile(workers, live, [])
    kinds = [(f.drift, f.instance_id) for f in plan.findings]
    assert (Drift.DUPLICATE, 1) in kinds
    assert (Drift.IDLE_BILLING, 2) in kinds
    assert (Drift.STARTING, 3) in kinds
    assert (Drift.UNTRACKED, 9) in kinds
    assert not plan.needs_fix
    rows = {r.instance.id: r for r in inventory(workers, live)}
    assert rows[9].to_json()["tracked"] is False and rows[9].to_json()["flag"] == "untracked"
    assert rows[1].worker == "a"


def test_non_vast_instance_ids_are_left_alone() -> None:
    other = Worker("runpod", kind="ssh", ssh=SSHSettings("h"), instance_id=5, platform="runpod")
    plan = plan_reconcile([other], [], [])
    assert plan.findings == [] and plan.tracked == 0


def test_apply_keeps_comments_and_marks_runs_lost(store: WorkspaceStore) -> None:
    store.workspace.workers_path.write_text(WORKERS_YAML)
    with store.queue_transaction() as runs:
        runs.append(active_run("r1", "gone_box"))
        runs.append(active_run("r2", "vastai_worker_2"))
    workers = store.workers()
    plan = plan_reconcile(workers, [instance(37906248)], store.runs())
    applied = apply_plan(store, plan, retry_lost=0)
    assert "vastai_worker_2: ssh.port 26249 -> 26248" in applied
    text = store.workspace.workers_path.read_text()
    assert text.startswith("# my rented boxes\n")
    assert "- worker_id: vastai_worker_2   # the 3060" in text
    assert (
        "ssh: {host: ssh8.vast.ai, port: 26248, user: root, key: ~/.ssh/vastai_id_ed25519}" in text
    )
    assert "host: ssh1.vast.ai  # proxy host" in text
    assert "hand written note" in text
    gone = store.worker("gone_box")
    assert gone.enabled is False
    statuses = {r.id: r.status for r in store.runs()}
    assert statuses == {"r1": RunStatus.LOST, "r2": RunStatus.RUNNING}
    events = [e["event"] for e in store.events.read()]
    assert "vast.reconciled" in events and "run.status" in events


def test_apply_requeues_lost_runs_under_the_retry_policy(store: WorkspaceStore) -> None:
    store.workspace.workers_path.write_text(WORKERS_YAML)
    with store.queue_transaction() as runs:
        runs.append(active_run("r1", "gone_box"))
    plan = plan_reconcile(store.workers(), [instance(37906248, port=26249)], store.runs())
    apply_plan(store, plan, retry_lost=1)
    run = store.runs()[0]
    assert run.status is RunStatus.PENDING and run.history[-1]["status"] == "lost"


def test_apply_skips_an_entry_edited_since_the_plan(store: WorkspaceStore) -> None:
    store.workspace.workers_path.write_text(WORKERS_YAML)
    plan = plan_reconcile(store.workers(), [instance(37906248)], [])
    edited = WORKERS_YAML.replace("instance_id: 37906248", "instance_id: 111")
    store.workspace.workers_path.write_text(edited)
    assert not [line for line in apply_plan(store, plan, 0) if "vastai_worker_2" in line]
