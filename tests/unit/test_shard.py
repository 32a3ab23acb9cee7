"""Sharded search: placeholder substitution, pinning, the roster and the JSON merge.

No process is launched: shard runs are queued for real, then their outcomes (status,
pull record, results/<id>/ with manifest.json) are written the way check and pull do.
"""

from __future__ import annotations

import argparse
import hashlib
import json
from pathlib import Path
from typing import Any

import pytest

from runyard.cli.shard_verbs import register
from runyard.core.errors import InputError
from runyard.core.models import PullRecord, Run, RunStatus, Worker
from runyard.core.runs import RunSpec, add_run, find_run
from runyard.core.shard import (
    GROUP_ENV,
    ShardGroup,
    add_shards,
    merge_shards,
    plan_shards,
    roster,
    shard_group_name,
    shard_map_path,
    substitute,
)
from runyard.core.store.workspace_store import WorkspaceStore
from runyard.core.workers import add_worker

# ---------------------------------------------------------------- substitution


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        ("run --shard {shard} --of {num_shards}", "run --shard 2 --of 5"),
        ("out.shard{shard}.json", "out.shard2.json"),
        (
            'echo "${HOME}" {x} {shard_x} {SHARD} { shard }',
            'echo "${HOME}" {x} {shard_x} {SHARD} { shard }',
        ),
        ("echo ${shard} $shard {shard}", "echo ${shard} $shard 2"),
        ("""python -c "print(f'{x}-{shard}')" """, """python -c "print(f'{x}-2')" """),
        ("""printf '{"shard": {shard}}'""", """printf '{"shard": 2}'"""),
        (
            "literal {{shard}} and {{num_shards}} vs {num_shards}",
            "literal {shard} and {num_shards} vs 5",
        ),
        ("no placeholders at all", "no placeholders at all"),
    ],
)
def test_substitute_touches_only_the_two_placeholders(template: str, expected: str) -> None:
    assert substitute(template, 2, 5) == expected


# ---------------------------------------------------------------- planning


def workers(*names: str, pool: str = "cpu", disabled: tuple[str, ...] = ()) -> list[Worker]:
    return [Worker(worker_id=n, worker_pool=pool, enabled=n not in disabled) for n in names]


def test_shards_are_pinned_round_robin_over_enabled_hosts() -> None:
    fleet = workers("a", "off", "b", disabled=("off",))
    specs = plan_shards("go {shard}", 5, fleet, group="g", base=RunSpec("", pool="cpu"))
    assert [s.worker for s in specs] == ["a", "b", "a", "b", "a"]
    assert [s.name for s in specs] == [f"g-shard{i}of5" for i in range(5)]
    assert [s.command for s in specs] == [f"go {i}" for i in range(5)]
    assert {s.pool for s in specs} == {"cpu"}
    assert {s.project for s in specs} == {"g"}  # the group, when no project is given
    assert specs[3].env == {
        "RUNYARD_SHARD_GROUP": "g",
        "RUNYARD_SHARD_INDEX": "3",
        "RUNYARD_SHARD_COUNT": "5",
        "BATCH_TASK_INDEX": "3",
        "BATCH_TASK_COUNT": "5",
    }


def test_fewer_shards_than_hosts_and_no_pin() -> None:
    assert [s.worker for s in plan_shards("x", 2, workers("a", "b", "c"), group="g")] == ["a", "b"]
    unpinned = plan_shards("x", 3, [], per_host=False, group="g")
    assert [s.worker for s in unpinned] == [None, None, None]


