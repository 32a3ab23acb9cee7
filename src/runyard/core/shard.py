"""Sharded search: one command fanned out as N runs, a roster, and a merge of their results.

`add_shards` queues shard i of N with `{shard}`/`{num_shards}` filled in and the shard
variables in its environment (the same names GCP Batch sets, so one shard script runs
on either), pinned one per host of a pool by default. Each shard writes only to its own
`outputs/<run-name>/`. The roster proves every index 0..N-1 ran exactly once and was
pulled and verified; only then does `merge_shards` fold the per-shard JSON files into
one, with a sidecar naming the run, worker and sha256 behind every input.

The Run record has no shard field, so a shard is marked by its environment:
RUNYARD_SHARD_GROUP / RUNYARD_SHARD_INDEX / RUNYARD_SHARD_COUNT (names follow
`<group>-shard<i>of<N>` too). `.runyard/shards/<group>.json` keeps the shard -> worker map.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Literal

from runyard.core.errors import FileFormatError, InputError
from runyard.core.models import (
    ACTIVE_STATES,
    RUN_NAME_PATTERN,
    Run,
    RunStatus,
    Worker,
)
from runyard.core.runs import RunSpec, build_run, new_run_id, validate_spec
from runyard.core.store.atomic import atomic_write_text
from runyard.core.store.documents import load_json, lone_surrogate_path
from runyard.core.store.events import utc_now
from runyard.core.store.workspace_store import WorkspaceStore
from runyard.core.workspace import Workspace

GROUP_ENV = "RUNYARD_SHARD_GROUP"
INDEX_ENV = "RUNYARD_SHARD_INDEX"
COUNT_ENV = "RUNYARD_SHARD_COUNT"
# GCP Batch's task variables: a shard script written for Batch runs here unchanged.
BATCH_INDEX_ENV = "BATCH_TASK_INDEX"
BATCH_COUNT_ENV = "BATCH_TASK_COUNT"
SHARD_ENV_KEYS = frozenset({GROUP_ENV, INDEX_ENV, COUNT_ENV, BATCH_INDEX_ENV, BATCH_COUNT_ENV})

MAX_SHARDS = 10_000
MAX_LISTED = 8  # shards named in a refusal; `merge --check` lists them all
SHARDS_SUBDIR = "shards"

# `{shard}` and `{num_shards}` are replaced; `{{shard}}` is a literal `{shard}`; a shell's
# `${shard}` and every other brace (f-strings, `${VAR}`, JSON) are left alone.
_PLACEHOLDER = re.compile(r"\{\{(shard|num_shards)\}\}|(?<!\$)\{(shard|num_shards)\}")

# `{shards}`, `{shard_index}`, `{num_shard}`: a placeholder the operator likely meant, left
# as is (a warning names it) since other braces must pass through untouched.
_NEAR_PLACEHOLDER = re.compile(r"(?<![${])\{(\w*shard\w*)\}(?!\})")

ConflictPolicy = Literal["error", "first", "last"]
CONFLICT_POLICIES: tuple[ConflictPolicy, ...] = ("error", "first", "last")


# ---------------------------------------------------------------- planning


def substitute(command: str, index: int, count: int) -> str:
    """The command of shard `index` of `count`: only the two exact placeholders change."""

    def fill(match: re.Match[str]) -> str:
        if match.group(1) is not None:
            return "{" + match.group(1) + "}"
        return str(index) if match.group(2) == "shard" else str(count)

    return _PLACEHOLDER.sub(fill, command)


def shard_name(group: str, index: int, count: int) -> str:
    return f"{group}-shard{index}of{count}"


def shard_group_name(spec: RunSpec) -> str:
    """The group a sharded search is known by: --name, else --project, else the program."""
    if spec.name:
        group = spec.name
    elif spec.project:
        group = spec.project
    else:
        words = spec.command.split()
        program = words[0].rsplit("/", 1)[-1] if words else "shard"
        group = re.sub(r"[^A-Za-z0-9._-]+", "-", program).lstrip("._-")[:40] or "shard"
    if not RUN_NAME_PATTERN.match(group):
        raise InputError(
            f"shard group {group!r}: use letters, digits, '.', '_' and '-' (give --name)"
        )
    return group


def plan_shards(
    command: str,
    num_shards: int,
    workers_in_pool: Sequence[Worker],
    per_host: bool = True,
    *,
    group: str,
    base: RunSpec | None = None,
) -> list[RunSpec]:
    """One RunSpec per shard (pure). `base` holds what every shard shares (pool, project,
    env, outputs, ...); its command, name and worker are replaced. With `per_host`, shard i
    is pinned to the i-th enabled worker, round-robin when there are more shards than hosts.
    """
    if not 1 <= num_shards <= MAX_SHARDS:
        raise InputError(f"--shards {num_shards}: give a number from 1 to {MAX_SHARDS}")
    base = base or RunSpec(command=command)
    reserved = sorted(SHARD_ENV_KEYS & set(base.env))
    if reserved:
        raise InputError(f"--env {', '.join(reserved)}: set by runyard for each shard")
    if base.worker is not None:
        raise InputError("a sharded search places its own shards: use --pool, not --worker")
    hosts = [w.worker_id for w in workers_in_pool if w.enabled]
    if per_host and not hosts:
        raise InputError(
            f"no enabled worker in pool {base.pool or 'default'!r} to pin shards to "
            "(add one, or pass --no-pin to let dispatch place them later)"
        )
    specs: list[RunSpec] = []
    for index in range(num_shards):
        env = {
            **base.env,
            GROUP_ENV: group,
            INDEX_ENV: str(index),
            COUNT_ENV: str(num_shards),
            BATCH_INDEX_ENV: str(index),
            BATCH_COUNT_ENV: str(num_shards),
        }
        specs.append(
            dataclasses.replace(
                base,
                command=substitute(command, index, num_shards),
                name=shard_name(group, index, num_shards),
                project=base.project or group,
                worker=hosts[index % len(hosts)] if per_host else None,
                env=env,
                outputs=list(base.outputs),
            )
        )
    return specs


@dataclass
class ShardGroup:
    """What `add_shards` queued: the group, its runs in shard order, and the map file."""

    name: str
    runs: list[Run]
    map_path: Path


def shard_map_path(workspace: Workspace, group: str) -> Path:
    return workspace.state_dir / SHARDS_SUBDIR / f"{group}.json"


def add_shards(
    store: WorkspaceStore, base: RunSpec, num_shards: int, per_host: bool = True
) -> ShardGroup:
    """Queue every shard of `base.command` in one transaction: all of them or none.

    `base.name` (else project, else the program) names the group; a group already in the
    queue is refused so that a roster never mixes two searches.
    """
    group = shard_group_name(base)
    pool = base.pool or store.settings().default_pool
    base = dataclasses.replace(base, pool=pool)
    workers = [w for w in store.workers() if w.worker_pool == pool]
    specs = plan_shards(base.command, num_shards, workers, per_host, group=group, base=base)
    for spec in specs:
        validate_spec(spec, store)
    for unknown in dict.fromkeys(_NEAR_PLACEHOLDER.findall(base.command)):
        if unknown not in ("shard", "num_shards"):
            store.warnings.append(
                f"{{{unknown}}} in the command is left as is: the placeholders are {{shard}} "
                "and {num_shards}"
            )
    by_name = {w.worker_id: w for w in workers}
    with store.queue_transaction() as runs:
        if any(run.env.get(GROUP_ENV) == group for run in runs):
            raise InputError(
                f"shard group {group!r} already has runs in the queue; pick another --name"
            )
        taken_ids = {run.id for run in runs}
        taken_names = {run.name for run in runs}
        created: list[Run] = []
        for spec in specs:
            assert spec.name is not None
            if spec.name in taken_names:
                raise InputError(f"a run named {spec.name!r} is already in the queue")
            assert spec.name is not None
            run = build_run(spec, new_run_id(taken_ids), spec.name)
            taken_ids.add(run.id)
            created.append(run)
        runs.extend(created)
        # Written under the lock, before the queue: if it fails, nothing is queued.
        map_path = _write_shard_map(store.workspace, group, pool, per_host, created, by_name)
        for run in created:
            store.events.append("run.added", run=run.id, name=run.name, shard_group=group)
        store.events.append("shard.added", group=group, shards=num_shards, pinned=per_host)
    return ShardGroup(group, created, map_path)


def _write_shard_map(
    workspace: Workspace,
    group: str,
    pool: str,
    pinned: bool,
    runs: Sequence[Run],
    workers: dict[str, Worker],
) -> Path:
    """`.runyard/shards/<group>.json`: shard index -> run and host (null until dispatch
    when unpinned), the fleet config array of a hand-rolled cluster search."""
    shards = []
    for index, run in enumerate(runs):
        worker = workers.get(run.pinned_worker or "")
        shards.append(
            {
                "index": index,
                "run_id": run.id,
                "name": run.name,
                "worker": run.pinned_worker,
                "host": worker.ssh.host if worker is not None and worker.ssh else None,
            }
        )
    document = {
        "group": group,
        "count": len(runs),
        "pool": pool,
        "pinned": pinned,
        "created_at": utc_now(),
        "shards": shards,
    }
    path = shard_map_path(workspace, group)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(document, indent=2) + "\n")
    return path


def read_shard_map(workspace: Workspace, group: str) -> dict[str, Any] | None:
    """The group's map file, or None when there is none; a malformed one is an error."""
    if not RUN_NAME_PATTERN.match(group):
        raise InputError(f"{group!r} is not a shard group name")
    path = shard_map_path(workspace, group)
    if not path.is_file():
        return None
    document = load_json(path)
    if not isinstance(document, dict):
        raise FileFormatError(path, "must be a JSON object")
    count = document.get("count")
    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        raise FileFormatError(path, "'count' must be a positive integer", field="count")
    return document


