"""Live host and GPU telemetry: one bash probe per worker per tick, parsed into snapshots.

The probe is a single script sent through an `Executor`, so a refresh costs one round trip
per worker whatever the transport. It prints sections between `@@runyard:` marker lines and
never fails as a whole: a CPU box, a wedged driver or a missing workspace all come back as
explicit "not available" values, never as an exception. Parsing is pure and tolerant of
everything nvidia-smi prints across drivers and GPU generations.
"""

from __future__ import annotations

import functools
import hashlib
import math
import re
import shlex
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from runyard.core.fleet.executor import ShellFunction, standalone_script

# A reading from the box; None where it reported N/A, [Not Supported], [Unknown Error] ...
Measurement = int | float | None
NvidiaSmiStatus = Literal["ok", "missing", "error"]

MARK = "@@runyard:"
PROBE_VERSION = "1"

GPU_QUERY_FIELDS: tuple[str, ...] = (
    "index",
    "name",
    "uuid",
    "utilization.gpu",
    "memory.used",
    "memory.total",
    "power.draw",
    "power.limit",
    "temperature.gpu",
    "clocks.sm",
    "clocks.max.sm",
    "mig.mode.current",
)
# Asked again without the newer fields when a driver rejects them ("... is not a valid field").
GPU_QUERY_CORE_FIELDS: tuple[str, ...] = GPU_QUERY_FIELDS[:-1]
COMPUTE_APP_FIELDS: tuple[str, ...] = ("gpu_uuid", "pid", "process_name", "used_memory")
# Where memory.used sits in a GPU row, for either field set (the probe's reuse key).
GPU_MEMORY_COLUMN = GPU_QUERY_FIELDS.index("memory.used")
assert GPU_QUERY_CORE_FIELDS.index("memory.used") == GPU_MEMORY_COLUMN
# How long a compute-apps answer may stand in for asking again (see GpuProcessMemo).
GPU_PROCESSES_MAX_AGE_S = 30.0

# How long the heartbeat and each nvidia-smi call may take; a wedged driver can hang forever.
DEFAULT_COMMAND_TIMEOUT_S = 10
# Heartbeat output kept, in characters: enough for a message, not for a runaway command.
HEARTBEAT_OUTPUT_LIMIT = 4000
TIMEOUT_EXIT_STATUS = 124

# A GPU "really works" when its SM clock runs near its maximum and it draws well above idle
# power; util% alone also counts a starved loop that launches tiny kernels.
WORKING_MIN_CLOCK_RATIO = 0.5
WORKING_MIN_POWER_RATIO = 0.3


# ---------------------------------------------------------------- records


@dataclass(frozen=True)
class GpuSample:
    """One GPU as `nvidia-smi --query-gpu` saw it; None where the GPU reported no value."""

    index: int | None
    name: str
    uuid: str | None = None
    util_pct: Measurement = None
    mem_used_mib: Measurement = None
    mem_total_mib: Measurement = None
    power_w: Measurement = None
    power_limit_w: Measurement = None
    temp_c: Measurement = None
    sm_clock_mhz: Measurement = None
    sm_clock_max_mhz: Measurement = None
    mig_mode: str | None = None


@dataclass(frozen=True)
class GpuProcess:
    """One compute process holding GPU memory (`nvidia-smi --query-compute-apps`)."""

    gpu_uuid: str
    gpu_index: int | None
    pid: int
    process_name: str
    used_mem_mib: Measurement = None


@dataclass(frozen=True)
class DiskUsage:
    """Bytes and inodes of the filesystem holding a worker's workspace (`df -P`)."""

    path: str
    filesystem: str | None = None
    mount_point: str | None = None
    total_bytes: int | None = None
    used_bytes: int | None = None
    avail_bytes: int | None = None
    used_pct: float | None = None
    inodes_total: int | None = None
    inodes_used: int | None = None
    inodes_free: int | None = None
    inodes_used_pct: float | None = None


@dataclass(frozen=True)
class WorkerSnapshot:
    """Everything one probe learnt about a worker at `taken_at` (epoch seconds, local clock)."""

    taken_at: float
    heartbeat_ok: bool
    heartbeat_output: str = ""
    heartbeat_exit_status: int | None = None
    hostname: str | None = None
    boot_id: str | None = None
    uptime_s: float | None = None
    load1: float | None = None
    load5: float | None = None
    load15: float | None = None
    cpu_count: int | None = None
    mem_total_bytes: int | None = None
    mem_available_bytes: int | None = None
    nvidia_smi: NvidiaSmiStatus = "missing"
    nvidia_smi_error: str | None = None
    gpus: list[GpuSample] = field(default_factory=list)
    gpu_processes: list[GpuProcess] = field(default_factory=list)
    disk: DiskUsage | None = None
    # Every GPU's memory.used as the probe read it, set when `gpu_processes` is a valid
    # answer; `gpu_processes_reused` when that answer is the caller's earlier one.
    gpu_memory_key: str | None = None
    gpu_processes_reused: bool = False


@dataclass(frozen=True)
class SeenGpuProcesses:
    """A worker's compute processes as nvidia-smi listed them, and the GPU memory readings
    (`WorkerSnapshot.gpu_memory_key`) taken with them."""

    memory_key: str
    processes: tuple[GpuProcess, ...]
    taken_at: float