def test_base_fields_are_shared_and_not_aliased() -> None:
    base = RunSpec("", project="p", priority=3, env={"A": "1"}, outputs=["*.json"])
    specs = plan_shards("x", 2, workers("a"), group="g", base=base)
    assert [(s.project, s.priority, s.env["A"], s.outputs) for s in specs] == [
        ("p", 3, "1", ["*.json"]),
        ("p", 3, "1", ["*.json"]),
    ]
    specs[0].outputs.append("more")
    assert specs[1].outputs == ["*.json"] and base.outputs == ["*.json"] and base.env == {"A": "1"}


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"num_shards": 0}, "--shards 0"),
        ({"workers_in_pool": []}, "no enabled worker"),
        ({"base": RunSpec("", env={"BATCH_TASK_INDEX": "9"})}, "BATCH_TASK_INDEX"),
        ({"base": RunSpec("", worker="a")}, "not --worker"),
    ],
)
def test_bad_plans_are_input_errors(kwargs: dict[str, Any], message: str) -> None:
    args: dict[str, Any] = {"num_shards": 2, "workers_in_pool": workers("a"), "group": "g"}
    with pytest.raises(InputError, match=message):
        plan_shards("x", **{**args, **kwargs})


def test_group_name_comes_from_name_then_project_then_program() -> None:
    assert shard_group_name(RunSpec("x", name="n", project="p")) == "n"
    assert shard_group_name(RunSpec("x", project="p")) == "p"
    assert shard_group_name(RunSpec("/opt/bin/search.py --fast")) == "search.py"
    with pytest.raises(InputError, match="give --name"):
        shard_group_name(RunSpec("x", name="bad name"))


# ---------------------------------------------------------------- queueing


@pytest.fixture
def cpu_store(store: WorkspaceStore) -> WorkspaceStore:
    for name in ("cpu-a", "cpu-b"):
        add_worker(store, Worker(worker_id=name, kind="local", worker_pool="cpu"))
    return store


def shards(store: WorkspaceStore, count: int = 3, group: str = "search") -> ShardGroup:
    return add_shards(store, RunSpec("go {shard}", name=group, pool="cpu"), count)


def test_add_shards_queues_all_and_writes_the_shard_map(cpu_store: WorkspaceStore) -> None:
    group = shards(cpu_store)
    queued = cpu_store.runs()
    assert [r.id for r in queued] == [r.id for r in group.runs]
    assert [r.pinned_worker for r in queued] == ["cpu-a", "cpu-b", "cpu-a"]
    document = json.loads(shard_map_path(cpu_store.workspace, "search").read_text())
    assert document["count"] == 3 and document["pool"] == "cpu" and document["pinned"] is True
    assert [(s["index"], s["run_id"], s["worker"]) for s in document["shards"]] == [
        (i, r.id, r.pinned_worker) for i, r in enumerate(queued)
    ]
    events = [e for e in cpu_store.events.read() if e["event"] == "shard.added"]
    assert events == [{**events[0], "group": "search", "shards": 3, "pinned": True}]


def test_add_shards_is_all_or_nothing(cpu_store: WorkspaceStore) -> None:
    add_run(cpu_store, RunSpec("true", name="search-shard2of3"))
    before = cpu_store.workspace.queue_path.read_bytes()
    with pytest.raises(InputError, match="search-shard2of3"):
        shards(cpu_store)
    assert cpu_store.workspace.queue_path.read_bytes() == before
    assert not shard_map_path(cpu_store.workspace, "search").exists()


def test_a_group_name_is_used_once(cpu_store: WorkspaceStore) -> None:
    shards(cpu_store, 2)
    with pytest.raises(InputError, match="already has runs"):
        shards(cpu_store, 4)
    with pytest.raises(InputError, match="no enabled worker in pool 'gpu'"):
        add_shards(cpu_store, RunSpec("x", name="other", pool="gpu"), 2)


# ---------------------------------------------------------------- roster


def finish(
    store: WorkspaceStore,
    run_id: str,
    status: RunStatus = RunStatus.DONE,
    files: dict[str, bytes] | None = None,
    verified: bool = True,
) -> None:
    """Mark a run finished; with `files`, lay out results/<id>/ as a pull would."""
    if files is not None:
        directory = store.workspace.result_dir(run_id)
        entries = []
        for relative, data in files.items():
            (directory / relative).parent.mkdir(parents=True, exist_ok=True)
            (directory / relative).write_bytes(data)
            digest = hashlib.sha256(data).hexdigest()
            entries.append(
                {"path": relative, "sha256_worker": digest, "sha256_local": digest, "ok": True}
            )
        manifest = {"run_id": run_id, "verified": verified, "files": entries}
        (directory / "manifest.json").write_text(json.dumps(manifest))
    with store.queue_transaction() as runs:
        run = find_run(runs, run_id)
        run.status = status
        run.worker = run.pinned_worker
        if files is not None:
            run.pull = PullRecord("2026-01-01T00:00:00Z", len(files), 1, verified)


