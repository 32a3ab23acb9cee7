"""The workspace store: atomic writes, comment-keeping workers.yaml edits, settings, queue file."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from runyard.core.errors import FileFormatError, InputError
from runyard.core.models import Run, RunStatus, SSHSettings, Worker
from runyard.core.runs import RunSpec, add_run
from runyard.core.store.atomic import atomic_write_bytes, atomic_write_text
from runyard.core.store.queue_file import dump_queue, load_queue, save_queue
from runyard.core.store.workspace_store import WorkspaceStore
from runyard.core.workers import add_worker, remove_worker
from runyard.core.workspace import DEFAULT_WORKERS_YAML, Workspace

COMMENTED_WORKERS = """\
# Fleet of the vision project. Keep the rented boxes last.
# (hand-written: do not reorder)

- worker_id: local            # this laptop
  kind: local
  enabled: true
  worker_pool: default
  workspace: .
  resources:
    gpu: 0                    # CPU only
  health:
    heartbeat_command: "echo ok"

# --- rented ---------------------------------------------------------
- worker_id: vastai_auto_20260531_003650
  instance_id: 38664456
  kind: ssh
  enabled: true
  worker_pool: vastai
  ssh:
    host: ssh1.vast.ai
    port: 24456               # changes on every restart; reconcile fixes it
    user: root
    key: ~/.ssh/vastai_id_ed25519
  workspace: /root
  resources:
    gpu: 1
    disk_gb: 32
  health:
    heartbeat_command: "echo ok"
    busy_command: "pgrep -f python || true"
  notes: >-
    AUTO-RENTED at 2026-05-31 00:35:14. RTX A4000, $0.094/hr,
    DLP/$=230.8. Washington, US.