class GpuProcessMemo:
    """Each worker's last compute-apps answer, so the next probe can skip asking again.

    A second nvidia-smi per tick is a third of the probe's work on the worker. The probe
    reuses the answer only when every GPU's memory.used reads as it did and every listed
    pid still lives: a new CUDA process allocates memory, one that exits leaves /proc. An
    answer older than `max_age_s` is never reused, so even a perfect swap is seen soon.
    """

    def __init__(self, max_age_s: float = GPU_PROCESSES_MAX_AGE_S) -> None:
        self.max_age_s = max_age_s
        self._seen: dict[str, SeenGpuProcesses] = {}

    def recall(self, worker_id: str, now: float) -> SeenGpuProcesses | None:
        seen = self._seen.get(worker_id)
        if seen is None or now - seen.taken_at > self.max_age_s:
            return None
        return seen

    def remember(self, worker_id: str, snapshot: WorkerSnapshot) -> None:
        """Keeps a fresh answer; a reused one keeps its first time, so its age still counts."""
        if snapshot.gpu_processes_reused:
            return
        if snapshot.gpu_memory_key is None:
            self._seen.pop(worker_id, None)
            return
        self._seen[worker_id] = SeenGpuProcesses(
            snapshot.gpu_memory_key, tuple(snapshot.gpu_processes), snapshot.taken_at
        )


# ---------------------------------------------------------------- the probe script


def remote_path_expression(path: str) -> str:
    """A shell word for `path` on the worker: `~/x` expands there, everything else is quoted."""
    if path in ("", "."):
        return "."
    if path == "~":
        return '"$HOME"'
    if path.startswith("~/"):
        rest = path[2:]
        return f'"$HOME"/{shlex.quote(rest)}' if rest else '"$HOME"'
    return shlex.quote(path)


# Shared helpers and the host sections; nothing here depends on the caller's input.
_PROBE_PRELUDE = r"""
export LC_ALL=C
# Non-login SSH shells often miss where nvidia-smi lives; appended so PATH still wins.
PATH="$PATH:/usr/local/nvidia/bin:/usr/lib/wsl/lib"
exec </dev/null
# Output is collected in _ry_buf and written once at the end: one SSH packet or two
# instead of one per line, without the fork a $(...) around the whole probe would cost.
_ry_buf=
_ry_mark() { _ry_buf+="@@runyard:$*"$'\n'; }
_ry_put() { _ry_buf+="$1"$'\n'; }
_ry_first_line() { local line; IFS= read -r line < "$1"; _ry_buf+="$line"$'\n'; }
# `"${_ry_limit[@]}" CMD` runs CMD under a time limit where `timeout` exists. A plain
# command, not a function: bash then execs it in $(...) without one more fork.
if command -v timeout >/dev/null 2>&1; then _ry_limit=(timeout __TIMEOUT__); else _ry_limit=(); fi
_ry_mark probe __VERSION__
"""

_PROBE_HOST_SECTIONS = r"""
_ry_mark section boot_id
if [ -n "${RUNYARD_SIM_BOOT_ID_FILE:-}" ] && [ -r "$RUNYARD_SIM_BOOT_ID_FILE" ]; then
  _ry_first_line "$RUNYARD_SIM_BOOT_ID_FILE"  # a simulated worker (see core/protocol.py)
elif [ -r /proc/sys/kernel/random/boot_id ]; then
  _ry_first_line /proc/sys/kernel/random/boot_id
else
  _ry_put "$(sysctl -n kern.boottime 2>/dev/null)"
fi
_ry_mark section hostname
_ry_put "${HOSTNAME:-$(uname -n 2>/dev/null)}"
_ry_mark section uptime
if [ -r /proc/uptime ]; then
  _ry_first_line /proc/uptime
else
  _ry_boot=$(sysctl -n kern.boottime 2>/dev/null)
  _ry_boot=${_ry_boot#*sec = }
  _ry_boot=${_ry_boot%%,*}
  case $_ry_boot in *[!0-9]* | '') ;; *) _ry_put "$(( $(date +%s) - _ry_boot ))" ;; esac
fi
_ry_mark section loadavg
if [ -r /proc/loadavg ]; then
  _ry_first_line /proc/loadavg
else
  _ry_put "$(sysctl -n vm.loadavg 2>/dev/null)"
fi
_ry_mark section nproc
# The CPUs this shell's affinity allows (what `nproc` counts, short of cgroup quotas and
# OMP_NUM_THREADS), without starting a process: `allowed LIST`, and `online LIST` since the
# mask may name CPUs that are offline; the parser counts the CPUs in both.
# /proc files are read whole by mapfile (`read` would make the kernel render them per
# line) and searched by one regex match, not a loop over their lines.
_ry_cpus=
if [ -r /proc/self/status ]; then
  mapfile -t _ry_lines < /proc/self/status
  _ry_re='Cpus_allowed_list:[[:space:]]*([0-9,-]+)'
  [[ ${_ry_lines[*]} =~ $_ry_re ]] && _ry_cpus=${BASH_REMATCH[1]}
fi
if [ -n "$_ry_cpus" ]; then
  _ry_put "allowed $_ry_cpus"
  IFS= read -r _ry_line 2>/dev/null </sys/devices/system/cpu/online && _ry_put "online $_ry_line"
else
  _ry_put "$(nproc 2>/dev/null || getconf _NPROCESSORS_ONLN 2>/dev/null || sysctl -n hw.ncpu 2>/dev/null)"
fi
_ry_mark section meminfo
if [ -r /proc/meminfo ]; then
  mapfile -t _ry_lines < /proc/meminfo
  _ry_text=${_ry_lines[*]}
  for _ry_re in 'MemTotal: *[0-9]+ kB' 'MemAvailable: *[0-9]+ kB'; do
    [[ $_ry_text =~ $_ry_re ]] && _ry_put "${BASH_REMATCH[0]}"
  done
else
  _ry_mem=$(sysctl -n hw.memsize 2>/dev/null) && _ry_put "MemTotal: $(( _ry_mem / 1024 )) kB"
fi
"""

