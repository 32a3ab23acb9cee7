"""`runyard demo --headless`: the SIMULATED fleet as a real process, driven by the real CLI.

The demo serves loopback SSH workers in a process of its own and wires a workspace to
them; every check here goes through `runyard ...` subprocesses, as a script would. Waits
are conditions with deadlines, never fixed sleeps.
"""

from __future__ import annotations

import json
import os
import select
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from runyard.sim.fake_nvidia_smi import process_alive
from runyard.sim.fleet import FleetControl, FleetInfo, SimLayout

pytestmark = pytest.mark.timeout(90)

EXPECTED_GPUS = {"sim-rtx4090-1": 1, "sim-a100x2-1": 2, "sim-h100x8-1": 8}


@dataclass
class Demo:
    """A `runyard demo --headless` process and the workspace it printed."""

    proc: subprocess.Popen[str]
    root: Path
    env: dict[str, str]

    def cli(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            [sys.executable, "-m", "runyard", "--workspace", str(self.root), *args],
            capture_output=True,
            text=True,
            env=self.env,
            timeout=60,
        )
        if check and proc.returncode != 0:
            raise AssertionError(f"runyard {' '.join(args)}: {proc.returncode}\n{proc.stderr}")
        return proc

    def json(self, *args: str, check: bool = True) -> Any:
        return json.loads(self.cli(*args, "--json", check=check).stdout)

    def add_run(self, command: str, worker: str) -> str:
        return self.cli("run", "add", "--command", command, "--worker", worker).stdout.split()[-1]

    def utils(self, worker: str, pool: str) -> list[int | None]:
        """The worker's GPU utilisation (only its pool is probed: fewer forks, faster)."""
        status = {s["name"]: s for s in self.json("worker", "status", "--pool", pool)}[worker]
        assert status["reachable"], status["error"]
        return [gpu["util_pct"] for gpu in status["gpus"]]

    def run_status(self, run_id: str) -> str:
        """The run's status after a `check` (which reports every run that was active)."""
        checked = {c["id"]: c["status"] for c in self.json("check")}
        return str(checked.get(run_id) or self.json("run", "show", run_id)["status"])


def wait_for(condition: Callable[[], bool], what: str, deadline_s: float = 30) -> None:
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.05)
    raise AssertionError(f"{what}: not before the deadline")


def start_demo(directory: Path, home: Path, workers: int) -> Demo:
    home.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if k not in ("SSH_AUTH_SOCK", "RUNYARD_WORKSPACE")}
    env["HOME"] = str(home)  # a private client HOME: no ~/.ssh of the machine leaks in
    proc = subprocess.Popen(
        [sys.executable, "-m", "runyard", "demo", "--headless", "--workers", str(workers),
         "--dir", str(directory)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )  # fmt: skip
    assert proc.stdout is not None and proc.stderr is not None
    ready, _, _ = select.select([proc.stdout], [], [], 60)
    line = proc.stdout.readline() if ready else ""
    if not line:
        stop_demo(proc)
        raise AssertionError(f"the demo printed no workspace path: {proc.stderr.read()}")
    return Demo(proc, Path(line.strip()), env)


def stop_demo(proc: subprocess.Popen[str], signum: int = signal.SIGTERM) -> int:
    if proc.poll() is None:
        proc.send_signal(signum)
    try:
        return proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Demo]:
    base = tmp_path_factory.mktemp("demo")
    running = start_demo(base / "demo-workspace", base / "home", workers=3)
    try:
        yield running
    finally:
        stop_demo(running.proc)


def test_status_shows_three_reachable_simulated_workers(demo: Demo) -> None:
    assert demo.root.name == "demo-workspace" and (demo.root / "runyard.yaml").is_file()
    statuses = {s["name"]: s for s in demo.json("worker", "status")}
    sims = {name: s for name, s in statuses.items() if name.startswith("sim-")}
    assert {name: len(s["gpus"]) for name, s in sims.items()} == EXPECTED_GPUS
    assert all(s["reachable"] and s["error"] is None for s in sims.values()), sims
    assert {g["name"] for g in sims["sim-h100x8-1"]["gpus"]} == {"NVIDIA H100 80GB HBM3"}
    workers = {w["worker_id"]: w for w in demo.json("worker", "list")}
    assert all("SIMULATED" in workers[name]["notes"] for name in EXPECTED_GPUS)
    assert (
        workers["sim-a100x2-1"]["worker_pool"] == "vastai" and workers["sim-a100x2-1"]["price_dph"]
    )


