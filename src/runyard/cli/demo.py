"""`runyard demo`: the local-first tour on a fresh demo workspace.

It scaffolds `demo-workspace/`, copies the demo competition in, queues a good run and a
failing one, dispatches them on the local worker, follows the log, checks, pulls and
verifies — every step through the same core calls as the CLI verbs.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import sys
from pathlib import Path

from runyard.cli.output import format_metrics, print_table

REPO_ROOT = Path(__file__).resolve().parents[3]


def _say(text: str) -> None:
    sys.stdout.write(f"\n== {text}\n")
    sys.stdout.flush()


def run_demo(args: argparse.Namespace) -> int:
    from runyard.core.check import check
    from runyard.core.control import follow_log
    from runyard.core.dispatch import dispatch
    from runyard.core.errors import OperationalError
    from runyard.core.fleet.transports import Fleet
    from runyard.core.models import FINISHED_STATES
    from runyard.core.pull import pull_run
    from runyard.core.runs import RunSpec, add_run
    from runyard.core.store.workspace_store import WorkspaceStore
    from runyard.core.workspace import init_workspace

    source = REPO_ROOT / "competitions" / "demo"
    if not source.is_dir():
        raise OperationalError(
            f"the demo competition is not at {source}; run the demo from a runyard checkout"
        )
    root = Path(args.dir).resolve()
    if root.exists() and args.fresh:
        shutil.rmtree(root)
    workspace, _ = init_workspace(root)
    target = workspace.competitions_dir / "demo"
    if not target.exists():
        shutil.copytree(
            source, target, ignore=shutil.ignore_patterns("submissions", "outputs", "__pycache__")
        )
    store = WorkspaceStore(workspace)
    _say(
        f"demo workspace: {workspace.root}  (plain files: runyard.yaml, workers.yaml, queues/run_queue.json)"
    )

    existing = {run.name for run in store.runs()}
    suffix = f"-{len(existing) // 2 + 1}" if existing else ""
    good = add_run(
        store,
        RunSpec(
            command="python3 competitions/demo/train.py --epochs 8 --sleep 0.25 && python3 competitions/demo/predict.py",
            name=f"demo-baseline{suffix}",
            project="demo",
            priority=5,
        ),
    )
    bad = add_run(
        store,
        RunSpec(
            command="python3 competitions/demo/train.py --epochs 8 --sleep 0.1 --fail-at-epoch 3",
            name=f"demo-fails{suffix}",
            project="demo",
        ),
    )
    print(f"queued {good.name} {good.id} (priority 5) and {bad.name} {bad.id}")

    async def tour() -> int:
        fleet = Fleet(workspace.root, store.settings())
        try:
            _say("dispatch: detached with setsid, one run per slot, highest priority first")
            for launched in await dispatch(store, fleet):
                print(
                    f"dispatched {launched.run_id} {launched.run_name} -> {launched.worker} pid={launched.pid}"
                )
            _say(
                f"logs -f {good.id}: the run survives this process; the log is a plain file on the worker"
            )
            async for chunk in follow_log(store, fleet, good.id, 20, poll_seconds=0.2):
                sys.stdout.write(chunk.decode("utf-8", "replace"))
                sys.stdout.flush()
            while True:
                await check(store, fleet)
                await dispatch(store, fleet)
                runs = {r.id: r for r in store.runs()}
                if all(runs[i].status in FINISHED_STATES for i in (good.id, bad.id)):
                    break
                await asyncio.sleep(0.3)
            _say("check: exit codes and metrics parsed from the logs")
            rows = [
                [r.id, r.name, r.status.value, r.worker, r.exit_code, format_metrics(r.metrics)]
                for r in store.runs()
                if r.id in (good.id, bad.id)
            ]
            print_table(["ID", "NAME", "STATUS", "WORKER", "EXIT", "METRICS"], rows)
            _say(f"pull {good.id}: outputs copied to results/, sha256 checked on both sides")
            outcome = await pull_run(store, fleet, good.id)
            for pulled in outcome.files:
                print(
                    f"  {pulled.relative:<28} {pulled.size:>7} bytes  {'ok' if pulled.ok else 'MISMATCH'}"
                )
            print(f"  verified: {outcome.verified}  -> {outcome.directory}")
            return 0 if outcome.verified else 1
        finally:
            await fleet.close()

    code = asyncio.run(tour())
    _say("next")
    print(f"  cd {workspace.root}")
    print("  runyard run list            # the queue, as the console will show it")
    print(f"  runyard run retry {bad.id}   # a new attempt of the failed run")
    print("  cat .runyard/events.jsonl   # every state change, append-only")
    print("  (the simulated SSH fleet and the console arrive with the next milestones)")
    return code