def test_roster_reports_missing_duplicate_failed_unfinished_and_unverified(
    cpu_store: WorkspaceStore,
) -> None:
    group = shards(cpu_store, 6)
    ids = [r.id for r in group.runs]
    finish(cpu_store, ids[0], files={"outputs/a.json": b"[]"})
    finish(cpu_store, ids[1], RunStatus.FAILED)
    finish(cpu_store, ids[3])  # done, never pulled
    finish(cpu_store, ids[4], files={"outputs/a.json": b"[]"}, verified=False)
    with cpu_store.queue_transaction() as runs:
        runs.remove(find_run(runs, ids[5]))  # shard 5 vanished from the queue
        copy = Run.from_dict(
            {**find_run(runs, ids[0]).to_dict(), "id": "rdup0000", "name": "again"}
        )
        runs.append(copy)  # ... and shard 0 was queued twice
    found = roster(cpu_store, "search")
    assert found.count == 6
    assert (found.missing, found.duplicates, found.failed) == ([5], [0], [1])
    assert (found.unfinished, found.unverified) == ([2], [3, 4])
    assert found.ready == [] and not found.complete
    problems = found.problems()
    assert problems[0] == f"shard 0 queued 2 times ({', '.join(sorted([ids[0], 'rdup0000']))})"
    assert f"`runyard run retry {ids[1]}`" in problems[1]
    assert problems[2] == f"shard 2 {ids[2]} pending"
    assert problems[3] == f"shard 3 {ids[3]} done, not pulled (`runyard pull {ids[3]}`)"
    assert "pull NOT verified" in problems[4]
    assert problems[5] == "shard 5 missing from the queue"
    assert found.to_dict()["missing"] == [5]


def test_roster_without_a_map_uses_the_runs_and_unknown_groups_fail(
    cpu_store: WorkspaceStore,
) -> None:
    group = shards(cpu_store, 2)
    shard_map_path(cpu_store.workspace, "search").unlink()
    for run in group.runs:
        finish(cpu_store, run.id, files={"outputs/x.json": b"[1]"})
    found = roster(cpu_store, "search")
    assert found.complete and [e.index for e in found.ready] == [0, 1]
    with pytest.raises(InputError, match="no shard group 'nope'"):
        roster(cpu_store, "nope")


# ---------------------------------------------------------------- merge


def pulled_group(
    store: WorkspaceStore, contents: list[Any], name: str = "x.shard.json"
) -> list[str]:
    """A finished, pulled, verified shard group whose shard i wrote `contents[i]`."""
    ids = [r.id for r in shards(store, len(contents)).runs]
    for run_id, value in zip(ids, contents, strict=True):
        finish(store, run_id, files={f"outputs/{name}": json.dumps(value).encode()})
    return ids


def test_arrays_concatenate_in_shard_order_with_provenance(
    cpu_store: WorkspaceStore, tmp_path: Path
) -> None:
    ids = pulled_group(cpu_store, [[0, "a"], [], [{"k": 2}]])
    out = tmp_path / "all.json"
    outcome = merge_shards(cpu_store, "search", "outputs/*.shard*.json", out)
    assert json.loads(out.read_text()) == [0, "a", {"k": 2}]
    assert (outcome.kind, outcome.items, outcome.skipped) == ("array", 3, [])
    sources = json.loads(Path(f"{out}.sources.json").read_text())
    assert sources["partial"] is False
    assert sources["sha256"] == hashlib.sha256(out.read_bytes()).hexdigest()
    assert [(s["shard"], s["run_id"], s["worker"]) for s in sources["sources"]] == [
        (0, ids[0], "cpu-a"),
        (1, ids[1], "cpu-b"),
        (2, ids[2], "cpu-a"),
    ]
    for source in sources["sources"]:
        data = (cpu_store.workspace.root / source["path"]).read_bytes()
        assert source["sha256"] == hashlib.sha256(data).hexdigest()


