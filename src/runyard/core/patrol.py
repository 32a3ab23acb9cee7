"""Health patrol: turn what the workers report into a short list of alerts an operator acts on.

Each tick probes every worker twice, concurrently: the telemetry probe (GPUs, disk,
heartbeat) and a patrol probe (process tree, kernel log, and the run protocol's check for
the log age and boot id of each active run). Pure rule functions then judge one worker at a
time, so every rule is testable without I/O. What a single tick cannot see ("idle for ten
minutes", "the boot id changed") lives in `.runyard/patrol.json` between ticks, together
with the alerts themselves so `first_seen` survives and raised/cleared alerts reach the
events log exactly once.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shlex
import time
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from runyard.core.errors import RunyardError
from runyard.core.fleet.telemetry import (
    MARK,
    GpuSample,
    WorkerSnapshot,
    gpu_is_really_working,
)
from runyard.core.fleet.transports import Fleet
from runyard.core.models import Run, RunStatus, Worker
from runyard.core.protocol import CheckReport, ProbeTarget, RunProbe, build_check, parse_check
from runyard.core.settings import AlertSettings
from runyard.core.store.atomic import atomic_write_text
from runyard.core.store.workspace_store import WorkspaceStore
from runyard.core.telemetry_service import probe_worker
from runyard.core.workspace import Workspace

Severity = Literal["warning", "critical"]

STATE_FILE = "patrol.json"
STATE_VERSION = 1
# Kernel lines (OOM kills, Xids) and reboot-lost runs older than this are history, not alerts.
RECENT_WINDOW_S = 24 * 3600.0
KERNEL_LOG_LINES = 200
# Disk alerts are warnings at the configured threshold and critical from here on.
DISK_CRITICAL_PCT = 98.0
# Xids that mean the hardware or its firmware failed, not the application: the GPU needs a
# reset or the box a reboot (NVIDIA's Xid catalogue).
CRITICAL_XIDS = frozenset({48, 64, 74, 79, 95, 119, 120})

UNREACHABLE = "unreachable"
HEARTBEAT = "heartbeat"
GPU_DRIVER = "gpu_driver"
PATROL_PROBE = "patrol_probe"
DISK = "disk"
INODES = "inodes"
GPU_IDLE = "gpu_idle"
ZOMBIE_VRAM = "zombie_vram"
STALE_LOG = "stale_log"
REBOOTED = "rebooted"
RUN_LOST = "run_lost"
OOM = "oom"
XID = "xid"

# Which alerts each probe decides. When a probe fails, the previous alerts of its kinds are
# kept as they were: not knowing is not the same as "cleared".
_TELEMETRY_KINDS = frozenset({HEARTBEAT, GPU_DRIVER, DISK, INODES, GPU_IDLE, ZOMBIE_VRAM})
_PATROL_PROBE_KINDS = frozenset({GPU_IDLE, ZOMBIE_VRAM, STALE_LOG, REBOOTED, OOM, XID})


# ---------------------------------------------------------------- records


@dataclass(frozen=True, kw_only=True)
class Alert:
    """One problem on one worker, with the action that fixes it; `id` is stable across ticks."""

    id: str
    kind: str
    severity: Severity
    worker: str
    run_id: str | None = None
    gpu_index: int | None = None
    message: str
    fix: str
    first_seen: str = ""
    last_seen: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Any) -> Alert | None:
        """An alert from patrol.json; None for anything that is not one."""
        if not isinstance(data, dict):
            return None
        text = ("id", "kind", "worker", "message", "fix", "first_seen", "last_seen")
        if any(not isinstance(data.get(key), str) for key in text):
            return None
        severity = data.get("severity")
        run_id, gpu_index = data.get("run_id"), data.get("gpu_index")
        if severity not in ("warning", "critical") or not isinstance(run_id, str | None):
            return None
        if gpu_index is not None and (
            isinstance(gpu_index, bool) or not isinstance(gpu_index, int)
        ):
            return None
        return cls(
            id=data["id"],
            kind=data["kind"],
            severity="critical" if severity == "critical" else "warning",
            worker=data["worker"],
            run_id=run_id,
            gpu_index=gpu_index,
            message=data["message"],
            fix=data["fix"],
            first_seen=data["first_seen"],
            last_seen=data["last_seen"],
        )


def make_alert(
    kind: str,
    severity: Severity,
    worker: str,
    subject: str,
    message: str,
    fix: str,
    *,
    run_id: str | None = None,
    gpu_index: int | None = None,
) -> Alert:
    """An alert whose id is `kind:worker:subject`, so the same problem keeps its id."""
    return Alert(
        id=f"{kind}:{worker}:{subject}",
        kind=kind,
        severity=severity,
        worker=worker,
        run_id=run_id,
        gpu_index=gpu_index,
        message=message,
        fix=fix,
    )


@dataclass(frozen=True)
class ProcessInfo:
    """A process's parent and session (None where the worker's `ps` cannot say)."""

    ppid: int
    sid: int | None = None


@dataclass(frozen=True)
class KernelEvent:
    """An OOM kill or an Xid from the kernel log, deduplicated by what it is about."""

    kind: Literal["oom", "xid"]
    key: str
    text: str
    timestamp_s: float | None = None  # seconds since boot, as the kernel stamps its lines
    count: int = 1
    pid: int | None = None
    process: str | None = None
    xid: int | None = None
    device: str | None = None
    detail: str = ""  # what the driver says about an Xid, after its pid and name


@dataclass(frozen=True)
class PatrolProbe:
    """What the patrol probe found on one worker."""

    processes: dict[int, ProcessInfo]
    kernel_events: list[KernelEvent]
    check: CheckReport


@dataclass(frozen=True)
class WorkerObservation:
    """Everything one tick learnt about one worker; None where a probe failed (see errors)."""

    worker: Worker
    runs: Sequence[Run] = ()  # the queue's runs on this worker, any status
    snapshot: WorkerSnapshot | None = None
    probe_error: str | None = None
    patrol: PatrolProbe | None = None
    patrol_error: str | None = None

    @property
    def name(self) -> str:
        return self.worker.worker_id


@dataclass(frozen=True)
class WorkerMemory:
    """What the previous tick saw of a worker, to notice a boot id that changed under runs."""

    boot_id: str | None
    active_runs: tuple[str, ...] = ()


@dataclass
class PatrolState:
    """The contents of `.runyard/patrol.json`."""

    alerts: dict[str, Alert] = field(default_factory=dict)
    gpu_idle_since: dict[str, float] = field(default_factory=dict)
    workers: dict[str, WorkerMemory] = field(default_factory=dict)
    updated_at: float | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "version": STATE_VERSION,
            "updated_at": self.updated_at,
            "alerts": {key: alert.to_dict() for key, alert in sorted(self.alerts.items())},
            "gpu_idle_since": dict(sorted(self.gpu_idle_since.items())),
            "workers": {
                name: {"boot_id": memory.boot_id, "active_runs": list(memory.active_runs)}
                for name, memory in sorted(self.workers.items())
            },
        }

    @classmethod
    def from_json(cls, data: Any) -> PatrolState:
        """Parse patrol.json; malformed entries are dropped, a wrong shape raises ValueError."""
        if not isinstance(data, dict) or data.get("version") != STATE_VERSION:
            raise ValueError(f"not a version {STATE_VERSION} patrol state")
        state = cls()
        for key, raw in _mapping(data.get("alerts")).items():
            alert = Alert.from_dict(raw)
            if alert is not None and alert.id == key:
                state.alerts[key] = alert
        for key, since in _mapping(data.get("gpu_idle_since")).items():
            if isinstance(since, int | float) and not isinstance(since, bool):
                state.gpu_idle_since[key] = float(since)
        for name, raw in _mapping(data.get("workers")).items():
            if not isinstance(raw, dict):
                continue
            boot_id = raw.get("boot_id")
            runs = raw.get("active_runs")
            state.workers[name] = WorkerMemory(
                boot_id if isinstance(boot_id, str) else None,
                tuple(r for r in runs if isinstance(r, str)) if isinstance(runs, list) else (),
            )
        updated = data.get("updated_at")
        state.updated_at = float(updated) if isinstance(updated, int | float) else None
        return state


def _mapping(value: Any) -> dict[str, Any]:
    return {str(k): v for k, v in value.items()} if isinstance(value, dict) else {}


# ---------------------------------------------------------------- the patrol probe


_PATROL_SCRIPT = r"""
export LC_ALL=C
exec </dev/null
_ry_limited() {
  local limit=$1
  shift
  if command -v timeout >/dev/null 2>&1; then timeout "$limit" "$@"; else "$@"; fi
}
printf '__MARK__section processes\n'
if [ -r /proc/self/stat ]; then
  # pid, ppid and session of every process; comm may hold spaces, so cut after its ')'.
  for _ry_f in /proc/[0-9]*/stat; do
    _ry_l=
    { read -r _ry_l < "$_ry_f"; } 2>/dev/null
    [ -n "$_ry_l" ] || continue
    set -- ${_ry_l##*) }
    _ry_p=${_ry_f#/proc/}
    printf '%s %s %s\n' "${_ry_p%/stat}" "$2" "$4"
  done
else
  ps -A -o pid= -o ppid= 2>/dev/null
fi
printf '__MARK__section kernel\n'
_ry_k=$(_ry_limited 10 dmesg --level=err,warn 2>/dev/null | tail -n __LINES__)
if [ -z "$_ry_k" ]; then
  _ry_k=$(_ry_limited 10 journalctl -k -p warning -n __LINES__ --no-pager -o short-monotonic 2>/dev/null)
fi
[ -n "$_ry_k" ] && printf '%s\n' "$_ry_k"
printf '__MARK__section check\n'
"""


def build_patrol_probe(targets: Sequence[ProbeTarget]) -> str:
    """One script: the process table, the recent kernel log, then the run check of `targets`.

    An unreadable kernel log (dmesg_restrict, no journal access) leaves its section empty.
    """
    sections = _PATROL_SCRIPT.replace("__LINES__", str(KERNEL_LOG_LINES))
    return sections.replace("__MARK__", MARK) + build_check(targets)


def parse_patrol_probe(stdout: bytes) -> PatrolProbe | None:
    """The probe's report; None when its sections are missing (the script did not run).

    The check section is found by its last marker, so a kernel line cannot forge it.
    """
    marks = {name: f"{MARK}section {name}\n".encode() for name in ("processes", "kernel", "check")}
    start = stdout.find(marks["processes"])
    middle = stdout.find(marks["kernel"], start + 1)
    end = stdout.rfind(marks["check"])
    if start < 0 or middle < start or end < middle:
        return None
    processes = stdout[start + len(marks["processes"]) : middle].decode("utf-8", "replace")
    kernel = stdout[middle + len(marks["kernel"]) : end].decode("utf-8", "replace")
    return PatrolProbe(
        processes=parse_process_table(processes),
        kernel_events=parse_kernel_log(kernel),
        check=parse_check(stdout[end + len(marks["check"]) :]),
    )


def parse_process_table(text: str) -> dict[int, ProcessInfo]:
    """`pid ppid [sid]` lines as {pid: ProcessInfo}; anything else is skipped."""
    table: dict[int, ProcessInfo] = {}
    for line in text.splitlines():
        cells = line.split()
        if len(cells) < 2 or not (cells[0].isdigit() and cells[1].isdigit()):
            continue
        sid = int(cells[2]) if len(cells) > 2 and cells[2].isdigit() else None
        table[int(cells[0])] = ProcessInfo(int(cells[1]), sid)
    return table


def ancestors(pid: int, table: Mapping[int, ProcessInfo]) -> list[int]:
    """The parent chain of `pid` up to init (nearest first), safe against cycles."""
    chain: list[int] = []
    seen = {pid}
    info = table.get(pid)
    while info is not None and info.ppid > 0 and info.ppid not in seen:
        chain.append(info.ppid)
        seen.add(info.ppid)
        info = table.get(info.ppid)
    return chain


def owning_run(
    pid: int, table: Mapping[int, ProcessInfo], run_pids: Mapping[int, str]
) -> str | None:
    """The id of the run `pid` belongs to: the run's own pid, a descendant, or in its session.

    Runs start as session leaders (`setsid`, or a tmux pane), so a child orphaned by a dying
    wrapper still carries the run's session id even after it is reparented to init.
    """
    if pid in run_pids:
        return run_pids[pid]
    info = table.get(pid)
    if info is not None and info.sid is not None and info.sid in run_pids:
        return run_pids[info.sid]
    return next((run_pids[a] for a in ancestors(pid, table) if a in run_pids), None)


# ---------------------------------------------------------------- the kernel log

_KERNEL_STAMP = re.compile(r"^\[\s*(\d+(?:\.\d+)?)\]\s*")
_JOURNAL_PREFIX = re.compile(r"^\S+ kernel: ")
_OOM_KILLED = re.compile(r"out of memory: Kill(?:ed)? process (\d+) \(([^)]*)\)", re.IGNORECASE)
_OOM_KILL = re.compile(r"\boom-kill:\S*?\bpid=(\d+)")
_OOM_TASK = re.compile(r"\btask=([^,\s]+)")
_XID = re.compile(r"NVRM: Xid \(([^)]*)\): (\d+)(.*)")
_XID_PID = re.compile(r"^,\s*pid=['\"]?(\d+|<unknown>)['\"]?")
_XID_NAME = re.compile(r"^,\s*name=([^,]*)")


def parse_kernel_log(text: str) -> list[KernelEvent]:
    """OOM kills and Xids in `dmesg` or `journalctl -o short-monotonic` output.

    The same event printed twice (an OOM kill reports itself in two lines; a faulting
    process repeats its Xid) becomes one event with a count and the latest timestamp.
    """
    events: dict[tuple[str, str], KernelEvent] = {}
    for raw in text.splitlines():
        stamp = _KERNEL_STAMP.match(raw)
        timestamp = float(stamp.group(1)) if stamp else None
        line = _JOURNAL_PREFIX.sub("", raw[stamp.end() :] if stamp else raw).strip()
        event = _oom_event(line, timestamp) or _xid_event(line, timestamp)
        if event is None:
            continue
        previous = events.get((event.kind, event.key))
        if previous is not None:
            latest = max(
                (t for t in (previous.timestamp_s, timestamp) if t is not None), default=None
            )
            event = KernelEvent(
                **{**asdict(previous), "count": previous.count + 1, "timestamp_s": latest}
            )
        events[(event.kind, event.key)] = event
    return list(events.values())


def _oom_event(line: str, timestamp: float | None) -> KernelEvent | None:
    killed = _OOM_KILLED.search(line)
    if killed:
        pid, process = int(killed.group(1)), killed.group(2)
    else:
        oom_kill = _OOM_KILL.search(line)
        if oom_kill is None:
            return None
        task = _OOM_TASK.search(line)
        pid, process = int(oom_kill.group(1)), task.group(1) if task else None
    return KernelEvent("oom", f"pid{pid}", line, timestamp, pid=pid, process=process)


def _xid_event(line: str, timestamp: float | None) -> KernelEvent | None:
    match = _XID.search(line)
    if match is None:
        return None
    device = match.group(1).removeprefix("PCI:")
    xid = int(match.group(2))
    rest = match.group(3)
    pid: int | None = None
    process: str | None = None
    pid_match = _XID_PID.match(rest)
    if pid_match:
        pid = int(pid_match.group(1)) if pid_match.group(1).isdigit() else None
        rest = rest[pid_match.end() :]
    name_match = _XID_NAME.match(rest)
    if name_match:
        name = name_match.group(1).strip()
        process = None if name in ("", "<unknown>") else name
        rest = rest[name_match.end() :]
    key = f"{xid}:{device}:{pid if pid is not None else '-'}"
    return KernelEvent(
        "xid",
        key,
        line,
        timestamp,
        pid=pid,
        process=process,
        xid=xid,
        device=device,
        detail=rest.lstrip(", ").strip(),
    )


# ---------------------------------------------------------------- rules (pure)


def reachability_alerts(obs: WorkerObservation) -> list[Alert]:
    """An unreachable worker, a failing heartbeat, a wedged driver, a failed patrol probe."""
    name = obs.name
    if obs.snapshot is None:
        return [
            make_alert(
                UNREACHABLE,
                "critical",
                name,
                "probe",
                f"unreachable: {obs.probe_error or 'no answer'}",
                _reach_fix(obs.worker),
            )
        ]
    alerts: list[Alert] = []
    snapshot = obs.snapshot
    if not snapshot.heartbeat_ok:
        output = snapshot.heartbeat_output.strip().splitlines()
        alerts.append(
            make_alert(
                HEARTBEAT,
                "critical",
                name,
                "heartbeat",
                f"heartbeat failed (exit {snapshot.heartbeat_exit_status}): "
                f"{output[-1][:160] if output else 'no output'}",
                f"run it by hand on {name}: {obs.worker.health.heartbeat_command}",
            )
        )
    if snapshot.nvidia_smi == "error":
        alerts.append(
            make_alert(
                GPU_DRIVER,
                "critical",
                name,
                "nvidia-smi",
                f"nvidia-smi failed: {snapshot.nvidia_smi_error or 'unknown error'}",
                f"the GPU driver is not answering (often after Xid 79): drain {name} and reboot it",
            )
        )
    elif snapshot.nvidia_smi == "missing" and obs.worker.resources.gpu > 0:
        alerts.append(
            make_alert(
                GPU_DRIVER,
                "warning",
                name,
                "nvidia-smi",
                f"no nvidia-smi on a worker with {obs.worker.resources.gpu} GPU(s)",
                f"install the NVIDIA driver on {name}, or set resources.gpu: 0 in workers.yaml",
            )
        )
    if obs.patrol is None and obs.patrol_error is not None:
        alerts.append(
            make_alert(
                PATROL_PROBE,
                "warning",
                name,
                "probe",
                f"patrol probe failed: {obs.patrol_error}",
                f"check that bash runs on {name}; `runyard alerts` again retries",
            )
        )
    return alerts


def _reach_fix(worker: Worker) -> str:
    if worker.ssh is None:
        return "this machine could not run bash: check the workspace folder and PATH"
    target = f"{worker.ssh.user}@{worker.ssh.host}" if worker.ssh.user else worker.ssh.host
    port = f" -p {worker.ssh.port}" if worker.ssh.port else ""
    key = f" -i {shlex.quote(os.path.expanduser(worker.ssh.key))}" if worker.ssh.key else ""
    return f"is the box up? try `ssh{port}{key} {target}`; a rented box may have been stopped"


def disk_alerts(obs: WorkerObservation, settings: AlertSettings) -> list[Alert]:
    """The workspace's filesystem over the bytes or the inodes threshold.

    Inodes count separately: a dataset of millions of small files fills the inode table
    while `df -h` still shows free space, and every write then fails.
    """
    disk = obs.snapshot.disk if obs.snapshot else None
    if disk is None:
        return []
    where = disk.mount_point or disk.path
    alerts: list[Alert] = []
    checks = (
        (DISK, disk.used_pct, settings.disk_used_pct, "space", f"du -xh {disk.path} | sort -h"),
        (
            INODES,
            disk.inodes_used_pct,
            settings.inodes_used_pct,
            "inodes",
            f"du -x --inodes {disk.path} | sort -n",
        ),
    )
    for kind, used, limit, what, survey in checks:
        if used is None or used < limit:
            continue
        severity: Severity = "critical" if used >= max(limit, DISK_CRITICAL_PCT) else "warning"
        alerts.append(
            make_alert(
                kind,
                severity,
                obs.name,
                where,
                f"disk {what} {used:g}% used on {where} (alert at {limit:g}%)",
                f"free {what} on {obs.name}: `{survey} | tail`",
            )
        )
    return alerts


def _running_runs(obs: WorkerObservation) -> list[Run]:
    """Runs the queue calls running on this worker, minus those the check saw finish."""
    report = obs.patrol.check if obs.patrol else None
    running = []
    for run in obs.runs:
        if run.status != RunStatus.RUNNING:
            continue
        probe = report.runs.get(run.id) if report else None
        if probe is None or probe.exit_code is None:
            running.append(run)
    return running


def _run_pids(obs: WorkerObservation, runs: Iterable[Run]) -> dict[int, str]:
    """{pid: run id} of the given runs, the worker's own pid file winning over the queue's."""
    report = obs.patrol.check if obs.patrol else None
    pids: dict[int, str] = {}
    for run in runs:
        probe = report.runs.get(run.id) if report else None
        pid = (probe.pid if probe else None) or run.pid
        if pid is not None:
            pids[pid] = run.id
    return pids


def zombie_alerts(obs: WorkerObservation) -> list[Alert]:
    """GPU memory held by a process that is neither an active run nor one of its descendants.

    A pid absent from the worker's process table (nvidia-smi inside a container can show
    the host's pids) is only a zombie when no run is active there: with runs active it
    may be one of theirs seen through another pid namespace.
    """
    if obs.snapshot is None or obs.patrol is None:
        return []
    table = obs.patrol.processes
    run_pids = _run_pids(obs, (r for r in obs.runs if r.is_active))
    any_active = any(r.is_active for r in obs.runs)
    alerts: list[Alert] = []
    for process in obs.snapshot.gpu_processes:
        if owning_run(process.pid, table, run_pids) is not None:
            continue
        if process.pid not in table and any_active:
            continue
        gpu = "?" if process.gpu_index is None else str(process.gpu_index)
        memory = "" if process.used_mem_mib is None else f"{process.used_mem_mib:g} MiB "
        alerts.append(
            make_alert(
                ZOMBIE_VRAM,
                "warning",
                obs.name,
                f"gpu{gpu}:pid{process.pid}",
                f"pid {process.pid} ({process.process_name or 'unknown'}) holds {memory}"
                f"on GPU {gpu} but belongs to no run",
                f"kill {process.pid} on {obs.name}",
                gpu_index=process.gpu_index,
            )
        )
    return alerts


def gpu_idle_alerts(
    obs: WorkerObservation,
    settings: AlertSettings,
    idle_since: Mapping[str, float],
    now: float,
) -> tuple[list[Alert], dict[str, float]]:
    """GPUs idle (low SM clock and power, whatever util% says) under a running run.

    Returns the alerts and this worker's idle timers for the next tick. A GPU is under a
    run when one of the run's processes holds it; when no GPU process can be tied to any
    run (a container's pid namespace, or a run that fell back to the CPU), every GPU of the
    worker counts as under its running runs. A timer restarts when the GPU works again or
    the runs under it change.
    """
    running = _running_runs(obs)
    if obs.snapshot is None or obs.patrol is None or not running:
        return [], {}
    table = obs.patrol.processes
    run_pids = _run_pids(obs, running)
    by_gpu: dict[int, set[str]] = {}
    for process in obs.snapshot.gpu_processes:
        owner = owning_run(process.pid, table, run_pids)
        if owner is not None and process.gpu_index is not None:
            by_gpu.setdefault(process.gpu_index, set()).add(owner)
    names = {run.id: run.name for run in running}
    alerts: list[Alert] = []
    timers: dict[str, float] = {}
    for gpu in obs.snapshot.gpus:
        if by_gpu:
            under = by_gpu.get(gpu.index, set()) if gpu.index is not None else set()
        else:
            under = set(names)
        if not under or gpu_is_really_working(gpu) is not False:
            continue
        run_ids = sorted(under)
        key = f"{obs.name}|{gpu.uuid or gpu.index}|{','.join(run_ids)}"
        since = timers[key] = idle_since.get(key, now)
        idle_s = now - since
        if idle_s < settings.gpu_idle_minutes * 60:
            continue
        run_id = run_ids[0]
        alerts.append(
            make_alert(
                GPU_IDLE,
                "warning",
                obs.name,
                f"gpu{gpu.index}:{run_id}",
                f"GPU {gpu.index} idle for {format_duration(idle_s)} under run "
                f"{names[run_id]} ({run_id}): {_gpu_reading(gpu)}",
                f"runyard logs {run_id} -n 50 (stalled input? CPU fallback?); "
                f"to stop paying: runyard run cancel {run_id}",
                run_id=run_id,
                gpu_index=gpu.index,
            )
        )
    return alerts, timers


def _gpu_reading(gpu: GpuSample) -> str:
    def value(reading: int | float | None) -> str:
        return "?" if reading is None else f"{reading:g}"

    return (
        f"SM {value(gpu.sm_clock_mhz)}/{value(gpu.sm_clock_max_mhz)} MHz, "
        f"{value(gpu.power_w)}/{value(gpu.power_limit_w)} W, util {value(gpu.util_pct)}%"
    )


def stale_log_alerts(obs: WorkerObservation, settings: AlertSettings) -> list[Alert]:
    """A running run whose log has not been written for `stale_log_minutes`: likely hung."""
    if obs.patrol is None:
        return []
    alerts: list[Alert] = []
    for run in _running_runs(obs):
        probe = obs.patrol.check.runs.get(run.id)
        if probe is None or not probe.alive or probe.log_age_s is None:
            continue
        if probe.log_age_s < settings.stale_log_minutes * 60:
            continue
        alerts.append(
            make_alert(
                STALE_LOG,
                "warning",
                obs.name,
                run.id,
                f"run {run.name} ({run.id}): log silent for {format_duration(probe.log_age_s)}",
                f"runyard logs {run.id} -n 50; if it hangs: runyard run cancel {run.id}",
                run_id=run.id,
            )
        )
    return alerts


def reboot_alerts(obs: WorkerObservation, previous: WorkerMemory | None) -> list[Alert]:
    """Active runs whose worker rebooted under them (their processes are gone).

    Evidence: the boot id the run recorded at launch differs from the worker's current
    one, or, for a run without one, the worker's boot id changed since the previous tick
    while the run was already active.
    """
    if obs.patrol is None or obs.patrol.check.current_boot_id is None:
        return []
    current = obs.patrol.check.current_boot_id
    boot_changed = previous is not None and previous.boot_id not in (None, current)
    alerts: list[Alert] = []
    for run in obs.runs:
        if not run.is_active:
            continue
        probe: RunProbe | None = obs.patrol.check.runs.get(run.id)
        if probe is not None and probe.exit_code is not None:
            continue  # it finished before the reboot
        recorded = run.boot_id or (probe.boot_id if probe else None)
        if recorded is not None:
            rebooted = recorded != current
        else:
            rebooted = boot_changed and previous is not None and run.id in previous.active_runs
        if rebooted:
            alerts.append(
                make_alert(
                    REBOOTED,
                    "critical",
                    obs.name,
                    run.id,
                    f"{obs.name} rebooted under run {run.name} ({run.id}); its process is gone",
                    f"runyard check (marks it lost), then runyard run retry {run.id}",
                    run_id=run.id,
                )
            )
    return alerts


def lost_run_alerts(obs: WorkerObservation, now: float) -> list[Alert]:
    """Runs the check marked lost because their worker rebooted, ended in the last day."""
    alerts: list[Alert] = []
    for run in obs.runs:
        if run.status != RunStatus.LOST or "reboot" not in (run.error or ""):
            continue
        ended = parse_timestamp(run.ended_at)
        if ended is not None and now - ended > RECENT_WINDOW_S:
            continue
        alerts.append(
            make_alert(
                RUN_LOST,
                "critical",
                obs.name,
                run.id,
                f"run {run.name} ({run.id}) was lost: {run.error}"
                + (f" (ended {run.ended_at})" if run.ended_at else ""),
                f"runyard run retry {run.id}",
                run_id=run.id,
            )
        )
    return alerts


def kernel_alerts(obs: WorkerObservation) -> list[Alert]:
    """OOM kills and Xids from the last day of the worker's kernel log.

    A line's age is the worker's uptime minus its kernel timestamp; a line without a
    timestamp counts as recent.
    """
    if obs.patrol is None:
        return []
    uptime = obs.snapshot.uptime_s if obs.snapshot else None
    alerts: list[Alert] = []
    for event in obs.patrol.kernel_events:
        age = None if uptime is None or event.timestamp_s is None else uptime - event.timestamp_s
        if age is not None and age > RECENT_WINDOW_S:
            continue
        repeated = f" ({event.count} times)" if event.count > 1 else ""
        if event.kind == "oom":
            alerts.append(
                make_alert(
                    OOM,
                    "critical",
                    obs.name,
                    event.key,
                    f"out of host memory: the kernel killed pid {event.pid} "
                    f"({event.process or 'unknown'}){repeated}",
                    "fewer DataLoader workers or smaller batches, or a box with more RAM",
                )
            )
            continue
        critical = event.xid in CRITICAL_XIDS
        who = f"pid {event.pid}" if event.pid is not None else "no pid"
        if event.process:
            who += f", {event.process}"
        alerts.append(
            make_alert(
                XID,
                "critical" if critical else "warning",
                obs.name,
                event.key,
                f"Xid {event.xid} on GPU {event.device} ({who}){repeated}: {event.detail[:160]}",
                f"GPU fault: drain {obs.name}, then reset the GPU or reboot the box"
                if critical
                else "usually the application faulted: read the run's log around that time",
            )
        )
    return alerts


def worker_alerts(
    obs: WorkerObservation,
    settings: AlertSettings,
    idle_since: Mapping[str, float],
    previous: WorkerMemory | None,
    now: float,
) -> tuple[list[Alert], dict[str, float]]:
    """Every rule over one worker: its alerts (timestamps unset) and its new idle timers."""
    idle, timers = gpu_idle_alerts(obs, settings, idle_since, now)
    alerts = [
        *reachability_alerts(obs),
        *disk_alerts(obs, settings),
        *idle,
        *zombie_alerts(obs),
        *stale_log_alerts(obs, settings),
        *reboot_alerts(obs, previous),
        *lost_run_alerts(obs, now),
        *kernel_alerts(obs),
    ]
    return alerts, timers


def unknown_kinds(obs: WorkerObservation) -> frozenset[str]:
    """Alert kinds this tick could not judge on the worker, because a probe failed."""
    if obs.snapshot is None:
        return _TELEMETRY_KINDS | _PATROL_PROBE_KINDS
    if obs.patrol is None:
        return _PATROL_PROBE_KINDS
    return frozenset()


# ---------------------------------------------------------------- one tick (pure)


@dataclass(frozen=True)
class PatrolOutcome:
    """The alerts now, the state to save, and what changed since the previous tick."""

    alerts: list[Alert]
    state: PatrolState
    raised: list[Alert]
    cleared: list[Alert]


def evaluate(
    observations: Sequence[WorkerObservation],
    state: PatrolState,
    settings: AlertSettings,
    now: float,
    known_workers: Collection[str] | None = None,
) -> PatrolOutcome:
    """Apply the rules to this tick's observations and merge them with the previous state.

    An alert keeps its `first_seen`; one that a failed probe could not re-judge is kept as
    it was; alerts of workers not observed this tick are kept unless the worker is gone
    from `known_workers`. `alerts` is what the observed workers have now.
    """
    observed = {obs.name for obs in observations}
    stamp = format_timestamp(now)
    new = PatrolState(updated_at=now)
    current: list[Alert] = []
    for obs in observations:
        mine = f"{obs.name}|"
        idle_before = {k: v for k, v in state.gpu_idle_since.items() if k.startswith(mine)}
        fresh, timers = worker_alerts(obs, settings, idle_before, state.workers.get(obs.name), now)
        unknown = unknown_kinds(obs)
        new.gpu_idle_since.update(idle_before if GPU_IDLE in unknown else timers)
        if obs.patrol is not None:
            active = tuple(sorted(r.id for r in obs.runs if r.is_active))
            new.workers[obs.name] = WorkerMemory(obs.patrol.check.current_boot_id, active)
        elif obs.name in state.workers:
            new.workers[obs.name] = state.workers[obs.name]
        for alert in fresh:
            old = state.alerts.get(alert.id)
            first = old.first_seen if old is not None else stamp
            current.append(_stamped(alert, first, stamp))
        fresh_ids = {alert.id for alert in fresh}
        current.extend(
            old
            for old in state.alerts.values()
            if old.worker == obs.name and old.kind in unknown and old.id not in fresh_ids
        )

    def kept(worker: str) -> bool:
        return worker not in observed and (known_workers is None or worker in known_workers)

    new.alerts = {alert.id: alert for alert in current}
    new.alerts.update({k: a for k, a in state.alerts.items() if kept(a.worker)})
    new.gpu_idle_since.update(
        {k: v for k, v in state.gpu_idle_since.items() if kept(k.partition("|")[0])}
    )
    new.workers.update({k: m for k, m in state.workers.items() if kept(k)})
    raised = [alert for alert in current if alert.id not in state.alerts]
    cleared = [alert for key, alert in state.alerts.items() if key not in new.alerts]
    return PatrolOutcome(sort_alerts(current), new, sort_alerts(raised), sort_alerts(cleared))


def _stamped(alert: Alert, first_seen: str, last_seen: str) -> Alert:
    return Alert(**{**asdict(alert), "first_seen": first_seen, "last_seen": last_seen})


def sort_alerts(alerts: Iterable[Alert]) -> list[Alert]:
    """Critical first, then by worker, kind and id."""
    return sorted(alerts, key=lambda a: (a.severity != "critical", a.worker, a.kind, a.id))


# ---------------------------------------------------------------- the state file


def state_path(workspace: Workspace) -> Path:
    return workspace.state_dir / STATE_FILE


def load_state(path: Path, warnings: list[str] | None = None) -> PatrolState:
    """The saved patrol state; a missing or unreadable file starts fresh (it is only a cache
    of what the next tick would rediscover, apart from timers that restart). A file that
    is not patrol state is moved aside to `patrol.json.bad`, never overwritten unseen."""
    try:
        return PatrolState.from_json(json.loads(path.read_text("utf-8")))
    except FileNotFoundError:
        return PatrolState()
    except OSError as exc:
        why = f"unreadable patrol state ({exc}); starting fresh"
    except ValueError as exc:
        bad = path.with_name(path.name + ".bad")
        try:
            os.replace(path, bad)
            why = f"not patrol state ({exc}); kept as {bad.name}, starting fresh"
        except OSError:
            why = f"not patrol state ({exc}); starting fresh"
    if warnings is not None:
        warnings.append(f"{path}: {why}")
    return PatrolState()


def save_state(path: Path, state: PatrolState) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(state.to_json(), indent=2) + "\n")


# ---------------------------------------------------------------- the tick (I/O)


async def run_patrol_probe(
    fleet: Fleet, worker: Worker, runs: Sequence[Run], timeout: float
) -> PatrolProbe | str:
    """Run the patrol probe for `runs` on `worker`: its report, or why there is none."""
    targets = [ProbeTarget(run.id, run.run_dir, 0) for run in runs if run.is_active and run.run_dir]
    try:
        # A channel of its own, not the persistent shell: a probe stuck there on a wedged
        # driver (nvidia-smi in the kernel, where `timeout` cannot end it) must not keep the
        # patrol from reading the kernel log that explains it.
        result = await fleet.executor(worker).run(build_patrol_probe(targets), timeout=timeout)
    except RunyardError as exc:
        return str(exc)
    report = parse_patrol_probe(result.stdout)
    if report is None:
        error = result.stderr.decode("utf-8", "replace").strip().splitlines()
        return error[-1] if error else f"the patrol probe exited {result.exit_status}"
    return report


async def observe_worker(
    fleet: Fleet, worker: Worker, runs: Sequence[Run], timeout: float
) -> WorkerObservation:
    """Both probes of one worker, concurrently."""
    (snapshot, _latency, error), report = await asyncio.gather(
        probe_worker(fleet, worker, timeout), run_patrol_probe(fleet, worker, runs, timeout)
    )
    return WorkerObservation(
        worker=worker,
        runs=runs,
        snapshot=snapshot,
        probe_error=error,
        patrol=report if isinstance(report, PatrolProbe) else None,
        patrol_error=report if isinstance(report, str) else None,
    )


async def patrol(
    store: WorkspaceStore,
    fleet: Fleet,
    workers: Sequence[Worker] | None = None,
    *,
    clock: Callable[[], float] = time.time,
) -> list[Alert]:
    """One patrol tick over `workers` (default: every enabled worker).

    Probes all workers at once, judges them, saves patrol.json and logs `alert.raised` /
    `alert.cleared` under the workspace lock, and returns the current alerts, critical
    first.
    """
    settings = store.settings()
    known = store.workers()
    chosen = [w for w in known if w.enabled] if workers is None else list(workers)
    by_worker: dict[str, list[Run]] = {}
    for run in store.runs():
        if run.worker is not None:
            by_worker.setdefault(run.worker, []).append(run)
    timeout = settings.ssh.connect_timeout + settings.ssh.command_timeout
    observations = await asyncio.gather(
        *(observe_worker(fleet, w, by_worker.get(w.worker_id, []), timeout) for w in chosen)
    )
    path = state_path(store.workspace)
    with store.lock:
        previous = load_state(path, store.warnings)
        outcome = evaluate(
            observations, previous, settings.alerts, clock(), {w.worker_id for w in known}
        )
        # Events first: a crash before the save repeats an event rather than losing it.
        for alert in outcome.raised:
            store.events.append("alert.raised", **_event_fields(alert))
        for alert in outcome.cleared:
            store.events.append("alert.cleared", **_event_fields(alert))
        save_state(path, outcome.state)
    return outcome.alerts


def _event_fields(alert: Alert) -> dict[str, Any]:
    return {
        "alert": alert.id,
        "alert_kind": alert.kind,  # `kind` is the event's own name
        "severity": alert.severity,
        "worker": alert.worker,
        "run": alert.run_id,
        "message": alert.message,
    }


# ---------------------------------------------------------------- small helpers


def format_timestamp(epoch: float) -> str:
    """The workspace's timestamp format (ISO 8601 UTC, seconds)."""
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_timestamp(text: str | None) -> float | None:
    if not text:
        return None
    try:
        return datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC).timestamp()
    except ValueError:
        return None


def format_duration(seconds: float) -> str:
    """ "45s", "12m", "3h05m", "2d04h": short enough for a one-line message."""
    total = max(0, int(seconds))
    if total < 60:
        return f"{total}s"
    minutes, _ = divmod(total, 60)
    if minutes < 60:
        return f"{minutes}m"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours}h{minutes:02d}m"
    days, hours = divmod(hours, 24)
    return f"{days}d{hours:02d}h"
