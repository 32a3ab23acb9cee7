"""Live host and GPU telemetry: one bash probe per worker per tick, parsed into snapshots.

The probe is a single script sent through an `Executor`, so a refresh costs one round trip
per worker whatever the transport. It prints sections between `@@runyard:` marker lines and
never fails as a whole: a CPU box, a wedged driver or a missing workspace all come back as
explicit "not available" values, never as an exception. Parsing is pure and tolerant of
everything nvidia-smi prints across drivers and GPU generations.
"""

from __future__ import annotations

import math
import re
import shlex
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

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
_ry_mark() { printf '@@runyard:%s\n' "$*"; }
_ry_limited() {
  local limit=$1
  shift
  if command -v timeout >/dev/null 2>&1; then timeout "$limit" "$@"; else "$@"; fi
}
_ry_mark probe __VERSION__
"""

_PROBE_HOST_SECTIONS = r"""
_ry_mark section boot_id
if [ -n "${RUNYARD_SIM_BOOT_ID_FILE:-}" ] && [ -r "$RUNYARD_SIM_BOOT_ID_FILE" ]; then
  printf '%s\n' "$(< "$RUNYARD_SIM_BOOT_ID_FILE")"  # a simulated worker (see core/protocol.py)
elif [ -r /proc/sys/kernel/random/boot_id ]; then
  printf '%s\n' "$(< /proc/sys/kernel/random/boot_id)"
else
  sysctl -n kern.boottime 2>/dev/null
fi
_ry_mark section hostname
printf '%s\n' "${HOSTNAME:-$(uname -n 2>/dev/null)}"
_ry_mark section uptime
if [ -r /proc/uptime ]; then
  printf '%s\n' "$(< /proc/uptime)"
else
  _ry_boot=$(sysctl -n kern.boottime 2>/dev/null)
  _ry_boot=${_ry_boot#*sec = }
  _ry_boot=${_ry_boot%%,*}
  case $_ry_boot in *[!0-9]* | '') ;; *) echo $(( $(date +%s) - _ry_boot )) ;; esac
fi
_ry_mark section loadavg
if [ -r /proc/loadavg ]; then
  printf '%s\n' "$(< /proc/loadavg)"
else
  sysctl -n vm.loadavg 2>/dev/null
fi
_ry_mark section nproc
nproc 2>/dev/null || getconf _NPROCESSORS_ONLN 2>/dev/null || sysctl -n hw.ncpu 2>/dev/null
_ry_mark section meminfo
if [ -r /proc/meminfo ]; then
  while IFS= read -r _ry_line; do
    case $_ry_line in MemTotal:* | MemAvailable:*) printf '%s\n' "$_ry_line" ;; esac
  done < /proc/meminfo
else
  _ry_mem=$(sysctl -n hw.memsize 2>/dev/null) && echo "MemTotal: $(( _ry_mem / 1024 )) kB"
fi
"""

_PROBE_GPU_SECTIONS = r"""
_ry_fields=__GPU_FIELDS__
if command -v nvidia-smi >/dev/null 2>&1; then
  _ry_out=$(_ry_limited __TIMEOUT__ nvidia-smi --query-gpu="$_ry_fields" --format=csv,noheader,nounits 2>&1)
  _ry_rc=$?
  if [ "$_ry_rc" -ne 0 ] && [[ $_ry_out == *"not a valid field"* ]]; then
    _ry_fields=__GPU_CORE_FIELDS__
    _ry_out=$(_ry_limited __TIMEOUT__ nvidia-smi --query-gpu="$_ry_fields" --format=csv,noheader,nounits 2>&1)
    _ry_rc=$?
  fi
  _ry_mark section gpus "$_ry_fields"
  [ -n "$_ry_out" ] && printf '%s\n' "$_ry_out"
  _ry_mark rc "$_ry_rc"
  if [ "$_ry_rc" -eq 0 ]; then
    _ry_mark section gpu_processes __APP_FIELDS__
    _ry_out=$(_ry_limited __TIMEOUT__ nvidia-smi --query-compute-apps=__APP_FIELDS__ --format=csv,noheader,nounits 2>&1)
    _ry_rc=$?
    [ -n "$_ry_out" ] && printf '%s\n' "$_ry_out"
    _ry_mark rc "$_ry_rc"
  fi
