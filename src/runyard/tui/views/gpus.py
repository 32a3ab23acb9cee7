"""The GPU view: one worker's GPUs with history charts, and who holds their memory."""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical, VerticalScroll

from runyard.core.fleet.telemetry import GpuProcess, GpuSample, gpu_is_really_working
from runyard.core.gpu_processes import GpuProcessOwner
from runyard.tui import format as fmt
from runyard.tui.format import cell
from runyard.tui.state import ConsoleState, GpuTrace, WorkerState
from runyard.tui.views.base import ConsoleView
from runyard.tui.widgets.charts import AreaChart
from runyard.tui.widgets.fast_table import Column, FastTable, Row
from runyard.tui.widgets.text_line import TextLine

PROCESS_COLUMNS = (
    Column("gpu", "GPU", 3, "right"),
    Column("pid", "PID", 8, "right"),
    Column("process", "PROCESS", 20),
    Column("vram", "VRAM", 8, "right"),
    Column("state", "STATE", 8),
    Column("run", "RUN"),
)


def gpu_title(gpu: GpuSample) -> str:
    """'GPU0 NVIDIA H100 · 97% · 64/80G · 612/700W · 71° · 1890/1980MHz · working'."""
    working = gpu_is_really_working(gpu)
    busy = gpu.util_pct is not None and gpu.util_pct >= 50
    if working is None:
        verdict = ""
    elif working:
        verdict = "[green]working[/]"
    else:
        # util% alone lies: a starved loop of tiny kernels reads busy at idle clocks and power.
        verdict = "[b yellow]busy but not really working[/]" if busy else "[dim]idle[/]"
    parts = [
        f"[b]GPU{gpu.index}[/] {gpu.name}",
        "util n/a" if gpu.util_pct is None else f"{gpu.util_pct:.0f}%",
        f"{fmt.mib(gpu.mem_used_mib)}/{fmt.mib(gpu.mem_total_mib)}",
        f"{fmt.MISSING if gpu.power_w is None else f'{gpu.power_w:.0f}'}/"
        f"{fmt.MISSING if gpu.power_limit_w is None else f'{gpu.power_limit_w:.0f}'}W",
        f"{fmt.MISSING if gpu.temp_c is None else f'{gpu.temp_c:.0f}'}°C",
        f"{fmt.MISSING if gpu.sm_clock_mhz is None else gpu.sm_clock_mhz}/"
        f"{fmt.MISSING if gpu.sm_clock_max_mhz is None else gpu.sm_clock_max_mhz}MHz",
    ]
    if gpu.mig_mode == "Enabled":
        parts.append("MIG")
    if verdict:
        parts.append(verdict)
    return " · ".join(parts)


def process_row(process: GpuProcess, owner: GpuProcessOwner | None) -> Row:
    """A process and its run; `owner` None while the worker's process table is being read."""
    if owner is None:
        state, run = cell("…", fmt.MUTED), "looking up its run"
    elif owner.zombie:
        state = cell("ZOMBIE", f"bold {fmt.BAD}")
        run = f"{owner.run_name} ({owner.run_id}) — finished" if owner.run_id else "no run"
    else:
        state, run = cell("run", fmt.GOOD), f"{owner.run_name} ({owner.run_id})"
    return Row(
        key=f"{process.gpu_uuid}:{process.pid}",
        cells=(
            cell("?" if process.gpu_index is None else str(process.gpu_index)),
            cell(str(process.pid)),
            cell(process.process_name),
            cell(fmt.MISSING if process.used_mem_mib is None else f"{process.used_mem_mib:.0f}M"),
            state,
            cell(run, "" if owner and owner.run_id else fmt.MUTED),
        ),
        sort_values=(process.gpu_index, process.pid),
    )


class GpuPanel(Vertical):
    """One GPU: a title line and four history charts."""

    DEFAULT_CSS = """
    GpuPanel { height: 8; }
    GpuPanel > .gpu-title { height: 1; padding: 0 1; }
    GpuPanel > Horizontal { height: 7; }
    GpuPanel AreaChart { height: 100%; }
    """

    def __init__(self, gpu: GpuSample, trace: GpuTrace) -> None:
        # A class, not an id: panels of the worker shown before may still be in the DOM
        # while these mount (removal is asynchronous), and ids must be unique there.
        self.index = gpu.index or 0
        super().__init__(classes=f"gpu-{self.index}")
        self.gpu = gpu
        self.trace = trace

    def compose(self) -> ComposeResult:
        yield TextLine(classes="gpu-title")
        with Horizontal():
            yield AreaChart("util", "%", "green", id="util")
            yield AreaChart("memory", "%", "magenta", id="memory")
            yield AreaChart("power", "W", "yellow", id="power")
            yield AreaChart("SM clock", "MHz", "cyan", id="clock")

    def on_mount(self) -> None:
        self.show(self.gpu, self.trace)

    def show(self, gpu: GpuSample, trace: GpuTrace) -> None:
        self.gpu, self.trace = gpu, trace
        self.query_one(".gpu-title", TextLine).show(gpu_title(gpu))
        self.query_one("#util", AreaChart).set_values(trace.util, 100.0)
        self.query_one("#memory", AreaChart).set_values(trace.memory_pct, 100.0)
        self.query_one("#power", AreaChart).set_values(
            trace.power_w, float(gpu.power_limit_w) if gpu.power_limit_w else None
        )
        self.query_one("#clock", AreaChart).set_values(
            trace.sm_clock_mhz, float(gpu.sm_clock_max_mhz) if gpu.sm_clock_max_mhz else None
        )


