"""A sharded search end to end on two local workers: shard, dispatch, check, pull, merge.

Three shards on two hosts: shard 2 waits, pinned, for its host's one slot. Every wait
polls a condition under a deadline.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from pathlib import Path

import pytest

from runyard.core.check import check
from runyard.core.dispatch import dispatch
from runyard.core.errors import InputError
from runyard.core.fleet.transports import Fleet
from runyard.core.models import FINISHED_STATES, RunStatus, Worker
from runyard.core.pull import pull_run
from runyard.core.runs import RunSpec
from runyard.core.shard import add_shards, merge_shards, roster, shard_map_path
from runyard.core.store.workspace_store import WorkspaceStore
from runyard.core.workers import add_worker

# Brace-heavy on purpose: JSON braces and ${HOME} must survive; only {shard} and
# {num_shards} change. BATCH_TASK_INDEX is the Batch-compatible variable.
SEARCH = (
    'test -n "${HOME}" && '
    """printf '[{"shard": {shard}, "of": {num_shards}, "task": %s, "run": "%s"}]' """
    '"$BATCH_TASK_INDEX" "$RUNYARD_RUN_ID" > "$RUNYARD_OUTPUT_DIR/search.shard{shard}.json"'
)
PATTERN = "outputs/*.shard*.json"


async def run_to_completion(
    store: WorkspaceStore, fleet: Fleet, ids: set[str], timeout: float = 60.0
) -> None:
    """Dispatch and check until every run in `ids` has finished."""
    deadline = time.monotonic() + timeout
    while True:
        await dispatch(store, fleet)
        await check(store, fleet)
        if all(r.status in FINISHED_STATES for r in store.runs() if r.id in ids):
            return
        if time.monotonic() > deadline:
            states = {r.id: r.status.value for r in store.runs() if r.id in ids}
            raise AssertionError(f"runs not finished after {timeout}s: {states}")
        await asyncio.sleep(0.05)


async def test_shard_search_on_two_local_workers_merges_in_shard_order(
    store: WorkspaceStore, tmp_path: Path
) -> None:
    for name in ("cpu-a", "cpu-b"):
        add_worker(store, Worker(worker_id=name, kind="local", worker_pool="cpu"))
    group = add_shards(store, RunSpec(SEARCH, name="search", pool="cpu"), 3)
    ids = [r.id for r in group.runs]
    shard_map = json.loads(shard_map_path(store.workspace, "search").read_text())
    assert [s["worker"] for s in shard_map["shards"]] == ["cpu-a", "cpu-b", "cpu-a"]

    fleet = Fleet(store.workspace.root, store.settings())
    try:
        await run_to_completion(store, fleet, set(ids))
        runs = {r.id: r for r in store.runs()}
        assert [runs[i].status for i in ids] == [RunStatus.DONE] * 3
        assert [runs[i].worker for i in ids] == ["cpu-a", "cpu-b", "cpu-a"]

        for run_id in ids[:2]:
            assert (await pull_run(store, fleet, run_id)).verified
        out = tmp_path / "merged" / "search_merged.json"
        out.parent.mkdir()
        with pytest.raises(InputError, match=f"shard 2 {ids[2]} done, not pulled"):
            merge_shards(store, "search", PATTERN, out)
        assert not out.exists()
        partial = merge_shards(store, "search", PATTERN, out, allow_partial=True)
        assert [item["shard"] for item in json.loads(out.read_text())] == [0, 1]
        assert partial.skipped and json.loads(partial.sources_path.read_text())["partial"]

        assert (await pull_run(store, fleet, ids[2])).verified
    finally:
        await fleet.close()

    assert roster(store, "search").complete
    outcome = merge_shards(store, "search", PATTERN, out)
    assert json.loads(out.read_text()) == [
        {"shard": i, "of": 3, "task": i, "run": run_id} for i, run_id in enumerate(ids)
    ]
    sources = json.loads(outcome.sources_path.read_text())
    assert sources["partial"] is False
    assert [(s["shard"], s["run_id"], s["worker"]) for s in sources["sources"]] == [
        (0, ids[0], "cpu-a"),
        (1, ids[1], "cpu-b"),
        (2, ids[2], "cpu-a"),
    ]
    for source in sources["sources"]:
        assert source["path"].endswith(f"outputs/search.shard{source['shard']}.json")
        data = (store.workspace.root / source["path"]).read_bytes()
        assert source["sha256"] == hashlib.sha256(data).hexdigest()


async def test_a_shard_file_holding_half_a_surrogate_pair_is_refused_by_name(
    store: WorkspaceStore, tmp_path: Path
) -> None:
    """Python's json.dumps writes a file name it read with surrogateescape as "\\udcff":
    the merge names the shard instead of failing with a traceback while writing."""
    add_worker(store, Worker(worker_id="cpu-a", kind="local", worker_pool="cpu"))
    command = (
        """printf '[{"file": "ok-{shard}"}, {"file": "bad\\udcff"}]' """
        '> "$RUNYARD_OUTPUT_DIR/names.shard{shard}.json"'
    )
    ids = [r.id for r in add_shards(store, RunSpec(command, name="names", pool="cpu"), 2).runs]
    fleet = Fleet(store.workspace.root, store.settings())
    try:
        await run_to_completion(store, fleet, set(ids))
        for run_id in ids:
            assert (await pull_run(store, fleet, run_id)).verified
    finally:
        await fleet.close()
    out = tmp_path / "names_merged.json"
    with pytest.raises(
        InputError, match=r"shard 0\): half a UTF-16 surrogate pair at \[1, 'file'\]"
    ):
        merge_shards(store, "names", "outputs/*.shard*.json", out)
    assert not out.exists()