# ---------------------------------------------------------------- roster


@dataclass(frozen=True)
class ShardEntry:
    """One run of a shard group as the roster sees it."""

    index: int
    run_id: str
    name: str
    status: RunStatus
    worker: str | None
    pulled: bool
    verified: bool

    @property
    def ready(self) -> bool:
        """Done, and its results are in results/<id>/ and verified: safe to merge."""
        return self.status == RunStatus.DONE and self.verified

    def state(self) -> str:
        """A short phrase for tables and error messages."""
        if self.status != RunStatus.DONE:
            return self.status.value
        if self.verified:
            return "done, pulled and verified"
        return "done, pull NOT verified" if self.pulled else "done, not pulled"


@dataclass
class Roster:
    """Reconciliation of a fan-out: is every shard 0..count-1 there exactly once, done,
    pulled and verified? `strays` are group runs whose index or count does not fit."""

    group: str
    count: int
    entries: list[ShardEntry] = field(default_factory=list)
    strays: list[str] = field(default_factory=list)

    def by_index(self) -> dict[int, list[ShardEntry]]:
        found: dict[int, list[ShardEntry]] = {i: [] for i in range(self.count)}
        for entry in self.entries:
            found[entry.index].append(entry)
        return found

    @property
    def missing(self) -> list[int]:
        return [i for i, found in self.by_index().items() if not found]

    @property
    def duplicates(self) -> list[int]:
        return [i for i, found in self.by_index().items() if len(found) > 1]

    def _single(self) -> Iterator[ShardEntry]:
        for found in self.by_index().values():
            if len(found) == 1:
                yield found[0]

    @property
    def failed(self) -> list[int]:
        """Shards whose run failed, was lost or was cancelled."""
        bad = {RunStatus.FAILED, RunStatus.LOST, RunStatus.CANCELLED}
        return [e.index for e in self._single() if e.status in bad]

    @property
    def unfinished(self) -> list[int]:
        waiting = {RunStatus.PENDING, *ACTIVE_STATES}
        return [e.index for e in self._single() if e.status in waiting]

    @property
    def unverified(self) -> list[int]:
        """Done, but not pulled, or pulled without verification."""
        return [e.index for e in self._single() if e.status == RunStatus.DONE and not e.verified]

    @property
    def ready(self) -> list[ShardEntry]:
        """The shards a merge may read, in shard order."""
        return [e for e in self._single() if e.ready]

    @property
    def complete(self) -> bool:
        return len(self.ready) == self.count

    def to_dict(self) -> dict[str, Any]:
        """The roster as one JSON document (`merge --check --json`, the console)."""
        return {
            "group": self.group,
            "count": self.count,
            "complete": self.complete,
            "ready": [e.index for e in self.ready],
            "missing": self.missing,
            "duplicates": self.duplicates,
            "failed": self.failed,
            "unfinished": self.unfinished,
            "unverified": self.unverified,
            "strays": list(self.strays),
            "problems": self.problems(),
            "shards": [
                {**dataclasses.asdict(e), "status": e.status.value, "state": e.state()}
                for e in self.entries
            ],
        }

    def problems(self) -> list[str]:
        """One phrase per shard that is not ready, in shard order."""
        out: list[str] = []
        for index, found in self.by_index().items():
            if not found:
                out.append(f"shard {index} missing from the queue")
            elif len(found) > 1:
                ids = ", ".join(e.run_id for e in found)
                out.append(f"shard {index} queued {len(found)} times ({ids})")
            elif not found[0].ready:
                entry = found[0]
                out.append(f"shard {index} {entry.run_id} {entry.state()}{_hint(entry)}")
        return out


