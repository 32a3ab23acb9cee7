"""Vast end to end against the SIMULATED marketplace, through the real `vastai` SDK.

Rent -> register -> dispatch -> pull -> destroy; SSH port and host drift fixed by reconcile
with the file's comments kept; the teardown gate refusing a destroy before the API is ever
called; untracked instances flagged; a vanished box disabling its worker and losing its
run; stop and start; `worker add --vast-instance`.
"""

from __future__ import annotations

import asyncio
import json
import time

import pytest

from fakes.vast_workspace import sim_fixture, vast_fixture  # noqa: F401  (fixtures)
from runyard.core.check import check
from runyard.core.dispatch import dispatch
from runyard.core.errors import InputError, OperationalError
from runyard.core.fleet.transports import Fleet
from runyard.core.models import RunStatus
from runyard.core.providers.vast.reconcile import Drift
from runyard.core.providers.vast.rent import LaunchSteps, RentRequest
from runyard.core.providers.vast.service import VastService
from runyard.core.pull import pull_run
from runyard.core.runs import RunSpec, add_run, find_run
from runyard.core.store.workspace_store import WorkspaceStore
from runyard.core.teardown import TeardownAction
from runyard.sim.vast_api import SimVast

pytestmark = pytest.mark.timeout(120)

CHEAP_A4000 = 5000003


async def rent_box(vast: VastService, name: str, offer: int = CHEAP_A4000) -> int:
    plan = await vast.plan_rent(RentRequest(offer_id=offer, name=name), LaunchSteps())
    outcome = await vast.rent(plan)
    return outcome.instance_id


async def wait_status(store: WorkspaceStore, fleet: Fleet, run_id: str, want: RunStatus) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        await check(store, fleet)
        if find_run(store.runs(), run_id).status == want:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"run {run_id} never became {want.value}")


async def test_rent_register_dispatch_pull_destroy(vast: VastService, sim: SimVast) -> None:
    store = vast.store
    instance_id = await rent_box(vast, "a4000")
    worker = store.worker("a4000")
    assert worker.instance_id == instance_id and worker.platform == "vast"
    assert worker.worker_pool == "vastai" and worker.price_dph and worker.price_dph > 0
    assert worker.ssh is not None and worker.ssh.port == sim.instances[instance_id].ssh_port
    assert "RTX A4000" in worker.notes and "DLP/$=" in worker.notes
    # accept-new for the vastai pool: the host key is in the workspace's known_hosts.
    assert (
        f"[127.0.0.1]:{worker.ssh.port}" in (store.workspace.state_dir / "known_hosts").read_text()
    )

    run = add_run(
        store,
        RunSpec(
            name="train-a4000",
            pool="vastai",
            project="sweep",
            command='echo "Epoch 1/1 | loss=0.25"; echo weights > "$RUNYARD_OUTPUT_DIR/model.bin"',
        ),
    )
    fleet = Fleet(store.workspace.root, store.settings())
    try:
        outcomes = await dispatch(store, fleet, "vastai")
        assert [(o.run_id, o.worker, o.ok) for o in outcomes] == [(run.id, "a4000", True)]
        await wait_status(store, fleet, run.id, RunStatus.DONE)

        # Unpulled results: the gate refuses, and the API's destroy is never called.
        with pytest.raises(OperationalError, match="not pulled"):
            await vast.teardown(instance_id, TeardownAction.DESTROY, "a4000")
        assert sim.calls_to("DELETE") == []

        pulled = await pull_run(store, fleet, run.id)
        assert pulled.verified, pulled.problems
    finally:
        await fleet.close()

    message = await vast.teardown(instance_id, TeardownAction.DESTROY, "a4000")
    assert "destroyed" in message
    assert [c.path for c in sim.calls_to("DELETE")] == [f"/api/v0/instances/{instance_id}/"]
    assert instance_id not in sim.instances
    assert store.worker("a4000").enabled is False
    events = [e["event"] for e in store.events.read()]
    assert "vast.rented" in events and "vast.destroyed" in events
    # Destroying again is not an error (idempotent) once the worker is gone from the gate.
    assert await vast.compute.destroy_instance(instance_id) is False