else
  _ry_mark section gpus "$_ry_fields"
  _ry_mark missing nvidia-smi
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
(cd -- "$_ry_dir" 2>/dev/null && pwd) || printf '%s\n' "$_ry_dir"
_ry_mark section df_blocks
df -P -k -- "$_ry_dir" 2>&1
_ry_mark section df_inodes
df -P -i -- "$_ry_dir" 2>&1
_ry_mark end
exit 0
"""


def _heartbeat_section(heartbeat_command: str, timeout_s: int) -> str:
    """The heartbeat section: run the operator's command, keep its output and exit status.

    Output lines that would read as probe markers are defused, so a heartbeat cannot forge
    sections.
    """
    if heartbeat_command.strip() == "echo ok":
        # The default heartbeat needs no process: answering at all proves the box is up.
        return "\n_ry_mark section heartbeat\nprintf 'ok\\n'\n_ry_mark rc 0\n"
    return f"""
_ry_mark section heartbeat
_ry_out=$(_ry_limited {timeout_s} "${{BASH:-bash}}" -c {shlex.quote(heartbeat_command)} 2>&1)
_ry_rc=$?
_ry_out=${{_ry_out:0:{HEARTBEAT_OUTPUT_LIMIT}}}
_ry_out=${{_ry_out//$'\\n'@@runyard:/$'\\n'@@ runyard:}}
[[ $_ry_out == @@runyard:* ]] && _ry_out="@@ ${{_ry_out#@@}}"
[ -n "$_ry_out" ] && printf '%s\\n' "$_ry_out"
_ry_mark rc "$_ry_rc"
"""


def build_probe_script(
    workspace: str,
    heartbeat_command: str = "echo ok",
    *,
    command_timeout_s: int = DEFAULT_COMMAND_TIMEOUT_S,
) -> str:
    """One bash script that samples heartbeat, host, GPUs and workspace disk in one go.

    Every value from the caller is quoted; the script always exits 0 and reports failures
    inside its sections (see `parse_probe_output`).
    """
    timeout_s = max(1, int(command_timeout_s))
    gpu_sections = (
        _PROBE_GPU_SECTIONS.replace("__GPU_FIELDS__", shlex.quote(",".join(GPU_QUERY_FIELDS)))
        .replace("__GPU_CORE_FIELDS__", shlex.quote(",".join(GPU_QUERY_CORE_FIELDS)))
        .replace("__APP_FIELDS__", shlex.quote(",".join(COMPUTE_APP_FIELDS)))
        .replace("__TIMEOUT__", str(timeout_s))
    )
    body = "".join(
        (
            _PROBE_PRELUDE.replace("__VERSION__", PROBE_VERSION),
            _heartbeat_section(heartbeat_command, timeout_s),
            _PROBE_HOST_SECTIONS,
            gpu_sections,
            _PROBE_DISK_SECTIONS.replace("__WORKSPACE__", remote_path_expression(workspace)),
        )
    )
    # Collected and written once: one SSH packet or two instead of one per printed line,
    # which halves the client's decryption work per probe.
    return f"_ry_all=$(\n{body}\n)\nprintf '%s\\n' \"$_ry_all\"\n"


# ---------------------------------------------------------------- parsing helpers

_NUMBER = re.compile(r"^\s*([-+]?\d+(?:\.\d+)?)\s*(?:[A-Za-z%]+)?\s*$")
_INTEGER = re.compile(r"^[-+]?\d+$")


def parse_measurement(text: str) -> Measurement:
    """A number from nvidia-smi, with or without units ("250.00 W"); None for [N/A] and kin."""
    # Fast path: `nounits` output is a bare number, and this runs for every field of every
    # GPU of every worker each tick. int() and float() ignore surrounding whitespace.
    try:
        return int(text)
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


def _parse_int(text: str) -> int | None:
    value = parse_measurement(text)
    return value if isinstance(value, int) else None


def _text_or_none(text: str) -> str | None:
    """A free-text field, None when nvidia-smi wrote a bracketed placeholder or N/A."""
    value = text.strip()
    if not value or value == "N/A" or (value.startswith("[") and value.endswith("]")):
        return None
    return value


def _split_csv_row(line: str) -> list[str]:
    # nvidia-smi never quotes its CSV; values are separated by ", ".
    return [cell.strip() for cell in line.split(",")]


# ---------------------------------------------------------------- nvidia-smi


def parse_gpu_csv(text: str, fields: tuple[str, ...] = GPU_QUERY_FIELDS) -> list[GpuSample]:
    """Rows of `nvidia-smi --query-gpu=<fields> --format=csv,noheader,nounits` as samples.

    Header lines, warnings and any row without the expected columns or an integer index
    are skipped.
    """
    samples: list[GpuSample] = []
    for line in text.splitlines():
        cells = _split_csv_row(line)
        if len(cells) != len(fields):
            continue
        row = dict(zip(fields, cells, strict=True))
        index = _parse_int(row.get("index", ""))
        if index is None:
            continue

        samples.append(
            GpuSample(
                index=index,
                name=_text_or_none(row.get("name", "")) or "unknown GPU",
                uuid=_text_or_none(row.get("uuid", "")),
                util_pct=parse_measurement(row.get("utilization.gpu", "")),
                mem_used_mib=parse_measurement(row.get("memory.used", "")),
                mem_total_mib=parse_measurement(row.get("memory.total", "")),
                power_w=parse_measurement(row.get("power.draw", "")),
                power_limit_w=parse_measurement(row.get("power.limit", "")),
                temp_c=parse_measurement(row.get("temperature.gpu", "")),
                sm_clock_mhz=parse_measurement(row.get("clocks.sm", "")),
                sm_clock_max_mhz=parse_measurement(row.get("clocks.max.sm", "")),
                mig_mode=_text_or_none(row.get("mig.mode.current", "")),
            )
        )
    return samples


def parse_compute_apps_csv(text: str, gpus: Sequence[GpuSample] = ()) -> list[GpuProcess]:
    """Rows of `nvidia-smi --query-compute-apps=gpu_uuid,pid,process_name,used_memory`.

    `gpu_index` comes from matching the UUID against `gpus`. A process name containing
    commas is rejoined; "No running processes found" and other noise are skipped.
    """
    index_by_uuid = {gpu.uuid: gpu.index for gpu in gpus if gpu.uuid}
    processes: list[GpuProcess] = []
    for line in text.splitlines():
        cells = _split_csv_row(line)
        if len(cells) < len(COMPUTE_APP_FIELDS):
            continue
        uuid, pid_text, memory = cells[0], cells[1], cells[-1]
        pid = _parse_int(pid_text)
        if pid is None or not uuid:
            continue
        processes.append(
            GpuProcess(
                gpu_uuid=uuid,
                gpu_index=index_by_uuid.get(uuid),
                pid=pid,
                process_name=", ".join(cells[2:-1]),
                used_mem_mib=parse_measurement(memory),
            )
        )
    return processes


# ---------------------------------------------------------------- host sections


def _parse_boot_id(lines: list[str]) -> str | None:
    """Linux's boot_id, or a stable id from macOS's `kern.boottime` ({ sec = N, usec = M } ...)."""
    text = "\n".join(lines).strip()
    if not text:
        return None
    boottime = re.search(r"sec\s*=\s*(\d+),\s*usec\s*=\s*(\d+)", text)
    if boottime:
        return f"boottime-{boottime.group(1)}.{boottime.group(2)}"
    return text.splitlines()[0].strip()


def _leading_floats(text: str, count: int) -> list[float | None]:
    numbers: list[float | None] = [float(n) for n in re.findall(r"\d+(?:\.\d+)?", text)[:count]]
    return numbers + [None] * (count - len(numbers))


def _parse_meminfo(lines: list[str]) -> tuple[int | None, int | None]:
    """(MemTotal, MemAvailable) in bytes from /proc/meminfo-style `Key: N kB` lines."""
    values: dict[str, int] = {}
    for line in lines:
        match = re.match(r"^(\w+):\s+(\d+)\s*(kB)?", line)
        if match:
            values[match.group(1)] = int(match.group(2)) * (1024 if match.group(3) else 1)
    return values.get("MemTotal"), values.get("MemAvailable")


# ---------------------------------------------------------------- df


def _is_df_number(token: str) -> bool:
    return token == "-" or re.fullmatch(r"\d+%?", token) is not None


def parse_df(text: str) -> dict[str, str] | None:
    """The data row of `df -P` as {lowercased header: value}, plus `filesystem` and `mounted on`.

    Columns are found from the header, and the numeric block is located in the row, so
    filesystem names and mount points with spaces and BSD's extra inode columns all work.
    """
    lines = [line for line in text.splitlines() if line.strip()]
    header_index = next((i for i, line in enumerate(lines) if line.startswith("Filesystem")), None)
    if header_index is None or header_index + 1 >= len(lines):
        return None
    header = lines[header_index].split()[1:]
    if header[-2:] == ["Mounted", "on"]:
        header = header[:-2]
    tokens = lines[header_index + 1].split()
    width = len(header)
    for start in range(1, len(tokens) - width + 1):
        block = tokens[start : start + width]
        if all(_is_df_number(token) for token in block):
            row = {name.lower(): value for name, value in zip(header, block, strict=True)}
            row["filesystem"] = " ".join(tokens[:start])
            row["mounted on"] = " ".join(tokens[start + width :])
            return row
    return None


def _df_int(row: dict[str, str], *names: str) -> int | None:
    for name in names:
        value = row.get(name)
        if value is not None and value.isdigit():
            return int(value)
    return None


def _block_size(column: str) -> int:
    """Bytes per unit of df's size column: "1024-blocks", "512-blocks", "1k-blocks"."""
    match = re.fullmatch(r"(\d+)([km]?)-blocks", column)
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
    blocks = parse_df(df_blocks)
    inodes = parse_df(df_inodes)
    if blocks is None and inodes is None:
        return None
    total = used = avail = None
    if blocks is not None:
        size_column = next((key for key in blocks if key.endswith("-blocks")), "1024-blocks")
        block_size = _block_size(size_column)
        sizes = [_df_int(blocks, name) for name in (size_column, "used", "available")]
        total, used, avail = (None if n is None else n * block_size for n in sizes)
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


@dataclass
class _Section:
    args: str
    lines: list[str] = field(default_factory=list)
    exit_status: int | None = None
    missing: bool = False

    @property
    def text(self) -> str:
        return "\n".join(self.lines)


def _split_sections(text: str) -> dict[str, _Section]:
    """Sections by name; the first of each name wins, so nothing later can overwrite it."""
    sections: dict[str, _Section] = {}
    current: _Section | None = None
    for line in text.splitlines():
        if not line.startswith(MARK):
            if current is not None:
                current.lines.append(line)
            continue
        verb, _, args = line[len(MARK) :].partition(" ")
        if verb == "section":
            name, _, section_args = args.partition(" ")
            current = _Section(section_args.strip())
            sections.setdefault(name, current)
        elif verb == "rc" and current is not None:
            current.exit_status = _parse_int(args)
        elif verb == "missing" and current is not None:
            current.missing = True
        elif verb == "end":
            current = None
    return sections


def _nvidia_smi_failure(section: _Section) -> str:
    """One readable line about why nvidia-smi failed."""
    if section.exit_status == TIMEOUT_EXIT_STATUS:
        return "nvidia-smi timed out"
    message = " ".join(line.strip() for line in section.lines if line.strip())
    return message[:500] or f"nvidia-smi exited with status {section.exit_status}"


def parse_probe_output(data: bytes, taken_at: float) -> WorkerSnapshot:
    """The snapshot in the output of `build_probe_script`; missing parts become None."""
    sections = _split_sections(data.decode("utf-8", "replace"))

    def lines(name: str) -> list[str]:
        section = sections.get(name)
        return section.lines if section else []

    def first_line(name: str) -> str | None:
        return next((line.strip() for line in lines(name) if line.strip()), None)

    heartbeat = sections.get("heartbeat")
    load1, load5, load15 = _leading_floats(" ".join(lines("loadavg")), 3)
    (uptime_s,) = _leading_floats(first_line("uptime") or "", 1)
    mem_total, mem_available = _parse_meminfo(lines("meminfo"))

    nvidia_smi: NvidiaSmiStatus
    nvidia_smi_error: str | None = None
    gpus: list[GpuSample] = []
    processes: list[GpuProcess] = []
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
        gpus = parse_gpu_csv(gpu_section.text, fields)
        apps = sections.get("gpu_processes")
        if apps is not None and apps.exit_status == 0:
            processes = parse_compute_apps_csv(apps.text, gpus)

    disk_path = first_line("disk_path")
    disk = None
    if disk_path is not None:
        disk = parse_disk_usage(
            disk_path, "\n".join(lines("df_blocks")), "\n".join(lines("df_inodes"))
        )

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
        cpu_count=_parse_int(first_line("nproc") or ""),
        mem_total_bytes=mem_total,
        mem_available_bytes=mem_available,
        nvidia_smi=nvidia_smi,
        nvidia_smi_error=nvidia_smi_error,
        gpus=gpus,
        gpu_processes=processes,
        disk=disk,
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
