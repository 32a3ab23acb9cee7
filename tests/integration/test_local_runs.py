"""Local runs end to end, as a user sees them through the real `runyard` CLI process.

Runs really launch detached on this machine; every wait polls a condition with a deadline.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import select
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

from runyard.core.check import check as core_check
from runyard.core.dispatch import DispatchOutcome
from runyard.core.dispatch import dispatch as core_dispatch
from runyard.core.fleet.transports import Fleet
from runyard.core.models import FINISHED_STATES, Run, Worker
from runyard.core.runs import RunSpec, add_run, find_run
from runyard.core.store.workspace_store import WorkspaceStore
from runyard.core.workers import add_worker

T = TypeVar("T")

CONTRACT_FIELDS = {"id", "name", "status", "worker", "exit_code", "attempts", "metrics"}
FINISHED = {s.value for s in FINISHED_STATES}


# ---------------------------------------------------------------- helpers


def wait_for(
    probe: Callable[[], T], timeout: float = 20.0, interval: float = 0.05, what: str = ""
) -> T:
    """Poll `probe` until it returns something truthy; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what or probe}")
        time.sleep(interval)


def last_word(stdout: str) -> str:
    return stdout.split()[-1]


def add(cli: Any, *args: str, ws: tuple[str, ...] = ()) -> str:
    """`runyard run add ...`; the new run's id is the last word on stdout."""
    return last_word(cli(*ws, "run", "add", *args).stdout)


def list_runs(cli: Any, *extra: str) -> dict[str, dict[str, Any]]:
    proc = cli(*extra, "run", "list", "--json")
    return {r["id"]: r for r in json.loads(proc.stdout)}


def wait_exit_codes(queue_path: Path, ids: Iterable[str], timeout: float = 30.0) -> None:
    """Wait until each run's current attempt has written its exit code on the worker."""
    ids = set(ids)

    def written() -> bool:
        records = {r["id"]: r for r in json.loads(queue_path.read_text())}
        dirs = [records[i].get("run_dir") for i in ids]
        return all(d and Path(d, "exit_code").exists() for d in dirs)

    wait_for(written, timeout, what=f"exit codes of {sorted(ids)}")


def wait_finished_cli(
    cli: Any, ids: Iterable[str], *extra: str, timeout: float = 30.0
) -> dict[str, dict[str, Any]]:
    """Run `runyard check` until every run in `ids` has finished; return `run list --json`."""
    waiting = set(ids)
    root = Path(extra[extra.index("--workspace") + 1]) if "--workspace" in extra else cli.workspace
    wait_exit_codes(root / "queues" / "run_queue.json", waiting, timeout)

    def step() -> bool:
        for result in json.loads(cli(*extra, "check", "--json").stdout):
            if result["status"] in FINISHED:
                waiting.discard(result["id"])
        return not waiting

    wait_for(step, timeout, interval=0.1, what=f"runs {sorted(waiting)} to finish")
    return list_runs(cli, *extra)


async def _with_fleet(store: WorkspaceStore, body: Callable[[Fleet], Any]) -> Any:
    fleet = Fleet(store.workspace.root, store.settings())
    try:
        return await body(fleet)
    finally:
        await fleet.close()


def dispatch_core(store: WorkspaceStore) -> list[DispatchOutcome]:
    return asyncio.run(_with_fleet(store, lambda fleet: core_dispatch(store, fleet)))


def wait_finished_core(store: WorkspaceStore, ids: Iterable[str], timeout: float = 30.0) -> None:
    ids = set(ids)
    wait_exit_codes(store.workspace.queue_path, ids, timeout)

    def step() -> bool:
        asyncio.run(_with_fleet(store, lambda fleet: core_check(store, fleet)))
        return all(r.status in FINISHED_STATES for r in store.runs() if r.id in ids)

    wait_for(step, timeout, what=f"runs {sorted(ids)} to finish")