async def test_a_wrong_name_or_a_running_run_never_reaches_the_api(
    vast: VastService, sim: SimVast
) -> None:
    store = vast.store
    instance_id = await rent_box(vast, "busy")
    run = add_run(store, RunSpec(name="long", worker="busy", command="sleep 30"))
    fleet = Fleet(store.workspace.root, store.settings())
    try:
        await dispatch(store, fleet)
        await wait_status(store, fleet, run.id, RunStatus.RUNNING)
    finally:
        await fleet.close()
    for action in (TeardownAction.STOP, TeardownAction.DESTROY):
        plan = await vast.plan_teardown(instance_id, action)
        assert not plan.allowed and "is running" in plan.refusal()
        with pytest.raises(OperationalError):
            await vast.teardown(instance_id, action, "busy")  # --yes: the gate still holds
    assert sim.calls_to("DELETE") == []
    assert [c for c in sim.calls_to("PUT") if "/instances/" in c.path] == []
    stop_plan = await vast.plan_teardown(instance_id, TeardownAction.STOP)
    assert any("still bills" in line for line in stop_plan.dangers)


async def test_port_and_host_drift_fixed_by_reconcile_keeping_comments(
    vast: VastService, sim: SimVast
) -> None:
    store = vast.store
    instance_id = await rent_box(vast, "drifty")
    path = store.workspace.workers_path
    text = path.read_text()
    # The human annotates the file; reconcile must keep every comment.
    text = text.replace(
        "- worker_id: drifty", "# rented for the sweep, keep until Friday\n- worker_id: drifty"
    )
    text = text.replace("    user: root", "    user: root  # vast images log in as root")
    path.write_text(text)

    moved = await sim.move(instance_id, host="localhost")
    report = await vast.reconcile(fix=False)
    drifts = {f.drift for f in report.plan.findings}
    assert {Drift.PORT_CHANGED, Drift.HOST_CHANGED} <= drifts and not report.fixed
    assert path.read_text() == text  # no --fix: nothing written

    report = await vast.reconcile(fix=True)
    assert report.fixed and report.applied
    after = path.read_text()
    assert "# rented for the sweep, keep until Friday" in after
    assert "user: root  # vast images log in as root" in after
    worker = store.worker("drifty")
    assert worker.ssh is not None
    assert (worker.ssh.host, worker.ssh.port) == ("localhost", moved.ssh_port)

    # The fixed worker answers at its new address: dispatch works first try.
    run = add_run(store, RunSpec(name="after-move", worker="drifty", command="echo ok"))
    fleet = Fleet(store.workspace.root, store.settings())
    try:
        outcomes = await dispatch(store, fleet)
        assert outcomes and outcomes[0].ok, outcomes
        await wait_status(store, fleet, run.id, RunStatus.DONE)
    finally:
        await fleet.close()
    assert (await vast.reconcile(fix=False)).plan.needs_fix is False


async def test_vanished_instance_disables_worker_and_loses_its_run(
    vast: VastService, sim: SimVast
) -> None:
    store = vast.store
    instance_id = await rent_box(vast, "doomed")
    run = add_run(store, RunSpec(name="doomed-run", worker="doomed", command="sleep 30"))
    fleet = Fleet(store.workspace.root, store.settings())
    try:
        await dispatch(store, fleet)
        await wait_status(store, fleet, run.id, RunStatus.RUNNING)
    finally:
        await fleet.close()
    await sim.vanish(instance_id)
    report = await vast.reconcile(fix=True)
    assert [f.drift for f in report.plan.findings] == [Drift.GONE]
    assert store.worker("doomed").enabled is False
    lost = find_run(store.runs(), run.id)
    assert lost.status is RunStatus.LOST and f"instance {instance_id}" in (lost.error or "")


