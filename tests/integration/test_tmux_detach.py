"""Runs detached in tmux (profile `detach_primitive: tmux`), end to end on real workers.

The operator's view: the run lives in a tmux session named `runyard-<id>-<attempt>` that
shows its log, `check` follows it like any run, cancel ends it, and its secrets reach it
even through a tmux server that was already running. A worker without tmux still runs it.
Every test talks to a private tmux server (TMUX_TMPDIR) that is killed at the end.
"""

from __future__ import annotations

import asyncio
import os
import shlex
import shutil
import subprocess
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from test_local_runs import (
    _no_stray_runs,  # noqa: F401  (autouse: kills whatever a failing test leaves running)
    _with_fleet,
    dispatch_core,
    run_of,
    run_processes,
    set_setting,
    wait_finished_core,
    wait_for,
)
from test_remote_runs import (
    TOKEN_FROM_SECRET,
    _is,
    fleet_on,
    secret_in_env,
    token_matches,
    wait_until,
)

from fakes.ssh_server import LoopbackSSHServer
from runyard.core.attach import attach_script, tmux_session_name
from runyard.core.check import check as core_check
from runyard.core.control import read_log
from runyard.core.dispatch import dispatch
from runyard.core.fleet.transports import Fleet
from runyard.core.models import RunStatus, Worker
from runyard.core.profiles import shipped_profile_text
from runyard.core.protocol import TMUX_PANE
from runyard.core.runs import RunSpec, add_run, find_run
from runyard.core.store.workspace_store import WorkspaceStore
from runyard.core.workers import add_worker
from runyard.core.workspace import Workspace

TMUX = shutil.which("tmux") or "tmux"  # found once: one test takes tmux off PATH

pytestmark = [
    pytest.mark.timeout(120),
    pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed"),
]


# ---------------------------------------------------------------- helpers