def run_of(store: WorkspaceStore, run_id: str) -> Run:
    return find_run(store.runs(), run_id)


def run_processes(run_id: str, run_dir: str) -> dict[int, list[str]]:
    """Every live process of a run (pid -> argv): its wrapper (run dir in argv) and all it
    started (RUNYARD_RUN_ID in their environment), whatever process group they moved to."""
    env_entry = f"RUNYARD_RUN_ID={run_id}".encode()
    marker = run_dir.encode()
    found = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            environ = Path(f"/proc/{entry}/environ").read_bytes()
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        if stat.rsplit(")", 1)[-1].split()[0] == "Z":
            continue  # a zombie has ended; it only waits for its parent to reap it
        if env_entry in environ.split(b"\0") or marker in cmdline:
            found[int(entry)] = cmdline.decode("utf-8", "replace").split("\0")[:-1]
    return found


def sleepers(run_id: str, run_dir: str) -> int:
    """How many `sleep` processes the run has."""
    return sum(argv[:1] == ["sleep"] for argv in run_processes(run_id, run_dir).values())


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def set_setting(store: WorkspaceStore, old: str, new: str) -> None:
    path = store.workspace.settings_path
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new))


@pytest.fixture(autouse=True)
def _no_stray_runs(tmp_path: Path) -> Iterator[None]:
    """Whatever a failing test leaves running under its tmp_path is killed afterwards."""
    yield
    marker = str(tmp_path).encode()
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            found = marker in Path(f"/proc/{entry}/cmdline").read_bytes()
            found = found or marker in Path(f"/proc/{entry}/environ").read_bytes()
        except OSError:
            continue
        if found:
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(entry), signal.SIGKILL)


# ---------------------------------------------------------------- the main path


GOOD = (
    'for i in 1 2 3; do echo "Epoch $i/3 | loss=0.$((4 - i))"; sleep 0.05; done; '
    'echo model-bytes > "$RUNYARD_OUTPUT_DIR/model.txt"'
)


def test_init_add_dispatch_check_logs_pull(cli: Any, tmp_path: Path) -> None:
    root = tmp_path / "fresh"
    out = cli("init", str(root)).stdout
    assert "workspace ready" in out
    for name in ("runyard.yaml", "workers.yaml", "queues/run_queue.json"):
        assert (root / name).is_file()
    ws = ("--workspace", str(root))
    cli(*ws, "worker", "add", "box", "--local", "--slots", "2")

    verify = "grep -qx model-bytes outputs/model.txt"
    good = add(cli, "--name", "good", "--command", GOOD, "--verify", verify, ws=ws)
    bad = add(cli, "--name", "bad", "--command", "echo about to fail; exit 7", ws=ws)
    assert good != bad
    assert {r["status"] for r in list_runs(cli, *ws).values()} == {"pending"}

    dispatched = json.loads(cli(*ws, "dispatch", "--json").stdout)
    assert {d["id"] for d in dispatched} == {good, bad}
    assert all(d["ok"] and isinstance(d["pid"], int) for d in dispatched)

    runs = wait_finished_cli(cli, [good, bad], *ws)
    g, b = runs[good], runs[bad]
    assert set(g) >= CONTRACT_FIELDS
    assert (g["name"], g["status"], g["exit_code"], g["attempts"]) == ("good", "done", 0, 1)
    assert g["metrics"] == {"epoch": 3.0, "loss": 0.1}
    assert g["worker"] in ("local", "box")
    assert (b["name"], b["status"], b["exit_code"], b["attempts"]) == ("bad", "failed", 7, 1)

    log = cli(*ws, "logs", good).stdout
    assert log == "Epoch 1/3 | loss=0.3\nEpoch 2/3 | loss=0.2\nEpoch 3/3 | loss=0.1\n"
    assert cli(*ws, "logs", good, "-n", "1").stdout == "Epoch 3/3 | loss=0.1\n"
    assert cli(*ws, "logs", "bad").stdout == "about to fail\n"  # by name works too

    pulled = json.loads(cli(*ws, "pull", good, "--json").stdout)
    assert len(pulled) == 1 and pulled[0]["verified"] is True and pulled[0]["problems"] == []
    result = root / "results" / good
    manifest = json.loads((result / "manifest.json").read_text())
    assert manifest["verified"] is True
    assert manifest["verify"]["passed"] is True
    paths = {f["path"] for f in manifest["files"]}
    assert {"log", "outputs/model.txt"} <= paths
    for entry in manifest["files"]:
        local = sha256(result / entry["path"])
        assert entry["sha256_worker"] == entry["sha256_local"] == local
        assert entry["size"] == (result / entry["path"]).stat().st_size
    assert (result / "outputs" / "model.txt").read_text() == "model-bytes\n"
    assert json.loads((result / "metrics.json").read_text()) == {"epoch": 3.0, "loss": 0.1}
    shown = json.loads(cli(*ws, "run", "show", good, "--json").stdout)
    assert shown["pull"]["verified"] is True


