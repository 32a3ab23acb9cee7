"""The Fleet view: one row per worker with its GPUs, disk, runs, price and alerts."""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

from textual.binding import Binding, BindingType

from runyard.core.models import Run
from runyard.core.teardown import TeardownAction
from runyard.tui import format as fmt
from runyard.tui.format import Cell, cell
from runyard.tui.state import ConsoleState, WorkerState, gpu_busy, memory_pct
from runyard.tui.views.base import TableView
from runyard.tui.widgets.fast_table import Column, FastTable, Row

MAX_GPU_GLYPHS = 8
TREND_WIDTH = 10

FLEET_COLUMNS = (
    Column("name", "WORKER", 16),
    Column("pool", "POOL", 9),
    Column("kind", "KIND", 11),
    Column("up", "UP", 6, "right"),
    Column("gpus", "GPU", 5, "right"),
    Column("util", "UTIL per GPU · trend", 20),
    Column("vram", "VRAM", 18),
    Column("power", "POWER", 6, "right"),
    Column("temp", "TEMP", 4, "right"),
    Column("disk", "DISK B / INODE", 14),
    Column("price", "$/H", 6, "right"),
    Column("alerts", "!", 2, "right"),
    Column("runs", "RUNS"),
)
# What `s` cycles through, in order (None: workers.yaml order).
SORT_CYCLE: tuple[str | None, ...] = (
    None,
    "util",
    "vram",
    "power",
    "temp",
    "disk",
    "price",
    "alerts",
    "up",
    "name",
)


def _kind(ws: WorkerState) -> str:
    return ws.worker.platform or ws.worker.kind


def _up(ws: WorkerState) -> tuple[Cell, float | None]:
    if not ws.worker.enabled:
        return cell("off", fmt.MUTED), None
    if not ws.probed:
        return cell("…", fmt.MUTED), None
    if not ws.reachable:
        return cell("DOWN", f"bold {fmt.BAD}"), None
    latency = ws.latency_ms
    if latency is None:
        return cell("up", fmt.GOOD), None
    style = fmt.GOOD if latency < 200 else (fmt.WARN if latency < 1000 else fmt.BAD)
    return cell(f"{latency:.0f}ms", style), latency


def _gpu_glyphs(values: Sequence[float | None], style_of: object) -> Cell:
    fragments = []
    for value in values[:MAX_GPU_GLYPHS]:
        style = style_of(value) if callable(style_of) else str(style_of)
        fragments.append((fmt.spark_char(value) if value is not None else "?", style))
    if len(values) > MAX_GPU_GLYPHS:
        fragments.append(("+", fmt.MUTED))
    return tuple(fragments)


def fleet_row(ws: WorkerState, runs: Sequence[Run], alerts: int) -> Row:
    """The row of one worker (pure: same state, same row, so unchanged rows are not redrawn)."""
    worker = ws.worker
    gpus = ws.gpus()
    holders = ws.holders_by_gpu()
    utils = [None if g.util_pct is None else float(g.util_pct) for g in gpus]
    mems = [memory_pct(g) for g in gpus]
    busy = sum(1 for g in gpus if gpu_busy(g, holders[g.index or 0]))
    known_utils = [u for u in utils if u is not None]
    mean_util = sum(known_utils) / len(known_utils) if known_utils else None
    used = sum(g.mem_used_mib or 0 for g in gpus)
    total = sum(g.mem_total_mib or 0 for g in gpus)
    power_values = [g.power_w for g in gpus if g.power_w is not None]
    power = sum(power_values) if power_values else None
    temps = [g.temp_c for g in gpus if g.temp_c is not None]
    hottest = max(temps) if temps else None
    disk = ws.snapshot.disk if ws.snapshot else None
    up_cell, latency = _up(ws)
    alert_threshold = 90.0

    if gpus:
        util_cell = fmt.join_cells(
            (
                _gpu_glyphs(utils, fmt.load_style),
                cell(fmt.sparkline(ws.util_trend, TREND_WIDTH), fmt.ACCENT),
            )
        )
        vram_cell = fmt.join_cells(
            (
                _gpu_glyphs(mems, fmt.level_style),
                cell(f"{fmt.mib(used)}/{fmt.mib(total)}", ""),
            )
        )
        gpu_cell = cell(f"{busy}/{len(gpus)}", fmt.GOOD if busy else "")
    else:
        note, style = ("no GPU", fmt.MUTED) if ws.reachable else (ws.error or "", fmt.BAD)
        if ws.snapshot and ws.snapshot.nvidia_smi == "error":
            note, style = "nvidia-smi error", fmt.BAD
        util_cell = cell(note, style)
        vram_cell = cell("")
        gpu_cell = cell(fmt.MISSING if ws.reachable else "", fmt.MUTED)

    if disk is not None:
        disk_cell = fmt.join_cells(
            (
                cell(
                    f"{disk.used_pct:.0f}%" if disk.used_pct is not None else "?%",
                    fmt.level_style(disk.used_pct, 80, alert_threshold),
                ),
                cell(
                    f"i{disk.inodes_used_pct:.0f}%" if disk.inodes_used_pct is not None else "i?",
                    fmt.level_style(disk.inodes_used_pct, 80, alert_threshold),
                ),
                cell(fmt.human_bytes(disk.avail_bytes), fmt.MUTED),
            )
        )
    else:
        disk_cell = cell("")

    run_names = ", ".join(run.name for run in runs)
    name_style = "bold" if ws.reachable else (fmt.BAD if ws.probed and worker.enabled else "")
    return Row(
        key=worker.worker_id,
        cells=(
            cell(worker.worker_id, name_style),
            cell(worker.worker_pool),
            cell(_kind(ws), fmt.MUTED),
            up_cell,
            gpu_cell,
            util_cell,
            vram_cell,
            cell(
                fmt.MISSING
                if power is None
                else (f"{power / 1000:.1f}kW" if power >= 1000 else f"{power:.0f}W")
            ),
            cell(
                fmt.MISSING if hottest is None else f"{hottest:.0f}°",
                fmt.level_style(hottest, 80, 88) if hottest is not None else fmt.MUTED,
            ),
            disk_cell,
            cell(fmt.money(worker.price_dph) if worker.price_dph else "", fmt.WARN),
            cell(str(alerts) if alerts else "", f"bold {fmt.BAD}"),
            cell(run_names or ("" if not ws.reachable else "idle"), "" if run_names else fmt.MUTED),
        ),
        sort_values=(
            worker.worker_id,
            worker.worker_pool,
            _kind(ws),
            latency,
            busy,
            mean_util,
            (used / total * 100) if total else None,
            power,
            hottest,
            disk.used_pct if disk else None,
            worker.price_dph,
            alerts,
            len(runs),
        ),
        style="" if worker.enabled else "dim",
    )


