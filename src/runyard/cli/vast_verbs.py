"""`runyard vast ...` and `runyard cost`: Vast.ai from the command line.

Every verb goes through `runyard.core.providers.vast.service.VastService`, the same door
as the console's Vast view. The vastai SDK is imported on the first API call only and
asyncio only by verbs that call the API, so `vast blacklist` and `cost --offline` stay
file-only (and cli/main.py can import this module eagerly).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from runyard.cli.output import print_json, print_table, warn
from runyard.cli.verbs import flush_warnings, open_store

if TYPE_CHECKING:
    from runyard.core.providers.vast.files import VastFiles
    from runyard.core.providers.vast.service import VastService
    from runyard.core.providers.vast.teardown import InstanceTeardownPlan

T = TypeVar("T")


def register(sub: argparse._SubParsersAction[Any]) -> None:
    """Add `vast ...` and `cost` to the top-level subparsers."""
    vast = sub.add_parser("vast", help="Vast.ai: offers, rent, instances, reconcile, watcher")
    parser_class = type(vast)  # the top level's parser class (one-line usage errors, exit 2)
    verbs = vast.add_subparsers(dest="vast_verb", required=True, parser_class=parser_class)

    p = verbs.add_parser("offers", help="offers ranked by DLPerf per dollar")
    p.add_argument("query", nargs="*", help="vastai query, e.g. 'gpu_name=RTX_4090 num_gpus>=2'")
    p.add_argument("--gpu", action="append", default=[], metavar="NAME", help="GPU model (repeat)")
    p.add_argument("--num-gpus", type=int)
    p.add_argument("--max-dph", type=float, metavar="USD", help="max $/hour")
    p.add_argument("--min-reliability", type=float, metavar="R", help="0..1")
    p.add_argument("--interruptible", action="store_true", help="bid offers (priced at min bid)")
    p.add_argument("--ref-hours", type=float, metavar="H", help="reference job: hours it took")
    p.add_argument("--ref-dlp", type=float, metavar="D", help="reference job: DLPerf of its GPU")
    p.add_argument("--limit", type=int, default=20)
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=offers)

    p = verbs.add_parser("rent", help="rent an offer and make it a worker")
    p.add_argument("offer", type=int)
    p.add_argument("--name", help="worker name (default vast-<instance id>)")
    p.add_argument("--image", help="docker image (default: vast.image)")
    p.add_argument("--disk", type=float, metavar="GB", help="disk GB (default: vast.disk_gb)")
    p.add_argument("--onstart", metavar="CMD", help="command the box runs when it starts")
    p.add_argument("--pool", help="worker pool (default: vast.pool)")
    p.add_argument("--interruptible", action="store_true", help="rent as a bid")
    p.add_argument("--bid", type=float, metavar="USD", help="bid $/hour (interruptible)")
    p.add_argument("--setup", action="store_true", help="bootstrap the box (worker setup)")
    p.add_argument("--venv", action="store_true", help="with --setup: a venv from uv.lock")
    p.add_argument("--env-file", type=Path, help="with --setup: credentials file (mode 600)")
    p.add_argument("--sync", action="store_true", help="rsync the workspace's code to the box")
    p.add_argument("--git", metavar="URL", help="fetch this repository instead (shallow)")
    p.add_argument("--git-ref", default="HEAD", metavar="REF")
    p.add_argument("--run", metavar="CMD", help="queue this run on the box and dispatch it")
    p.add_argument("--dry-run", action="store_true", help="print the plan; rent nothing")
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=rent)

    p = verbs.add_parser("instances", help="live instances beside workers.yaml")
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=instances)

    p = verbs.add_parser("reconcile", help="SSH port/host drift, dead boxes -> workers.yaml")
    p.add_argument("--fix", action="store_true", help="patch workers.yaml and the queue")
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=reconcile)

    p = verbs.add_parser("watch", help="auto-rent offers within runyard.yaml's thresholds")
    p.add_argument("--once", action="store_true", help="one poll, then exit")
    p.set_defaults(handler=watch)

    for name, text in (
        ("stop", "stop the GPU meter (the disk still bills); gated on verified results"),
        ("destroy", "destroy the instance and its disk; gated on verified results"),
        ("start", "start a stopped instance and point its worker at it again"),
    ):
        p = verbs.add_parser(name, help=text)
        p.add_argument("instance", type=int)
        p.add_argument("--yes", action="store_true", help="skip the prompt (never the gate)")
        p.add_argument("--json", action="store_true")
        p.set_defaults(handler=start if name == "start" else teardown, vast_action=name)

    blacklist = verbs.add_parser("blacklist", help="machines never to rent").add_subparsers(
        dest="blacklist_verb", required=True, parser_class=parser_class
    )
    p = blacklist.add_parser("add", help="ban a machine id")
    p.add_argument("machine", type=int)
    p.add_argument("--reason", default="")
    p.set_defaults(handler=blacklist_add)
    p = blacklist.add_parser("list", help="the banned machines")
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=blacklist_list)
    p = blacklist.add_parser("remove", help="lift a ban")
    p.add_argument("machine", type=int)
    p.set_defaults(handler=blacklist_remove)

    p = sub.add_parser("cost", help="what Vast boxes cost: per instance, day and project")
    p.add_argument("--offline", action="store_true", help="from the ledger only (no API call)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=cost)


# ---------------------------------------------------------------- plumbing


def _service(args: argparse.Namespace) -> VastService:
    from runyard.core.providers.vast.service import VastService

    return VastService(open_store(args))


def _files(args: argparse.Namespace) -> VastFiles:
    """The file-only side (no event loop, no SDK): blacklist and the offline ledger."""
    from runyard.core.providers.vast.files import VastFiles

    return VastFiles(open_store(args))


def _run(service: VastService, body: Callable[[VastService], Awaitable[T]]) -> T:
    """Run one async body on a fresh event loop (asyncio is imported only here)."""
    import asyncio

    async def main() -> T:
        return await body(service)

    try:
        return asyncio.run(main())
    finally:
        flush_warnings(service.store)


async def _ask(prompt: str) -> str:
    """`input()` off the event loop."""
    import asyncio

    return (await asyncio.to_thread(input, prompt)).strip()


def _say(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def _money(value: float | None, digits: int = 4) -> str:
    return "-" if value is None else f"${value:.{digits}f}"


# ---------------------------------------------------------------- offers


def offers(args: argparse.Namespace) -> int:
    from runyard.core.errors import InputError
    from runyard.core.providers.vast.offers import OfferFilters, ReferenceJob

    if args.ref_dlp is not None and args.ref_hours is None:
        raise InputError("--ref-dlp needs --ref-hours (the hours the reference job took)")
    reference = ReferenceJob(args.ref_hours, args.ref_dlp) if args.ref_hours else None
    filters = OfferFilters(
        gpu_names=tuple(args.gpu),
        num_gpus=args.num_gpus,
        max_dph=args.max_dph,
        min_reliability=args.min_reliability,
    )
    service = _service(args)
    ranked, notes = _run(
        service,
        lambda s: s.offers(
            " ".join(args.query) or None,
            filters,
            reference=reference,
            interruptible=args.interruptible,
            limit=max(args.limit, 1),
        ),
    )
    for note in notes:
        warn(note)
    ranked = ranked[: max(args.limit, 1)]
    if args.json:
        print_json([r.to_json() for r in ranked])
        return 0
    rows = []
    for r in ranked:
        o = r.offer
        rows.append(
            [
                r.rank,
                o.id,
                f"{o.num_gpus}x {o.gpu_name}",
                _money(o.price_dph),
                "-" if o.dlperf is None else f"{o.dlperf:.1f}",
                "-" if o.dlp_per_dollar is None else f"{o.dlp_per_dollar:.1f}",
                "-" if o.reliability is None else f"{o.reliability:.3f}",
                "-" if r.est_hours is None else f"{r.est_hours:.2f}h",
                _money(r.est_cost, 2),
                o.location,
                o.machine_id,
                "BLACKLISTED" if r.blacklisted else "",
            ]
        )
    headers = ["#", "OFFER", "GPU", "$/HR", "DLPERF", "DLP/$", "REL", "EST TIME", "EST COST"]
    print_table([*headers, "WHERE", "MACHINE", ""], rows)
    if not ranked:
        print("no offer matches")
    return 0


# ---------------------------------------------------------------- rent and worker add


def rent(args: argparse.Namespace) -> int:
    from runyard.core.providers.vast.rent import LaunchSteps, RentRequest
    from runyard.core.runs import RunSpec

    request = RentRequest(
        offer_id=args.offer,
        name=args.name,
        image=args.image,
        disk_gb=args.disk,
        onstart=args.onstart,
        bid_dph=args.bid,
        pool=args.pool,
        interruptible=args.interruptible or args.bid is not None,
    )
    steps = LaunchSteps(
        sync=args.sync,
        git_url=args.git,
        git_ref=args.git_ref,
        setup=args.setup or args.venv or args.env_file is not None,
        venv=args.venv,
        env_file=args.env_file,
        run=RunSpec(command=args.run) if args.run else None,
    )
    service = _service(args)

    async def body(s: VastService) -> int:
        plan = await s.plan_rent(request, steps)
        if args.dry_run:
            if args.json:
                print_json({"dry_run": True, "plan": plan.describe()})
            else:
                print("dry run: nothing is rented")
                for line in plan.describe():
                    print(f"  {line}")
            return 0
        outcome = await s.rent(plan, _say)
        if args.json:
            print_json(
                {
                    "instance_id": outcome.instance_id,
                    "worker": outcome.worker.to_dict(),
                    "offer_id": outcome.offer.id,
                    "host_key": outcome.host_key,
                    "trusted": outcome.trusted,
                    "run": outcome.dispatched_run,
                    "notes": outcome.notes,
                }
            )
        else:
            w = outcome.worker
            assert w.ssh is not None
            print(
                f"rented instance {outcome.instance_id} -> worker {w.worker_id} "
                f"({w.ssh.user}@{w.ssh.host}:{w.ssh.port}, {_money(w.price_dph)}/h)"
            )
            for note in outcome.notes:
                warn(note)
            if outcome.dispatched_run:
                print(f"dispatched run {outcome.dispatched_run} on {w.worker_id}")
        return 0

    return _run(service, body)


def worker_add_from_vast(args: argparse.Namespace) -> int:
    """`runyard worker add NAME --vast-instance ID [--pool P] [--key K]` (cli/main wires it)."""
    service = _service(args)
    worker = _run(
        service,
        lambda s: s.add_worker(
            args.name, int(args.vast_instance), pool=args.pool, key=getattr(args, "key", None)
        ),
    )
    assert worker.ssh is not None
    print(
        f"added worker {worker.worker_id} (vast instance {worker.instance_id}, pool "
        f"{worker.worker_pool}, {worker.ssh.host}:{worker.ssh.port})"
    )
    return 0


# ---------------------------------------------------------------- instances, reconcile


def instances(args: argparse.Namespace) -> int:
    service = _service(args)
    rows = _run(service, lambda s: s.instances())
    if args.json:
        print_json([row.to_json() for row in rows])
        return 0
    table = []
    for row in rows:
        i = row.instance
        table.append(
            [
                i.id,
                f"{i.num_gpus}x {i.gpu_name}",
                i.status_text,
                _money(i.price_dph),
                _money(row.burn_dph),
                f"{i.ssh.host}:{i.ssh.port}" if i.ssh else "-",
                row.worker or "(UNTRACKED)",
            ]
        )
    print_table(["ID", "GPU", "STATUS", "$/HR", "BURN/HR", "SSH", "WORKER"], table)
    untracked = [row for row in rows if not row.tracked]
    if untracked:
        warn(
            f"{len(untracked)} instance(s) bill but no worker knows them: "
            + ", ".join(str(row.instance.id) for row in untracked)
        )
    if not rows:
        print("no instances on the account")
    return 0


def reconcile(args: argparse.Namespace) -> int:
    service = _service(args)
    report = _run(service, lambda s: s.reconcile(args.fix))
    if args.json:
        print_json(report.to_json())
        return 0
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    plan = report.plan
    print(f"=== Vast reconcile at {stamp} ===")
    print(f"live instances: {plan.live}  |  tracked workers: {plan.tracked}")
    for f in plan.findings:
        who = f.worker or "(untracked)"
        print(f"  [{f.drift.value}] {who}  inst={f.instance_id}  {f.detail}")
    for line in report.applied:
        print(f"    fixed: {line}")
    if plan.needs_fix and not report.fixed:
        print("drift found: `runyard vast reconcile --fix` patches workers.yaml (comments kept)")
        return 1
    if not plan.needs_fix:
        print("workers.yaml is consistent with the live instances")
    return 0


# ---------------------------------------------------------------- watcher


def watch(args: argparse.Namespace) -> int:
    service = _service(args)
    t = service.settings.watcher
    _say(
        f"watching Vast offers every {t.poll_seconds:g}s: max ${t.max_dph:g}/h, DLP/$ >= "
        f"{t.min_dlp_per_dollar:g}, GPUs {', '.join(t.gpu_names) or 'any'}, max "
        f"{t.max_instances} instances, budget ${t.budget_dph:g}/h (Ctrl-C stops)"
    )

    async def body(s: VastService) -> int:
        watcher = s.watcher()
        if args.once:
            decision = await watcher.poll_once()
            _print_decision(decision)
            for instance_id, worker in watcher.state.rented:
                print(f"rented instance {instance_id} -> worker {worker}")
            return 0 if watcher.state.last_error is None else 1
        import asyncio

        stop = asyncio.Event()

        def report(state: Any) -> None:
            if state.last_decision is not None:
                _print_decision(state.last_decision)
            if state.last_error:
                warn(state.last_error)

        await watcher.run(stop, report)
        return 0

    try:
        return _run(service, body)
    except KeyboardInterrupt:
        _say("watcher stopped")
        return 0


def _print_decision(decision: Any) -> None:
    stamp = datetime.fromtimestamp(decision.at, UTC).strftime("%H:%M:%S")
    print(f"{stamp} {decision.summary()}", flush=True)


# ---------------------------------------------------------------- stop, destroy, start


def teardown(args: argparse.Namespace) -> int:
    from runyard.core.errors import InputError, OperationalError
    from runyard.core.teardown import TeardownAction

    action = TeardownAction.STOP if args.vast_action == "stop" else TeardownAction.DESTROY
    service = _service(args)

    async def body(s: VastService) -> int:
        plan = await s.plan_teardown(args.instance, action)
        if args.json and not plan.allowed:
            print_json(_teardown_json(plan, done=False))
        elif not args.json:
            _print_teardown(plan)
        if not plan.allowed:
            raise OperationalError(plan.refusal())
        if args.yes:
            typed = plan.confirm_word
        elif sys.stdin.isatty():
            what = "worker's name" if plan.worker else "instance id"
            prompt = f"Type the {what} ({plan.confirm_word}) to {action.value} it: "
            typed = await _ask(prompt)
        else:
            raise InputError(
                f"{action.value} {args.instance}: type the name at the prompt, or pass --yes"
            )
        message = await s.teardown(args.instance, action, typed)
        if args.json:
            print_json({**_teardown_json(plan, done=True), "message": message})
        else:
            print(message)
        return 0

    return _run(service, body)


def _print_teardown(plan: InstanceTeardownPlan) -> None:
    i = plan.instance
    where = f"worker {plan.worker}" if plan.worker else "UNTRACKED (no worker knows it)"
    if i is None:
        print(f"{plan.action.value} instance {plan.instance_id} ({where}): not on the account")
    else:
        print(
            f"{plan.action.value} instance {i.id} ({where}): {i.num_gpus}x {i.gpu_name}, "
            f"{i.status_text}, {_money(i.price_dph)}/h running, "
            f"{_money(i.storage_dph)}/h disk; cost so far {_money(plan.cost_so_far, 2)}"
        )
    if plan.gate is not None:
        print(f"runs on {plan.worker}: {len(plan.gate.runs)}")
        for r in plan.gate.runs:
            state = "ok" if r.safe else "NO"
            detail = r.problem or f"pulled {r.pulled_at}, {r.files} files, verified"
            print(f"  {state:>2} {r.run_id} {r.name} {r.status.value}: {detail}")
    for line in plan.consequences:
        print(f"  {line}")
    for line in plan.dangers:
        print(f"  DANGER: {line}")


def _teardown_json(plan: InstanceTeardownPlan, done: bool) -> dict[str, Any]:
    return {
        "instance_id": plan.instance_id,
        "action": plan.action.value,
        "worker": plan.worker,
        "tracked": plan.worker is not None,
        "allowed": plan.allowed,
        "blockers": list(plan.gate.blockers) if plan.gate else [],
        "consequences": list(plan.consequences),
        "dangers": list(plan.dangers),
        "cost_so_far": plan.cost_so_far,
        "done": done,
    }


def start(args: argparse.Namespace) -> int:
    from runyard.core.errors import InputError

    service = _service(args)

    async def body(s: VastService) -> int:
        if not args.yes:
            if not sys.stdin.isatty():
                raise InputError(f"start {args.instance}: confirm at the prompt, or pass --yes")
            prompt = f"Start instance {args.instance}? The GPU meter runs again [y/N] "
            answer = await _ask(prompt)
            if answer.strip().lower() not in ("y", "yes"):
                print("not started")
                return 1
        worker = await s.start(args.instance, _say)
        if args.json:
            print_json(
                {"instance_id": args.instance, "worker": worker.to_dict() if worker else None}
            )
        elif worker is not None and worker.ssh is not None:
            print(
                f"instance {args.instance} running; worker {worker.worker_id} enabled at "
                f"{worker.ssh.host}:{worker.ssh.port}"
            )
        else:
            print(f"instance {args.instance} running (no worker tracks it)")
        return 0

    return _run(service, body)


# ---------------------------------------------------------------- blacklist


def blacklist_add(args: argparse.Namespace) -> int:
    service = _files(args)
    added = service.ban(args.machine, args.reason)
    flush_warnings(service.store)
    print(f"machine {args.machine} {'blacklisted' if added else 'was already blacklisted'}")
    return 0


def blacklist_list(args: argparse.Namespace) -> int:
    service = _files(args)
    entries = service.blacklist()
    flush_warnings(service.store)
    if args.json:
        print_json([{"machine_id": e.machine_id, "reason": e.reason} for e in entries])
        return 0
    print_table(["MACHINE", "REASON"], [[e.machine_id, e.reason] for e in entries])
    return 0


def blacklist_remove(args: argparse.Namespace) -> int:
    service = _files(args)
    removed = service.unban(args.machine)
    flush_warnings(service.store)
    if not removed:
        from runyard.core.errors import InputError

        raise InputError(f"machine {args.machine} is not blacklisted")
    print(f"machine {args.machine} removed from the blacklist")
    return 0


# ---------------------------------------------------------------- cost


def cost(args: argparse.Namespace) -> int:
    from runyard.core.errors import RunyardError

    files = _files(args)
    if args.offline:
        report = files.cost()
    else:
        service = _service(args)
        try:
            report = _run(service, lambda s: s.refresh_cost())
        except RunyardError as exc:
            warn(f"{exc}; costs from the ledger as last seen")
            report = files.cost()
    flush_warnings(files.store)
    if args.json:
        print_json(report.to_json())
        return 0
    print(
        f"total {_money(report.total, 2)}  today {_money(report.today, 2)}  "
        f"burning {_money(report.burn_dph)}/h now"
    )
    rows = [
        [
            i.instance_id,
            i.worker or "(untracked)",
            i.gpu,
            i.state,
            f"{i.hours_running:.2f}h",
            f"{i.hours_stopped:.2f}h",
            _money(i.burn_dph),
            _money(i.cost, 2),
        ]
        for i in report.instances
    ]
    print_table(["ID", "WORKER", "GPU", "STATE", "RUNNING", "STOPPED", "BURN/HR", "COST"], rows)
    if report.per_day:
        print(
            "per day: "
            + ", ".join(f"{d} {_money(c, 2)}" for d, c in sorted(report.per_day.items()))
        )
    if report.per_project:
        ordered = sorted(report.per_project.items(), key=lambda kv: -kv[1])
        print("per project: " + ", ".join(f"{p} {_money(c, 2)}" for p, c in ordered))
    return 0