def _hint(entry: ShardEntry) -> str:
    """What the operator runs next to make a shard ready."""
    if entry.status == RunStatus.DONE:
        return f" (`runyard pull {entry.run_id}`)"
    if entry.status in (RunStatus.FAILED, RunStatus.LOST, RunStatus.CANCELLED):
        return f" (`runyard run retry {entry.run_id}`)"
    return ""


def roster(store: WorkspaceStore, group: str) -> Roster:
    """The group's roster from the queue (and its map file for the expected count)."""
    shard_map = read_shard_map(store.workspace, group)
    members = [run for run in store.runs() if run.env.get(GROUP_ENV) == group]
    if shard_map is None and not members:
        raise InputError(f"no shard group {group!r} (no queued run and no shard map)")
    if shard_map is not None:
        count = int(shard_map["count"])
    else:
        counts = sorted({run.env.get(COUNT_ENV, "") for run in members})
        if len(counts) != 1 or not counts[0].isdigit() or int(counts[0]) < 1:
            raise InputError(
                f"shard group {group!r}: its runs disagree on the shard count "
                f"({', '.join(repr(c) for c in counts)}) and there is no shard map"
            )
        count = int(counts[0])
    result = Roster(group, count)
    for run in members:
        index_text = run.env.get(INDEX_ENV, "")
        if (
            run.env.get(COUNT_ENV) != str(count)
            or not index_text.isdigit()
            or int(index_text) >= count
        ):
            result.strays.append(run.id)
            continue
        result.entries.append(
            ShardEntry(
                index=int(index_text),
                run_id=run.id,
                name=run.name,
                status=run.status,
                worker=run.worker or run.pinned_worker,
                pulled=run.pull is not None,
                verified=run.pull is not None and run.pull.verified,
            )
        )
    result.entries.sort(key=lambda e: (e.index, e.run_id))
    return result