class FleetView(TableView):
    """Every worker, its GPUs and what runs on it."""

    TITLE = "Fleet"
    NOUN = "workers"
    COLUMNS = FLEET_COLUMNS
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("enter", "gpu_detail", "GPUs"),
        Binding("o", "sort", "Order by"),
        Binding("O", "reverse", "Reverse", show=False),
        Binding("s", "attach", "Shell"),
        Binding("x", "teardown('stop')", "Stop"),
        Binding("t", "teardown('destroy')", "Teardown"),
    ]

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        # Each worker's row with what it was built from: a runs reload or an alert rebuilds
        # one row, not a hundred.
        self._rows: dict[str, tuple[tuple[object, ...], Row]] = {}

    def show(self, state: ConsoleState) -> None:
        runs_by_worker = state.active_runs_by_worker()
        alerts = state.alerts_by_worker()
        rows: list[Row] = []
        for name, ws in state.workers.items():
            runs = runs_by_worker.get(name, [])
            basis = (ws.worker, ws.probes, tuple(r.name for r in runs), alerts[name])
            cached = self._rows.get(name)
            if cached is None or cached[0] != basis:
                cached = (basis, fleet_row(ws, runs, alerts[name]))
                self._rows[name] = cached
            rows.append(cached[1])
        self.set_rows(rows)

    def status_extra(self) -> str:
        table = self.table
        sort = (
            f"sort {table.sort_column}{' ▼' if table.sort_reverse else ''}"
            if table.sort_column
            else "workers.yaml order"
        )
        return f"{sort} · o order by · / filter"

    def action_sort(self) -> None:
        table = self.table
        index = SORT_CYCLE.index(table.sort_column) if table.sort_column in SORT_CYCLE else 0
        column = SORT_CYCLE[(index + 1) % len(SORT_CYCLE)]
        # Busy-ness sorts biggest first; names and latency smallest first.
        table.sort_by(column, reverse=column not in (None, "name", "up"))
        self.update_status()

    def action_reverse(self) -> None:
        self.table.sort_by(self.table.sort_column, not self.table.sort_reverse)
        self.update_status()

    def _worker_state(self) -> WorkerState | None:
        key = self.current_key()
        return self.state.workers.get(key) if key else None

    def on_fast_table_activated(self, event: FastTable.Activated) -> None:
        event.stop()
        self.action_gpu_detail()

    def action_gpu_detail(self) -> None:
        ws = self._worker_state()
        if ws is not None:
            self.console.show_gpu_detail(ws.name)

    def action_attach(self) -> None:
        ws = self._worker_state()
        if ws is not None:
            self.console.controller.attach(ws.worker, None)

    def action_teardown(self, action: str) -> None:
        ws = self._worker_state()
        if ws is None:
            return
        uptime = ws.snapshot.uptime_s if ws.snapshot else None
        self.console.controller.plan_teardown(ws.name, TeardownAction(action), uptime)