def test_objects_merge_keywise_and_conflicts_name_both_shards(
    cpu_store: WorkspaceStore, tmp_path: Path
) -> None:
    pulled_group(cpu_store, [{"a": 1, "same": 0}, {"b": 2, "same": 0}, {"a": 3}])
    out = tmp_path / "m.json"
    with pytest.raises(InputError, match=r"key 'a': shard 0 .* and shard 2 .*--on-conflict"):
        merge_shards(cpu_store, "search", "outputs/*.json", out)
    assert not out.exists()
    first = merge_shards(cpu_store, "search", "outputs/*.json", out, on_conflict="first")
    assert json.loads(out.read_text()) == {"a": 1, "same": 0, "b": 2}
    assert len(first.conflicts) == 1 and "key 'a'" in first.conflicts[0]
    merge_shards(cpu_store, "search", "outputs/*.json", out, on_conflict="last")
    assert json.loads(out.read_text()) == {"a": 3, "same": 0, "b": 2}


def test_merge_refuses_an_incomplete_group_unless_partial(
    cpu_store: WorkspaceStore, tmp_path: Path
) -> None:
    ids = [r.id for r in shards(cpu_store, 3).runs]
    finish(cpu_store, ids[0], files={"outputs/s.json": b"[0]"})
    finish(cpu_store, ids[2], files={"outputs/s.json": b"[2]"})
    out = tmp_path / "m.json"
    with pytest.raises(InputError) as refused:
        merge_shards(cpu_store, "search", "outputs/*.json", out)
    assert f"2 of 3 shards are ready; shard 1 {ids[1]} pending" in str(refused.value)
    assert "--allow-partial" in str(refused.value)
    outcome = merge_shards(cpu_store, "search", "outputs/*.json", out, allow_partial=True)
    assert json.loads(out.read_text()) == [0, 2]
    assert outcome.skipped == [f"shard 1 {ids[1]} pending"]
    assert json.loads(Path(f"{out}.sources.json").read_text())["partial"] is True


def test_a_refusal_names_the_first_shards_and_counts_the_rest(cpu_store: WorkspaceStore) -> None:
    shards(cpu_store, 20)
    with pytest.raises(InputError) as refused:
        merge_shards(cpu_store, "search", "outputs/*.json", Path("unused.json"))
    message = str(refused.value)
    assert "shard 7 " in message and "shard 8 " not in message and "; 12 more" in message
    assert "`runyard merge search --check`" in message


def test_merge_reads_only_verified_unchanged_json_files(
    cpu_store: WorkspaceStore, tmp_path: Path
) -> None:
    ids = pulled_group(cpu_store, [[1], [2]])
    results = cpu_store.workspace.result_dir(ids[0])
    (results / "outputs" / "stray.json").write_text("[99]")  # not part of the pull
    out = tmp_path / "m.json"
    outcome = merge_shards(cpu_store, "search", "outputs/*.json", out)
    assert json.loads(out.read_text()) == [1, 2]
    assert outcome.ignored == [f"results/{ids[0]}/outputs/stray.json"]

    with pytest.raises(InputError, match="has no verified file matching"):
        merge_shards(cpu_store, "search", "outputs/none*.json", out)
    (results / "outputs" / "x.shard.json").write_text("[1, 1]")
    with pytest.raises(InputError, match="changed since its pull was verified"):
        merge_shards(cpu_store, "search", "outputs/*.json", out)


