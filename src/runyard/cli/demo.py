"""`runyard demo`: a SIMULATED loopback fleet, a workspace wired to it, then the console.

The fleet (runyard.sim.fleet) is real SSH servers on 127.0.0.1 in a process of their own,
running real commands in per-worker sandbox folders under `<workspace>/.runyard/sim/`, each
with a simulated nvidia-smi whose utilisation follows the runs really running there. The
workspace (default `./demo-workspace`) gets the demo competition, a few queued runs (a
learning-rate sweep and one that fails) and the fleet in workers.yaml; then the console
opens, or, without one (or without a terminal), a printed tour through the same core calls
as the CLI verbs. The fleet stops when the demo ends.

`--headless` only serves the fleet: the workspace path is the first line on stdout, and the
fleet serves until SIGINT or SIGTERM (for scripts, benchmarks and tests).
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import signal
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from runyard.cli.output import format_metrics, print_table
from runyard.sim.demo_workspace import (
    CONSOLE_EPOCHS,
    CONSOLE_SLEEP,
    DEMO_COMPETITION,
    LABEL,
    prepare_demo_workspace,
    stage_demo,
)

if TYPE_CHECKING:
    from runyard.core.fleet.transports import Fleet
    from runyard.core.models import Run
    from runyard.core.store.workspace_store import WorkspaceStore
    from runyard.core.workspace import Workspace
    from runyard.sim.fleet import FleetInfo, SimulatedFleet

TOUR_DEADLINE_S = 300.0


def _say(text: str) -> None:
    sys.stdout.write(f"\n== {text}\n")
    sys.stdout.flush()


def run_demo(args: argparse.Namespace) -> int:
    from runyard.sim.fleet import DEFAULT_WORKERS, check_worker_count

    root = Path(args.dir).resolve()
    count = check_worker_count(args.workers if args.workers is not None else DEFAULT_WORKERS)
    if args.headless:
        return _serve_headless(root, count, args.fresh)
    return _tour(root, count, args.fresh)


# ---------------------------------------------------------------- --headless


def _serve_headless(root: Path, count: int, fresh: bool) -> int:
    """Serve the fleet until SIGINT/SIGTERM; the workspace path is stdout's first line."""
    from runyard.sim.fleet import SimulatedFleet

    stop = threading.Event()
    previous = {
        signum: signal.signal(signum, lambda *_: stop.set())
        for signum in (signal.SIGINT, signal.SIGTERM)
    }
    try:
        workspace = prepare_demo_workspace(root, fresh=fresh)
        fleet = SimulatedFleet(workspace.root, count)
        info = fleet.start()
        try:
            sys.stdout.write(f"{workspace.root}\n")
            sys.stdout.flush()
            sys.stderr.write(
                f"runyard demo: {LABEL} fleet of {len(info.workers)} loopback SSH workers "
                f"(pid {info.pid}) wired into {workspace.root}; Ctrl-C or SIGTERM stops it\n"
            )
            sys.stderr.flush()
            while not stop.wait(0.5):
                if not fleet.alive():
                    sys.stderr.write(
                        f"runyard demo: the {LABEL} fleet process ended:\n{fleet.log_tail()}\n"
                    )
                    return 1
            return 0
        finally:
            fleet.stop()
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


# ---------------------------------------------------------------- console or tour


def _console() -> Callable[..., int] | None:
    """The console's entry point when it exists and there is a terminal to draw on."""
    if not (sys.stdout.isatty() and sys.stdin.isatty()):
        return None
    try:
        module = importlib.import_module("runyard.tui.app")
    except ImportError:
        return None
    run_console: Callable[..., int] = module.run_console
    return run_console


