"""The machine blacklist: Vast machine ids never to rent, in a plain text file.

One id per line with an optional `# reason`; blank lines and whole-line comments are
kept. The file is the operator's (commit it); `runyard vast blacklist add|remove` edits it
under the workspace lock, atomically, keeping every other line as written.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from runyard.core.errors import FileFormatError, InputError
from runyard.core.store.atomic import atomic_write_text
from runyard.core.store.documents import read_text
from runyard.core.store.workspace_store import WorkspaceStore

_ENTRY = re.compile(r"^\s*(\d+)\s*(?:#\s?(.*))?$")

HEADER = "# Vast machine ids runyard never rents, one per line: <machine id>  # reason\n"


@dataclass(frozen=True)
class BlacklistEntry:
    machine_id: int
    reason: str
    line: int


def parse_blacklist(path: Path, text: str) -> list[BlacklistEntry]:
    entries: list[BlacklistEntry] = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        match = _ENTRY.match(line)
        if match is None:
            raise FileFormatError(
                path, f"expected '<machine id>  # reason', not {line.strip()!r}", line=number
            )
        entries.append(BlacklistEntry(int(match.group(1)), (match.group(2) or "").strip(), number))
    return entries


def blacklist_path(store: WorkspaceStore, file_name: str) -> Path:
    return store.workspace.root / Path(file_name).expanduser()


def load_blacklist(path: Path) -> list[BlacklistEntry]:
    if not path.exists():
        return []
    return parse_blacklist(path, read_text(path))


def banned_machines(path: Path) -> frozenset[int]:
    return frozenset(entry.machine_id for entry in load_blacklist(path))


def add_to_blacklist(store: WorkspaceStore, path: Path, machine_id: int, reason: str) -> bool:
    """Ban `machine_id`; False when it already was. The reason is kept as a comment."""
    if machine_id <= 0:
        raise InputError(f"machine id must be a positive integer, not {machine_id}")
    if "\n" in reason:
        raise InputError("the reason must fit on one line")
    with store.lock:
        text = read_text(path) if path.exists() else HEADER
        if any(e.machine_id == machine_id for e in parse_blacklist(path, text)):
            return False
        if text and not text.endswith("\n"):
            text += "\n"
        comment = f"  # {reason.strip()}" if reason.strip() else ""
        atomic_write_text(path, f"{text}{machine_id}{comment}\n")
        store.events.append("vast.blacklist.added", machine_id=machine_id, reason=reason)
    return True


def remove_from_blacklist(store: WorkspaceStore, path: Path, machine_id: int) -> bool:
    """Lift the ban on `machine_id`; False when it was not banned."""
    with store.lock:
        if not path.exists():
            return False
        text = read_text(path)
        lines = {e.line for e in parse_blacklist(path, text) if e.machine_id == machine_id}
        if not lines:
            return False
        kept = [line for n, line in enumerate(text.splitlines(keepends=True), 1) if n not in lines]
        atomic_write_text(path, "".join(kept))
        store.events.append("vast.blacklist.removed", machine_id=machine_id)
    return True