_PROBE_GPU_SECTIONS = r"""
_ry_fields=__GPU_FIELDS__
# An nvidia-smi stuck in the kernel (a wedged driver) outlives `timeout`, which waits for
# it, and the probe that started it. The pid of each call is written to this file, so
# later probes report a stuck one at once instead of queueing one more behind it (and
# holding up the run check that shares their shell). Written in place, padded, never
# truncated: a truncation costs a journal commit on ext4, ~25 times the write.
_ry_smi_pid_file=${XDG_RUNTIME_DIR:-${TMPDIR:-/tmp}}/runyard-nvidia-smi.$UID
_ry_smi() {  # nvidia-smi "$@" under the time limit: output in _ry_out, status in _ry_rc
  # Through fd 3: inside $(...), bash 5.2 sends `builtin 1<>file` to the substitution.
  _ry_out=$(printf '%12s\n' "$BASHPID" 2>/dev/null 3<>"$_ry_smi_pid_file" >&3
            exec "${_ry_limit[@]}" nvidia-smi "$@" 2>&1)
  _ry_rc=$?
}
# `_ry_smi_stuck`: true, with the pid in _ry_stuck, when the last call recorded is stuck,
# not merely in flight for a probe running beside this one: it has run for longer than
# the time limit allows (its start in /proc/PID/stat is in 1/100 s since boot).
_ry_smi_stuck() {
  [ -r "$_ry_smi_pid_file" ] && (( BASH_VERSINFO[0] * 100 + BASH_VERSINFO[1] >= 404 )) || return 1
  IFS=' ' read -r _ry_stuck _ < "$_ry_smi_pid_file"
  [[ $_ry_stuck =~ ^[0-9]+$ ]] && [ -r "/proc/$_ry_stuck/cmdline" ] || return 1
  mapfile -d '' -t _ry_argv < "/proc/$_ry_stuck/cmdline"
  IFS= read -r _ry_stat < "/proc/$_ry_stuck/stat"
  IFS=' ' read -r _ry_uptime _ < /proc/uptime
  set -f
  _ry_f=(${_ry_stat##*) })  # the fields after the command name, from field 3
  set +f
  [[ " ${_ry_argv[*]} " == *nvidia-smi* ]] && [[ ${_ry_f[19]:-} =~ ^[0-9]+$ ]] &&
    (( ${_ry_uptime%.*} - ${_ry_f[19]} / 100 > __TIMEOUT__ + 5 ))
}
if ! command -v nvidia-smi >/dev/null 2>&1; then
  _ry_mark section gpus "$_ry_fields"
  _ry_mark missing nvidia-smi
elif _ry_smi_stuck; then
  _ry_mark section gpus "$_ry_fields"
  _ry_put "nvidia-smi started by an earlier probe has not returned (pid $_ry_stuck): the GPU driver may be wedged (see dmesg)"
  _ry_mark rc 125
else
  _ry_smi --query-gpu="$_ry_fields" --format=csv,noheader,nounits
  if [ "$_ry_rc" -ne 0 ] && [[ $_ry_out == *"not a valid field"* ]]; then
    _ry_fields=__GPU_CORE_FIELDS__
    _ry_smi --query-gpu="$_ry_fields" --format=csv,noheader,nounits
  fi
  _ry_mark section gpus "$_ry_fields"
  [ -n "$_ry_out" ] && _ry_put "$_ry_out"
  _ry_mark rc "$_ry_rc"
  if [ "$_ry_rc" -eq 0 ]; then
    # Every GPU's memory.used, in row order: the compute processes cannot change unless it
    # does, or one of them exits. Split by IFS (no here-string temp file, no process).
    set -f
    IFS=$'\n'
    _ry_rows=($_ry_out)
    IFS=,
    _ry_key=
    for _ry_row in "${_ry_rows[@]}"; do
      _ry_cells=($_ry_row)
      _ry_cell=${_ry_cells[__MEMORY_COLUMN__]// /}
      # A reading that is not a number ([N/A] on some boards) proves nothing: no key.
      [[ $_ry_cell =~ ^[0-9]+$ ]] || { _ry_key=; break; }
      _ry_key+="$_ry_cell;"
    done
    IFS=$' \t\n'
    set +f
    _ry_mark section gpu_memory
    _ry_put "$_ry_key"
    # The caller's last answer (see probe_call) still holds when the readings match and
    # its pids all live.
    _ry_same=0
    if [ -n "$_ry_seen_key" ] && [ "$_ry_key" = "$_ry_seen_key" ]; then
      _ry_same=1
      for _ry_pid in $_ry_seen_pids; do
        [ -d "/proc/$_ry_pid" ] || { _ry_same=0; break; }
      done
    fi
    _ry_mark section gpu_processes __APP_FIELDS__
    if [ "$_ry_same" -eq 1 ]; then
      _ry_mark unchanged
      _ry_mark rc 0
    else
      _ry_smi --query-compute-apps=__APP_FIELDS__ --format=csv,noheader,nounits
      [ -n "$_ry_out" ] && _ry_put "$_ry_out"
      _ry_mark rc "$_ry_rc"
    fi
  fi
fi
"""

