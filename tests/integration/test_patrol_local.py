"""The health patrol against the local worker: real runs, real /proc, the simulated nvidia-smi.

Runs launch detached on this machine through `Fleet`; the fake nvidia-smi puts each live
run's wrapper on a GPU and lists the configured "zombies" as extra VRAM holders. Every
wait polls a condition with a deadline.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import shutil
import signal
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

import pytest

from runyard.cli import alerts_verbs
from runyard.cli.main import build_parser
from runyard.core.check import check
from runyard.core.control import cancel_run
from runyard.core.dispatch import dispatch
from runyard.core.errors import InputError
from runyard.core.fleet.transports import Fleet
from runyard.core.models import Run, RunStatus, SSHSettings, Worker
from runyard.core.patrol import Alert, patrol, state_path
from runyard.core.runs import RunSpec, add_run, find_run, retry_run
from runyard.core.store.workspace_store import WorkspaceStore
from runyard.core.workers import add_worker
from runyard.core.workspace import Workspace
from runyard.sim import fake_nvidia_smi
from runyard.sim.fake_nvidia_smi import write_fake_nvidia_smi

T = TypeVar("T")

GPU0 = {"name": "NVIDIA H100 80GB HBM3", "uuid": "GPU-0a0a0a0a-0000-4000-8000-000000000000"}
GPU1 = {"name": "NVIDIA H100 80GB HBM3", "uuid": "GPU-1b1b1b1b-1111-4111-8111-111111111111"}


# ---------------------------------------------------------------- fixtures and helpers


class FakeBox:
    """The local worker's GPU and kernel-log tools, faked at the front of PATH."""

    def __init__(self, bin_dir: Path, workspace: Workspace) -> None:
        self.bin_dir = bin_dir
        self.workspace = workspace
        self.gpus([GPU0, GPU1])
        self.kernel_log("")

    def gpus(self, gpus: Sequence[dict[str, Any]]) -> None:
        """Describe the cards; the fake reads the description on every call."""
        write_fake_nvidia_smi(self.bin_dir, gpus, self.workspace.root)

    def kernel_log(self, text: str | None) -> None:
        """What `dmesg` prints; None makes it unreadable, as under dmesg_restrict."""
        log = self.bin_dir / "kernel.log"
        log.write_text(text or "")
        refused = 'echo "dmesg: read kernel buffer failed: Operation not permitted" >&2; exit 1'
        self._tool("dmesg", refused if text is None else f"cat {log}")
        # Without access to the journal, journalctl says so on stdout and exits 0.
        self._tool("journalctl", "echo '-- No entries --'")

    def _tool(self, name: str, body: str) -> None:
        tool = self.bin_dir / name
        tool.write_text(f"#!/bin/sh\n{body}\n")
        tool.chmod(0o755)