@pytest.fixture
def tmux_dir(monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A private tmux socket directory for this test; its server is killed afterwards.

    Not under tmp_path: a socket path must stay under ~100 bytes.
    """
    directory = Path(tempfile.mkdtemp(prefix="runyard-tmux-"))
    monkeypatch.setenv("TMUX_TMPDIR", str(directory))
    monkeypatch.delenv("TMUX", raising=False)  # never the tmux this test may run inside
    yield directory
    env = {k: v for k, v in os.environ.items() if k != "TMUX"}
    subprocess.run(
        [TMUX, "kill-server"], env={**env, "TMUX_TMPDIR": str(directory)}, capture_output=True
    )
    shutil.rmtree(directory, ignore_errors=True)


def tmux(*args: str, tmpdir: Path | None = None) -> subprocess.CompletedProcess[str]:
    """Run tmux against the test's private server (TMUX_TMPDIR comes from the environment),
    or against the one under `tmpdir` (a simulated box's own)."""
    env = None if tmpdir is None else {**os.environ, "TMUX_TMPDIR": str(tmpdir)}
    return subprocess.run([TMUX, *args], env=env, capture_output=True, text=True, timeout=10)


def sessions() -> set[str]:
    proc = tmux("list-sessions", "-F", "#{session_name}")
    return set(proc.stdout.split()) if proc.returncode == 0 else set()


def use_tmux(store: WorkspaceStore, platform: str = "local") -> None:
    """What an operator does: copy the shipped profile into the workspace, set tmux."""
    text = shipped_profile_text(platform)
    edited = text.replace("detach_primitive: setsid", "detach_primitive: tmux", 1)
    assert edited != text
    (store.workspace.profiles_dir / f"{platform}.yaml").write_text(edited)


def check_status(store: WorkspaceStore, run_id: str) -> str:
    asyncio.run(_with_fleet(store, lambda fleet: core_check(store, fleet)))
    return run_of(store, run_id).status.value


def files_containing(root: Path, needle: bytes) -> list[Path]:
    """Regular files under `root` holding `needle` (sockets and FIFOs are not files)."""
    return [p for p in root.rglob("*") if p.is_file() and needle in p.read_bytes()]


def processes_whose_argv_holds(needle: bytes) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and needle in (entry / "cmdline").read_bytes():
                found.append(int(entry.name))
        except OSError:
            continue
    return found


# ---------------------------------------------------------------- local worker


def test_a_tmux_run_lives_in_its_session_and_check_follows_it(
    store: WorkspaceStore, tmux_dir: Path
) -> None:
    use_tmux(store)
    gate = store.workspace.root / "gate"
    command = (
        f"echo hello from tmux; while [ ! -e {gate} ]; do sleep 0.05; done; echo bye loss=0.25"
    )
    run = add_run(store, RunSpec(command=command, name="in-tmux"))
    [outcome] = dispatch_core(store)
    assert outcome.ok and outcome.pid and outcome.warning is None

    started = run_of(store, run.id)
    session = f"runyard-{run.id}-1"
    assert tmux_session_name(started) == session  # where the console's attach key looks
    assert session in sessions()
    assert check_status(store, run.id) == "running"
    # The pane shows the log to whoever attaches; the run lives in a session of its own, off
    # the pane's terminal, so Ctrl-C or Ctrl-\\ typed into the pane stops nothing.
    assert started.pid is not None and os.getsid(started.pid) == started.pid
    pane_pid = int(tmux("display-message", "-p", "-t", session, "#{pane_pid}").stdout)
    assert pane_pid != started.pid
    wait_for(
        lambda: "hello from tmux" in tmux("capture-pane", "-p", "-t", session).stdout,
        what="the log in the pane",
    )
    tmux("send-keys", "-t", session, "C-c")
    tmux("send-keys", "-t", session, "C-\\")
    time.sleep(0.3)  # signals are delivered at once; nothing else to wait on
    assert check_status(store, run.id) == "running" and session in sessions()

    gate.touch()
    wait_finished_core(store, [run.id])
    done = run_of(store, run.id)
    assert (done.status.value, done.exit_code, done.metrics) == ("done", 0, {"loss": 0.25})
    assert Path(done.run_dir or "", "log").read_text() == "hello from tmux\nbye loss=0.25\n"
    wait_for(lambda: session not in sessions(), timeout=10, what="the session to end")


def test_a_failing_tmux_run_reports_its_exit_code(store: WorkspaceStore, tmux_dir: Path) -> None:
    use_tmux(store)
    run = add_run(store, RunSpec(command="echo about to fail >&2; exit 7", name="bad"))
    dispatch_core(store)
    wait_finished_core(store, [run.id])
    failed = run_of(store, run.id)
    assert (failed.status.value, failed.exit_code) == ("failed", 7)
    assert Path(failed.run_dir or "", "log").read_text() == "about to fail\n"


@pytest.mark.parametrize("server_running", [True, False], ids=["server-running", "no-server"])
def test_a_secret_reaches_a_tmux_run_and_no_file(
    store: WorkspaceStore,
    tmux_dir: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    server_running: bool,
) -> None:
    use_tmux(store)
    if server_running:
        # A server that was already running: a new session gets ITS environment, not ours.
        assert tmux("new-session", "-d", "-s", "other").returncode == 0
    # From ~/.env, so the only way the value reaches the worker is runyard's secret channel.
    secret = f"tok-{uuid.uuid4().hex}-$'\"` ;|x y"
    home = tmp_path / "home"
    home.mkdir()
    (home / ".env").write_text(f'RUNYARD_TMUX_SECRET="{secret}"\n')
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("RUNYARD_TMUX_SECRET", raising=False)
    gate = store.workspace.root / "gate"
    command = f"{token_matches(secret)}; while [ ! -e {gate} ]; do sleep 0.05; done"
    env = {"TOKEN": "${secret:RUNYARD_TMUX_SECRET}", "PLAIN": "visible"}
    run = add_run(store, RunSpec(command=command, name="secretive", env=env))
    dispatch_core(store)
    session = f"runyard-{run.id}-1"
    assert session in sessions()
    run_dir = Path(run_of(store, run.id).run_dir or "")
    wait_for(lambda: (run_dir / "log").read_text(), what="the run's first line")
    # While it runs: on no command line (ps), and not in the tmux server's environment.
    assert processes_whose_argv_holds(secret.encode()) == []
    assert secret not in tmux("show-environment", "-g").stdout
    gate.touch()
    wait_finished_core(store, [run.id])
    assert run_of(store, run.id).status.value == "done"
    assert (run_dir / "log").read_text() == "matched\n"
    assert files_containing(store.workspace.root, secret.encode()) == []
    assert not (run_dir / "secrets.fifo").exists()
    assert "PLAIN=visible" in (run_dir / "env.sh").read_text()
    if server_running:
        assert "other" in sessions()  # the operator's own session is left alone


def test_cancel_ends_a_tmux_run_and_its_session(
    cli: Any, store: WorkspaceStore, tmux_dir: Path
) -> None:
    set_setting(store, "cancel_grace_seconds: 5", "cancel_grace_seconds: 0.5")
    use_tmux(store)
    run = add_run(store, RunSpec(command="sleep 300 & sleep 300; wait", name="victim"))
    dispatch_core(store)
    current = run_of(store, run.id)
    run_dir = current.run_dir or ""
    session = f"runyard-{run.id}-1"
    assert session in sessions()
    wait_for(
        lambda: sum(a[:1] == ["sleep"] for a in run_processes(run.id, run_dir).values()) == 2,
        what="both sleeps to start",
    )
    assert check_status(store, run.id) == "running"

    assert f"cancelled victim {run.id}" in cli("run", "cancel", run.id).stdout
    wait_for(lambda: not run_processes(run.id, run_dir), timeout=10, what="the processes to end")
    wait_for(lambda: session not in sessions(), timeout=10, what="the session to end")
    assert check_status(store, run.id) == "cancelled"


def test_paths_with_spaces_and_quotes_work_in_tmux(store: WorkspaceStore, tmux_dir: Path) -> None:
    use_tmux(store)
    # The session's command goes through the server's default-shell: make it a POSIX sh.
    posix_sh = shutil.which("dash") or "/bin/sh"
    started = tmux(
        "new-session", "-d", "-s", "other", ";", "set-option", "-g", "default-shell", posix_sh
    )
    assert started.returncode == 0, started.stderr
    odd = 'it\'s a "work" space $HOME `x` \\ ;'
    add_worker(store, Worker(worker_id="odd", kind="local", workspace=f"ws {odd}"))
    workdir = store.workspace.root / f"ws {odd}" / f"code {odd}"
    workdir.mkdir(parents=True)
    (workdir / "data.txt").write_text("data\n")
    command = (
        'cat data.txt; pwd; echo "$RUNYARD_OUTPUT_DIR"; '
        "until [ -e gate ]; do sleep 0.05; done; exit 5"
    )
    run = add_run(
        store, RunSpec(command=command, name="odd-1", worker="odd", workdir=f"code {odd}")
    )
    [outcome] = dispatch_core(store)
    assert outcome.ok and outcome.warning is None
    assert f"runyard-{run.id}-1" in sessions()
    assert check_status(store, run.id) == "running"
    (workdir / "gate").touch()
    wait_finished_core(store, [run.id])
    finished = run_of(store, run.id)
    assert (finished.status.value, finished.exit_code) == ("failed", 5)
    run_dir = Path(finished.run_dir or "")
    assert run_dir.is_relative_to(store.workspace.root / f"ws {odd}")
    output_dir = store.workspace.root / f"ws {odd}" / "outputs" / "odd-1"
    assert (run_dir / "log").read_text() == f"data\n{workdir}\n{output_dir}\n"


def test_without_tmux_on_the_worker_the_run_starts_with_setsid(
    cli: Any, store: WorkspaceStore, tmux_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Every tool on PATH but tmux.
    bin_dir = tmp_path / "bin-without-tmux"
    bin_dir.mkdir()
    for directory in os.environ["PATH"].split(os.pathsep):
        if not os.path.isdir(directory):
            continue
        for name in os.listdir(directory):
            target = Path(directory, name)
            link = bin_dir / name
            if name != "tmux" and not link.exists() and os.access(target, os.X_OK):
                link.symlink_to(target)
    monkeypatch.setenv("PATH", str(bin_dir))
    assert shutil.which("tmux") is None
    use_tmux(store)
    run = add_run(store, RunSpec(command="echo still ran", name="no-tmux"))

    proc = cli("dispatch")
    assert f"dispatched {run.id}" in proc.stdout
    assert "tmux is not installed on the worker" in proc.stderr  # the operator is told why
    wait_finished_core(store, [run.id])
    done = run_of(store, run.id)
    assert (done.status.value, done.exit_code) == ("done", 0)
    assert Path(done.run_dir or "", "log").read_text() == "still ran\n"
    running = [
        e for e in store.events.read() if e["event"] == "run.status" and e["new"] == "running"
    ]
    assert "setsid" in running[0]["warning"]
    assert not list(tmux_dir.rglob("default"))  # no tmux server was ever started


def test_a_tmux_that_cannot_start_a_session_falls_back_to_setsid(
    store: WorkspaceStore, tmux_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    broken = tmp_path / "broken-bin"
    broken.mkdir()
    (broken / "tmux").write_text("#!/bin/sh\necho 'no sessions for you' >&2\nexit 1\n")
    (broken / "tmux").chmod(0o755)
    monkeypatch.setenv("PATH", f"{broken}{os.pathsep}{os.environ['PATH']}")
    use_tmux(store)
    run = add_run(store, RunSpec(command="echo still ran", name="broken-tmux"))
    [outcome] = dispatch_core(store)
    assert outcome.ok and outcome.pid
    assert outcome.warning is not None and "no sessions for you" in outcome.warning
    assert any("no sessions for you" in w for w in store.warnings)
    wait_finished_core(store, [run.id])
    assert run_of(store, run.id).status.value == "done"
    assert Path(run_of(store, run.id).run_dir or "", "log").read_text() == "still ran\n"


# ---------------------------------------------------------------- SSH worker


@pytest.fixture
async def vast_like(
    workspace: Workspace, client_home: Path, tmp_path: Path, tmux_dir: Path
) -> AsyncIterator[tuple[WorkspaceStore, Fleet, LoopbackSSHServer]]:
    """An SSH worker on the shipped Vast profile (detach_primitive: tmux), no override."""
    async with (
        LoopbackSSHServer(home=tmp_path / "gpu1", env={"TMUX_TMPDIR": str(tmux_dir)}) as server,
        fleet_on(workspace, client_home, server, platform="vast") as (store, fleet),
    ):
        yield store, fleet, server


async def test_an_ssh_worker_on_the_vast_profile_runs_in_tmux(
    vast_like: tuple[WorkspaceStore, Fleet, LoopbackSSHServer], monkeypatch: pytest.MonkeyPatch
) -> None:
    store, fleet, server = vast_like
    secret = secret_in_env(monkeypatch)
    gate = server.home / "gate"
    command = f"{token_matches(secret)}; while [ ! -e {gate} ]; do sleep 0.05; done; echo finished"
    run = add_run(store, RunSpec(command, name="remote-tmux", worker="gpu1", env=TOKEN_FROM_SECRET))
    [outcome] = await dispatch(store, fleet)
    assert outcome.ok and outcome.warning is None
    session = f"runyard-{run.id}-1"
    assert session in sessions()
    await wait_until(lambda: _is(store, fleet, run.id, RunStatus.RUNNING))
    gate.touch()
    await wait_until(lambda: _is(store, fleet, run.id, RunStatus.DONE))
    assert find_run(store.runs(), run.id).exit_code == 0
    assert await read_log(store, fleet, run.id, None) == b"matched\nfinished\n"
    wait_for(lambda: session not in sessions(), timeout=10, what="the session to end")
    for root in (server.home, store.workspace.root):
        assert files_containing(root, secret.encode()) == []


async def test_a_simulated_box_runs_tmux_on_a_server_of_its_own(
    workspace: Workspace, client_home: Path, tmp_path: Path, tmux_dir: Path
) -> None:
    """Like a real box, each simulated one has its own tmux: the operator's (here the test's
    private server) never lists a demo run's session."""
    async with (
        LoopbackSSHServer(home=tmp_path / "box") as server,
        fleet_on(workspace, client_home, server, "box", platform="vast") as (store, fleet),
    ):
        gate = server.home / "gate"
        command = f"while [ ! -e {gate} ]; do sleep 0.05; done"
        run = add_run(store, RunSpec(name="boxed", worker="box", command=command))
        try:
            [outcome] = await dispatch(store, fleet)
            assert outcome.ok and outcome.warning is None
            on_box = tmux("list-sessions", "-F", "#S", tmpdir=server.tmux_dir).stdout.split()
            assert tmux_session_name(find_run(store.runs(), run.id)) in on_box
            assert server.tmux_dir != tmux_dir and not sessions()
            gate.touch()
            await wait_until(lambda: _is(store, fleet, run.id, RunStatus.DONE))
        finally:
            tmux("kill-server", tmpdir=server.tmux_dir)


def test_attach_finds_exactly_its_session_not_a_longer_name(tmp_path: Path, tmux_dir: Path) -> None:
    """Attempt 1's attach must not land in attempt 10's session (tmux matches prefixes)."""
    tmux("new-session", "-d", "-s", "runyard-r1-10", "sleep 60")
    script = attach_script(str(tmp_path), "runyard-r1-1")
    env = {**os.environ, "SHELL": "/bin/echo"}  # the fallback "login shell" just says -l
    fallback = subprocess.run(["bash", "-c", script], env=env, capture_output=True, text=True)
    assert fallback.stdout.strip() == "-l"
    tmux("new-session", "-d", "-s", "runyard-r1-1", "sleep 60")
    attached = subprocess.run(["bash", "-c", script], env=env, capture_output=True, text=True)
    assert attached.stdout.strip() != "-l" and "terminal" in attached.stderr  # tmux attach ran


@pytest.mark.parametrize(
    "sent", [b"", b"SECRET=1\0", None], ids=["nothing", "a list cut short", "no FIFO left"]
)
def test_a_pane_whose_launcher_died_ends_and_starts_nothing(
    tmp_path: Path, tmux_dir: Path, sent: bytes | None
) -> None:
    """The launcher (an SSH channel) can die before it sends the secrets, or midway, or give
    up on a slow pane and remove the FIFO: the pane must not wait on it for ever, start
    the run without the secrets, or leave a file where the FIFO was."""
    d = tmp_path / "run dir"
    d.mkdir()
    if sent is not None:
        os.mkfifo(d / "secrets.fifo", 0o600)
    header = f"#!/usr/bin/env bash\nd={shlex.quote(str(d))}\nwd={shlex.quote(str(tmp_path))}\n"
    (d / "tmux.sh").write_text(header + "secrets_wait_s=1\n" + TMUX_PANE)
    name = f"runyard-orphan-{uuid.uuid4().hex[:6]}"
    assert (
        tmux("new-session", "-d", "-s", name, "-c", str(d), "exec bash ./tmux.sh").returncode == 0
    )
    if sent:
        fd = os.open(d / "secrets.fifo", os.O_WRONLY)  # the pane holds it open: no wait
        os.write(fd, sent)
        os.close(fd)
    if sent is not None:
        assert name in sessions()  # waiting for the rest of the list
    wait_for(lambda: name not in sessions(), timeout=10)
    assert not (d / "start.lock").exists() and not (d / "log").exists()
    assert (d / "secrets.fifo").exists() == (sent is not None)