# Walks up from the workspace to the nearest existing directory (or $HOME) before `df`.
_PROBE_DISK_SECTIONS = r"""
_ry_dir=__WORKSPACE__
while [ ! -d "$_ry_dir" ]; do
  case $_ry_dir in */*) _ry_up=${_ry_dir%/*} ;; *) _ry_up=. ;; esac
  [ -z "$_ry_up" ] && _ry_up=/
  [ "$_ry_up" = "$_ry_dir" ] && break
  _ry_dir=$_ry_up
done
[ -d "$_ry_dir" ] || _ry_dir=$HOME
_ry_mark section disk_path
# The probe runs in a shell of its own (a subshell of the persistent shell, or `bash -c`):
# changing directory is harmless, and lets df find a relative workspace.
if cd -- "$_ry_dir" 2>/dev/null; then _ry_put "$PWD"; _ry_dir=.; else _ry_put "$_ry_dir"; fi
# GNU df gives bytes and inodes in one run; elsewhere (BSD, busybox) POSIX df runs twice.
_ry_mark section df
if _ry_out=$(df -k --output=source,size,used,avail,itotal,iused,iavail,target -- "$_ry_dir" 2>/dev/null); then
  _ry_put "$_ry_out"
else
  _ry_mark section df_blocks
  _ry_put "$(df -P -k -- "$_ry_dir" 2>&1)"
  _ry_mark section df_inodes
  _ry_put "$(df -P -i -- "$_ry_dir" 2>&1)"
fi
_ry_mark end
printf '%s' "$_ry_buf"
exit 0
"""


def _heartbeat_section(heartbeat_command: str) -> str:
    """The heartbeat section: run the operator's command, keep its output and exit status.

    Output lines that would read as probe markers are defused, so a heartbeat cannot forge
    sections.
    """
    if heartbeat_command.strip() == "echo ok":
        # The default heartbeat needs no process: answering at all proves the box is up.
        return "\n_ry_mark section heartbeat\n_ry_put ok\n_ry_mark rc 0\n"
    return f"""
_ry_mark section heartbeat
_ry_out=$(exec "${{_ry_limit[@]}}" "${{BASH:-bash}}" -c {shlex.quote(heartbeat_command)} 2>&1)
_ry_rc=$?
_ry_out=${{_ry_out:0:{HEARTBEAT_OUTPUT_LIMIT}}}
_ry_out=${{_ry_out//$'\\n'@@runyard:/$'\\n'@@ runyard:}}
[[ $_ry_out == @@runyard:* ]] && _ry_out="@@ ${{_ry_out#@@}}"
[ -n "$_ry_out" ] && _ry_put "$_ry_out"
_ry_mark rc "$_ry_rc"
"""


@functools.lru_cache(maxsize=256)
def probe_function(
    workspace: str,
    heartbeat_command: str = "echo ok",
    *,
    command_timeout_s: int = DEFAULT_COMMAND_TIMEOUT_S,
) -> ShellFunction:
    """The probe as a bash function that samples heartbeat, host, GPUs and workspace disk.

    Every value from the caller is quoted; the function always exits 0 and reports failures
    inside its sections (see `parse_probe_output`). Its name carries a hash of its text, so
    a worker whose settings change gets a new definition in its persistent shell.
    """
    timeout_s = max(1, int(command_timeout_s))
    gpu_sections = (
        _PROBE_GPU_SECTIONS.replace("__GPU_FIELDS__", shlex.quote(",".join(GPU_QUERY_FIELDS)))
        .replace("__GPU_CORE_FIELDS__", shlex.quote(",".join(GPU_QUERY_CORE_FIELDS)))
        .replace("__APP_FIELDS__", shlex.quote(",".join(COMPUTE_APP_FIELDS)))
        .replace("__TIMEOUT__", str(timeout_s))
        .replace("__MEMORY_COLUMN__", str(GPU_MEMORY_COLUMN))
    )
    body = "".join(
        (
            _PROBE_PRELUDE.replace("__VERSION__", PROBE_VERSION).replace(
                "__TIMEOUT__", str(timeout_s)
            ),
            _heartbeat_section(heartbeat_command),
            _PROBE_HOST_SECTIONS,
            gpu_sections,
            _PROBE_DISK_SECTIONS.replace("__WORKSPACE__", remote_path_expression(workspace)),
        )
    )
    digest = hashlib.sha1(body.encode(), usedforsecurity=False).hexdigest()[:16]
    return ShellFunction.from_body(f"_ry_probe_{digest}", body)


def probe_call(function: ShellFunction, seen: SeenGpuProcesses | None = None) -> str:
    """The line that runs the probe `function`, handing it the last process list (`seen`):
    it asks nvidia-smi for the processes only when that answer no longer holds."""
    if seen is None:
        return f"_ry_seen_key= _ry_seen_pids=\n{function.name}\n"
    pids = " ".join(str(process.pid) for process in seen.processes)
    return f"_ry_seen_key={shlex.quote(seen.memory_key)} _ry_seen_pids='{pids}'\n{function.name}\n"


