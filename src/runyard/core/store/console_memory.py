"""What the operator set in the console, kept across restarts in `.runyard/console.json`.

Pure load/save/merge (no Textual: the app wires it, these functions are unit-tested). The
file is plain JSON a human can read and edit; every key is optional and unknown keys are
ignored::

    {
      "version": 1,
      "view": "runs",
      "tables": {"fleet": {"filter": "a100", "sort": "util", "reverse": true}},
      "runs_status": "running",
      "vast_query": "gpu_name=RTX_4090 ref=4.5@12.4",
      "followed": ["r1a2b3c4"],
      "auto_dispatch": true,
      "vast_watcher": false
    }

A file that cannot be read or does not have this shape never stops the console: `load`
returns the defaults and a one-line problem, and the app keeps the file untouched until the
operator changes a setting; `save` then moves it aside to `console.json.bad` before writing
the new one. Names that no longer mean anything (a view, a table or a column that is gone, a
run that was removed) are valid here and skipped when applied.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from runyard.core.models import Run
from runyard.core.store.atomic import atomic_write_text

FILE_NAME = "console.json"
BAD_SUFFIX = ".bad"
VERSION = 1


class ConsoleMemoryError(ValueError):
    """console.json has the wrong shape; the message names the field."""


@dataclass(frozen=True)
class TableMemory:
    """One table's filter and sort, as `FastTable` keeps them."""

    filter: str = ""
    sort: str | None = None
    reverse: bool = False

    @property
    def is_default(self) -> bool:
        return self == TableMemory()


@dataclass(frozen=True)
class ConsoleMemory:
    """Everything the console restores. `None` means "never set": the default applies."""

    view: str | None = None
    tables: Mapping[str, TableMemory] = field(default_factory=dict)
    runs_status: str | None = None
    vast_query: str = ""
    followed: tuple[str, ...] = ()
    auto_dispatch: bool | None = None
    vast_watcher: bool = False

    def to_json(self) -> dict[str, object]:
        return {
            "version": VERSION,
            "view": self.view,
            "tables": {
                key: {"filter": table.filter, "sort": table.sort, "reverse": table.reverse}
                for key, table in sorted(self.tables.items())
                if not table.is_default
            },
            "runs_status": self.runs_status,
            "vast_query": self.vast_query,
            "followed": list(self.followed),
            "auto_dispatch": self.auto_dispatch,
            "vast_watcher": self.vast_watcher,
        }


@dataclass(frozen=True)
class Loaded:
    """What `load` found: the memory to apply, and what was wrong with the file (if anything)."""

    memory: ConsoleMemory
    problem: str | None = None

    @property
    def ok(self) -> bool:
        return self.problem is None


# ---------------------------------------------------------------- parsing


def _optional_str(data: Mapping[str, object], key: str, where: str = "") -> str | None:
    value = data.get(key)
    if value is None or isinstance(value, str):
        return value
    raise ConsoleMemoryError(f"field '{where}{key}': expected a string, got {_kind(value)}")


def _str(data: Mapping[str, object], key: str, where: str = "") -> str:
    return _optional_str(data, key, where) or ""


def _optional_bool(data: Mapping[str, object], key: str, where: str = "") -> bool | None:
    value = data.get(key)
    if value is None or isinstance(value, bool):
        return value
    raise ConsoleMemoryError(f"field '{where}{key}': expected true or false, got {_kind(value)}")


def _kind(value: object) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean"}.get(
        type(value), f"{json.dumps(value)}"
    )


def parse(data: object) -> ConsoleMemory:
    """The memory in a decoded console.json; `ConsoleMemoryError` names the bad field."""
    if not isinstance(data, dict):
        raise ConsoleMemoryError(f"expected a JSON object at the top, got {_kind(data)}")
    version = data.get("version", VERSION)
    if version != VERSION:
        raise ConsoleMemoryError(
            f"field 'version': {json.dumps(version)} is not {VERSION} (another runyard wrote it?)"
        )
    raw_tables = data.get("tables") or {}
    if not isinstance(raw_tables, dict):
        raise ConsoleMemoryError(f"field 'tables': expected an object, got {_kind(raw_tables)}")
    tables: dict[str, TableMemory] = {}
    for key, raw in raw_tables.items():
        where = f"tables.{key}."
        if not isinstance(raw, dict):
            raise ConsoleMemoryError(f"field 'tables.{key}': expected an object, got {_kind(raw)}")
        tables[key] = TableMemory(
            filter=_str(raw, "filter", where),
            sort=_optional_str(raw, "sort", where),
            reverse=bool(_optional_bool(raw, "reverse", where)),
        )
    followed = data.get("followed") or []
    if not isinstance(followed, list) or not all(isinstance(i, str) for i in followed):
        raise ConsoleMemoryError("field 'followed': expected a list of run ids (strings)")
    return ConsoleMemory(
        view=_optional_str(data, "view"),
        tables=tables,
        runs_status=_optional_str(data, "runs_status"),
        vast_query=_str(data, "vast_query"),
        followed=tuple(dict.fromkeys(followed)),
        auto_dispatch=_optional_bool(data, "auto_dispatch"),
        vast_watcher=bool(_optional_bool(data, "vast_watcher")),
    )


def dumps(memory: ConsoleMemory) -> str:
    return json.dumps(memory.to_json(), indent=2, ensure_ascii=False) + "\n"


# ---------------------------------------------------------------- files


def memory_path(state_dir: Path) -> Path:
    return state_dir / FILE_NAME


def bad_path(path: Path) -> Path:
    return path.with_name(path.name + BAD_SUFFIX)


def load(path: Path) -> Loaded:
    """The memory in `path`; the defaults (and the problem) when it is missing or bad."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return Loaded(ConsoleMemory())
    except UnicodeDecodeError:
        return Loaded(ConsoleMemory(), "not UTF-8 text")
    except OSError as exc:
        return Loaded(ConsoleMemory(), f"cannot read it ({exc.strerror or exc})")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        return Loaded(ConsoleMemory(), f"line {exc.lineno} column {exc.colno}: {exc.msg}")
    try:
        return Loaded(parse(data))
    except ConsoleMemoryError as exc:
        return Loaded(ConsoleMemory(), str(exc))


def save(path: Path, memory: ConsoleMemory, *, keep_bad: bool = False) -> Path | None:
    """Write `memory` atomically. With `keep_bad`, an existing file (one `load` refused) is
    first moved to `console.json.bad`, replacing an older one; returns where it went."""
    path.parent.mkdir(parents=True, exist_ok=True)
    moved: Path | None = None
    if keep_bad and os.path.lexists(path):
        moved = bad_path(path)
        os.replace(path, moved)
    atomic_write_text(path, dumps(memory))
    return moved


# ---------------------------------------------------------------- merging


def resolve_auto_dispatch(saved: bool | None, explicit: bool | None) -> bool:
    """An explicit choice of the caller (`runyard demo`) wins; else the saved one; else off."""
    if explicit is not None:
        return explicit
    return bool(saved)


def follow_targets(followed: Sequence[str], runs: Iterable[Run]) -> list[Run]:
    """The followed runs to follow again, in their order: those still in the queue that have
    a log (active runs once launched, finished runs that ran)."""
    by_id = {run.id: run for run in runs}
    found = (by_id.get(run_id) for run_id in followed)
    return [run for run in found if run is not None and run.run_dir]
