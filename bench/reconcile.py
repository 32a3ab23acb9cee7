"""Vast reconcile at scale: N rented boxes (default 50) against the SIMULATED marketplace.

The marketplace (runyard.sim.vast_api) runs in this process with a real loopback SSH
server per instance; a temporary workspace registers every instance as a worker (with a
human's comments in workers.yaml). Then some boxes drift: a tenth move to a new SSH port,
a few to a new host, a few vanish, and two instances appear that no worker knows.

Measured, through the real `vastai` SDK:

* `reconcile --fix` in process: wall time and API calls (goal: <= 2 calls, paging aside,
  and under 1 s), after one warm-up call that pays the SDK's import;
* the same on a consistent fleet (nothing to fix);
* the baseline: one `show instance` call per worker, as a per-worker script does (the
  research-os way), measured in the same run; the ratio is printed.

Every API answer is delayed by `--api-latency-ms` (default 80: a round trip to the real
service from Europe or the US; 0 measures runyard's own work alone).

It checks that the fixes landed (ports, hosts, disabled workers) and the comments stayed.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import report

from runyard.core.providers.vast.registry import Provenance, worker_from_instance
from runyard.core.providers.vast.service import VastService
from runyard.core.store.workers_file import to_yaml_node
from runyard.core.store.workspace_store import WorkspaceStore
from runyard.core.workspace import init_workspace
from runyard.sim.vast_api import SimOffer, SimVast


def market(n: int) -> list[SimOffer]:
    """N + 2 identical-enough offers, so N boxes can be rented plus two strays."""
    return [
        SimOffer(7000000 + i, 20000 + i, "RTX 3060", 1, 0.05 + i * 0.0001, 11.0, 0.99, "US")
        for i in range(n + 2)
    ]


async def build(root: Path, n: int, latency: float = 0.0) -> tuple[SimVast, VastService]:
    for name in ("VAST_API_KEY", "VAST_URL"):
        os.environ.pop(name, None)
    sim = SimVast(root / "sim", offers=market(n), boot_seconds=0.0, latency=latency)
    await sim.start()
    workspace, _ = init_workspace(root / "ws")
    key_file = root / "vast_api_key"
    key_file.write_text(sim.api_key)
    with workspace.settings_path.open("a") as handle:
        handle.write(
            f"\nvast:\n  api_url: {sim.url}\n  api_key_file: {key_file}\n"
            "  request_timeout_seconds: 10\n"
        )
    store = WorkspaceStore(workspace)
    vast = VastService(store)
    boxes = [await sim.rent(7000000 + i) for i in range(n)]
    for box in boxes:
        await sim.wait_running(box.id)
    live = {i.id: i for i in await vast.compute.list_instances()}  # also warms the SDK up
    workers = [
        worker_from_instance(f"vast-{i:03d}", live[box.id], vast.settings, Provenance("bench"))
        for i, box in enumerate(boxes)
    ]

    def add_all(entries: object) -> None:
        for worker in workers:
            entries.append(to_yaml_node(worker.to_dict()))  # type: ignore[attr-defined]

    store.edit_workers(add_all, "bench.workers")
    text = workspace.workers_path.read_text()
    text = text.replace(
        "- worker_id: vast-000", "# the first rented box: keep an eye on it\n- worker_id: vast-000"
    )
    workspace.workers_path.write_text(text)
    return sim, vast


async def drift(sim: SimVast, n: int) -> dict[str, int]:
    ids = sorted(sim.instances)
    moved = ids[: max(1, n // 10)]
    rehosted = ids[len(moved) : len(moved) + max(1, n // 25)]
    gone = ids[-max(1, n // 20) :]
    for instance_id in moved:
        await sim.move(instance_id)
    for instance_id in rehosted:
        await sim.move(instance_id, new_port=False, host="localhost")
    for instance_id in gone:
        await sim.vanish(instance_id)
    for offer_id in (7000000 + n, 7000000 + n + 1):
        await sim.rent(offer_id, label="untracked")
    return {"moved": len(moved), "rehosted": len(rehosted), "gone": len(gone)}


async def main_async(n: int, latency_ms: float) -> int:
    with tempfile.TemporaryDirectory(prefix="runyard-bench-vast-") as tmp:
        sim, vast = await build(Path(tmp), n, latency_ms / 1000.0)
        try:
            counts = await drift(sim, n)
            calls = sim.api_calls()
            start = time.perf_counter()
            fixed = await vast.reconcile(fix=True)
            fix_s = time.perf_counter() - start
            fix_calls = sim.api_calls() - calls

            calls = sim.api_calls()
            start = time.perf_counter()
            clean = await vast.reconcile(fix=False)
            clean_s = time.perf_counter() - start
            clean_calls = sim.api_calls() - calls

            workers = [w for w in vast.store.workers() if w.instance_id is not None]
            calls = sim.api_calls()
            start = time.perf_counter()
            for worker in workers:  # the baseline: one request per worker
                assert worker.instance_id is not None
                await vast.compute.get_instance(worker.instance_id)
            per_worker_s = time.perf_counter() - start
            per_worker_calls = sim.api_calls() - calls
        finally:
            await sim.stop()

        text = vast.store.workspace.workers_path.read_text()
        ok = (
            not clean.plan.needs_fix
            and "# the first rented box: keep an eye on it" in text
            and sum(1 for w in workers if not w.enabled) == counts["gone"]
        )
        print(
            f"vast reconcile: {n} rented boxes ({counts['moved']} moved port, "
            f"{counts['rehosted']} moved host, {counts['gone']} vanished, 2 untracked); "
            f"{len(fixed.applied)} fixes applied, comments kept: {ok}; "
            f"API latency {latency_ms:g} ms per call"
        )
        report(
            f"reconcile --fix, {n} instances ({fix_calls} API calls; goal <= 2)",
            fix_s,
            per_worker_s,
            "goal < 1000 ms",
        )
        report(f"reconcile, consistent fleet ({clean_calls} API calls)", clean_s, per_worker_s)
        report(f"baseline: show instance per worker ({per_worker_calls} API calls)", per_worker_s)
        good = ok and fix_calls <= 2 and clean_calls <= 2 and fix_s < 1.0
        print("PASS" if good else "FAIL")
        return 0 if good else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--instances", type=int, default=50)
    parser.add_argument("--api-latency-ms", type=float, default=80.0)
    args = parser.parse_args()
    return asyncio.run(main_async(args.instances, args.api_latency_ms))


if __name__ == "__main__":
    raise SystemExit(main())