def build_probe_script(
    workspace: str,
    heartbeat_command: str = "echo ok",
    *,
    command_timeout_s: int = DEFAULT_COMMAND_TIMEOUT_S,
    seen: SeenGpuProcesses | None = None,
) -> str:
    """The probe as one self-contained script, for a shell that keeps no functions."""
    function = probe_function(workspace, heartbeat_command, command_timeout_s=command_timeout_s)
    return standalone_script(probe_call(function, seen), (function,))


# ---------------------------------------------------------------- parsing helpers
# Everything below runs for every worker on every refresh, and the client has about 1 ms
# of CPU per worker for all of it (issue 3; bench/probe_parse.py). So the common case takes
# no regex and raises no exception, and lines are split once and parsed without joining
# them back.

_NUMBER = re.compile(r"^\s*([-+]?\d+(?:\.\d+)?)\s*(?:[A-Za-z%]+)?\s*$")
_INTEGER = re.compile(r"^[-+]?\d+$")


def parse_measurement(text: str) -> Measurement:
    """A number from nvidia-smi, with or without units ("250.00 W"); None for [N/A] and kin."""
    try:
        return int(text)  # int() and float() ignore surrounding whitespace
    except ValueError:
        pass
    try:
        value = float(text)
    except ValueError:
        pass
    else:
        return value if math.isfinite(value) else None
    match = _NUMBER.match(text)
    if match is None:
        return None
    number = match.group(1)
    return int(number) if _INTEGER.match(number) else float(number)


def _cell_measurement(cell: str) -> Measurement:
    """`parse_measurement(cell.strip())` for a CSV cell, fast for bare numbers and [N/A].

    A number int() or float() reads needs no strip (they skip the spaces around it) and
    no "[" parses, so only the rest (units, "N/A", ...) goes the long way.
    """
    if "." not in cell:  # int() never accepts a point: spare "612.34" its exception
        if "[" in cell:
            return None
        try:
            return int(cell)
        except ValueError:
            pass
    try:
        value = float(cell)
    except ValueError:
        return parse_measurement(cell.strip())
    return value if math.isfinite(value) else None


def parse_cpu_list(text: str) -> set[int] | None:
    """The CPUs a kernel list such as `0-3,8,10-11` names; None when it is not one."""
    cpus: set[int] = set()
    for part in text.strip().split(","):
        first, hyphen, last = part.partition("-")
        if not first.isdigit() or (hyphen and not last.isdigit()):
            return None
        cpus.update(range(int(first), int(last or first) + 1))
    return cpus


def _cpu_count(lines: Sequence[str]) -> int | None:
    """The probe's CPU count: the allowed CPUs that are online, or a bare `nproc` number."""
    entries = [line.strip() for line in lines if line.strip()]
    lists: dict[str, str] = {}
    for entry in entries:
        key, _, value = entry.partition(" ")
        lists[key] = value
    if "allowed" not in lists:
        return _parse_int(entries[0]) if entries else None
    allowed = parse_cpu_list(lists["allowed"])
    if allowed is None:
        return None
    online = parse_cpu_list(lists.get("online", "")) or allowed
    return len(allowed & online) or len(allowed)


def _parse_int(text: str) -> int | None:
    """A whole number (GPU index, pid, exit status); None for anything else."""
    try:
        return int(text)  # what parse_measurement() tries first, minus a call
    except ValueError:
        value = parse_measurement(text)
        return value if isinstance(value, int) else None


def _text_or_none(text: str) -> str | None:
    """A free-text field, None when nvidia-smi wrote a bracketed placeholder or N/A."""
    value = text.strip()
    if not value or value == "N/A" or (value.startswith("[") and value.endswith("]")):
        return None
    return value


# ---------------------------------------------------------------- nvidia-smi


@functools.lru_cache(maxsize=8)
def _gpu_field_positions(fields: tuple[str, ...]) -> tuple[int, ...] | None:
    """Where each of GPU_QUERY_FIELDS (GpuSample's order) sits in a row of `fields`.

    A field not queried reads the empty cell appended at `len(fields)`, a repeated one its
    last column; None when `fields` is GPU_QUERY_FIELDS itself and rows need no reordering.
    """
    if fields == GPU_QUERY_FIELDS:
        return None
    last = {name: position for position, name in enumerate(fields)}
    return tuple(last.get(name, len(fields)) for name in GPU_QUERY_FIELDS)


def parse_gpu_csv(text: str, fields: tuple[str, ...] = GPU_QUERY_FIELDS) -> list[GpuSample]:
    """Rows of `nvidia-smi --query-gpu=<fields> --format=csv,noheader,nounits` as samples.

    Header lines, warnings and any row without the expected columns or an integer index
    are skipped.
    """
    return _gpu_samples(text.splitlines(), fields)


