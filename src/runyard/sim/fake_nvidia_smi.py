#!/usr/bin/env python3
"""A stand-in for `nvidia-smi` on the simulated demo fleet (stdlib only, runs as a script).

The GPUs come from a JSON file named by `RUNYARD_SIM_GPUS`. Their load follows the runs
really running in the worker's sandbox workspace (`RUNYARD_SIM_WORKSPACE`): every attempt
directory `.runyard/runs/<run>/<attempt>/` with a live `pid` and no `exit_code` keeps one GPU
busy, assigned round-robin, so the console's telemetry moves when the demo starts and ends
runs. `RUNYARD_SIM_GPU_FAULT` injects failures: `na` (util and power read [N/A]) and
`driver` (the driver-communication failure, exit 9).

GPU entries: {"name", "memory_total_mib", "power_limit_w", "sm_clock_max_mhz", "uuid"},
optionally "mig_mode" ("Enabled" makes util read [N/A]) and "zombies": [{"pid",
"used_memory_mib", "process_name"}], processes that hold VRAM but belong to no run.
"""

from __future__ import annotations

import json
import math
import os
import shlex
import sys
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, TypeVar

GPUS_ENV = "RUNYARD_SIM_GPUS"
WORKSPACE_ENV = "RUNYARD_SIM_WORKSPACE"
FAULT_ENV = "RUNYARD_SIM_GPU_FAULT"
FAULT_NOT_AVAILABLE = "na"
FAULT_DRIVER = "driver"

DRIVER_VERSION = "550.54.15"
CUDA_VERSION = "12.4"
NOT_AVAILABLE = "[N/A]"
DRIVER_FAILURE_MESSAGE = (
    "NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver. "
    "Make sure that the latest NVIDIA driver is installed and running."
)
INVALID_ARGUMENTS_MESSAGE = (
    "Invalid combination of input arguments. Please run 'nvidia-smi -h' for help."
)
EXIT_INVALID_ARGUMENTS = 2
EXIT_NO_DEVICES = 6
EXIT_DRIVER_FAILURE = 9
EXIT_BAD_DESCRIPTION = 1

# What an idle and a busy GPU look like, as fractions of the card's limits.
IDLE_SM_CLOCK_MHZ = 210
IDLE_POWER_RATIO = 0.1
IDLE_TEMP_C = 33
BUSY_MEMORY_RATIO = 0.8  # shared by the runs on one GPU
JITTER_PERIOD_S = 5.0

DEFAULT_GPU: dict[str, Any] = {
    "name": "NVIDIA H100 80GB HBM3",
    "memory_total_mib": 81559,
    "power_limit_w": 700.0,
    "sm_clock_max_mhz": 1980,
}


# ---------------------------------------------------------------- the simulated cards


@dataclass(frozen=True)
class SimProcess:
    """A compute process on a simulated GPU: a live run or a configured zombie."""

    pid: int
    process_name: str
    used_memory_mib: int | None


@dataclass(frozen=True)
class SimGpu:
    """One card of the JSON description."""

    index: int
    name: str
    uuid: str
    memory_total_mib: int
    power_limit_w: float
    sm_clock_max_mhz: int
    mig_mode: str | None
    zombies: tuple[SimProcess, ...]


@dataclass(frozen=True)
class GpuReading:
    """What a card reports right now; None prints as [N/A]."""

    gpu: SimGpu
    util_pct: int | None
    mem_used_mib: int
    power_w: float | None
    temp_c: int
    sm_clock_mhz: int
    processes: tuple[SimProcess, ...]


def _gpu_from_entry(index: int, entry: Mapping[str, Any]) -> SimGpu:
    spec = {**DEFAULT_GPU, **entry}
    zombies = tuple(
        SimProcess(
            pid=int(zombie["pid"]),
            process_name=str(zombie.get("process_name", "python")),
            used_memory_mib=int(zombie.get("used_memory_mib", 1024)),
        )
        for zombie in spec.get("zombies", [])
    )
    default_uuid = "GPU-" + str(
        uuid.uuid5(uuid.NAMESPACE_URL, f"runyard-sim/{index}/{spec['name']}")
    )
    return SimGpu(
        index=index,
        name=str(spec["name"]),
        uuid=str(spec.get("uuid") or default_uuid),
        memory_total_mib=int(spec["memory_total_mib"]),
        power_limit_w=float(spec["power_limit_w"]),
        sm_clock_max_mhz=int(spec["sm_clock_max_mhz"]),
        mig_mode=str(spec["mig_mode"]) if spec.get("mig_mode") else None,
        zombies=zombies,
    )