# ---------------------------------------------------------------- merge


@dataclass(frozen=True)
class MergeSource:
    """One input file of a merge and the shard it came from."""

    shard: int
    run_id: str
    worker: str | None
    path: str  # relative to the workspace
    sha256: str
    items: int


@dataclass
class MergeOutcome:
    group: str
    out_path: Path
    sources_path: Path
    kind: Literal["array", "object"]
    items: int
    sources: list[MergeSource] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # shards left out (--allow-partial)
    conflicts: list[str] = field(default_factory=list)  # keys resolved by --on-conflict
    ignored: list[str] = field(default_factory=list)  # matched files not in a pull manifest

    def to_dict(self) -> dict[str, Any]:
        return {
            "group": self.group,
            "out": str(self.out_path),
            "sources_file": str(self.sources_path),
            "kind": self.kind,
            "items": self.items,
            "partial": bool(self.skipped),
            "skipped": list(self.skipped),
            "conflicts": list(self.conflicts),
            "ignored": list(self.ignored),
            "sources": [dataclasses.asdict(s) for s in self.sources],
        }


def _check_pattern(pattern: str) -> None:
    path = PurePosixPath(pattern)
    if not pattern or path.is_absolute() or ".." in path.parts:
        raise InputError(
            f"--pattern {pattern!r}: give a glob relative to results/<run-id>/, "
            "e.g. 'outputs/*.shard*.json'"
        )