def _gpu_samples(lines: Iterable[str], fields: tuple[str, ...]) -> list[GpuSample]:
    """`parse_gpu_csv` over lines already split."""
    width = len(fields)
    positions = _gpu_field_positions(fields)
    samples: list[GpuSample] = []
    for line in lines:
        # Cells keep their spaces: `_cell_measurement` and `_text_or_none` deal with them.
        cells = line.split(",")
        if len(cells) != width:
            continue
        if positions is not None:
            cells.append("")
            cells = [cells[position] for position in positions]
        index = _parse_int(cells[0].strip())
        if index is None:
            continue
        samples.append(
            GpuSample(
                index=index,
                name=_text_or_none(cells[1]) or "unknown GPU",
                uuid=_text_or_none(cells[2]),
                util_pct=_cell_measurement(cells[3]),
                mem_used_mib=_cell_measurement(cells[4]),
                mem_total_mib=_cell_measurement(cells[5]),
                power_w=_cell_measurement(cells[6]),
                power_limit_w=_cell_measurement(cells[7]),
                temp_c=_cell_measurement(cells[8]),
                sm_clock_mhz=_cell_measurement(cells[9]),
                sm_clock_max_mhz=_cell_measurement(cells[10]),
                mig_mode=_text_or_none(cells[11]),
            )
        )
    return samples


def parse_compute_apps_csv(text: str, gpus: Sequence[GpuSample] = ()) -> list[GpuProcess]:
    """Rows of `nvidia-smi --query-compute-apps=gpu_uuid,pid,process_name,used_memory`.

    `gpu_index` comes from matching the UUID against `gpus`. A process name containing
    commas is rejoined; "No running processes found" and other noise are skipped.
    """
    return _gpu_processes(text.splitlines(), gpus)


def _gpu_processes(lines: Iterable[str], gpus: Sequence[GpuSample]) -> list[GpuProcess]:
    """`parse_compute_apps_csv` over lines already split."""
    index_by_uuid = {gpu.uuid: gpu.index for gpu in gpus if gpu.uuid}
    processes: list[GpuProcess] = []
    for line in lines:
        cells = line.split(",")  # spaces kept, as in _gpu_samples
        if len(cells) < len(COMPUTE_APP_FIELDS):
            continue
        uuid = cells[0].strip()
        pid = _parse_int(cells[1].strip())
        if pid is None or not uuid:
            continue
        processes.append(
            GpuProcess(
                gpu_uuid=uuid,
                gpu_index=index_by_uuid.get(uuid),
                pid=pid,
                process_name=(
                    cells[2].strip()
                    if len(cells) == len(COMPUTE_APP_FIELDS)
                    else ", ".join([cell.strip() for cell in cells[2:-1]])
                ),
                used_mem_mib=_cell_measurement(cells[-1]),
            )
        )
    return processes


# ---------------------------------------------------------------- host sections

_BOOTTIME = re.compile(r"sec\s*=\s*(\d+),\s*usec\s*=\s*(\d+)")
_DECIMAL = re.compile(r"\d+(?:\.\d+)?")
_MEMINFO_LINE = re.compile(r"^(\w+):\s+(\d+)\s*(kB)?")


def _parse_boot_id(lines: list[str]) -> str | None:
    """Linux's boot_id, or a stable id from macOS's `kern.boottime` ({ sec = N, usec = M } ...)."""
    text = "\n".join(lines).strip()
    if not text:
        return None
    boottime = _BOOTTIME.search(text)
    if boottime:
        return f"boottime-{boottime.group(1)}.{boottime.group(2)}"
    return text.splitlines()[0].strip()


def _leading_floats(text: str, count: int) -> list[float | None]:
    numbers: list[float | None] = [float(n) for n in _DECIMAL.findall(text)[:count]]
    return numbers + [None] * (count - len(numbers))


def _parse_meminfo(lines: list[str]) -> tuple[int | None, int | None]:
    """(MemTotal, MemAvailable) in bytes from /proc/meminfo-style `Key: N kB` lines."""
    values: dict[str, int] = {}
    for line in lines:
        match = _MEMINFO_LINE.match(line)
        if match:
            values[match.group(1)] = int(match.group(2)) * (1024 if match.group(3) else 1)
    return values.get("MemTotal"), values.get("MemAvailable")


# ---------------------------------------------------------------- df

_BLOCKS_COLUMN = re.compile(r"(\d+)([km]?)-blocks")


def _is_df_number(token: str) -> bool:
    """Whether a `df` token is a count or a percentage (the regex `\\d+%?`), or "-"."""
    if token.isdecimal():  # the same characters as the regex's \d
        return True
    return token == "-" or (token.endswith("%") and token[:-1].isdecimal())


def parse_df(text: str) -> dict[str, str] | None:
    """The data row of `df -P` as {lowercased header: value}, plus `filesystem` and `mounted on`.

    Columns are found from the header, and the numeric block is located in the row, so
    filesystem names and mount points with spaces and BSD's extra inode columns all work.
    """
    return _df_row(text.splitlines())


def _df_row(lines: Iterable[str]) -> dict[str, str] | None:
    """`parse_df` over lines already split."""
    rows = iter(lines)
    header = next((line for line in rows if line.startswith("Filesystem")), None)
    data = next((line for line in rows if line.strip()), None)  # the next non-blank line
    if header is None or data is None:
        return None
    columns = header.split()[1:]
    if columns[-2:] == ["Mounted", "on"]:
        columns = columns[:-2]
    tokens = data.split()
    width = len(columns)
    for start in range(1, len(tokens) - width + 1):
        block = tokens[start : start + width]
        if all(map(_is_df_number, block)):
            row = dict(zip(map(str.lower, columns), block, strict=True))
            row["filesystem"] = " ".join(tokens[:start])
            row["mounted on"] = " ".join(tokens[start + width :])
            return row
    return None


def _df_int(row: dict[str, str], name: str, scale: int = 1) -> int | None:
    """Column `name` of a `df` row times `scale`; None when absent or not a count ("-")."""
    value = row.get(name)
    return int(value) * scale if value is not None and value.isdigit() else None


