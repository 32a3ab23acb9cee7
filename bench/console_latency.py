"""Console latency: key press to screen update, CPU and RSS, idle and under load, in one run.

The console runs as its own process in a pseudo-terminal (160x50, TERM=xterm-256color), as it
would in tmux. This script writes key bytes to the terminal and times how long until the
bytes of the resulting screen change come back: the whole path, input thread, event loop,
rendering and output included.

* idle: the console on 100 simulated workers and 101 rows, nothing refreshing, no log tails.
* load: the same console with the 100 workers re-probed every 2 s (synthetic telemetry: the
  console's own work, not the workers', is measured) and four runs on the local worker each
  printing 10,000 lines a second, all four followed in the Logs view.

Keys measured: cursor moves in the Fleet table (the status line shows the new position), and
in the load phase `p` (pause) in the Logs view with four panes streaming.
Goals: p95 <= 50 ms, RSS <= 150 MiB.

    uv run python bench/console_latency.py [--presses 120]
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import os
import pty
import random
import re
import shutil
import statistics
import struct
import subprocess
import sys
import tempfile
import termios
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
WORKERS = 100
TAILS = 4
LINES_PER_SECOND = 10_000
COLUMNS, ROWS = 160, 50
KEYS = {"down": b"\x1b[B", "up": b"\x1b[A", "p": b"p", "1": b"1", "2": b"2", "3": b"3",
        "space": b" ", "l": b"l", "q": b"q"}  # fmt: skip

FLOOD = f"""
import sys, time
rate, batch = {LINES_PER_SECOND}, 100
start, n = time.monotonic(), 0
out = sys.stdout
while True:
    for _ in range(batch):
        n += 1
        out.write(f"step {{n}} | loss={{1.0 / (1 + n * 1e-4):.5f}} lr=3e-4 grad_norm=1.{{n % 97:02d}}\\n")
    out.flush()
    ahead = n / rate - (time.monotonic() - start)
    if ahead > 0:
        time.sleep(ahead)