def _verified_files(directory: Path) -> dict[str, str]:
    """Path -> sha256 of every file the run's pull verified (from manifest.json)."""
    manifest_path = directory / "manifest.json"
    if not manifest_path.is_file():
        return {}
    manifest = load_json(manifest_path)
    files = manifest.get("files") if isinstance(manifest, dict) else None
    verified: dict[str, str] = {}
    for entry in files if isinstance(files, list) else []:
        if isinstance(entry, dict) and entry.get("ok") is True:
            verified[str(entry.get("path"))] = str(entry.get("sha256_local"))
    return verified


@dataclass
class _Input:
    source: MergeSource
    value: Any


def _collect_inputs(
    store: WorkspaceStore, ready: Sequence[ShardEntry], pattern: str, outcome: MergeOutcome
) -> tuple[list[_Input], list[str]]:
    """Each ready shard's matching, verified files in shard then path order; plus the
    shards with no such file."""
    root = store.workspace.root
    inputs: list[_Input] = []
    empty: list[str] = []
    for entry in ready:
        directory = store.workspace.result_dir(entry.run_id)
        verified = _verified_files(directory)
        matched = 0
        for path in sorted(p for p in directory.glob(pattern) if p.is_file()):
            relative = path.relative_to(directory).as_posix()
            shown = path.relative_to(root).as_posix()
            if relative not in verified:
                outcome.ignored.append(shown)
                continue
            data = path.read_bytes()
            digest = hashlib.sha256(data).hexdigest()
            if digest != verified[relative]:
                raise InputError(
                    f"{shown} changed since its pull was verified; pull shard {entry.index} again"
                )
            try:
                value = json.loads(data)
            except (json.JSONDecodeError, UnicodeDecodeError) as exc:
                raise InputError(f"{shown} (shard {entry.index}): invalid JSON: {exc}") from None
            if (where := lone_surrogate_path(value)) is not None:
                raise InputError(
                    f"{shown} (shard {entry.index}): half a UTF-16 surrogate pair at "
                    f"{list(where)}, which is not text and cannot be merged"
                )
            if not isinstance(value, (list, dict)):
                raise InputError(
                    f"{shown} (shard {entry.index}): a shard file must hold a JSON array or "
                    f"object, not {type(value).__name__}"
                )
            source = MergeSource(entry.index, entry.run_id, entry.worker, shown, digest, len(value))
            inputs.append(_Input(source, value))
            matched += 1
        if not matched:
            empty.append(
                f"shard {entry.index} {entry.run_id} has no verified file matching {pattern!r}"
            )
    return inputs, empty


