"""`runyard alerts`: one health patrol tick over the fleet, printed as a table or JSON.

Exit 0 when nothing is critical, 1 otherwise, so `runyard alerts || notify` works in cron.
"""

from __future__ import annotations

import argparse
from typing import Any

from runyard.cli.output import print_json, print_table
from runyard.cli.verbs import flush_warnings, open_store, pool_workers, with_fleet


def register(sub: argparse._SubParsersAction[Any]) -> None:
    """Add the `alerts` verb to the top-level subparsers."""
    p = sub.add_parser(
        "alerts", help="patrol the fleet: disk, inodes, idle GPUs, zombies, stale logs, reboots"
    )
    p.add_argument("--pool", help="only workers of this pool")
    p.add_argument("--json", action="store_true", help="one JSON array of alerts")
    p.set_defaults(handler=alerts)


def alerts(args: argparse.Namespace) -> int:
    """Probe the (pool's) enabled workers, print the current alerts, critical first."""
    from runyard.core.patrol import patrol

    store = open_store(args)
    workers = pool_workers(store, args.pool, enabled_only=True)
    found = with_fleet(store, lambda fleet: patrol(store, fleet, workers))
    flush_warnings(store)
    if args.json:
        print_json([alert.to_dict() for alert in found])
    elif found:
        rows = [[alert.severity.upper(), alert.worker, alert.message, alert.fix] for alert in found]
        print_table(["SEVERITY", "WORKER", "WHAT", "FIX"], rows)
    else:
        print(f"no alerts ({len(workers)} worker{'s' if len(workers) != 1 else ''} patrolled)")
    return 1 if any(alert.severity == "critical" for alert in found) else 0