@pytest.mark.parametrize(
    ("contents", "pattern", "message"),
    [
        ([[1], {"a": 1}], "outputs/*.json", "cannot merge an array"),
        ([[1], 7], "outputs/*.json", "not int"),
        ([[1], [2]], "../*.json", "relative to results"),
        ([[1], [2]], "/etc/*", "relative to results"),
    ],
)
def test_merge_input_errors(
    cpu_store: WorkspaceStore, tmp_path: Path, contents: list[Any], pattern: str, message: str
) -> None:
    pulled_group(cpu_store, contents)
    with pytest.raises(InputError, match=message):
        merge_shards(cpu_store, "search", pattern, tmp_path / "m.json")


def test_merge_refuses_an_out_path_whose_directory_does_not_exist(
    cpu_store: WorkspaceStore, tmp_path: Path
) -> None:
    pulled_group(cpu_store, [[1], [2]])
    with pytest.raises(InputError, match="no directory"):
        merge_shards(cpu_store, "search", "outputs/*.json", tmp_path / "typo" / "m.json")
    assert not (tmp_path / "typo").exists()
    with pytest.raises(InputError, match="is a directory"):
        merge_shards(cpu_store, "search", "outputs/*.json", tmp_path)


def test_merge_never_writes_into_results(cpu_store: WorkspaceStore) -> None:
    ids = pulled_group(cpu_store, [[1]])
    target = cpu_store.workspace.result_dir(ids[0]) / "merged.json"
    with pytest.raises(InputError, match="results/ holds verified pulls"):
        merge_shards(cpu_store, "search", "outputs/*.json", target)


# ---------------------------------------------------------------- CLI


def cli(store: WorkspaceStore, *argv: str) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--workspace")
    register(parser.add_subparsers(dest="verb"))
    args = parser.parse_args(["--workspace", str(store.workspace.root), *argv])
    code: int = args.handler(args)
    return code


def test_cli_shard_warns_of_a_placeholder_it_does_not_know(
    cpu_store: WorkspaceStore, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ("shard", "--pool", "cpu", "--shards", "2", "--name", "typo", "--")
    cli(cpu_store, *argv, "python s.py --part {shard} --of {shards} --dir ${shard_dir}")
    err = capsys.readouterr().err
    assert err.count("warning") == 1, err
    assert "{shards} in the command is left as is" in err
    assert cpu_store.runs()[0].command.endswith("--of {shards} --dir ${shard_dir}")


def test_cli_shard_joins_several_words_and_keeps_one_word(
    cpu_store: WorkspaceStore, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ("shard", "--pool", "cpu", "--shards", "2")
    cli(cpu_store, *argv, "--name", "many", "--", "python", "-c", "print('{shard}')", "--x")
    cli(cpu_store, *argv, "--name", "one", "--env", "K=v", "--", 'echo "$HOME" {shard}')
    commands = {r.name: r.command for r in cpu_store.runs()}
    assert commands["many-shard1of2"] == "python -c 'print('\"'\"'1'\"'\"')' --x"
    assert commands["one-shard1of2"] == 'echo "$HOME" 1'
    out = capsys.readouterr().out
    assert "queued shard group one: 2 runs (map: .runyard/shards/one.json)" in out
    assert all(r.env.get(GROUP_ENV) in ("many", "one") for r in cpu_store.runs())


def test_cli_merge_check_exit_codes_and_usage(
    cpu_store: WorkspaceStore, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    ids = [r.id for r in shards(cpu_store, 2).runs]
    finish(cpu_store, ids[0], files={"outputs/s.json": b"[0]"})
    assert cli(cpu_store, "merge", "search", "--check") == 1
    table = capsys.readouterr().out
    assert "done, pulled and verified" in table and "1/2 ready" in table
    finish(cpu_store, ids[1], files={"outputs/s.json": b"[1]"})
    assert cli(cpu_store, "merge", "search", "--check", "--json") == 0
    assert json.loads(capsys.readouterr().out)["complete"] is True
    with pytest.raises(InputError, match="needs --pattern"):
        cli(cpu_store, "merge", "search")
    out = tmp_path / "m.json"
    assert cli(cpu_store, "merge", "search", "--pattern", "outputs/*.json", "--out", str(out)) == 0
    assert "merged 2 items from 2 files of 2 shards" in capsys.readouterr().out
    assert json.loads(out.read_text()) == [0, 1]
