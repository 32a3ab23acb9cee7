"""`workers.yaml`: load and validate; tool edits keep the human's comments and key order."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from runyard.core.errors import FileFormatError, InputError
from runyard.core.models import WORKER_KEYS, FieldError, Worker
from runyard.core.store.documents import (
    load_yaml,
    parse_yaml_file,
    save_yaml,
    yaml_field_error,
    yaml_line,
)


def _worker_list(path: Path, doc: Any) -> Any:
    """The list of workers: the whole document (research-os) or its `workers:` key."""
    if doc is None:
        return []
    if isinstance(doc, Mapping) and "workers" in doc:
        doc = doc["workers"]
        if doc is None:
            return []
    if not isinstance(doc, list):
        raise FileFormatError(path, "must be a YAML list of workers", line=1)
    return doc


def parse_workers(path: Path, doc: Any, warnings: list[str]) -> list[Worker]:
    entries = _worker_list(path, doc)
    workers: list[Worker] = []
    seen: dict[str, int] = {}
    for index, entry in enumerate(entries):
        try:
            worker = Worker.from_dict(entry, (index,))
        except FieldError as exc:
            raise yaml_field_error(path, entries, exc) from None
        if worker.worker_id in seen:
            raise FileFormatError(
                path,
                f"duplicate worker_id {worker.worker_id!r} (first at [{seen[worker.worker_id]}])",
                line=yaml_line(entries, (index, "worker_id")),
                field=f"[{index}].worker_id",
            )
        seen[worker.worker_id] = index
        for key in entry:
            if key not in WORKER_KEYS:
                line = yaml_line(entries, (index, key))
                warnings.append(
                    f"{path}:{line}: unknown key '{key}' in worker {worker.worker_id!r} kept as is"
                )
        workers.append(worker)
    return workers


def load_workers(path: Path, warnings: list[str]) -> list[Worker]:
    if not path.exists():
        return []
    return parse_yaml_file(path, lambda doc, found: parse_workers(path, doc, found), warnings)


def edit_workers(path: Path, edit: Callable[[Any], None]) -> None:
    """Load the round-trip tree, apply `edit` to the worker list, validate, save atomically.

    The caller holds the workspace lock. The file is validated as it is first (a malformed
    file is reported by its own lines and left for the human to fix, never rewritten), then
    the edited tree, before anything is written, so a bad edit never reaches the disk.
    """
    from ruamel.yaml.comments import CommentedSeq

    doc = load_yaml(path) if path.exists() else None
    if doc is None:
        doc = CommentedSeq()
    parse_workers(path, doc, [])
    entries = _worker_list(path, doc)
    edit(entries)
    parse_workers(path, doc, [])
    save_yaml(path, doc)


def to_yaml_node(data: Mapping[str, Any]) -> Any:
    """A plain dict as a round-trip mapping, nested mappings included."""
    from ruamel.yaml.comments import CommentedMap

    node = CommentedMap()
    for key, value in data.items():
        node[key] = to_yaml_node(value) if isinstance(value, Mapping) else value
    return node


def find_index(entries: Any, name: str) -> int:
    for index, entry in enumerate(entries):
        if isinstance(entry, Mapping) and entry.get("worker_id") == name:
            return index
    raise InputError(f"no worker named {name!r} in workers.yaml")