"""


def _files_in(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


# ---------------------------------------------------------------- atomic writes


def test_atomic_write_replaces_content_and_keeps_permissions(tmp_path: Path) -> None:
    target = tmp_path / "file.json"
    target.write_text("old")
    target.chmod(0o600)
    atomic_write_text(target, "new ☃")
    assert target.read_text("utf-8") == "new ☃"
    assert target.stat().st_mode & 0o777 == 0o600
    assert _files_in(tmp_path) == ["file.json"]  # no temp file left behind


def test_atomic_write_creates_a_new_file(tmp_path: Path) -> None:
    target = tmp_path / "new.bin"
    atomic_write_bytes(target, b"\x00\x01\xff")
    assert target.read_bytes() == b"\x00\x01\xff"
    assert _files_in(tmp_path) == ["new.bin"]


def test_a_failed_atomic_write_leaves_the_old_file_and_no_temp(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "run_queue.json"
    target.write_text("[]\n")

    def broken_replace(src: str, dst: str) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OSError, match="No space left"):
        atomic_write_text(target, "[\n" + "x" * 10000)
    monkeypatch.undo()
    assert target.read_text() == "[]\n"
    assert _files_in(tmp_path) == ["run_queue.json"]


def test_atomic_write_temp_files_are_hidden_dot_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """If a writer dies between write and rename, what is left is a dot-file nobody loads."""
    seen: list[str] = []
    real_replace = os.replace

    def spy(src: str, dst: str) -> None:
        seen.append(Path(src).name)
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", spy)
    atomic_write_text(tmp_path / "run_queue.json", "[]\n")
    assert len(seen) == 1
    assert seen[0].startswith(".run_queue.json.")
    assert seen[0].endswith(".tmp")


# ---------------------------------------------------------------- workers.yaml edits


def test_adding_a_worker_keeps_the_humans_file_byte_for_byte(store: WorkspaceStore) -> None:
    path = store.workspace.workers_path
    path.write_text(COMMENTED_WORKERS)
    add_worker(
        store,
        Worker(worker_id="box-2", kind="ssh", worker_pool="gpu",
               ssh=SSHSettings("10.0.0.7", 2222, "ubuntu", None), workspace="~/runyard", slots=2),
    )  # fmt: skip
    after = path.read_text()
    # Everything the human wrote is still there, unchanged: comments, blank lines, quoting,
    # key order, the folded `notes` and the layout; the new worker is appended after it.
    assert after.startswith(COMMENTED_WORKERS), after
    added = after[len(COMMENTED_WORKERS) :]
    assert added.startswith("- worker_id: box-2\n"), added
    names = [w.worker_id for w in store.workers()]
    assert names == ["local", "vastai_auto_20260531_003650", "box-2"]
    box = store.worker("box-2")
    assert box.ssh == SSHSettings("10.0.0.7", 2222, "ubuntu", None)
    assert (box.worker_pool, box.slots, box.workspace) == ("gpu", 2, "~/runyard")
    rented = store.worker("vastai_auto_20260531_003650")
    assert rented.notes.startswith("AUTO-RENTED at 2026-05-31 00:35:14.")


def test_removing_the_added_worker_gives_back_the_original_file(store: WorkspaceStore) -> None:
    path = store.workspace.workers_path
    path.write_text(COMMENTED_WORKERS)
    add_worker(store, Worker(worker_id="tmp-box", kind="local"))
    remove_worker(store, "tmp-box")
    assert path.read_text() == COMMENTED_WORKERS


def test_removing_a_worker_keeps_the_other_entries_and_their_comments(
    store: WorkspaceStore,
) -> None:
    path = store.workspace.workers_path
    path.write_text(COMMENTED_WORKERS)
    remove_worker(store, "local")
    after = path.read_text()
    assert "local" not in [w.worker_id for w in store.workers()]
    assert "# Fleet of the vision project. Keep the rented boxes last." in after
    assert "port: 24456               # changes on every restart; reconcile fixes it" in after
    assert 'busy_command: "pgrep -f python || true"' in after
    assert "  notes: >-\n    AUTO-RENTED at 2026-05-31 00:35:14. RTX A4000, $0.094/hr,\n" in after


def test_the_default_workers_file_is_kept_when_a_worker_is_added(store: WorkspaceStore) -> None:
    path = store.workspace.workers_path
    assert path.read_text() == DEFAULT_WORKERS_YAML
    add_worker(store, Worker(worker_id="gpu1", kind="ssh", ssh=SSHSettings("h")))
    assert path.read_text().startswith(DEFAULT_WORKERS_YAML)


def test_adding_a_duplicate_worker_is_refused_and_the_file_untouched(store: WorkspaceStore) -> None:
    path = store.workspace.workers_path
    path.write_text(COMMENTED_WORKERS)
    with pytest.raises(InputError, match="already exists"):
        add_worker(store, Worker(worker_id="local"))
    assert path.read_text() == COMMENTED_WORKERS


def test_removing_an_unknown_worker_is_an_input_error(store: WorkspaceStore) -> None:
    path = store.workspace.workers_path
    before = path.read_bytes()
    with pytest.raises(InputError, match="no worker named 'ghost'"):
        remove_worker(store, "ghost")
    assert path.read_bytes() == before


def test_a_worker_with_an_active_run_cannot_be_removed(store: WorkspaceStore) -> None:
    run = add_run(store, RunSpec(command="sleep 1", name="busy"))
    with store.queue_transaction() as runs:
        runs[0].status = RunStatus.RUNNING
        runs[0].worker = "local"
    with pytest.raises(InputError, match=f"active runs \\({run.id}\\)"):
        remove_worker(store, "local")
    assert [w.worker_id for w in store.workers()] == ["local"]


def test_unknown_worker_keys_warn_and_are_kept(store: WorkspaceStore) -> None:
    path = store.workspace.workers_path
    text = DEFAULT_WORKERS_YAML + "  gpu_model: RTX A4000     # my own note\n"
    path.write_text(text)
    workers = store.workers()
    assert [w.worker_id for w in workers] == ["local"]
    assert len(store.warnings) == 1
    warning = store.warnings[0]
    assert str(path) in warning and "gpu_model" in warning
    assert f":{text.count(chr(10))}:" in warning  # the line of the unknown key
    add_worker(store, Worker(worker_id="other"))
    assert "  gpu_model: RTX A4000     # my own note\n" in path.read_text()


# ---------------------------------------------------------------- settings


def test_settings_defaults_load(store: WorkspaceStore) -> None:
    settings = store.settings()
    assert settings.default_pool == "default"
    assert settings.runs.cancel_grace_seconds == 5.0
    assert store.warnings == []


def test_unknown_settings_warn_and_do_not_crash(workspace: Workspace) -> None:
    workspace.settings_path.write_text(
        "default_pool: gpu\nfancy_mode: true\nrefresh:\n  fleet_seconds: 2\n  colour: red\n"
    )
    store = WorkspaceStore(workspace)
    settings = store.settings()
    assert settings.default_pool == "gpu"
    assert settings.refresh.fleet_seconds == 2.0
    assert any("fancy_mode" in w for w in store.warnings)
    assert any("refresh.colour" in w for w in store.warnings)
    assert all(str(workspace.settings_path) in w for w in store.warnings)


@pytest.mark.parametrize(
    ("text", "line", "field"),
    [
        ("default_pool: default\nrefresh:\n  fleet_seconds: fast\n", 3, "refresh.fleet_seconds"),
        ("# comment\n\nruns:\n  retry_lost: 1.5\n", 4, "runs.retry_lost"),
        ("alerts:\n  disk_used_pct: 90\n  inodes_used_pct: [1]\n", 3, "alerts.inodes_used_pct"),
        ("default_pool: default\nssh:\n  trust: maybe\n", 3, "ssh.trust"),
        ("refresh: 5\n", 1, "refresh"),
    ],
)
def test_settings_type_errors_name_field_and_line(
    workspace: Workspace, text: str, line: int, field: str
) -> None:
    workspace.settings_path.write_text(text)
    with pytest.raises(FileFormatError) as info:
        WorkspaceStore(workspace).settings()
    error = info.value
    assert error.path == workspace.settings_path
    assert error.line == line
    assert error.field == field
    assert str(error).startswith(f"{workspace.settings_path}:{line}: field '{field}'")
    assert workspace.settings_path.read_text() == text


def test_settings_yaml_syntax_error_names_the_line(workspace: Workspace) -> None:
    workspace.settings_path.write_text("refresh:\n  fleet_seconds: 5\n  runs_seconds: [5\n")
    with pytest.raises(FileFormatError) as info:
        WorkspaceStore(workspace).settings()
    assert info.value.path == workspace.settings_path
    assert info.value.line is not None and 3 <= info.value.line <= 4


# ---------------------------------------------------------------- queue file


def _runs(n: int) -> list[Run]:
    return [
        Run(id=f"r{i:07d}", name=f"run-{i}", command=f"echo {i}; printf '%s\\n' \"a,b\"\n# two lines",
            env={"K": "v, w"}, metrics={"loss": 0.5 / (i + 1)}, created_at="2026-01-01T00:00:00Z")
        for i in range(n)
    ]  # fmt: skip


def test_queue_file_is_a_json_array_with_one_run_per_line(tmp_path: Path) -> None:
    path = tmp_path / "queues" / "run_queue.json"
    runs = _runs(3)
    save_queue(path, runs)
    text = path.read_text("utf-8")
    lines = text.splitlines()
    assert lines[0] == "[" and lines[-1] == "]"
    assert len(lines) == 2 + len(runs)
    for line, run in zip(lines[1:-1], runs, strict=True):
        entry = json.loads(line.removesuffix(","))
        assert entry["id"] == run.id and entry["name"] == run.name
    assert json.loads(text) == [r.to_dict() for r in runs]
    assert load_queue(path) == runs


def test_empty_queue_is_an_empty_array(tmp_path: Path) -> None:
    path = tmp_path / "run_queue.json"
    save_queue(path, [])
    assert path.read_text() == "[]\n"
    assert load_queue(path) == []


def test_queue_keeps_unicode_readable(tmp_path: Path) -> None:
    path = tmp_path / "run_queue.json"
    run = Run(id="r1", name="u", command="echo 'naïve ☃ 日本'")
    save_queue(path, [run])
    assert "naïve ☃ 日本" in path.read_text("utf-8")
    assert load_queue(path) == [run]


def test_queue_transaction_saves_only_when_something_changed(store: WorkspaceStore) -> None:
    add_run(store, RunSpec(command="true", name="a"))
    path = store.workspace.queue_path
    stat = path.stat()
    with store.queue_transaction():
        pass
    assert path.stat().st_ino == stat.st_ino  # not rewritten
    with store.queue_transaction() as runs:
        runs[0].priority = 3
    assert store.runs()[0].priority == 3
    assert dump_queue(store.runs()) == path.read_text()


def test_duplicate_run_id_in_a_hand_edited_queue_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "run_queue.json"
    a, b = _runs(2)
    b.id = a.id
    save_queue(path, [a, b])
    with pytest.raises(FileFormatError) as info:
        load_queue(path)
    assert info.value.line == 3
    assert info.value.field == "[1].id"
    assert "duplicate run id" in str(info.value)


def test_the_fast_read_of_workers_yaml_gives_what_the_round_trip_read_gives(
    tmp_path: Path,
) -> None:
    from fakes.research_os import RESEARCH_OS_WORKER
    from runyard.core.store.documents import load_yaml
    from runyard.core.store.workers_file import load_workers, parse_workers

    path = tmp_path / "workers.yaml"
    extra = (
        "- worker_id: odd-values\n  kind: local\n  enabled: yes  # YAML 1.2: a string, refused\n"
    )
    path.write_text(RESEARCH_OS_WORKER + "\n# the human's comment\n", encoding="utf-8")
    assert load_workers(path, []) == parse_workers(path, load_yaml(path), [])
    path.write_text(RESEARCH_OS_WORKER + extra, encoding="utf-8")
    with pytest.raises(FileFormatError) as refused:
        load_workers(path, [])
    assert f":{RESEARCH_OS_WORKER.count(chr(10)) + 3}: field '[1].enabled'" in str(refused.value)


def test_an_unknown_setting_is_a_warning_naming_its_line(store: WorkspaceStore) -> None:
    path = store.workspace.settings_path
    path.write_text("default_pool: gpu\nrefresh:\n  fleet_seconds: 3\n  fleet_secs: 9\nextra: 1\n")
    assert store.settings().refresh.fleet_seconds == 3
    assert store.warnings == [
        f"{path}:4: unknown setting 'refresh.fleet_secs' ignored",
        f"{path}:5: unknown setting 'extra' ignored",
    ]
