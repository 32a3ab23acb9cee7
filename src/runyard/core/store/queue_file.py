"""`queues/run_queue.json`: a JSON array of runs, written one run per line.

One line per run keeps `grep`, `jq` and `git diff` readable, and lets the writer use the
C JSON encoder (indentation would force the slow pure-Python one on 10,000 runs).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from runyard.core.errors import FileFormatError
from runyard.core.models import FieldError, Run
from runyard.core.store.atomic import atomic_write_text
from runyard.core.store.documents import json_field_error, load_json, read_text


def load_queue_raw(path: Path) -> list[dict[str, Any]]:
    """The queue as parsed JSON, checked only for its outer shape (fast path for listing)."""
    if not path.exists():
        return []
    data = load_json(path)
    if not isinstance(data, list):
        raise FileFormatError(path, "must be a JSON array of runs", line=1)
    return data


def parse_queue(path: Path, data: list[Any]) -> list[Run]:
    runs: list[Run] = []
    seen_ids: set[str] = set()
    seen_names: set[str] = set()
    for index, entry in enumerate(data):
        try:
            run = Run.from_dict(entry, (index,))
            if run.id in seen_ids:
                raise FieldError((index, "id"), f"duplicate run id {run.id!r}")
            if run.name in seen_names:
                raise FieldError((index, "name"), f"duplicate run name {run.name!r}")
        except FieldError as exc:
            raise json_field_error(path, read_text(path), exc) from None
        seen_ids.add(run.id)
        seen_names.add(run.name)
        runs.append(run)
    return runs


def load_queue(path: Path) -> list[Run]:
    return parse_queue(path, load_queue_raw(path))


def dump_records(records: list[dict[str, Any]]) -> str:
    if not records:
        return "[]\n"
    encode = json.JSONEncoder(ensure_ascii=False, separators=(", ", ": ")).encode
    return "[\n" + ",\n".join(encode(record) for record in records) + "\n]\n"


def dump_queue(runs: list[Run]) -> str:
    return dump_records([run.to_dict() for run in runs])


def save_records(path: Path, records: list[dict[str, Any]]) -> None:
    """Write the queue; the caller holds the workspace lock, so any temp file is stale."""
    path.parent.mkdir(parents=True, exist_ok=True)
    for leftover in path.parent.glob(f".{path.name}.*.tmp"):
        leftover.unlink(missing_ok=True)
    atomic_write_text(path, dump_records(records))


def save_queue(path: Path, runs: list[Run]) -> None:
    save_records(path, [run.to_dict() for run in runs])