@pytest.fixture
def box(workspace: Workspace, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> FakeBox:
    """Two simulated H100s and an empty kernel log on the local worker."""
    fake = FakeBox(tmp_path / "bin", workspace)
    monkeypatch.setenv("PATH", f"{fake.bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.delenv(fake_nvidia_smi.FAULT_ENV, raising=False)
    return fake


@pytest.fixture(autouse=True)
def _reap_runs(workspace: Workspace) -> Iterator[None]:
    """Kill every run's process group (runs start under setsid) when the test ends."""
    yield
    for run in WorkspaceStore(workspace).runs():
        if run.pid is not None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(run.pid, signal.SIGKILL)


def with_alert_settings(workspace: Workspace, **thresholds: float) -> WorkspaceStore:
    """A store over a runyard.yaml with these alert thresholds (the rest default)."""
    lines = "".join(f"  {key}: {value}\n" for key, value in thresholds.items())
    workspace.settings_path.write_text(f"alerts:\n{lines}")
    return WorkspaceStore(workspace)


@contextlib.asynccontextmanager
async def open_fleet(store: WorkspaceStore) -> AsyncIterator[Fleet]:
    fleet = Fleet(store.workspace.root, store.settings())
    try:
        yield fleet
    finally:
        await fleet.close()


async def eventually(
    produce: Callable[[], Awaitable[T]], accept: Callable[[T], bool], timeout: float = 20.0
) -> T:
    """Call `produce` until `accept` likes its value; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = await produce()
        if accept(value):
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s; last value: {value!r}")
        await asyncio.sleep(0.1)


def wait_for(probe: Callable[[], T], timeout: float = 10.0) -> T:
    """Poll `probe` until it returns something truthy; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not (value := probe()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {probe}")
        time.sleep(0.02)
    return value


def parent_of(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rpartition(")")[2].split()[1])


def uptime_s() -> float:
    return float(Path("/proc/uptime").read_text().split()[0])


def comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


def descendants(root: int) -> list[int]:
    """Live processes under `root`, read from /proc independently of the patrol's probe."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        pid = parent = int(entry)
        seen = set()
        while parent and parent not in seen:
            seen.add(parent)
            parent = parent_of(parent) or 0
            if parent == root:
                found.append(pid)
                break
    return found


async def start_run(store: WorkspaceStore, fleet: Fleet, command: str, name: str) -> Run:
    added = add_run(store, RunSpec(command=command, name=name))
    (outcome,) = await dispatch(store, fleet)
    assert outcome.ok, outcome.error
    run = find_run(store.runs(), added.id)
    assert run.status == RunStatus.RUNNING and run.pid is not None
    return run


def by_kind(alerts: Sequence[Alert]) -> dict[str, list[Alert]]:
    out: dict[str, list[Alert]] = {}
    for alert in alerts:
        out.setdefault(alert.kind, []).append(alert)
    return out


def alert_events(store: WorkspaceStore, event: str) -> set[str]:
    return {e["alert"] for e in store.events.read() if e["event"] == event}


# ---------------------------------------------------------------- the patrol on real runs


async def test_zombie_vram_idle_gpu_and_silent_log_of_a_real_run(
    workspace: Workspace, box: FakeBox
) -> None:
    store = with_alert_settings(workspace, gpu_idle_minutes=0, stale_log_minutes=0.01)
    stray = await asyncio.create_subprocess_exec("sleep", "60")
    try:
        async with open_fleet(store) as fleet:
            run = await start_run(store, fleet, "sleep 60", "quiet")
            assert run.pid is not None
            # The run's `sleep`: wrapper -> bash command -> sleep.
            (child,) = wait_for(
                lambda: [p for p in descendants(run.pid or 0) if comm(p) == "sleep"]
            )
            # GPU 0 holds the run's wrapper (the fake's doing) and a process of no run;
            # GPU 1 holds only the run's child, so it idles under the run.
            zombie = {"pid": stray.pid, "used_memory_mib": 2048, "process_name": "python"}
            own = {"pid": child, "used_memory_mib": 1024, "process_name": "sleep"}
            box.gpus([{**GPU0, "zombies": [zombie]}, {**GPU1, "zombies": [own]}])

            alerts = await eventually(
                lambda: patrol(store, fleet), lambda found: "stale_log" in by_kind(found)
            )
            kinds = by_kind(alerts)
            assert [a.id for a in kinds["zombie_vram"]] == [
                f"zombie_vram:local:gpu0:pid{stray.pid}"
            ]
            assert kinds["zombie_vram"][0].fix == f"kill {stray.pid} on local"
            (idle,) = kinds["gpu_idle"]
            assert (idle.gpu_index, idle.run_id) == (1, run.id)
            assert re.match(
                rf"GPU 1 idle for \d+s under run quiet \({run.id}\): SM 210/", idle.message
            )
            (stale,) = kinds["stale_log"]
            assert stale.run_id == run.id and "log silent for" in stale.message
            raised = alert_events(store, "alert.raised")
            assert {idle.id, stale.id, kinds["zombie_vram"][0].id} <= raised
            saved = json.loads(state_path(workspace).read_text())
            assert saved["alerts"][idle.id]["first_seen"] == idle.first_seen
            assert f"local|{GPU1['uuid']}|{run.id}" in saved["gpu_idle_since"]

            # Cancelled and its card redescribed: the run's alerts clear, the zombie stays.
            await cancel_run(store, fleet, run.id)
            box.gpus([{**GPU0, "zombies": [zombie]}, GPU1])
            after = await eventually(
                lambda: patrol(store, fleet), lambda found: "gpu_idle" not in by_kind(found)
            )
            assert set(by_kind(after)) - {"disk", "inodes"} == {"zombie_vram"}
            (still,) = by_kind(after)["zombie_vram"]
            assert still.first_seen == kinds["zombie_vram"][0].first_seen
            assert {idle.id, stale.id} <= alert_events(store, "alert.cleared")
    finally:
        stray.kill()
        await stray.wait()


async def test_a_reboot_under_a_run_then_the_lost_run(workspace: Workspace, box: FakeBox) -> None:
    store = WorkspaceStore(workspace)
    async with open_fleet(store) as fleet:
        run = await start_run(store, fleet, "sleep 60", "rebooted")
        # As if the box rebooted since launch: the run recorded another boot id.
        with store.queue_transaction() as runs:
            find_run(runs, run.id).boot_id = "a-boot-before-the-reboot"
        (alert,) = by_kind(await patrol(store, fleet))["rebooted"]
        assert (alert.severity, alert.run_id) == ("critical", run.id)
        assert alert.fix == f"runyard check (marks it lost), then runyard run retry {run.id}"

        await check(store, fleet)
        lost = find_run(store.runs(), run.id)
        assert (lost.status, lost.error) == (RunStatus.LOST, "worker rebooted")
        kinds = by_kind(await patrol(store, fleet))
        assert "rebooted" not in kinds
        (gone,) = kinds["run_lost"]
        assert (gone.severity, gone.fix) == ("critical", f"runyard run retry {run.id}")
        assert alert.id in alert_events(store, "alert.cleared")

        assert run.pid is not None
        os.killpg(run.pid, signal.SIGKILL)
        retry_run(store, run.id)
        assert "run_lost" not in by_kind(await patrol(store, fleet))


async def test_disk_threshold_and_a_corrupt_state_file(workspace: Workspace, box: FakeBox) -> None:
    state_path(workspace).write_text("{ torn write")
    store = with_alert_settings(workspace, disk_used_pct=0, inodes_used_pct=0)
    async with open_fleet(store) as fleet:
        alerts = await patrol(store, fleet)
    kinds = by_kind(alerts)
    (disk,) = kinds["disk"]
    assert disk.worker == "local" and disk.severity in ("warning", "critical")
    assert disk.fix.startswith(f"free space on {disk.worker}: `du -xh {workspace.root} | sort -h")
    assert any("starting fresh" in w for w in store.warnings)
    assert json.loads(state_path(workspace).read_text())["alerts"][disk.id]["kind"] == "disk"


async def test_xid_and_oom_from_the_kernel_log_and_silence_when_unreadable(
    workspace: Workspace, box: FakeBox
) -> None:
    uptime = uptime_s()
    box.kernel_log(
        f"[{uptime - 90:.6f}] NVRM: Xid (PCI:0000:3b:00): 79, pid='<unknown>', name=<unknown>, "
        "GPU has fallen off the bus.\n"
        f"[{uptime - 60:.6f}] Out of memory: Killed process 4321 (python) total-vm:1kB\n"
        f"[{uptime - 59:.6f}] oom-kill:constraint=CONSTRAINT_NONE,task=python,pid=4321,uid=0\n"
    )
    store = WorkspaceStore(workspace)
    async with open_fleet(store) as fleet:
        kinds = by_kind(await patrol(store, fleet))
        (xid,) = kinds["xid"]
        assert (xid.severity, xid.id) == ("critical", "xid:local:79:0000:3b:00:-")
        (oom,) = kinds["oom"]
        assert oom.message == "out of host memory: the kernel killed pid 4321 (python) (2 times)"
        # Unreadable (and journalctl without access): no kernel alerts, no alert about it.
        box.kernel_log(None)
        quiet = await patrol(store, fleet)
    assert set(by_kind(quiet)) <= {"disk", "inodes"}
    assert {xid.id, oom.id} <= alert_events(store, "alert.cleared")


# ---------------------------------------------------------------- `runyard alerts`


def alerts_cli(workspace: Workspace, *args: str) -> int:
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    if "alerts" not in sub.choices:  # until the lead wires it into cli/main.py
        alerts_verbs.register(sub)
    namespace = parser.parse_args(["--workspace", str(workspace.root), "alerts", *args])
    result: int = namespace.handler(namespace)
    return result


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def test_alerts_verb_table_json_and_exit_code(
    workspace: Workspace, box: FakeBox, capsys: pytest.CaptureFixture[str]
) -> None:
    usage = shutil.disk_usage(workspace.root)
    if usage.used / usage.total > 0.95:
        pytest.skip("the disk is nearly full: the disk alert would be critical")
    with_alert_settings(workspace, disk_used_pct=0, inodes_used_pct=100)
    assert alerts_cli(workspace) == 0  # a disk warning is not critical
    out = capsys.readouterr().out
    header, *rows = out.splitlines()
    assert header.split() == ["SEVERITY", "WORKER", "WHAT", "FIX"]
    assert any(row.split()[:4] == ["WARNING", "local", "disk", "space"] for row in rows)

    store = WorkspaceStore(workspace)
    down = Worker(
        worker_id="gone",
        kind="ssh",
        worker_pool="rented",
        ssh=SSHSettings("127.0.0.1", closed_port(), "nobody"),
    )
    add_worker(store, down)
    assert alerts_cli(workspace, "--json") == 1
    found = json.loads(capsys.readouterr().out)
    assert [a["kind"] for a in found][:1] == ["unreachable"]
    first = found[0]
    assert set(first) == {
        "id",
        "kind",
        "severity",
        "worker",
        "run_id",
        "gpu_index",
        "message",
        "fix",
        "first_seen",
        "last_seen",
    }
    assert (first["severity"], first["worker"], first["id"]) == (
        "critical",
        "gone",
        "unreachable:gone:probe",
    )
    assert "disk:local:" in " ".join(a["id"] for a in found)

    assert alerts_cli(workspace, "--pool", "default", "--json") == 0
    assert all(a["worker"] == "local" for a in json.loads(capsys.readouterr().out))
    with pytest.raises(InputError):
        alerts_cli(workspace, "--pool", "nowhere")