def test_pull_with_a_failing_verify_command_is_not_verified(
    cli: Any, store: WorkspaceStore
) -> None:
    run = add_run(
        store,
        RunSpec(
            command='echo wrong > "$RUNYARD_OUTPUT_DIR/answer.txt"',
            name="unverified",
            verify_command="grep -qx right outputs/answer.txt",
        ),
    )
    dispatch_core(store)
    wait_finished_core(store, [run.id])
    proc = cli("pull", run.id, check=False)
    assert proc.returncode == 1, proc
    assert "NOT VERIFIED" in proc.stdout
    manifest = json.loads((store.workspace.result_dir(run.id) / "manifest.json").read_text())
    assert manifest["verified"] is False
    assert manifest["verify"]["passed"] is False
    assert manifest["problems"] == [
        "verify command failed: `grep -qx right outputs/answer.txt` exited 1 with no output"
    ]
    # The transfer itself was fine: the digests still match on both sides.
    assert all(f["sha256_worker"] == f["sha256_local"] for f in manifest["files"])
    record = run_of(store, run.id).pull
    assert record is not None and record.verified is False


def test_pull_of_a_declared_output_glob_that_matched_nothing_exits_1(
    cli: Any, store: WorkspaceStore, tmp_path: Path
) -> None:
    """Each declared --outputs glob must match a file: relative ones in the run's workdir
    (named in the problem), absolute ones anywhere; the pull is NOT VERIFIED otherwise."""
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "eval.json").write_text("{}\n")
    run = add_run(
        store,
        RunSpec(
            command="mkdir -p ckpt && echo w > ckpt/a.pt",
            name="promised",
            outputs=["ckpt/*.pt", f"{elsewhere}/*.json", "nomatch/*.bin", f"{elsewhere}/*.csv"],
        ),
    )
    dispatch_core(store)
    wait_finished_core(store, [run.id])
    proc = cli("pull", run.id, check=False)
    assert proc.returncode == 1, proc
    assert "NOT VERIFIED" in proc.stdout
    workdir = run_of(store, run.id).workdir or str(store.workspace.root)
    expected = [
        f"--outputs 'nomatch/*.bin' matched no file under {workdir} (the run's workdir) on local",
        f"--outputs '{elsewhere}/*.csv' matched no file on local",
    ]
    for problem in expected:
        assert f"  ! {problem}" in proc.stdout
    as_json = json.loads(cli("pull", run.id, "--json", check=False).stdout)
    assert as_json[0]["verified"] is False and as_json[0]["problems"] == expected
    manifest = json.loads((store.workspace.result_dir(run.id) / "manifest.json").read_text())
    assert manifest["verified"] is False and manifest["problems"] == expected
    paths = {f["path"] for f in manifest["files"]}
    assert {"files/ckpt/a.pt", f"files{elsewhere}/eval.json"} <= paths