def load_gpus(spec_path: str | None) -> list[SimGpu]:
    """The cards described in the JSON file at `spec_path`; none when it is unset."""
    if not spec_path:
        return []
    entries = json.loads(Path(spec_path).read_text(encoding="utf-8"))
    if not isinstance(entries, list):
        raise ValueError(f"{spec_path}: expected a JSON list of GPUs")
    return [_gpu_from_entry(index, entry) for index, entry in enumerate(entries)]


# ---------------------------------------------------------------- runs in the sandbox


def process_alive(pid: int) -> bool:
    """Whether `pid` is a live process (a defunct zombie counts as dead)."""
    if pid <= 0:  # 0 and negatives would address process groups
        return False
    try:
        os.kill(pid, 0)
    except PermissionError:
        pass
    except OSError:
        return False
    try:
        stat = Path(f"/proc/{pid}/stat").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return True
    return stat.rpartition(")")[2].split()[:1] != ["Z"]


def _read_pid(pid_file: Path) -> int | None:
    try:
        first_line = pid_file.read_text(encoding="utf-8", errors="replace").split("\n", 1)[0]
        return int(first_line.strip())
    except (OSError, ValueError):
        return None


def live_run_pids(workspace: Path) -> list[int]:
    """Pids of the unfinished, live run attempts under `workspace`, in sorted path order."""
    runs_dir = workspace / ".runyard" / "runs"
    pid_files = sorted({*runs_dir.glob("*/*/pid"), *runs_dir.glob("*/pid")})
    pids: list[int] = []
    for pid_file in pid_files:
        if (pid_file.parent / "exit_code").exists():
            continue
        pid = _read_pid(pid_file)
        if pid is not None and pid not in pids and process_alive(pid):
            pids.append(pid)
    return pids