@functools.lru_cache(maxsize=8)
def _block_size(column: str) -> int:
    """Bytes per unit of df's size column: "1024-blocks", "512-blocks", "1k-blocks"."""
    match = _BLOCKS_COLUMN.fullmatch(column)
    if match is None:
        return 1024
    return int(match.group(1)) * {"": 1, "k": 1024, "m": 1024 * 1024}[match.group(2)]


def _percent(part: int | None, rest: int | None) -> float | None:
    """part / (part + rest) in percent, df's own formula for use%, rounded to 0.1."""
    if part is None or rest is None or part + rest == 0:
        return None
    return round(100.0 * part / (part + rest), 1)


def parse_disk_usage(path: str, df_blocks: str, df_inodes: str) -> DiskUsage | None:
    """A `DiskUsage` from `df -P -k` and `df -P -i` output; None when neither parses."""
    return _disk_usage(path, _df_row(df_blocks.splitlines()), _df_row(df_inodes.splitlines()))


def parse_gnu_df(path: str, df_output: str) -> DiskUsage | None:
    """A `DiskUsage` from GNU `df -k --output=source,size,used,avail,itotal,iused,iavail,target`."""
    return _gnu_disk_usage(path, _df_row(df_output.splitlines()))


def _gnu_disk_usage(path: str, row: dict[str, str] | None) -> DiskUsage | None:
    """One GNU `--output` row gives bytes and inodes; it names "Avail" what POSIX df calls
    "Available"."""
    if row is None:
        return None
    return _disk_usage(path, {**row, "available": row.get("avail", "")}, row)


def _disk_usage(
    path: str, blocks: dict[str, str] | None, inodes: dict[str, str] | None
) -> DiskUsage | None:
    """A `DiskUsage` from df's parsed rows: the bytes one and the inodes one."""
    if blocks is None and inodes is None:
        return None
    total = used = avail = None
    if blocks is not None:
        size_column = next((key for key in blocks if key.endswith("-blocks")), "1024-blocks")
        block_size = _block_size(size_column)
        total = _df_int(blocks, size_column, block_size)
        used = _df_int(blocks, "used", block_size)
        avail = _df_int(blocks, "available", block_size)
    inodes_used = _df_int(inodes, "iused") if inodes else None
    inodes_free = _df_int(inodes, "ifree") if inodes else None
    inodes_total = _df_int(inodes, "inodes") if inodes else None
    if inodes_total is None and inodes_used is not None and inodes_free is not None:
        inodes_total = inodes_used + inodes_free
    source = blocks or inodes or {}
    return DiskUsage(
        path=path,
        filesystem=source.get("filesystem") or None,
        mount_point=source.get("mounted on") or None,
        total_bytes=total,
        used_bytes=used,
        avail_bytes=avail,
        used_pct=_percent(used, avail),
        inodes_total=inodes_total,
        inodes_used=inodes_used,
        inodes_free=inodes_free,
        # Filesystems without an inode table (btrfs, some FUSE) report 0 inodes and "-".
        inodes_used_pct=_percent(inodes_used, inodes_free) if inodes_total else None,
    )


# ---------------------------------------------------------------- the probe output


@dataclass(slots=True)
class _Section:
    args: str
    lines: list[str] = field(default_factory=list)
    exit_status: int | None = None
    missing: bool = False
    unchanged: bool = False

    @property
    def text(self) -> str:
        return "\n".join(self.lines)


def _lf_lines(text: str) -> str:
    """`text` with CRLF line ends made LF. Only a line feed starts a line: the probe
    defuses markers after exactly that, so a carriage return in a heartbeat's output
    cannot forge one."""
    return text.replace("\r\n", "\n").removesuffix("\n")


def _split_sections(text: str) -> dict[str, _Section]:
    """Sections by name; the first of each name wins, so nothing later can overwrite it.

    Markers count only at the start of a line (after a line feed, or CRLF).
    """
    sections: dict[str, _Section] = {}
    current: _Section | None = None
    # With CRLF made "\n", splitting at "\n" + MARK cuts the text right before
    # each marker line: a chunk is the marker's words, then the lines up to the next marker.
    # One split per section instead of a Python step per line.
    chunks = ("\n" + _lf_lines(text)).split("\n" + MARK)
    for chunk in chunks[1:]:
        marker, has_lines, body = chunk.partition("\n")
        verb, _, args = marker.partition(" ")
        if verb == "section":
            name, _, section_args = args.partition(" ")
            current = _Section(section_args.strip())
            sections.setdefault(name, current)
        elif verb == "rc" and current is not None:
            current.exit_status = _parse_int(args)
        elif verb == "missing" and current is not None:
            current.missing = True
        elif verb == "unchanged" and current is not None:
            current.unchanged = True
        elif verb == "end":
            current = None
        if current is not None and has_lines:
            current.lines += body.split("\n")
    return sections


def _nvidia_smi_failure(section: _Section) -> str:
    """One readable line about why nvidia-smi failed."""
    if section.exit_status == TIMEOUT_EXIT_STATUS:
        return "nvidia-smi timed out"
    message = " ".join(line.strip() for line in section.lines if line.strip())
    return message[:500] or f"nvidia-smi exited with status {section.exit_status}"