def _tour(root: Path, count: int, fresh: bool) -> int:
    from runyard.core.errors import OperationalError
    from runyard.sim.fleet import SimulatedFleet

    if not DEMO_COMPETITION.is_dir():
        raise OperationalError(
            f"the demo competition is not at {DEMO_COMPETITION}; run the demo from a checkout"
        )
    workspace = prepare_demo_workspace(root, fresh=fresh)
    console = _console()
    fleet = SimulatedFleet(workspace.root, count)
    _say(f"{LABEL} fleet: starting {count} loopback SSH workers in a process of their own")
    info = fleet.start()
    try:
        _print_fleet(info)
        _say(f"demo workspace: {workspace.root}  (plain files; workers.yaml lists the fleet)")
        if console is not None:
            asyncio.run(_stage(workspace, fleet, epochs=CONSOLE_EPOCHS, sleep=CONSOLE_SLEEP))
            return console(workspace, simulated=True, auto_dispatch=True)
        return asyncio.run(_stage_and_walk(workspace, fleet))
    finally:
        fleet.stop()
        sys.stdout.write(f"\n{LABEL} fleet stopped; every run on it was powered off.\n")


def _print_fleet(info: FleetInfo) -> None:
    from runyard.sim.catalog import demo_specs

    specs = {spec.name: spec for spec in demo_specs(len(info.workers))}
    rows = []
    for box in info.workers:
        spec = specs[box.name]
        price = spec.template.price_dph
        rows.append(
            [box.name, spec.template.pool, spec.describe(), f"127.0.0.1:{box.port}",
             f"${price}/h" if price else ""]
        )  # fmt: skip
    print_table(["WORKER (SIMULATED)", "POOL", "GPUS (simulated)", "SSH", "PRICE"], rows)


async def _stage(
    workspace: Workspace, sim: SimulatedFleet, *, epochs: int, sleep: float
) -> list[Run]:
    """Push the demo code to every worker, queue the demo runs, dispatch them (and say so)."""
    _say(f"sync: competitions/demo -> every {LABEL} worker, over its SSH connection")
    staged = await stage_demo(
        workspace, {box.name for box in sim.info.workers}, epochs=epochs, sleep=sleep
    )
    print(f"pushed to {len(staged.workers) - len(staged.push_failures)} workers")
    for name, error in staged.push_failures.items():
        print(f"  {name}: {error}")
    _say("queue: a learning-rate sweep and one run that fails at epoch 3")
    for run in staged.runs:
        print(f"queued {run.name} {run.id} (pool {run.pool}, priority {run.priority})")
    _say("dispatch: detached with setsid on the workers, one run per slot")
    for launched in staged.launched:
        where = f"pid={launched.pid}" if launched.ok else f"FAILED: {launched.error}"
        print(f"dispatched {launched.run_id} {launched.run_name} -> {launched.worker} {where}")
    return staged.runs


async def _stage_and_walk(workspace: Workspace, sim: SimulatedFleet) -> int:
    runs = await _stage(workspace, sim, epochs=8, sleep=0.25)
    return await _walkthrough(workspace, sim, runs)


async def _walkthrough(workspace: Workspace, sim: SimulatedFleet, runs: list[Run]) -> int:
    """The printed tour: GPUs, a followed log, check, pull, a staged reboot."""
    from runyard.core.control import follow_log
    from runyard.core.fleet.transports import Fleet
    from runyard.core.store.workspace_store import WorkspaceStore

    store = WorkspaceStore(workspace)
    fleet = Fleet(workspace.root, store.settings())
    ids = [run.id for run in runs]
    try:
        await _show_gpus(store, fleet, "GPUs while the runs train")
        _say(
            f"logs -f {runs[0].id}: the run survives this process; the log is a file on the worker"
        )
        async for chunk in follow_log(store, fleet, runs[0].id, 20, poll_seconds=0.2):
            sys.stdout.write(chunk.decode("utf-8", "replace"))
            sys.stdout.flush()
        await _settle(store, fleet, ids)
        _say("check: exit codes and metrics parsed from the logs on the workers")
        by_id = {run.id: run for run in store.runs()}
        rows = [
            [i, by_id[i].name, by_id[i].status.value, by_id[i].worker, by_id[i].exit_code,
             format_metrics(by_id[i].metrics)]
            for i in ids
        ]  # fmt: skip
        print_table(["ID", "NAME", "STATUS", "WORKER (SIMULATED)", "EXIT", "METRICS"], rows)
        code = await _pull(store, fleet, runs[0].id)
        await _show_gpus(store, fleet, "GPUs once the runs ended")
        await _staged_reboot(store, fleet, sim)
    finally:
        await fleet.close()
    _next_steps(workspace, runs)
    return code


