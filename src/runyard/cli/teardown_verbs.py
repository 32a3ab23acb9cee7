"""`runyard worker stop NAME` and `runyard worker teardown NAME`: the teardown gate, from the CLI.

Both verbs go through `runyard.core.teardown`, the same gate as the console's modal: they
print what is on the worker, what is pulled and verified, the cost so far and what the
platform profile says will be lost, then refuse (exit 1) while any result is unpulled or
unverified. Otherwise they ask for the worker's name (or take `--yes`, which is the
operator approving that specific action by naming it on the command line).

For platforms without a provider API in runyard (local, generic SSH) the action is to
disable the worker in workers.yaml and print the profile's manual meter-stop steps.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from runyard.cli.output import print_json
from runyard.cli.verbs import flush_warnings, open_store, with_fleet

VERBS = (
    ("stop", "stop", "stop the worker's meter (reversible where the platform allows)"),
    (
        "teardown",
        "destroy",
        "destroy the worker (its disk goes); refused until results are verified",
    ),
)


def register(sub: argparse._SubParsersAction[Any]) -> None:
    """Add `stop` and `teardown` to the `runyard worker` subparsers."""
    for name, action, text in VERBS:
        p = sub.add_parser(name, help=text)
        p.add_argument("name", help="the worker, as named in workers.yaml")
        p.add_argument(
            "--yes",
            action="store_true",
            help="do not ask for the name again (naming the worker here is the approval)",
        )
        p.add_argument("--json", action="store_true", help="print the plan and outcome as JSON")
        p.set_defaults(handler=teardown_verb, teardown_action=action)


def _uptime(store: Any, worker_name: str) -> float | None:
    """The box's uptime, for the cost so far; None when it has no price or cannot be reached."""
    from runyard.core.telemetry_service import probe_worker

    worker = store.worker(worker_name)
    if worker.price_dph is None or worker.is_local:
        return None
    timeout = store.settings().ssh.connect_timeout

    async def probe(fleet: Any) -> float | None:
        snapshot, _, _ = await probe_worker(fleet, worker, timeout)
        return snapshot.uptime_s if snapshot else None

    result: float | None = with_fleet(store, probe)
    return result


def _print_plan(plan: Any) -> None:
    print(
        f"{plan.action.value} {plan.worker} (platform {plan.platform}, verb {plan.verb or 'none'}, "
        f"{'reversible' if plan.reversible else 'IRREVERSIBLE'})"
    )
    if plan.cost_so_far is not None:
        hours = (plan.uptime_s or 0) / 3600
        print(f"cost so far: ${plan.cost_so_far:.2f} (${plan.price_dph:.2f}/h x {hours:.1f} h up)")
    print(f"runs on this worker: {len(plan.runs)}")
    for result in plan.runs:
        if result.superseded:
            mark = "  -"
            detail = "earlier attempt, retried elsewhere"
        elif result.safe:
            mark = "  ok"
            detail = f"pulled {result.pulled_at}, {result.files} files, verified"
        else:
            mark, detail = "  NO", result.problem
        print(f"{mark} {result.run_id} {result.name} {result.status.value}: {detail}")
    for line in (*plan.consequences, *(f"DANGER: {m}" for m in plan.standing_dangers)):
        print(f"  {line}")


def _plan_json(plan: Any) -> dict[str, Any]:
    return {
        "worker": plan.worker,
        "action": plan.action.value,
        "platform": plan.platform,
        "verb": plan.verb,
        "reversible": plan.reversible,
        "allowed": plan.allowed,
        "blockers": list(plan.blockers),
        "cost_so_far": plan.cost_so_far,
        "runs": [
            {
                "id": r.run_id,
                "name": r.name,
                "status": r.status.value,
                "pulled_at": r.pulled_at,
                "verified": r.verified,
                "problem": r.problem,
                "superseded": r.superseded,
            }
            for r in plan.runs
        ],
        "consequences": list(plan.consequences),
    }


def teardown_verb(args: argparse.Namespace) -> int:
    """Show the plan, enforce the gate, ask for the name, then disable the worker."""
    import asyncio

    from runyard.core.errors import InputError, OperationalError
    from runyard.core.teardown import TeardownAction, authorize, execute_teardown, load_plan

    store = open_store(args)
    action = TeardownAction(args.teardown_action)
    uptime = _uptime(store, args.name)
    plan = load_plan(store, args.name, action, uptime)
    flush_warnings(store)
    if not args.json:
        _print_plan(plan)
    if not plan.allowed:
        if args.json:
            print_json({"plan": _plan_json(plan), "done": False})
        raise OperationalError(plan.refusal())
    if args.yes:
        typed = args.name
    elif sys.stdin.isatty():
        typed = input(f"Type the worker's name to {action.value} it: ").strip()
    else:
        raise InputError(
            f"{action.value} {args.name}: type the worker's name at the prompt, or pass --yes"
        )
    authorize(plan, typed)
    outcome = asyncio.run(execute_teardown(store, args.name, action, typed, uptime_s=uptime))
    if args.json:
        print_json(
            {"plan": _plan_json(outcome.plan), "done": True, "instructions": outcome.instructions}
        )
        return 0
    print(f"{args.name}: disabled in workers.yaml; nothing new will be dispatched to it")
    for line in outcome.instructions:
        print(f"  {line}")
    return 0
