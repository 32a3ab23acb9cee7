"""Several processes writing one workspace: nothing lost, and a kill -9 never corrupts it."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from runyard.core.models import Run
from runyard.core.store.lock import WorkspaceLock
from runyard.core.store.queue_file import load_queue
from runyard.core.store.workspace_store import WorkspaceStore
from runyard.core.workspace import Workspace

ADDER = """
import sys, time
from pathlib import Path
from runyard.core.runs import RunSpec, add_run
from runyard.core.store.workspace_store import WorkspaceStore
from runyard.core.workspace import Workspace

root, tag, count, go = sys.argv[1], sys.argv[2], int(sys.argv[3]), Path(sys.argv[4])
store = WorkspaceStore(Workspace(Path(root)))
while not go.exists():  # start together, after the imports
    time.sleep(0.001)
for i in range(count):
    run = add_run(store, RunSpec(command=f"echo {tag} {i}", name=f"{tag}-{i}"))
    print(run.id, flush=True)
"""


def test_processes_adding_runs_at_once_lose_none(workspace: Workspace, tmp_path: Path) -> None:
    writers, per_writer = 3, 50
    go = tmp_path / "go"
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", ADDER, str(workspace.root), f"w{n}", str(per_writer), str(go)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for n in range(writers)
    ]
    time.sleep(0.3)  # let them import; they spin on the go file, so no result depends on this
    go.touch()
    printed: list[str] = []
    for proc in procs:
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
        printed += out.split()
    assert len(printed) == writers * per_writer

    runs = load_queue(workspace.queue_path)
    assert sorted(r.id for r in runs) == sorted(printed)
    assert len({r.name for r in runs}) == writers * per_writer
    assert {r.name for r in runs} == {
        f"w{n}-{i}" for n in range(writers) for i in range(per_writer)
    }
    # Each writer's runs keep their own order in the shared queue.
    for n in range(writers):
        mine = [int(r.name.split("-")[1]) for r in runs if r.name.startswith(f"w{n}-")]
        assert mine == sorted(mine)
    # Every event line is whole: concurrent appends never interleave fragments.
    lines = workspace.events_path.read_text().splitlines()
    events = [json.loads(line) for line in lines]
    added = [e["run"] for e in events if e["event"] == "run.added"]
    assert sorted(added) == sorted(printed)


def _writer_loop(root: Path, tag: str) -> None:
    """Child process body: save the queue under the lock forever (until SIGKILL)."""
    store = WorkspaceStore(Workspace(root))
    i = 0
    while True:
        with store.queue_transaction() as runs:
            runs.append(
                Run(id=f"{tag}x{i}", name=f"{tag}-{i}", command="echo " + "y" * 300,
                    env={"SEED": str(i)}, metrics={"loss": 1 / (i + 1)},
                    created_at="2026-01-01T00:00:00Z")
            )  # fmt: skip
            if len(runs) > 300:
                del runs[:100]
        i += 1


def _fork_writer(root: Path, tag: str) -> int:
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child never returns into pytest
        try:
            _writer_loop(root, tag)
        finally:
            os._exit(1)
    return pid


def _assert_queue_whole(path: Path) -> list[Run]:
    text = path.read_text("utf-8")
    assert text.startswith("[") and text.endswith("]\n"), text[-200:]
    json.loads(text)
    return load_queue(path)


def test_kill_9_mid_write_never_leaves_a_broken_queue(workspace: Workspace) -> None:
    queue = workspace.queue_path
    rng = random.Random(20260531)
    sizes = set()
    for kill in range(20):
        pid = _fork_writer(workspace.root, f"k{kill}")
        try:
            deadline = time.monotonic() + rng.uniform(0.01, 0.12)
            while time.monotonic() < deadline:
                _assert_queue_whole(queue)  # a reader mid-write sees the old or the new file
        finally:
            os.kill(pid, signal.SIGKILL)
            _, status = os.waitpid(pid, 0)
        assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL
        runs = _assert_queue_whole(queue)
        sizes.add(len(runs))
        # The kernel dropped the dead writer's lock: the next writer gets in at once.
        lock = WorkspaceLock(workspace.lock_path, timeout=2)
        with lock:
            pass
    assert len(sizes) > 1, "the writer never got to save; the test proved nothing"
    leftovers = [
        p.name
        for p in queue.parent.iterdir()
        if p.name not in ("run_queue.json", "README.md", ".gitignore")
    ]
    # A writer killed between write and rename leaves a temp file; it must be a dot-file.
    assert all(name.startswith(".run_queue.json.") and name.endswith(".tmp") for name in leftovers)


def test_leftover_temp_files_are_ignored_by_the_loader(workspace: Workspace, cli: Any) -> None:
    store = WorkspaceStore(workspace)
    from runyard.core.runs import RunSpec, add_run

    run = add_run(store, RunSpec(command="true", name="survivor"))
    # What a writer killed mid-write leaves behind: a half-written hidden temp file.
    junk = workspace.queue_path.parent / ".run_queue.json.abc123.tmp"
    junk.write_text('[\n{"id": "rdead", "name": "trunc')
    assert [r.id for r in store.runs()] == [run.id]
    listed = json.loads(cli("run", "list", "--json").stdout)
    assert [r["id"] for r in listed] == [run.id]
    add_run(store, RunSpec(command="true", name="after"))  # the next save is fine too
    assert [r.name for r in store.runs()] == ["survivor", "after"]
    # The next writer holds the lock, so no temp file can be live: it cleans them up.
    assert not junk.exists()