class GpuView(ConsoleView):
    """The GPUs of one worker (Enter on a worker in Fleet; [ and ] for the others)."""

    TITLE = "GPUs"
    DEFAULT_CSS = """
    GpuView > .gpu-header { height: 1; padding: 0 1; background: $boost; }
    GpuView > #gpu-panels { height: 2fr; }
    GpuView > .section { height: 1; padding: 0 1; color: $text-accent; }
    GpuView > FastTable { height: 1fr; min-height: 4; }
    """
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("left_square_bracket", "other_worker(-1)", "Prev worker", key_display="["),
        Binding("right_square_bracket", "other_worker(1)", "Next worker", key_display="]"),
        Binding("s", "attach", "Shell"),
    ]

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.worker_name: str | None = None
        self.owners: dict[str, list[GpuProcessOwner]] = {}
        self._owners_for: dict[str, float] = {}  # worker -> snapshot time owners were asked for

    def compose(self) -> ComposeResult:
        yield TextLine(classes="gpu-header")
        yield VerticalScroll(id="gpu-panels")
        yield TextLine("Processes holding GPU memory", classes="section")
        yield FastTable(PROCESS_COLUMNS, id="gpu-processes")

    def focus_main(self) -> None:
        self.query_one(FastTable).focus()

    def select(self, worker: str) -> None:
        self.worker_name = worker

    def _candidates(self, state: ConsoleState) -> list[str]:
        with_gpus = [name for name, ws in state.workers.items() if ws.gpus()]
        return with_gpus or list(state.workers)

    def show(self, state: ConsoleState) -> None:
        candidates = self._candidates(state)
        if self.worker_name not in state.workers and candidates:
            self.worker_name = candidates[0]
        ws = state.workers.get(self.worker_name or "")
        header = self.query_one(".gpu-header", TextLine)
        if ws is None:
            header.show("No workers in workers.yaml.")
            return
        self._show_header(ws, header)
        self._show_panels(ws)
        self._show_processes(ws, state)

    def _show_header(self, ws: WorkerState, header: TextLine) -> None:
        snapshot = ws.snapshot
        if snapshot is None:
            detail = (
                f"[red]unreachable[/]: {ws.error}" if ws.probed else "waiting for the first probe"
            )
        elif not snapshot.gpus:
            detail = {
                "missing": "no nvidia-smi on this worker (a CPU box)",
                "error": f"[red]nvidia-smi failed[/]: {snapshot.nvidia_smi_error}",
            }.get(snapshot.nvidia_smi, "no GPU")
        else:
            detail = f"{len(snapshot.gpus)} GPU(s) · history of the last {len(next(iter(ws.traces.values())).util)} probes"
        header.show(f"[b]{ws.name}[/] ({ws.worker.worker_pool}) · {detail} · [ ] other workers")

    def _show_panels(self, ws: WorkerState) -> None:
        gpus = ws.gpus()
        container = self.query_one("#gpu-panels", VerticalScroll)
        panels = list(container.query(GpuPanel))
        wanted = [gpu.index or 0 for gpu in gpus]
        if [p.index for p in panels] != wanted:
            container.remove_children()
            container.mount_all(
                GpuPanel(gpu, ws.traces.setdefault(gpu.index or 0, GpuTrace())) for gpu in gpus
            )
            return
        for panel, gpu in zip(panels, gpus, strict=True):
            panel.show(gpu, ws.traces.setdefault(gpu.index or 0, GpuTrace()))

    def _show_processes(self, ws: WorkerState, state: ConsoleState) -> None:
        snapshot = ws.snapshot
        processes = list(snapshot.gpu_processes) if snapshot else []
        self._show_owners(processes, self.owners.get(ws.name, []))
        if snapshot is not None and self._owners_for.get(ws.name) != snapshot.taken_at:
            self._owners_for[ws.name] = snapshot.taken_at
            self.console.controller.find_gpu_owners(ws.worker, processes, state.runs)

    def _show_owners(
        self, processes: Sequence[GpuProcess], owners: Sequence[GpuProcessOwner]
    ) -> None:
        by_process = {(o.process.gpu_uuid, o.process.pid): o for o in owners}
        rows = [process_row(p, by_process.get((p.gpu_uuid, p.pid))) for p in processes]
        self.query_one(FastTable).set_rows(rows)

    def set_owners(self, worker: str, owners: Sequence[GpuProcessOwner]) -> None:
        self.owners[worker] = list(owners)
        ws = self.state.workers.get(worker)
        if worker == self.worker_name and ws is not None and ws.snapshot is not None:
            self._show_owners(ws.snapshot.gpu_processes, owners)

    def action_other_worker(self, step: int) -> None:
        candidates = self._candidates(self.state)
        if not candidates:
            return
        index = candidates.index(self.worker_name) if self.worker_name in candidates else -step
        self.worker_name = candidates[(index + step) % len(candidates)]
        self.show(self.state)

    def action_attach(self) -> None:
        ws = self.state.workers.get(self.worker_name or "")
        if ws is not None:
            self.console.controller.attach(ws.worker, None)