"""


# ---------------------------------------------------------------- the console (child side)


def child(workspace: Path, mode: str, stats_path: Path) -> int:
    """The console under test: real app, synthetic telemetry for the 100 workers."""
    sys.path.insert(0, str(REPO / "src"))
    from runyard.core.workspace import Workspace
    from runyard.sim.synthetic import StaticAlerts, SyntheticTelemetry
    from runyard.tui.app import RunyardApp
    from runyard.tui.services import ConsoleServices
    from runyard.tui.views.logs import LogsView

    class BenchApp(RunyardApp):
        def on_mount(self) -> None:
            super().on_mount()
            if mode == "idle":  # one probe to fill the table, then nothing refreshes
                self.call_after_refresh(self.controller.refresh_fleet)

        def action_quit(self) -> None:  # type: ignore[override]
            logs = self.views["logs"]
            assert isinstance(logs, LogsView)
            stats = {
                "panes": [
                    {
                        "run": p.run_name,
                        "lines_read": p.total_lines,
                        "skipped_bytes": p.skipped_bytes,
                    }
                    for p in logs.panes()
                ],
                "probes": self.state.fleet_version,
            }
            stats_path.write_text(json.dumps(stats))
            self.exit(0)

    services = ConsoleServices(
        Workspace(workspace), telemetry=SyntheticTelemetry(), alerts=StaticAlerts()
    )
    app = BenchApp(services, timers=mode == "load", workspace_label="bench")
    app.run()
    return 0


# ---------------------------------------------------------------- the terminal (parent side)


@dataclass
class Terminal:
    """A pty running the console; a reader thread timestamps every chunk of output."""

    process: subprocess.Popen[bytes]
    master: int
    chunks: list[tuple[float, bytes]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    @classmethod
    def start(cls, argv: list[str]) -> Terminal:
        master, slave = pty.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", ROWS, COLUMNS, 0, 0))
        env = {k: v for k, v in os.environ.items() if k not in ("COLORTERM", "TMUX", "NO_COLOR")}
        env["TERM"] = "xterm-256color"
        process = subprocess.Popen(
            argv, stdin=slave, stdout=slave, stderr=slave, env=env, start_new_session=True
        )
        os.close(slave)
        terminal = cls(process, master)
        threading.Thread(target=terminal._read, daemon=True).start()
        return terminal

    def _read(self) -> None:
        while True:
            try:
                data = os.read(self.master, 65536)
            except OSError:
                return
            if not data:
                return
            with self.lock:
                self.chunks.append((time.perf_counter(), data))

    def mark(self) -> int:
        with self.lock:
            return len(self.chunks)

    def press(self, key: str) -> float:
        sent = time.perf_counter()
        os.write(self.master, KEYS[key])
        return sent

    def wait_for(self, marker: bytes, since: int, timeout: float = 10.0) -> float | None:
        """When the first output chunk after `since` that completes `marker` arrived."""
        deadline = time.perf_counter() + timeout
        seen = b""
        index = since
        while time.perf_counter() < deadline:
            with self.lock:
                fresh = self.chunks[index:]
            for stamp, data in fresh:
                seen = seen[-len(marker) :] + data
                index += 1
                if marker in seen:
                    return stamp
            time.sleep(0.001)
        return None

    def screen_contains(self, marker: bytes, timeout: float = 60.0) -> bool:
        return self.wait_for(marker, 0, timeout) is not None

    def cpu_seconds(self) -> float:
        fields = Path(f"/proc/{self.process.pid}/stat").read_text().rpartition(")")[2].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def memory_mib(self) -> tuple[float, float]:
        status = Path(f"/proc/{self.process.pid}/status").read_text()
        values = {
            line.split(":")[0]: int(line.split()[1]) / 1024
            for line in status.splitlines()
            if line.startswith(("VmRSS", "VmHWM"))
        }
        return values["VmRSS"], values["VmHWM"]


@dataclass
class Phase:
    name: str
    cursor_ms: list[float] = field(default_factory=list)
    status_ms: list[float] = field(default_factory=list)
    pause_ms: list[float] = field(default_factory=list)
    missed: int = 0
    cpu_pct: float = 0.0
    rss_mib: float = 0.0
    peak_mib: float = 0.0


def row_name(position: int) -> str:
    """The worker on table row `position` (1-based; workers.yaml order: local, sim-000...)."""
    return "local" if position == 1 else f"sim-{position - 2:03d}"


def cursor_background(term: Terminal) -> bytes:
    """The escape that starts the highlighted row's name (the cursor starts on `local`)."""
    with term.lock:
        seen = b"".join(data for _, data in term.chunks)
    for match in re.finditer(rb"\x1b\[([0-9;]*)mlocal\x1b", seen):
        background = re.search(rb"48;5;\d+$", match.group(1))
        if background:
            return background.group(0) + b"m"
    raise SystemExit("cannot find the cursor row on screen")


def measure_cursor(term: Terminal, phase: Phase, presses: int, total: int) -> None:
    """Cursor moves in the Fleet table: the time until the new row is drawn highlighted, and
    until the status line shows ` N/total workers` (drawn in the frame after)."""
    rng = random.Random(11)
    highlight = cursor_background(term)
    position = 1
    direction = "down"
    for _ in range(presses):
        if position >= total - 1:
            direction = "up"
        elif position <= 1:
            direction = "down"
        position += 1 if direction == "down" else -1
        time.sleep(rng.uniform(0.08, 0.2))
        since = term.mark()
        sent = term.press(direction)
        row = term.wait_for(highlight + row_name(position).encode(), since)
        status = term.wait_for(f"{position}/{total} workers".encode(), since)
        if row is None or status is None:
            phase.missed += 1
            continue
        phase.cursor_ms.append((row - sent) * 1000)
        phase.status_ms.append((status - sent) * 1000)