def parse_probe_output(
    data: bytes, taken_at: float, seen: SeenGpuProcesses | None = None
) -> WorkerSnapshot:
    """The snapshot in the output of `build_probe_script`; missing parts become None.

    `seen` is what the script was built with: its processes stand where the probe found
    them unchanged.
    """
    sections = _split_sections(data.decode("utf-8", "replace"))

    def lines(name: str) -> list[str]:
        section = sections.get(name)
        return section.lines if section else []

    def first_line(name: str) -> str | None:
        for line in lines(name):
            if stripped := line.strip():
                return stripped
        return None

    heartbeat = sections.get("heartbeat")
    load1, load5, load15 = _leading_floats(" ".join(lines("loadavg")), 3)
    (uptime_s,) = _leading_floats(first_line("uptime") or "", 1)
    mem_total, mem_available = _parse_meminfo(lines("meminfo"))

    nvidia_smi: NvidiaSmiStatus
    nvidia_smi_error: str | None = None
    gpus: list[GpuSample] = []
    processes: list[GpuProcess] = []
    memory_key: str | None = None
    reused = False
    gpu_section = sections.get("gpus")
    if gpu_section is None:
        nvidia_smi, nvidia_smi_error = "error", "the probe output has no GPU section"
    elif gpu_section.missing:
        nvidia_smi = "missing"
    elif gpu_section.exit_status != 0:
        nvidia_smi, nvidia_smi_error = "error", _nvidia_smi_failure(gpu_section)
    else:
        nvidia_smi = "ok"
        fields = tuple(gpu_section.args.split(",")) if gpu_section.args else GPU_QUERY_FIELDS
        gpus = _gpu_samples(gpu_section.lines, fields)
        apps = sections.get("gpu_processes")
        if apps is not None and apps.unchanged:
            if seen is not None:
                processes, memory_key, reused = list(seen.processes), seen.memory_key, True
        elif apps is not None and apps.exit_status == 0:
            processes = _gpu_processes(apps.lines, gpus)
            memory_key = first_line("gpu_memory")

    disk_path = first_line("disk_path")
    disk = None
    if disk_path is not None:
        gnu_df = sections.get("df")
        gnu_row = _df_row(gnu_df.lines) if gnu_df is not None else None
        if gnu_row is not None:
            disk = _gnu_disk_usage(disk_path, gnu_row)
        else:
            disk = _disk_usage(disk_path, _df_row(lines("df_blocks")), _df_row(lines("df_inodes")))

    return WorkerSnapshot(
        taken_at=taken_at,
        heartbeat_ok=heartbeat is not None and heartbeat.exit_status == 0,
        heartbeat_output=heartbeat.text.strip() if heartbeat else "",
        heartbeat_exit_status=heartbeat.exit_status if heartbeat else None,
        hostname=first_line("hostname"),
        boot_id=_parse_boot_id(lines("boot_id")),
        uptime_s=uptime_s,
        load1=load1,
        load5=load5,
        load15=load15,
        cpu_count=_cpu_count(lines("nproc")),
        mem_total_bytes=mem_total,
        mem_available_bytes=mem_available,
        nvidia_smi=nvidia_smi,
        nvidia_smi_error=nvidia_smi_error,
        gpus=gpus,
        gpu_processes=processes,
        disk=disk,
        gpu_memory_key=memory_key,
        gpu_processes_reused=reused,
    )


# ---------------------------------------------------------------- judgement and output


def gpu_is_really_working(sample: GpuSample) -> bool | None:
    """Whether a GPU is doing real work: SM clock near max and power well above idle.

    Each signal the GPU reports must agree; None when it reports neither (util% is not
    trusted on its own: a starved loop of tiny kernels also reads 100%).
    """
    verdicts: list[bool] = []
    if sample.sm_clock_mhz is not None and sample.sm_clock_max_mhz:
        verdicts.append(sample.sm_clock_mhz >= WORKING_MIN_CLOCK_RATIO * sample.sm_clock_max_mhz)
    if sample.power_w is not None and sample.power_limit_w:
        verdicts.append(sample.power_w >= WORKING_MIN_POWER_RATIO * sample.power_limit_w)
    return all(verdicts) if verdicts else None


def snapshot_to_status(snapshot: WorkerSnapshot) -> dict[str, Any]:
    """The probe's part of one `runyard worker status --json` entry (JSON-ready, null = N/A).

    The caller adds `name`, `reachable`, `error` and `latency_ms`, which only it knows.
    """
    return {
        "taken_at": snapshot.taken_at,
        "heartbeat_ok": snapshot.heartbeat_ok,
        "heartbeat_output": snapshot.heartbeat_output,
        "hostname": snapshot.hostname,
        "boot_id": snapshot.boot_id,
        "uptime_s": snapshot.uptime_s,
        "load": {"1m": snapshot.load1, "5m": snapshot.load5, "15m": snapshot.load15},
        "cpu_count": snapshot.cpu_count,
        "mem_total_bytes": snapshot.mem_total_bytes,
        "mem_available_bytes": snapshot.mem_available_bytes,
        "nvidia_smi": snapshot.nvidia_smi,
        "nvidia_smi_error": snapshot.nvidia_smi_error,
        "gpus": [{**vars(gpu), "working": gpu_is_really_working(gpu)} for gpu in snapshot.gpus],
        "processes": [dict(vars(process)) for process in snapshot.gpu_processes],
        "disk": dict(vars(snapshot.disk)) if snapshot.disk else None,
    }
