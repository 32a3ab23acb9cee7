"""`runyard shard` (fan a command out as N runs) and `runyard merge` (roster, then merge).

`register(sub)` adds both verbs to the top-level subparsers; handlers import the core
lazily, like every other verb, so building the parser stays cheap.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING, Any

from runyard.cli.output import print_json, print_table, warn
from runyard.cli.verbs import flush_warnings, open_store, run_spec_from_args

if TYPE_CHECKING:
    from runyard.core.shard import Roster

SHARD_EPILOG = """\
Everything after `--` is the command. Several words are quoted as given (shlex.join);
one word is taken as is, so pass one quoted string when the shell must expand variables:

  runyard shard --pool cpu --shards 3 --name search -- \\
      'python search.py --shard {shard} --of {num_shards} > "$RUNYARD_OUTPUT_DIR/search.shard{shard}.json"'

{shard} and {num_shards} are replaced ({{shard}} is a literal {shard}; ${VAR} and other
braces are left alone). Each shard also gets RUNYARD_SHARD_INDEX/RUNYARD_SHARD_COUNT and
BATCH_TASK_INDEX/BATCH_TASK_COUNT. Shard i is pinned to the i-th enabled worker of the
pool (round-robin); --no-pin lets dispatch place them.
"""

MERGE_EPILOG = """\
  runyard merge search --check                     # roster: exit 0 when every shard is ready
  runyard merge search --pattern 'outputs/*.shard*.json' --out merged.json

Reads results/<run-id>/ of each shard (pull them first). Arrays concatenate in shard order;
objects merge key-wise. Writes PATH and PATH.sources.json (shard -> run, worker, sha256).
"""


def register(sub: argparse._SubParsersAction[Any]) -> None:
    """Add the `shard` and `merge` verbs to runyard's top-level subparsers."""
    raw = argparse.RawDescriptionHelpFormatter
    p = sub.add_parser(
        "shard",
        help="fan one command out as N shard runs, one per host of a pool",
        epilog=SHARD_EPILOG,
        formatter_class=raw,
    )
    p.add_argument("--pool", help="worker pool (default: the settings' default_pool)")
    p.add_argument("--shards", type=int, required=True, metavar="N")
    p.add_argument("--name", metavar="GROUP", help="shard group name (default: project or program)")
    p.add_argument("--project", help="the runs' project (default: the group name)")
    p.add_argument("--no-pin", action="store_true", help="let dispatch place the shards")
    p.add_argument("--priority", type=int, default=0)
    p.add_argument("--env", action="append", default=[], metavar="K=V")
    p.add_argument("--workdir")
    p.add_argument("--outputs", action="append", default=[], metavar="GLOB")
    p.add_argument("--metrics-regex")
    p.add_argument(
        "--verify",
        dest="verify_command",
        metavar="CMD",
        help="command run in results/<id>/ after each shard's pull; exit 0 = verified",
    )
    p.add_argument("--json", action="store_true")
    p.add_argument("command", nargs="+", metavar="CMD")
    p.set_defaults(handler=shard)

    p = sub.add_parser(
        "merge",
        help="merge a shard group's per-shard JSON files (--check: the roster only)",
        epilog=MERGE_EPILOG,
        formatter_class=raw,
    )
    p.add_argument("group")
    p.add_argument("--pattern", metavar="GLOB", help="shard files under results/<run-id>/")
    p.add_argument("--out", metavar="PATH")
    p.add_argument(
        "--check", action="store_true", help="print the roster; exit 0 if complete, 1 if not"
    )
    p.add_argument(
        "--allow-partial", action="store_true", help="merge the ready shards, record the rest"
    )
    p.add_argument("--on-conflict", choices=("error", "first", "last"), default="error")
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=merge)


def shard(args: argparse.Namespace) -> int:
    import shlex

    from runyard.core.shard import add_shards

    store = open_store(args)
    command = args.command[0] if len(args.command) == 1 else shlex.join(args.command)
    base = run_spec_from_args(args, command)
    group = add_shards(store, base, args.shards, per_host=not args.no_pin)
    flush_warnings(store)
    map_path = group.map_path.relative_to(store.workspace.root)
    if args.json:
        print_json(
            {
                "group": group.name,
                "map": str(map_path),
                "runs": [
                    {"shard": i, "id": r.id, "name": r.name, "worker": r.pinned_worker}
                    for i, r in enumerate(group.runs)
                ],
            }
        )
        return 0
    rows = [
        [i, r.id, r.name, r.pinned_worker or f"pool:{r.pool or store.settings().default_pool}"]
        for i, r in enumerate(group.runs)
    ]
    print_table(["SHARD", "ID", "NAME", "WORKER"], rows)
    print(f"queued shard group {group.name}: {len(rows)} runs (map: {map_path})")
    return 0


def merge(args: argparse.Namespace) -> int:
    from runyard.core.errors import InputError
    from runyard.core.shard import merge_shards, roster

    store = open_store(args)
    if args.check:
        found = roster(store, args.group)
        if args.json:
            print_json(found.to_dict())
        else:
            print_roster(found)
        return 0 if found.complete else 1
    if not args.pattern or not args.out:
        raise InputError("merge needs --pattern GLOB and --out PATH (or --check)")
    outcome = merge_shards(
        store,
        args.group,
        args.pattern,
        Path(args.out),
        allow_partial=args.allow_partial,
        on_conflict=args.on_conflict,
    )
    if args.json:
        print_json(outcome.to_dict())
        return 0
    for skipped in outcome.skipped:
        warn(f"left out: {skipped}")
    for conflict in outcome.conflicts:
        warn(f"conflict settled by --on-conflict {args.on_conflict}: {conflict}")
    for ignored in outcome.ignored:
        warn(f"ignored (not in its pull manifest): {ignored}")
    shards = len({s.shard for s in outcome.sources})
    unit = "items" if outcome.kind == "array" else "keys"
    print(
        f"merged {outcome.items} {unit} from {len(outcome.sources)} files of {shards} shards "
        f"-> {outcome.out_path}"
    )
    print(f"sources: {outcome.sources_path}")
    return 0


def print_roster(found: Roster) -> None:
    """The roster as a table, one row per expected shard (and per duplicate)."""
    rows: list[list[object]] = []
    for index, entries in found.by_index().items():
        if not entries:
            rows.append([index, "-", "-", "-", "MISSING"])
        for entry in entries:
            state = entry.state() + (" (DUPLICATE)" if len(entries) > 1 else "")
            rows.append([index, entry.run_id, entry.name, entry.worker or "-", state])
    print_table(["SHARD", "ID", "NAME", "WORKER", "STATE"], rows)
    ready = len(found.ready)
    print(f"shard group {found.group}: {ready}/{found.count} ready")
    for problem in found.problems():
        print(f"  ! {problem}")
    if found.strays:
        print(f"  ! runs of this group that fit no shard index: {', '.join(found.strays)}")