def measure_pause(term: Terminal, phase: Phase, presses: int) -> None:
    """`p` in a streaming log pane: the pane's header shows PAUSED (then `p` resumes)."""
    rng = random.Random(12)
    for _ in range(presses):
        time.sleep(rng.uniform(0.1, 0.25))
        since = term.mark()
        sent = term.press("p")
        arrived = term.wait_for(b"PAUSED", since)
        if arrived is None:
            phase.missed += 1
        else:
            phase.pause_ms.append((arrived - sent) * 1000)
        time.sleep(rng.uniform(0.1, 0.25))
        term.press("p")


def run_phase(workspace: Path, mode: str, presses: int) -> tuple[Phase, dict[str, object]]:
    stats_path = workspace / f".bench-{mode}.json"
    argv = [sys.executable, __file__, "--child", mode, "--workspace", str(workspace),
            "--stats", str(stats_path)]  # fmt: skip
    term = Terminal.start(argv)
    phase = Phase(mode)
    total = WORKERS + 1
    if not term.screen_contains(f"workers {total}/{total} up".encode()):
        term.process.kill()
        raise SystemExit(f"{mode}: the console never showed the fleet")
    if mode == "load":
        # Follow the four flooding runs: Runs view, mark them, l; then back to Fleet.
        for key in ("2", "space", "space", "space", "space", "l"):
            term.press(key)
            time.sleep(0.3)
        if not term.screen_contains(b"following", timeout=30):
            raise SystemExit("load: the log panes never started following")
        time.sleep(3.0)
    else:
        time.sleep(2.0)
    cpu_before, wall_before = term.cpu_seconds(), time.perf_counter()
    if mode == "load":
        term.press("3")
        time.sleep(1.0)
        measure_pause(term, phase, max(20, presses // 3))
        term.press("1")
        time.sleep(1.0)
    else:
        term.press("1")
    measure_cursor(term, phase, presses, total)
    phase.cpu_pct = 100 * (term.cpu_seconds() - cpu_before) / (time.perf_counter() - wall_before)
    phase.rss_mib, phase.peak_mib = term.memory_mib()
    term.press("q")
    try:
        term.process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        term.process.kill()
    stats = json.loads(stats_path.read_text()) if stats_path.exists() else {}
    return phase, stats


# ---------------------------------------------------------------- the workspace


def make_workspace(root: Path) -> None:
    """100 synthetic workers, a 4-slot local worker and four flooding runs (pending)."""
    sys.path.insert(0, str(REPO / "src"))
    from runyard.core.runs import RunSpec, add_run
    from runyard.core.store.workers_file import find_index, to_yaml_node
    from runyard.core.store.workspace_store import WorkspaceStore
    from runyard.core.workspace import init_workspace
    from runyard.sim.synthetic import synthetic_workers

    workspace, _ = init_workspace(root)
    workspace.settings_path.write_text("refresh: {fleet_seconds: 2, runs_seconds: 2}\n")
    store = WorkspaceStore(workspace)

    def fleet_of_100(entries: object) -> None:
        # One edit of workers.yaml for all of them (a round-trip YAML save per worker is slow).
        entries[find_index(entries, "local")]["slots"] = TAILS  # type: ignore[index]
        for worker in synthetic_workers(WORKERS):
            entries.append(to_yaml_node(worker.to_dict()))  # type: ignore[attr-defined]

    store.edit_workers(fleet_of_100, "bench.fleet")
    (root / "flood.py").write_text(FLOOD)
    for i in range(TAILS):
        spec = RunSpec(command=f"exec python3 -u {root / 'flood.py'}", name=f"flood-{i}")
        add_run(store, spec)


def launch_floods(root: Path) -> None:
    """Start the four runs that print 10,000 lines a second each (after the idle phase)."""
    import asyncio

    from runyard.core.dispatch import dispatch
    from runyard.core.fleet.transports import Fleet
    from runyard.core.store.workspace_store import WorkspaceStore
    from runyard.core.workspace import Workspace

    store = WorkspaceStore(Workspace(root))
    workspace = store.workspace

    async def launch() -> None:
        fleet = Fleet(workspace.root, store.settings())
        try:
            await dispatch(store, fleet)
        finally:
            await fleet.close()

    asyncio.run(launch())


def stop_runs(root: Path) -> dict[str, float]:
    """Kill the flooders; how many lines each wrote per second on average."""
    sys.path.insert(0, str(REPO / "src"))
    from runyard.core.store.workspace_store import WorkspaceStore
    from runyard.core.workspace import Workspace
    from runyard.tui.format import parse_utc

    rates: dict[str, float] = {}
    for run in WorkspaceStore(Workspace(root)).runs():
        if run.pid:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(run.pid, 15)
        started = parse_utc(run.started_at)
        if run.run_dir and started:
            log = Path(run.run_dir) / "log"
            with log.open("rb") as handle:
                lines = sum(chunk.count(b"\n") for chunk in iter(lambda: handle.read(1 << 20), b""))
            rates[run.name] = lines / max(1.0, time.time() - started)
    return rates


# ---------------------------------------------------------------- report


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def describe(label: str, values: list[float]) -> str:
    if not values:
        return f"{label:<44} no samples"
    return (
        f"{label:<44} p50 {statistics.median(values):6.1f} ms   p95 {percentile(values, 95):6.1f} ms"
        f"   max {max(values):6.1f} ms   (n={len(values)})"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--presses", type=int, default=120, help="cursor presses per phase")
    parser.add_argument("--child", choices=("idle", "load"), help=argparse.SUPPRESS)
    parser.add_argument("--workspace", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--stats", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(args.workspace, args.child, args.stats)

    root = Path(tempfile.mkdtemp(prefix="runyard-bench-"))
    rates: dict[str, float] = {}
    load_before = os.getloadavg()[0]
    try:
        make_workspace(root)
        idle, _ = run_phase(root, "idle", args.presses)
        launch_floods(root)
        load, stats = run_phase(root, "load", args.presses)
    finally:
        rates = stop_runs(root)
        shutil.rmtree(root, ignore_errors=True)

    print(
        f"console latency, {WORKERS} workers, {COLUMNS}x{ROWS} pty, {os.cpu_count()} CPUs, "
        f"load average {load_before:.1f} before and {os.getloadavg()[0]:.1f} after "
        "(other processes on the machine stretch the tail)"
    )
    print(describe("idle: cursor move in Fleet (row highlighted)", idle.cursor_ms))
    print(describe("idle: ... status line shows the position", idle.status_ms))
    print(describe("load: cursor move in Fleet (row highlighted)", load.cursor_ms))
    print(describe("load: ... status line shows the position", load.status_ms))
    print(describe("load: p (pause) in Logs, 4 panes streaming", load.pause_ms))
    everything = load.cursor_ms + load.pause_ms
    print(describe("load: all keys", everything))
    for phase in (idle, load):
        print(
            f"{phase.name + ': console CPU and memory':<44} {phase.cpu_pct:5.1f} % of a core   "
            f"RSS {phase.rss_mib:6.1f} MiB   peak {phase.peak_mib:6.1f} MiB"
            + (f"   ({phase.missed} presses without a visible update)" if phase.missed else "")
        )
    written = sum(rates.values())
    panes: list[dict[str, int]] = list(stats.get("panes", []))  # type: ignore[call-overload]
    read = sum(pane["lines_read"] for pane in panes)
    skipped = sum(pane["skipped_bytes"] for pane in panes)
    print(
        f"log tails: {len(rates)} runs wrote {written:,.0f} lines/s in all; the console read "
        f"{read:,} lines and skipped {skipped / 2**20:.1f} MiB it could not keep up with"
    )
    p95 = percentile(everything, 95)
    print(
        f"goals: p95 <= 50 ms: {'met' if p95 <= 50 else 'MISSED'} ({p95:.1f} ms); "
        f"RSS <= 150 MiB: {'met' if load.peak_mib <= 150 else 'MISSED'} (peak {load.peak_mib:.1f} MiB)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