def test_a_run_keeps_its_gpu_busy_until_it_ends(demo: Demo) -> None:
    box = "sim-a100x2-1"  # alone in the vastai pool of a 3-worker fleet
    run_id = demo.add_run("while [ ! -e ~/release ]; do sleep 0.05; done", box)
    demo.cli("dispatch")
    seen: list[list[int | None]] = []

    def busy() -> bool:
        seen.append(demo.utils(box, "vastai"))
        return (seen[-1][0] or 0) > 0

    wait_for(busy, "the GPU busy")
    assert seen[-1][1] == 0  # one run keeps one GPU busy
    (SimLayout(demo.root).home(box) / "release").touch()
    wait_for(lambda: demo.run_status(run_id) == "done", "the run done")
    assert demo.utils(box, "vastai") == [0, 0]


def test_a_stopped_ssh_server_is_unreachable_until_started_again(demo: Demo) -> None:
    control = FleetControl.for_workspace(demo.root)
    port = control.stop_worker("sim-a100x2-1").port
    try:
        [status] = demo.json("worker", "status", "--pool", "vastai", check=False)
        assert not status["reachable"] and "cannot connect" in status["error"]
        assert demo.cli("worker", "status", "--pool", "vastai", check=False).returncode == 1
    finally:
        restarted = control.start_worker("sim-a100x2-1")
    assert restarted.sshd and restarted.port == port
    assert demo.utils("sim-a100x2-1", "vastai") == [0, 0]


def test_a_staged_reboot_makes_an_active_run_lost(demo: Demo) -> None:
    run_id = demo.add_run("sleep 300", "sim-rtx4090-1")
    demo.cli("dispatch")
    wait_for(lambda: demo.run_status(run_id) == "running", "the run running")
    table = demo.cli("worker", "status").stdout.splitlines()
    assert "RUNS" in table[0]
    assert run_id in next(row for row in table if row.startswith("sim-rtx4090-1 "))
    pid = demo.json("run", "show", run_id)["pid"]
    before = FleetInfo.read(demo.root)
    assert before is not None

    rebooted = FleetControl.for_workspace(demo.root).reboot("sim-rtx4090-1")

    assert rebooted.boot_id != before.box("sim-rtx4090-1").boot_id and rebooted.sshd
    assert not process_alive(pid)
    checked = {c["id"]: c for c in demo.json("check")}
    assert checked[run_id]["status"] == "lost", checked[run_id]


def _processes_under(root: Path) -> list[int]:
    """Pids whose working directory is inside `root`."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and Path(os.readlink(entry / "cwd")).is_relative_to(root):
                found.append(int(entry.name))
        except OSError:
            continue
    return found


def _listening(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


def test_sigterm_stops_everything_and_a_restart_keeps_ports_and_runs(tmp_path: Path) -> None:
    first = start_demo(tmp_path / "ws", tmp_path / "home", workers=1)
    info = FleetInfo.read(first.root)
    assert info is not None and [box.name for box in info.workers] == ["sim-rtx4090-1"]
    run_id = first.add_run("sleep 300", "sim-rtx4090-1")
    first.cli("dispatch")
    wait_for(lambda: first.run_status(run_id) == "running", "the run running")
    assert _processes_under(first.root)

    assert stop_demo(first.proc) == 0

    assert not process_alive(info.pid)
    assert not _processes_under(first.root)
    assert not _listening(info.workers[0].port) and not _listening(info.control_port)
    assert not SimLayout(first.root).info_path.exists()

    again = start_demo(tmp_path / "ws", tmp_path / "home", workers=1)
    try:
        second = FleetInfo.read(again.root)
        assert second is not None and second.workers[0].port == info.workers[0].port
        assert again.run_status(run_id) == "lost"  # the box was powered off in between
    finally:
        assert stop_demo(again.proc) == 0