def _merge_values(
    inputs: Sequence[_Input], on_conflict: ConflictPolicy, outcome: MergeOutcome
) -> list[Any] | dict[str, Any]:
    """Arrays concatenate in order; objects merge key-wise, a key with two different
    values being a conflict that `on_conflict` settles (or reports, naming both shards)."""
    kinds = {type(i.value) for i in inputs}
    if len(kinds) > 1:
        first_list = next(i for i in inputs if isinstance(i.value, list))
        first_dict = next(i for i in inputs if isinstance(i.value, dict))
        raise InputError(
            f"cannot merge an array ({first_list.source.path}) with an object "
            f"({first_dict.source.path})"
        )
    if kinds == {list}:
        merged_list: list[Any] = []
        for item in inputs:
            merged_list.extend(item.value)
        return merged_list
    merged: dict[str, Any] = {}
    owner: dict[str, MergeSource] = {}
    for item in inputs:
        for key, value in item.value.items():
            if key in merged and merged[key] != value:
                before = owner[key]
                where = (
                    f"key {key!r}: shard {before.shard} ({before.path}) and "
                    f"shard {item.source.shard} ({item.source.path})"
                )
                if on_conflict == "error":
                    raise InputError(
                        f"conflicting {where} differ; pass --on-conflict first|last to choose"
                    )
                outcome.conflicts.append(where)
                if on_conflict == "first":
                    continue
            if key not in merged or on_conflict == "last":
                owner[key] = item.source
            merged[key] = value
    return merged


def merge_shards(
    store: WorkspaceStore,
    group: str,
    pattern: str,
    out_path: Path,
    *,
    allow_partial: bool = False,
    on_conflict: ConflictPolicy = "error",
) -> MergeOutcome:
    """Merge the group's per-shard JSON files (pulled, verified) into `out_path`.

    The roster comes first: a missing, duplicated, failed, unfinished or unverified shard
    refuses the merge unless `allow_partial`, which merges the ready ones and records the
    rest. Writes `out_path` and `<out_path>.sources.json` atomically.
    """
    _check_pattern(pattern)
    if on_conflict not in CONFLICT_POLICIES:
        raise InputError(f"--on-conflict {on_conflict!r}: one of {', '.join(CONFLICT_POLICIES)}")
    out_path = out_path.expanduser().resolve()
    if out_path.is_relative_to(store.workspace.results_dir.resolve()):
        raise InputError(f"--out {out_path}: results/ holds verified pulls; write elsewhere")
    if not out_path.parent.is_dir():  # a mistyped path must not grow a new directory tree
        raise InputError(f"--out {out_path}: no directory {out_path.parent}")
    if out_path.is_dir():
        raise InputError(f"--out {out_path}: is a directory; name the merged file")
    shards = roster(store, group)
    skipped = shards.problems()
    if skipped and not allow_partial:
        shown = skipped[:MAX_LISTED] + (
            [f"{len(skipped) - MAX_LISTED} more"] if len(skipped) > MAX_LISTED else []
        )
        raise InputError(
            f"shard group {group!r}: {len(shards.ready)} of {shards.count} shards are ready; "
            + "; ".join(shown)
            + f" (see `runyard merge {group} --check`, or pass --allow-partial)"
        )
    sources_path = out_path.with_name(out_path.name + ".sources.json")
    outcome = MergeOutcome(group, out_path, sources_path, "array", 0, skipped=list(skipped))
    inputs, empty = _collect_inputs(store, shards.ready, pattern, outcome)
    if empty and not allow_partial:
        raise InputError("; ".join(empty) + " (or pass --allow-partial)")
    outcome.skipped.extend(empty)
    if not inputs:
        raise InputError(f"shard group {group!r}: nothing to merge ({'; '.join(outcome.skipped)})")
    merged = _merge_values(inputs, on_conflict, outcome)
    outcome.kind = "array" if isinstance(merged, list) else "object"
    outcome.items = len(merged)
    outcome.sources = [i.source for i in inputs]
    text = json.dumps(merged, indent=2, ensure_ascii=False) + "\n"
    atomic_write_text(out_path, text)
    provenance = {
        "count": shards.count,
        "pattern": pattern,
        "on_conflict": on_conflict,
        "merged_at": utc_now(),
        "sha256": hashlib.sha256(text.encode("utf-8")).hexdigest(),
        **outcome.to_dict(),
    }
    atomic_write_text(sources_path, json.dumps(provenance, indent=2) + "\n")
    store.events.append(
        "shard.merged",
        group=group,
        out=str(out_path),
        files=len(outcome.sources),
        items=outcome.items,
        partial=bool(outcome.skipped),
    )
    return outcome