async def _settle(store: WorkspaceStore, fleet: Fleet, ids: Sequence[str]) -> None:
    """Check (and dispatch what waits) until every run in `ids` has finished."""
    from runyard.core.check import check
    from runyard.core.dispatch import dispatch
    from runyard.core.errors import OperationalError
    from runyard.core.models import FINISHED_STATES

    deadline = time.monotonic() + TOUR_DEADLINE_S
    while time.monotonic() < deadline:
        await check(store, fleet)
        await dispatch(store, fleet)
        runs = {run.id: run for run in store.runs()}
        if all(runs[i].status in FINISHED_STATES for i in ids):
            return
        await asyncio.sleep(0.3)
    raise OperationalError(f"the demo runs did not finish within {TOUR_DEADLINE_S:.0f}s")


async def _show_gpus(store: WorkspaceStore, fleet: Fleet, title: str) -> None:
    from runyard.core.telemetry_service import fleet_status

    _say(f"worker status: {title} ({LABEL} nvidia-smi follows the runs really running)")
    workers = [w for w in store.workers() if w.enabled and not w.is_local]
    rows: list[list[Any]] = []
    for status in await fleet_status(store, fleet, workers):
        gpus = status.get("gpus") or []
        util = " ".join(f"{g['util_pct']}%" if g["util_pct"] is not None else "?" for g in gpus)
        reach = "yes" if status["reachable"] else f"NO {status['error']}"
        rows.append([status["name"], reach, util or "(CPU only)", " ".join(status["runs"])])
    print_table(["WORKER (SIMULATED)", "REACHABLE", "GPU UTIL", "RUNS"], rows)


async def _pull(store: WorkspaceStore, fleet: Fleet, run_id: str) -> int:
    from runyard.core.errors import RunyardError
    from runyard.core.pull import pull_run

    _say(f"pull {run_id}: outputs rsynced to results/, sha256 checked on both sides")
    try:
        outcome = await pull_run(store, fleet, run_id)
    except RunyardError as exc:
        print(f"  pull failed: {exc}")
        return 1
    for pulled in outcome.files:
        print(
            f"  {pulled.relative:<28} {pulled.size:>7} bytes  {'ok' if pulled.ok else 'MISMATCH'}"
        )
    print(f"  verified: {outcome.verified}  -> {outcome.directory}")
    return 0 if outcome.verified else 1


async def _staged_reboot(store: WorkspaceStore, fleet: Fleet, sim: SimulatedFleet) -> None:
    """A long run on the first GPU box, a simulated reboot under it, and `check` says lost."""
    from runyard.core.check import check
    from runyard.core.dispatch import dispatch
    from runyard.core.runs import RunSpec, add_run

    box = next((b for b in sim.info.workers if b.gpus), None)
    if box is None:
        return
    run = add_run(
        store,
        RunSpec(
            command="python3 competitions/demo/train.py --epochs 10000 --sleep 0.5",
            name=f"reboot-victim-{int(time.time())}",
            project="demo-reboot",
            worker=box.name,
            priority=9,
        ),
    )
    await dispatch(store, fleet)
    _say(
        f"a {LABEL} reboot of {box.name} under run {run.id}: its processes die, its boot id changes"
    )
    await asyncio.to_thread(sim.reboot, box.name)
    for result in await check(store, fleet):
        if result.run_id == run.id:
            print(f"check: {run.id} {result.old.value} -> {result.new.value} ({result.reason})")


def _next_steps(workspace: Workspace, runs: Sequence[Run]) -> None:
    _say("next")
    print(f"  runyard demo --headless --dir {workspace.root}   # keep the {LABEL} fleet serving")
    print(f"  cd {workspace.root}")
    print("  runyard worker status        # heartbeat, GPUs, disk of every worker, all at once")
    print("  runyard run list             # the queue, as the console shows it")
    print(f"  runyard run retry {runs[-1].id}     # a new attempt of the failed run")
    print("  cat workers.yaml             # the fleet's entries, each noted SIMULATED")
    print("  cat .runyard/events.jsonl    # every state change, append-only")
