"""The machine blacklist file: add, list, remove, comments kept, bad lines named."""

from __future__ import annotations

import pytest

from runyard.core.errors import FileFormatError
from runyard.core.providers.vast.blacklist import (
    add_to_blacklist,
    banned_machines,
    load_blacklist,
    remove_from_blacklist,
)
from runyard.core.store.workspace_store import WorkspaceStore


def test_add_list_remove_keep_the_operators_lines(store: WorkspaceStore) -> None:
    path = store.workspace.root / "vast-blacklist.txt"
    path.write_text("# ghosts I have met\n11111  # never answers SSH\n\n")
    assert add_to_blacklist(store, path, 22222, "slow disk") is True
    assert add_to_blacklist(store, path, 22222, "again") is False
    assert [(e.machine_id, e.reason) for e in load_blacklist(path)] == [
        (11111, "never answers SSH"),
        (22222, "slow disk"),
    ]
    assert remove_from_blacklist(store, path, 11111) is True
    assert remove_from_blacklist(store, path, 11111) is False
    assert path.read_text() == "# ghosts I have met\n\n22222  # slow disk\n"
    assert banned_machines(path) == frozenset({22222})
    events = [e["event"] for e in store.events.read()]
    assert events == ["vast.blacklist.added", "vast.blacklist.removed"]


def test_a_new_file_gets_a_header_and_a_bad_line_is_named(store: WorkspaceStore) -> None:
    path = store.workspace.root / "vast-blacklist.txt"
    add_to_blacklist(store, path, 5, "")
    assert path.read_text().startswith("# Vast machine ids") and path.read_text().endswith("\n5\n")
    path.write_text("5\nmachine six\n")
    with pytest.raises(FileFormatError) as caught:
        banned_machines(path)
    assert caught.value.line == 2