def test_pull_names_a_missing_workdir_for_its_declared_globs(
    store: WorkspaceStore, tmp_path: Path
) -> None:
    from runyard.core.pull import pull_run

    workdir = tmp_path / "scratch"
    workdir.mkdir()
    run = add_run(
        store,
        RunSpec(
            command="echo w > model.pt",
            name="vanished",
            workdir=str(workdir),
            outputs=["*.pt"],
        ),
    )
    dispatch_core(store)
    wait_finished_core(store, [run.id])
    (workdir / "model.pt").unlink()
    workdir.rmdir()
    outcome = asyncio.run(_with_fleet(store, lambda fleet: pull_run(store, fleet, run.id)))
    assert outcome.verified is False
    assert outcome.problems == [
        f"--outputs '*.pt': the run's workdir {workdir} does not exist on local, "
        "so nothing could match"
    ]


def test_pull_notices_a_file_changed_during_transfer(
    store: WorkspaceStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A file whose bytes differ after the copy fails verification (the manifest says so)."""
    from runyard.core import pull as pull_module

    run = add_run(store, RunSpec(command='echo hi > "$RUNYARD_OUTPUT_DIR/a.txt"', name="tamper"))
    dispatch_core(store)
    wait_finished_core(store, [run.id])
    real_fetch = pull_module.fetch

    async def corrupting_fetch(fleet: Any, worker: Any, files: Any, destination: Path) -> None:
        await real_fetch(fleet, worker, files, destination)
        (destination / "outputs" / "a.txt").write_text("tampered\n")

    monkeypatch.setattr(pull_module, "fetch", corrupting_fetch)
    outcome = asyncio.run(
        _with_fleet(store, lambda fleet: pull_module.pull_run(store, fleet, run.id))
    )
    assert outcome.verified is False
    assert any("a.txt: sha256 differs" in p for p in outcome.problems)


def test_a_pull_of_a_running_run_is_never_verified(store: WorkspaceStore) -> None:
    """Its files may be half-written even when both digests agree."""
    from runyard.core.control import cancel_run
    from runyard.core.pull import pull_run

    run = add_run(
        store, RunSpec(command='echo hi > "$RUNYARD_OUTPUT_DIR/a.txt"; sleep 300', name="busy")
    )
    dispatch_core(store)
    wait_for(lambda: (store.workspace.root / "outputs" / "busy" / "a.txt").exists(), what="a.txt")
    try:
        outcome = asyncio.run(_with_fleet(store, lambda fleet: pull_run(store, fleet, run.id)))
        assert all(f.ok for f in outcome.files)
        assert outcome.verified is False
        assert outcome.problems == [
            "the run is still running: its outputs may change; pull again once it ends"
        ]
    finally:
        asyncio.run(_with_fleet(store, lambda fleet: cancel_run(store, fleet, run.id)))


def test_logs_follow_streams_a_running_run_to_its_end(store: WorkspaceStore) -> None:
    gate = store.workspace.root / "release-the-run"
    command = (
        "echo tick 1; echo tick 2; "
        f"while [ ! -e {gate.name} ]; do sleep 0.02; done; "
        "echo tick 3; sleep 0.2; echo tick 4"
    )
    run = add_run(store, RunSpec(command=command, name="ticker"))
    dispatch_core(store)
    run_dir = Path(run_of(store, run.id).run_dir or "")
    env = {**os.environ, "RUNYARD_WORKSPACE": str(store.workspace.root)}
    follower = subprocess.Popen(
        [sys.executable, "-m", "runyard", "logs", run.id, "-f"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
    )  # fmt: skip
    try:
        assert follower.stdout is not None
        fd = follower.stdout.fileno()
        early = b""
        deadline = time.monotonic() + 20
        while b"tick 2\n" not in early:
            assert time.monotonic() < deadline, f"the follower printed only {early!r}"
            if select.select([fd], [], [], 0.1)[0]:
                chunk = os.read(fd, 4096)
                assert chunk, "the follower ended early"
                early += chunk
        assert early == b"tick 1\ntick 2\n"
        # The run is held at the gate: the follower must still be following it.
        assert not (run_dir / "exit_code").exists()
        assert follower.poll() is None
        gate.touch()
        rest, err = follower.communicate(timeout=20)
    finally:
        if follower.poll() is None:
            follower.kill()
            follower.wait()
    assert follower.returncode == 0, err
    assert rest == b"tick 3\ntick 4\n"
    # Nobody ran `check`: the follower saw the run end on its worker by itself.
    assert (run_dir / "exit_code").read_text().strip() == "0"
    assert run_of(store, run.id).status.value == "running"  # the queue was not updated


# ---------------------------------------------------------------- cancel and lost


@pytest.mark.parametrize(
    "command",
    [
        "sleep 300",
        "sleep 300 & sleep 300; wait",
        "(sleep 300 & sleep 300) & bash -c 'sleep 300'; wait",
        "trap '' TERM; sleep 300 & sleep 300; wait",  # deaf to SIGTERM: SIGKILL after the grace
    ],
    ids=["sleep", "children", "grandchildren", "ignores-term"],
)
def test_cancel_leaves_no_process_behind(cli: Any, store: WorkspaceStore, command: str) -> None:
    set_setting(store, "cancel_grace_seconds: 5", "cancel_grace_seconds: 0.5")
    run = add_run(store, RunSpec(command=command, name="victim"))
    dispatch_core(store)
    current = run_of(store, run.id)
    assert current.status.value == "running" and current.run_dir
    wait_for(
        lambda: sleepers(run.id, current.run_dir or "") == command.count("sleep 300"),
        what="every sleep of the run to start",
    )
    assert any(
        current.run_dir in " ".join(a) for a in run_processes(run.id, current.run_dir).values()
    )
    proc = cli("run", "cancel", run.id)
    assert f"cancelled victim {run.id}" in proc.stdout
    wait_for(
        lambda: not run_processes(run.id, current.run_dir or ""),
        timeout=10,
        what="every process of the cancelled run to be gone",
    )
    assert run_of(store, run.id).status.value == "cancelled"
    # A later check leaves a cancelled run cancelled.
    asyncio.run(_with_fleet(store, lambda fleet: core_check(store, fleet)))
    assert run_of(store, run.id).status.value == "cancelled"


def test_cancel_of_a_pending_run_needs_no_worker(cli: Any, store: WorkspaceStore) -> None:
    run = add_run(store, RunSpec(command="sleep 300", name="never"))
    cli("run", "cancel", run.id)
    assert run_of(store, run.id).status.value == "cancelled"
    assert dispatch_core(store) == []
    proc = cli("run", "cancel", run.id, check=False)
    assert proc.returncode == 2 and "nothing to cancel" in proc.stderr


def test_killed_run_becomes_lost_and_retry_runs_attempt_two(
    cli: Any, store: WorkspaceStore
) -> None:
    command = (
        'if [ "$RUNYARD_ATTEMPT" = 1 ]; then sleep 300; fi; '
        'echo "attempt $RUNYARD_ATTEMPT ok loss=0.25"'
    )
    run_id = add(cli, "--name", "fragile", "--command", command)
    dispatch_core(store)
    first = run_of(store, run_id)
    assert first.run_dir and first.run_dir.endswith(f"/{run_id}/1")
    first_dir = Path(first.run_dir)
    pid = int(wait_for(lambda: (first_dir / "pid").read_text().strip()))
    wait_for(lambda: sleepers(run_id, first.run_dir or "") == 1)
    os.killpg(os.getpgid(pid), signal.SIGKILL)
    wait_for(lambda: not run_processes(run_id, first.run_dir or ""), what="the kill")

    cli("check")
    lost = list_runs(cli)[run_id]
    assert lost["status"] == "lost"
    assert lost["exit_code"] is None
    assert "without an exit code" in (lost["error"] or "")
    assert not (first_dir / "exit_code").exists()

    out = cli("run", "retry", run_id).stdout
    assert "attempt 2" in out
    assert run_of(store, run_id).status.value == "pending"
    dispatch_core(store)
    runs = wait_finished_cli(cli, [run_id])
    done = runs[run_id]
    assert (done["status"], done["exit_code"], done["attempts"]) == ("done", 0, 2)
    assert done["metrics"] == {"loss": 0.25}
    second = run_of(store, run_id)
    assert second.run_dir and second.run_dir.endswith(f"/{run_id}/2")
    assert Path(second.run_dir) != first_dir and first_dir.is_dir()
    assert second.history and second.history[0]["status"] == "lost"
    assert second.history[0]["run_dir"] == str(first_dir)
    assert cli("logs", run_id).stdout == "attempt 2 ok loss=0.25\n"


def test_retry_policy_requeues_a_lost_run_by_itself(store: WorkspaceStore) -> None:
    set_setting(store, "retry_lost: 0", "retry_lost: 1")
    command = 'if [ "$RUNYARD_ATTEMPT" = 1 ]; then sleep 300; fi; echo second try'
    run = add_run(store, RunSpec(command=command, name="self-healing"))
    dispatch_core(store)
    first = run_of(store, run.id)
    assert first.run_dir
    wait_for(lambda: sleepers(run.id, first.run_dir or "") == 1)
    os.killpg(os.getpgid(first.pid or 0), signal.SIGKILL)
    wait_for(lambda: not run_processes(run.id, first.run_dir or ""), what="the kill")
    asyncio.run(_with_fleet(store, lambda fleet: core_check(store, fleet)))
    requeued = run_of(store, run.id)
    assert requeued.status.value == "pending"
    assert [h["status"] for h in requeued.history] == ["lost"]
    dispatch_core(store)
    wait_finished_core(store, [run.id])
    done = run_of(store, run.id)
    assert (done.status.value, done.attempts, done.exit_code) == ("done", 2, 0)


# ---------------------------------------------------------------- the CLI contract


def test_run_add_prints_the_id_last_and_json_outputs_are_one_document(
    cli: Any, store: WorkspaceStore
) -> None:
    proc = cli("run", "add", "--command", "echo hi loss=1.5", "--project", "demo")
    run_id = last_word(proc.stdout)
    assert proc.stdout.endswith(run_id + "\n")
    assert run_of(store, run_id).command == "echo hi loss=1.5"

    listed = json.loads(cli("run", "list", "--json").stdout)
    assert isinstance(listed, list) and len(listed) == 1
    assert set(listed[0]) >= CONTRACT_FIELDS
    assert listed[0]["id"] == run_id and listed[0]["status"] == "pending"
    assert listed[0]["attempts"] == 0 and listed[0]["metrics"] == {}
    assert listed[0]["exit_code"] is None and listed[0]["worker"] is None

    dry = json.loads(cli("dispatch", "--dry-run", "--json").stdout)
    assert [(d["id"], d["worker"], d["dry_run"]) for d in dry] == [(run_id, "local", True)]
    assert run_of(store, run_id).status.value == "pending"  # a dry run changes nothing
    assert json.loads(cli("dispatch", "--json").stdout)[0]["id"] == run_id
    wait_for(lambda: (Path(run_of(store, run_id).run_dir or "/nonexistent") / "exit_code").exists())
    checked = json.loads(cli("check", "--json").stdout)
    assert [(c["id"], c["status"], c["exit_code"]) for c in checked] == [(run_id, "done", 0)]
    shown = json.loads(cli("run", "show", run_id, "--json").stdout)
    assert set(shown) >= CONTRACT_FIELDS and shown["metrics"] == {"loss": 1.5}
    workers = json.loads(cli("worker", "list", "--json").stdout)
    assert [w["name"] for w in workers] == ["local"]
    done = json.loads(cli("run", "list", "--status", "done", "--json").stdout)
    assert [r["id"] for r in done] == [run_id]
    assert json.loads(cli("run", "list", "--status", "failed", "--json").stdout) == []


def test_duplicate_run_names_are_rejected_with_exit_2(cli: Any, store: WorkspaceStore) -> None:
    cli("run", "add", "--name", "exp-1", "--command", "true")
    before = store.workspace.queue_path.read_bytes()
    proc = cli("run", "add", "--name", "exp-1", "--command", "false", check=False)
    assert proc.returncode == 2
    assert proc.stdout == ""
    assert len(proc.stderr.splitlines()) == 1 and "exp-1" in proc.stderr
    assert store.workspace.queue_path.read_bytes() == before
    taken_id = store.runs()[0].id
    proc = cli("run", "add", "--name", taken_id, "--command", "true", check=False)
    assert proc.returncode == 2 and "is another run's id" in proc.stderr
    assert store.workspace.queue_path.read_bytes() == before


def test_bad_input_exits_2(cli: Any) -> None:
    for args in (
        ("run", "add", "--command", "true", "--name", "has space"),
        ("run", "add", "--command", "true", "--env", "1X=2"),
        ("run", "add", "--command", "true", "--worker", "ghost"),
        ("run", "list", "--status", "finished"),
        ("run", "show", "rnothere"),
        ("worker", "trust", "local"),
        ("logs", "rnothere", "-n", "-5"),
        ("worker", "list", "--pool", "nope"),
        ("worker", "status", "--pool", "nope"),
        ("alerts", "--pool", "nope"),
        ("run", "add", "--command", "true", "--pool", ""),
        ("worker", "add", "box3", "--host", " "),
        ("worker", "add", "box2", "--host", "h", "--gpus", "-1"),
    ):
        proc = cli(*args, check=False)
        assert proc.returncode == 2, (args, proc)
        assert len(proc.stderr.splitlines()) == 1, (args, proc.stderr)
    proc = cli("worker", "add", "box2", "--host", "h", "--gpus", "-1", check=False)
    assert proc.stderr == "runyard: --gpus -1: must be at least 0\n"  # the flag, not the file


def test_a_run_for_a_pool_without_workers_is_queued_with_a_warning(cli: Any) -> None:
    proc = cli("run", "add", "-c", "true", "--pool", "later")
    assert proc.stdout.startswith("queued ")
    assert "no worker is in pool 'later' yet" in proc.stderr


def test_worker_status_exits_1_when_a_worker_is_down_in_either_form(cli: Any) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # closed again below: connections are refused
    cli("worker", "add", "gone", "--host", "127.0.0.1", "--port", str(port))
    for form in ((), ("--json",)):
        proc = cli("worker", "status", *form, check=False)
        assert proc.returncode == 1, (form, proc)
    [gone] = [s for s in json.loads(proc.stdout) if s["name"] == "gone"]
    assert gone["reachable"] is False and gone["error"]


def test_priority_order_is_visible_through_dispatch(cli: Any, store: WorkspaceStore) -> None:
    # Queued within the same second: equal priorities must still go oldest first.
    names = [("low", 0), ("high", 5), ("mid", 1), ("mid-later", 1)]
    for name, priority in names:
        add_run(store, RunSpec(command="true", name=name, priority=priority))
    order = []
    for _ in names:
        dispatched = json.loads(cli("dispatch", "--json").stdout)
        assert len(dispatched) == 1  # one slot: one run at a time
        order.append(dispatched[0]["name"])
        assert dispatch_core(store) == []  # the slot is taken until the run ends
        wait_finished_core(store, [dispatched[0]["id"]])
    assert order == ["high", "mid", "mid-later", "low"]


def test_dispatch_honours_a_pinned_worker(cli: Any, store: WorkspaceStore) -> None:
    add_worker(store, Worker(worker_id="second", kind="local"))
    pinned = add(cli, "--name", "pinned", "--worker", "second", "--command", "true")
    free = add_run(store, RunSpec(command="true", name="free")).id
    dispatched = {d["id"]: d["worker"] for d in json.loads(cli("dispatch", "--json").stdout)}
    assert dispatched == {pinned: "second", free: "local"}
    wait_finished_core(store, [pinned, free])
    assert run_of(store, pinned).worker == "second"
    assert run_of(store, pinned).status.value == "done"


# ---------------------------------------------------------------- secrets


def _files_containing(root: Path, needle: bytes) -> list[Path]:
    hits = []
    for path in root.rglob("*"):
        if path.is_file() and not path.is_symlink() and needle in path.read_bytes():
            hits.append(path)
    return hits


def test_a_secret_reaches_the_run_and_no_workspace_file(
    cli: Any, store: WorkspaceStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    secret = f"tok-{uuid.uuid4().hex}-$'\"`;|"
    monkeypatch.setenv("MY_TOKEN", secret)
    command = 'printf %s "$TOKEN" > "$RUNYARD_OUTPUT_DIR/token"; echo token is ${#TOKEN} long'
    add_out = cli(
        "run", "add", "--name", "secretive", "--env", "TOKEN=${secret:MY_TOKEN}",
        "--env", "PLAIN=visible", "--command", command,
    )  # fmt: skip
    run_id = last_word(add_out.stdout)
    outputs = [add_out]
    outputs.append(cli("dispatch"))
    runs = wait_finished_cli(cli, [run_id])
    assert runs[run_id]["status"] == "done"
    root = store.workspace.root
    token_file = root / "outputs" / "secretive" / "token"
    assert token_file.read_text() == secret

    logs = cli("logs", run_id)
    assert logs.stdout == f"token is {len(secret)} long\n"
    outputs += [logs, cli("run", "show", run_id, "--json"), cli("pull", run_id)]
    for proc in outputs:
        assert secret not in proc.stdout and secret not in proc.stderr

    allowed = {token_file, root / "results" / run_id / "outputs" / "token"}
    leaks = [p for p in _files_containing(root, secret.encode()) if p not in allowed]
    assert leaks == []
    assert (root / "results" / run_id / "outputs" / "token").read_text() == secret
    # The reference, not the value, is what the queue keeps.
    queue = store.workspace.queue_path.read_text()
    assert "${secret:MY_TOKEN}" in queue and secret not in queue
    assert secret not in store.workspace.events_path.read_text()
    run_dir = Path(run_of(store, run_id).run_dir or "")
    for name in ("env.sh", "command", "run.sh", "log"):
        assert secret not in (run_dir / name).read_text()
    assert "PLAIN=visible" in (run_dir / "env.sh").read_text()


def test_a_missing_secret_is_an_input_error_and_nothing_is_dispatched(
    cli: Any, store: WorkspaceStore, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("NOT_SET_ANYWHERE", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.env to fall back on
    add_worker(store, Worker(worker_id="second", kind="local"))
    plain = add_run(store, RunSpec(command="true", name="plain", priority=1)).id
    needy = add(cli, "--env", "K=${secret:NOT_SET_ANYWHERE}", "--command", "true")
    proc = cli("dispatch", check=False)
    assert proc.returncode == 2
    assert "NOT_SET_ANYWHERE" in proc.stderr and len(proc.stderr.splitlines()) == 1
    assert {run_of(store, i).status.value for i in (plain, needy)} == {"pending"}
    assert not (store.workspace.state_dir / "runs").exists()  # nothing was launched
    # ... and the events log does not claim a dispatch that never happened.
    assert [e for e in store.events.read() if e["event"] == "run.status"] == []