async def test_untracked_instances_are_flagged(vast: VastService, sim: SimVast) -> None:
    tracked = await rent_box(vast, "mine")
    stray = await sim.rent(5000001, label="forgotten at 2 AM")
    await sim.wait_running(stray.id)
    rows = {row.instance.id: row for row in await vast.instances()}
    assert rows[tracked].tracked and rows[tracked].worker == "mine"
    assert not rows[stray.id].tracked and rows[stray.id].to_json()["flag"] == "untracked"
    report = await vast.reconcile(fix=True)
    untracked = [f for f in report.plan.findings if f.drift is Drift.UNTRACKED]
    assert [f.instance_id for f in untracked] == [stray.id]
    assert "billing" in untracked[0].detail
    assert stray.id in sim.instances  # reconcile never destroys anything


async def test_stop_then_start_points_the_worker_at_the_new_port(
    vast: VastService, sim: SimVast
) -> None:
    store = vast.store
    instance_id = await rent_box(vast, "parked")
    message = await vast.teardown(instance_id, TeardownAction.STOP, "parked")
    assert "disk still bills" in message
    assert store.worker("parked").enabled is False
    report = await vast.reconcile(fix=False)
    assert [f.drift for f in report.plan.findings] == [Drift.DOWN]
    old_port = sim.instances[instance_id].ssh_port
    sim.instances[instance_id].ssh_port = None  # Vast hands out a new port on restart
    worker = await vast.start(instance_id)
    assert worker is not None and worker.enabled
    assert worker.ssh is not None and worker.ssh.port == sim.instances[instance_id].ssh_port
    assert worker.ssh.port != old_port


async def test_worker_add_from_a_live_instance(vast: VastService, sim: SimVast) -> None:
    box = await sim.rent(5000002)
    await sim.wait_running(box.id)
    worker = await vast.add_worker("picked", box.id, pool="gpu", key="~/.ssh/vast")
    assert worker.instance_id == box.id and worker.worker_pool == "gpu"
    assert worker.ssh is not None and worker.ssh.port == box.ssh_port
    assert worker.ssh.key == "~/.ssh/vast"
    assert vast.store.worker("picked").instance_id == box.id
    with pytest.raises(InputError, match="already worker 'picked'"):
        await vast.add_worker("again", box.id)
    with pytest.raises(InputError, match="not on your Vast account"):
        await vast.add_worker("ghost", 99)


async def test_console_dispatch_reconciles_drift_first(vast: VastService, sim: SimVast) -> None:
    """The console fixes a rented box's moved SSH port before sending it a run."""
    from runyard.tui.services import ConsoleServices

    store = vast.store
    instance_id = await rent_box(vast, "overnight")
    moved = await sim.move(instance_id)  # the port changed overnight
    run = add_run(store, RunSpec(name="morning-batch", worker="overnight", command="echo ok"))
    services = ConsoleServices(store.workspace)
    try:
        report = await services.dispatch()
    finally:
        await services.close()
    assert [o.ok for o in report.outcomes if o.run_id == run.id] == [True], report
    assert report.reconciled and report.reconcile_problem is None
    worker = store.worker("overnight")
    assert worker.ssh is not None and worker.ssh.port == moved.ssh_port


async def test_cli_dispatch_reconciles_drift_first(
    vast: VastService, sim: SimVast, capsys: pytest.CaptureFixture[str]
) -> None:
    """`runyard dispatch` fixes a rented box's moved SSH port before sending it a run."""
    from runyard.cli.main import main

    store = vast.store
    instance_id = await rent_box(vast, "overnight")
    moved = await sim.move(instance_id)
    run = add_run(store, RunSpec(name="morning-batch", worker="overnight", command="echo ok"))
    argv = ["--workspace", str(store.workspace.root), "dispatch", "--json"]
    code = await asyncio.to_thread(main, argv)
    out, err = capsys.readouterr()
    assert code == 0, err
    assert [(o["id"], o["ok"]) for o in json.loads(out)] == [(run.id, True)]
    assert "vast drift fixed first" in err
    worker = store.worker("overnight")
    assert worker.ssh is not None and worker.ssh.port == moved.ssh_port