def _process_name(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text(encoding="utf-8").strip() or "python"
    except OSError:
        return "python"


def read_gpus(
    gpus: Sequence[SimGpu], run_pids: Sequence[int], fault: str, now: float
) -> list[GpuReading]:
    """Every card's reading at `now`, with the live runs spread over the cards round-robin."""
    pids_by_gpu: dict[int, list[int]] = {gpu.index: [] for gpu in gpus}
    for position, pid in enumerate(run_pids):
        if gpus:
            pids_by_gpu[gpus[position % len(gpus)].index].append(pid)
    readings: list[GpuReading] = []
    for gpu in gpus:
        pids = pids_by_gpu[gpu.index]
        busy = bool(pids)
        run_memory = int(gpu.memory_total_mib * BUSY_MEMORY_RATIO / len(pids)) if busy else 0
        processes = (
            *(SimProcess(pid, _process_name(pid), run_memory) for pid in pids),
            *gpu.zombies,
        )
        wave = 0.5 + 0.5 * math.sin(now / JITTER_PERIOD_S + gpu.index * 1.3)
        util = 85 + round(14 * wave) if busy else 0
        power = gpu.power_limit_w * ((0.72 + 0.2 * wave) if busy else IDLE_POWER_RATIO)
        mem_used = sum(process.used_memory_mib or 0 for process in processes)
        readings.append(
            GpuReading(
                gpu=gpu,
                util_pct=None if fault == FAULT_NOT_AVAILABLE or gpu.mig_mode else util,
                mem_used_mib=min(mem_used, gpu.memory_total_mib),
                power_w=None if fault == FAULT_NOT_AVAILABLE else round(power, 2),
                temp_c=62 + round(12 * wave) if busy else IDLE_TEMP_C,
                sm_clock_mhz=(
                    round(gpu.sm_clock_max_mhz * (0.92 + 0.08 * wave))
                    if busy
                    else min(IDLE_SM_CLOCK_MHZ, gpu.sm_clock_max_mhz)
                ),
                processes=processes,
            )
        )
    return readings


# ---------------------------------------------------------------- query output

T = TypeVar("T")


@dataclass(frozen=True)
class Column(Generic[T]):
    """One queryable field: its unit (for `csv` without `nounits`) and how to read it."""

    unit: str
    read: Callable[[T], object]


@dataclass(frozen=True)
class AppRow:
    """One `--query-compute-apps` row: a process and the card it runs on."""

    reading: GpuReading
    process: SimProcess


def _bus_id(gpu: SimGpu) -> str:
    return f"00000000:{0x18 + gpu.index:02X}:00.0"


GPU_COLUMNS: dict[str, Column[GpuReading]] = {
    "index": Column("", lambda r: r.gpu.index),
    "name": Column("", lambda r: r.gpu.name),
    "uuid": Column("", lambda r: r.gpu.uuid),
    "pci.bus_id": Column("", lambda r: _bus_id(r.gpu)),
    "driver_version": Column("", lambda r: DRIVER_VERSION),
    "utilization.gpu": Column("%", lambda r: r.util_pct),
    "memory.used": Column("MiB", lambda r: r.mem_used_mib),
    "memory.total": Column("MiB", lambda r: r.gpu.memory_total_mib),
    "memory.free": Column("MiB", lambda r: r.gpu.memory_total_mib - r.mem_used_mib),
    "power.draw": Column("W", lambda r: r.power_w),
    "power.limit": Column("W", lambda r: r.gpu.power_limit_w),
    "temperature.gpu": Column("", lambda r: r.temp_c),
    "clocks.sm": Column("MHz", lambda r: r.sm_clock_mhz),
    "clocks.max.sm": Column("MHz", lambda r: r.gpu.sm_clock_max_mhz),
    "mig.mode.current": Column("", lambda r: r.gpu.mig_mode),
}
GPU_COLUMNS |= {
    "gpu_name": GPU_COLUMNS["name"],
    "gpu_uuid": GPU_COLUMNS["uuid"],
    "clocks.current.sm": GPU_COLUMNS["clocks.sm"],
}

APP_COLUMNS: dict[str, Column[AppRow]] = {
    "gpu_uuid": Column("", lambda a: a.reading.gpu.uuid),
    "gpu_name": Column("", lambda a: a.reading.gpu.name),
    "gpu_bus_id": Column("", lambda a: _bus_id(a.reading.gpu)),
    "pid": Column("", lambda a: a.process.pid),
    "process_name": Column("", lambda a: a.process.process_name),
    # Under MIG the per-process memory is not reported.
    "used_memory": Column(
        "MiB", lambda a: None if a.reading.gpu.mig_mode else a.process.used_memory_mib
    ),
}
APP_COLUMNS |= {"name": APP_COLUMNS["process_name"], "used_gpu_memory": APP_COLUMNS["used_memory"]}


class QueryError(Exception):
    """A query nvidia-smi would refuse; the message is what it prints."""


def _format_value(value: object, unit: str, with_units: bool) -> str:
    if value is None:
        return NOT_AVAILABLE
    text = f"{value:.2f}" if isinstance(value, float) else str(value)
    return f"{text} {unit}" if with_units and unit else text


def render_query(
    fields: Sequence[str], columns: Mapping[str, Column[T]], rows: Sequence[T], csv_format: str
) -> list[str]:
    """CSV lines for `--query-*=fields --format=csv_format`, as nvidia-smi lays them out."""
    for name in fields:
        if name not in columns:
            raise QueryError(f'Field "{name}" is not a valid field to query.')
    options = {option.strip() for option in csv_format.split(",")}
    if "csv" not in options:
        raise QueryError(INVALID_ARGUMENTS_MESSAGE)
    with_units = "nounits" not in options
    lines: list[str] = []
    if "noheader" not in options:
        units = {name: columns[name].unit if with_units else "" for name in fields}
        lines.append(", ".join(f"{n} [{units[n]}]" if units[n] else n for n in fields))
    for row in rows:
        cells = (_format_value(columns[n].read(row), columns[n].unit, with_units) for n in fields)
        lines.append(", ".join(cells))
    return lines


def render_list(readings: Sequence[GpuReading]) -> list[str]:
    """`nvidia-smi -L`."""
    return [f"GPU {r.gpu.index}: {r.gpu.name} (UUID: {r.gpu.uuid})" for r in readings]


def render_table(readings: Sequence[GpuReading], now: float) -> list[str]:
    """Plain `nvidia-smi`: a short human table, labelled as simulated."""
    lines = [
        time.strftime("%a %b %d %H:%M:%S %Y", time.localtime(now)),
        f"NVIDIA-SMI {DRIVER_VERSION}   Driver Version: {DRIVER_VERSION}   "
        f"CUDA Version: {CUDA_VERSION}   (simulated by runyard)",
        f"{'GPU':>3}  {'Name':<28}  {'Temp':>4}  {'Pwr:Usage/Cap':>16}  "
        f"{'Memory-Usage':>23}  {'GPU-Util':>8}",
    ]
    for r in readings:
        power = _format_value(r.power_w, "W", True)
        util = "N/A" if r.util_pct is None else f"{r.util_pct}%"
        lines.append(
            f"{r.gpu.index:>3}  {r.gpu.name:<28.28}  {r.temp_c:>3}C  "
            f"{power:>9} / {r.gpu.power_limit_w:>3.0f}W  "
            f"{r.mem_used_mib:>7}MiB / {r.gpu.memory_total_mib:>7}MiB  {util:>8}"
        )
    lines += ["", "Processes:", f"{'GPU':>3}  {'PID':>8}  {'Process name':<28}  GPU Memory"]
    process_lines = [
        f"{r.gpu.index:>3}  {p.pid:>8}  {p.process_name:<28.28}  "
        f"{_format_value(p.used_memory_mib, 'MiB', True)}"
        for r in readings
        for p in r.processes
    ]
    return lines + (process_lines or ["No running processes found"])


# ---------------------------------------------------------------- the command line


def _parse_arguments(argv: Sequence[str]) -> dict[str, str]:
    """nvidia-smi's options as {name: value}; `--opt=value` and `--opt value` both work."""
    valued = {"--query-gpu", "--query-compute-apps", "--format"}
    flags = {"-L": "--list-gpus", "--list-gpus": "--list-gpus"}
    options: dict[str, str] = {}
    arguments = iter(argv)
    for argument in arguments:
        name, has_value, value = argument.partition("=")
        if name in valued:
            options[name] = value if has_value else next(arguments, "")
        elif argument in flags:
            options[flags[argument]] = ""
        else:
            raise QueryError(INVALID_ARGUMENTS_MESSAGE)
    return options


def run(argv: Sequence[str], environ: Mapping[str, str], now: float) -> tuple[int, list[str]]:
    """The exit status and stdout lines of `nvidia-smi argv` on the simulated box."""
    if environ.get(FAULT_ENV, "") == FAULT_DRIVER:
        return EXIT_DRIVER_FAILURE, [DRIVER_FAILURE_MESSAGE]
    try:
        options = _parse_arguments(argv)
        if ("--query-gpu" in options or "--query-compute-apps" in options) and (
            "--format" not in options
        ):
            raise QueryError(INVALID_ARGUMENTS_MESSAGE)
        try:
            gpus = load_gpus(environ.get(GPUS_ENV))
        except (OSError, ValueError, KeyError, TypeError) as exc:
            return EXIT_BAD_DESCRIPTION, [f"simulated nvidia-smi: bad {GPUS_ENV}: {exc!r}"]
        if not gpus:
            return EXIT_NO_DEVICES, ["No devices were found"]
        workspace = environ.get(WORKSPACE_ENV)
        run_pids = live_run_pids(Path(workspace)) if workspace else []
        readings = read_gpus(gpus, run_pids, environ.get(FAULT_ENV, ""), now)
        if "--query-gpu" in options:
            fields = options["--query-gpu"].split(",")
            return 0, render_query(fields, GPU_COLUMNS, readings, options["--format"])
        if "--query-compute-apps" in options:
            fields = options["--query-compute-apps"].split(",")
            apps = [AppRow(r, p) for r in readings for p in r.processes]
            return 0, render_query(fields, APP_COLUMNS, apps, options["--format"])
        if "--list-gpus" in options:
            return 0, render_list(readings)
        if options:
            raise QueryError(INVALID_ARGUMENTS_MESSAGE)
        return 0, render_table(readings, now)
    except QueryError as exc:
        return EXIT_INVALID_ARGUMENTS, [str(exc)]


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: print what nvidia-smi would and return its exit status."""
    status, lines = run(sys.argv[1:] if argv is None else argv, os.environ, time.time())
    if lines:
        print("\n".join(lines))
    return status


# ---------------------------------------------------------------- installing the shim


def write_fake_nvidia_smi(
    bin_dir: Path,
    gpus: Sequence[Mapping[str, Any]],
    workspace: Path,
    *,
    fault: str | None = None,
) -> Path:
    """Write an executable `nvidia-smi` into `bin_dir` that runs this fake for `gpus`.

    Prepending `bin_dir` to PATH makes `nvidia-smi` resolve to it. The GPU description is
    written next to it. Without `fault`, `RUNYARD_SIM_GPU_FAULT` passes through from the
    caller's environment.
    """
    bin_dir.mkdir(parents=True, exist_ok=True)
    spec_path = bin_dir / "nvidia-smi.gpus.json"
    spec_path.write_text(json.dumps([dict(gpu) for gpu in gpus], indent=2), encoding="utf-8")
    lines = [
        "#!/bin/sh",
        "# runyard's simulated nvidia-smi (demo fleet); see runyard/sim/fake_nvidia_smi.py",
        f"export {GPUS_ENV}={shlex.quote(str(spec_path))}",
        f"export {WORKSPACE_ENV}={shlex.quote(str(workspace))}",
    ]
    if fault is not None:
        lines.append(f"export {FAULT_ENV}={shlex.quote(fault)}")
    script = shlex.quote(str(Path(__file__).resolve()))
    # -S: the fake needs only the stdlib, and skipping site-packages halves its start-up.
    lines.append(f'exec {shlex.quote(sys.executable)} -S {script} "$@"')
    shim = bin_dir / "nvidia-smi"
    shim.write_text("\n".join(lines) + "\n", encoding="utf-8")
    shim.chmod(0o755)
    return shim


if __name__ == "__main__":
    sys.exit(main())
