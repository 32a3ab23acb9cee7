"""The run protocol as bash scripts: launch, check, cancel, tail and list outputs.

Every script is built here from quoted parts and sent through an `Executor`, so local and
SSH workers behave identically and a worker needs nothing but bash and coreutils. Nothing
from a queue entry reaches a shell unquoted; the command itself travels on stdin and is
stored byte-exact in the run directory, and secrets travel on stdin straight into the
run's environment, never to disk.

Layout on the worker::

    <workspace>/.runyard/runs/<run-id>/<attempt>/   command run.sh log pid boot_id exit_code
                                                    (tmux.sh: a tmux-detached run's first process)
    <workspace>/outputs/<run-name>/                 the run's isolated output directory
"""

from __future__ import annotations

import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

RUNS_SUBDIR = ".runyard/runs"
OUTPUTS_SUBDIR = "outputs"
EXISTS_MARKER = "runyard:exists"


def sh_path(path: str) -> str:
    """A shell word for `path` that expands a leading `~` on the worker and quotes the rest."""
    if path == "~":
        return '"$HOME"'
    if path.startswith("~/"):
        return '"$HOME"/' + shlex.quote(path[2:])
    return shlex.quote(path)


def run_dir_path(workspace: str, run_id: str, attempt: int) -> str:
    return f"{workspace.rstrip('/') or '/'}/{RUNS_SUBDIR}/{run_id}/{attempt}"


def output_dir_path(workspace: str, run_name: str) -> str:
    return f"{workspace.rstrip('/') or '/'}/{OUTPUTS_SUBDIR}/{run_name}"


# Helpers shared by scripts: a boot id that works on Linux and macOS.
_PRELUDE = r"""
boot_id() {
  # RUNYARD_SIM_BOOT_ID_FILE lets the simulated fleet and tests stage a reboot.
  if [ -n "${RUNYARD_SIM_BOOT_ID_FILE:-}" ] && [ -r "$RUNYARD_SIM_BOOT_ID_FILE" ]; then cat "$RUNYARD_SIM_BOOT_ID_FILE"
  elif [ -r /proc/sys/kernel/random/boot_id ]; then cat /proc/sys/kernel/random/boot_id
  else sysctl -n kern.boottime 2>/dev/null | tr -d ' \n'; echo; fi
}
"""

RUN_WRAPPER = r"""#!/usr/bin/env bash
# runyard run wrapper: runs ./command detached and records its exit code atomically.
d=$1
wd=$2
printf '%s\n' "$$" > "$d/pid.tmp" && mv -f "$d/pid.tmp" "$d/pid"
write_exit() { printf '%s\n' "$1" > "$d/exit_code.tmp" && mv -f "$d/exit_code.tmp" "$d/exit_code"; }
# Survive SIGTERM ourselves so the exit code is still written; the command keeps the
# default disposition (bash resets trapped signals in children).
trap ':' TERM INT HUP
[ -r "$HOME/.config/runyard/credentials.env" ] && source "$HOME/.config/runyard/credentials.env"
source "$d/env.sh"
cd -- "$wd" || { echo "runyard: cannot cd to $wd" >&2; write_exit 126; exit 126; }
bash "$d/command"
write_exit $?
"""

# `start_run &` starts the run wrapper with the secrets (`secrets`, assignments) exported to
# it alone, in a session of its own: setsid(1), else python3, else nohup. Both the launch
# script and a tmux pane start runs with it.
_START_RUN = r"""
detach() {
  if command -v setsid >/dev/null 2>&1; then exec setsid "$@"
  elif command -v python3 >/dev/null 2>&1; then
    exec python3 -c 'import os, sys; os.setsid(); os.execvp(sys.argv[1], sys.argv[1:])' "$@"
  else exec nohup "$@"; fi
}
start_run() {
  for assignment in ${secrets[@]+"${secrets[@]}"}; do export "$assignment"; done
  detach bash "$d/run.sh" "$d" "$wd" </dev/null >>"$d/log" 2>&1
}
"""

# The first process of a tmux-launched run (`tmux.sh`). The session's command is the
# constant `exec bash ./tmux.sh` (run by tmux's default-shell, whatever shell that is), so
# no path or value needs quoting for it; `d` and `wd` are written above this text by bash's
# own `%q`. Secrets arrive through a FIFO: a session's environment comes from the tmux
# server, not from the client that created it, and secrets may touch neither disk nor a
# command line. The run starts in a session of its own, off the pane's terminal, as under
# setsid: Ctrl-C in an attached pane, or the pane closing, never reaches it. The pane only
# shows the log, and closes (ending the tmux session) when the run ends.
TMUX_PANE = (
    _START_RUN
    + r"""
# Opened read-write, which never blocks: a launcher that died before writing (a dropped
# connection) leaves no pane waiting on the FIFO for ever. The launcher ends the list with
# a marker; a list cut short, or none within secrets_wait_s, starts nothing and the
# session ends.
[ -p "$d/secrets.fifo" ] || exit 1  # gone: the launcher gave up on this pane
exec 3<>"$d/secrets.fifo" || exit 1
secrets=()
complete=
while IFS= read -r -d '' -t "${secrets_wait_s:-15}" assignment <&3; do
  if [ "$assignment" = @@runyard:end ]; then complete=1; break; fi
  secrets+=("$assignment")
done
exec 3<&-
[ -n "$complete" ] || exit 1
# Whoever makes start.lock starts the run: this pane, or the launcher once it gave up on it.
mkdir "$d/start.lock" 2>/dev/null || exit 1
start_run &
run=$!
unset secrets assignment
trap '' INT QUIT TSTP  # the operator's Ctrl-C in the pane stops nothing (after the start)
if tail --pid="$$" -n 0 /dev/null 2>/dev/null; then
  tail -n +1 -f --pid="$run" "$d/log"
else  # a tail without --pid (busybox, BSD): stop it once the run is gone
  tail -n +1 -f "$d/log" & t=$!
  while kill -0 "$run" 2>/dev/null; do sleep 1; done
  kill "$t" 2>/dev/null
fi
"""
)


def env_script(env: Mapping[str, str]) -> str:
    """`export` lines for non-secret variables, every value quoted."""
    return "".join(f"export {key}={shlex.quote(value)}\n" for key, value in env.items())


def tmux_session_name(run_id: str, attempt: int) -> str:
    """The tmux session a tmux-detached attempt runs in; attach looks for the same name."""
    return f"runyard-{run_id}-{attempt}"


@dataclass(frozen=True)
class LaunchRequest:
    """Everything the launch script needs; `secrets` never leave the stdin payload."""

    workspace: str
    run_id: str
    run_name: str
    attempt: int
    workdir: str
    env: Mapping[str, str]
    secrets: Mapping[str, str]
    command: str
    detach: str = "setsid"  # or "tmux"


# Starts the run in a tmux session, or leaves `started` empty (and says why in `warning`)
# so the setsid start below runs instead: a worker without a working tmux still runs it.
_TMUX_START = r"""
if ! command -v tmux >/dev/null 2>&1; then
  warning='tmux is not installed on the worker; the run was started with setsid (no session to attach)'
elif ! mkfifo -m 600 "$d/secrets.fifo"; then
  warning='cannot make the secrets FIFO for tmux; the run was started with setsid'
else
  { printf '#!/usr/bin/env bash\nd=%q\nwd=%q\n' "$d" "$wd"; printf '%s' "$pane"; } > "$d/tmux.sh"
  # TMUX is emptied so the session lands on the default server, where attach looks for it.
  if err=$(TMUX= tmux new-session -d -s "$session" -c "$d" 'exec bash ./tmux.sh' 2>&1 </dev/null)
  then
    # Opening the FIFO blocks until the pane opens it to read; the marker ends the list.
    { feed_secrets; printf '%s\0' @@runyard:end; } > "$d/secrets.fifo" &
    feeder=$!
    for _ in $(seq 1 1000); do [ -e "$d/start.lock" ] && break; sleep 0.01; done
    if mkdir "$d/start.lock" 2>/dev/null; then
      # The pane never claimed the start, and now cannot: end it, use setsid.
      kill "$feeder" 2>/dev/null
      TMUX= tmux kill-session -t "=$session" 2>/dev/null
      warning='the tmux session did not start the run within 10s; the run was started with setsid'
    else
      started=tmux
    fi
  else
    warning="tmux could not start a session ($(printf '%s' "$err" | tr '\n' ' ')); the run was started with setsid"
  fi
  rm -f "$d/secrets.fifo"
fi
"""


def build_launch(req: LaunchRequest) -> tuple[str, bytes]:
    """The launch script and its stdin payload (command NUL secret-assignments NUL...).

    The script prints `run_dir=`, `pid=`, `boot_id=`, `detach=` (setsid or tmux) and, when
    a tmux launch fell back to setsid, a one-line `warning=`.
    """
    run_dir = run_dir_path(req.workspace, req.run_id, req.attempt)
    out_dir = output_dir_path(req.workspace, req.run_name)
    base_env = {
        "RUNYARD_RUN_ID": req.run_id,
        "RUNYARD_RUN_NAME": req.run_name,
        "RUNYARD_ATTEMPT": str(req.attempt),
    }
    tmux_start = ""
    if req.detach == "tmux":
        session = tmux_session_name(req.run_id, req.attempt)
        tmux_start = f"session={shlex.quote(session)}\npane={shlex.quote(TMUX_PANE)}\n{_TMUX_START}"
    script = (
        _PRELUDE
        + f"""
set -u
umask 077
d={sh_path(run_dir)}
out={sh_path(out_dir)}
wd={sh_path(req.workdir)}
# A workspace relative to the login directory: made absolute here, since the run changes
# directory before it writes its exit code and tmux resolves paths from its own server.
case $d in /*) ;; *) d=$PWD/$d ;; esac
case $out in /*) ;; *) out=$PWD/$out ;; esac
case $wd in /*) ;; *) wd=$PWD/$wd ;; esac
mkdir -p "$(dirname "$d")" || exit 3
mkdir "$d" 2>/dev/null || {{ echo {EXISTS_MARKER}; exit 17; }}
umask 022
mkdir -p "$out" || exit 3
IFS= read -r -d '' cmd || true
printf '%s' "$cmd" > "$d/command"
# Secret assignments stay in this shell's memory (not exported) until the run's start.
secrets=()
while IFS= read -r -d '' assignment; do secrets+=("$assignment"); done
feed_secrets() {{ [ "${{#secrets[@]}}" -eq 0 ] || printf '%s\\0' "${{secrets[@]}}"; }}
printf '%s' {shlex.quote(env_script(base_env) + env_script(req.env))} > "$d/env.sh"
printf 'export RUNYARD_OUTPUT_DIR=%q\n' "$out" >> "$d/env.sh"
printf '%s' {shlex.quote(RUN_WRAPPER)} > "$d/run.sh"
boot_id > "$d/boot_id"
date -u +%Y-%m-%dT%H:%M:%SZ > "$d/started_at"
: >> "$d/log"
{_START_RUN}
started=
warning=
{tmux_start}
if [ -z "$started" ]; then
  started=setsid
  start_run &
fi
for _ in $(seq 1 200); do [ -s "$d/pid" ] && break; sleep 0.01; done
printf 'run_dir=%s\\npid=%s\\nboot_id=%s\\ndetach=%s\\n' "$d" "$(cat "$d/pid" 2>/dev/null)" "$(cat "$d/boot_id")" "$started"
[ -z "$warning" ] || printf 'warning=%s\\n' "$warning"
"""
    )
    payload = req.command.encode("utf-8") + b"\0"
    for key, value in req.secrets.items():
        payload += f"{key}={value}".encode() + b"\0"
    return script, payload


@dataclass(frozen=True)
class LaunchResult:
    already_exists: bool
    run_dir: str | None = None
    pid: int | None = None
    boot_id: str | None = None
    detach: str | None = None  # how the run was started: setsid or tmux
    warning: str | None = None  # e.g. tmux was asked for but missing, so setsid started it


def parse_launch(stdout: bytes) -> LaunchResult:
    text = stdout.decode("utf-8", "replace")
    if EXISTS_MARKER in text:
        return LaunchResult(already_exists=True)
    fields = _key_values(text.splitlines())
    pid = fields.get("pid", "")
    return LaunchResult(
        already_exists=False,
        run_dir=fields.get("run_dir"),
        pid=int(pid) if pid.isdigit() else None,
        boot_id=fields.get("boot_id") or None,
        detach=fields.get("detach") or None,
        warning=fields.get("warning") or None,
    )


def _key_values(lines: Sequence[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for line in lines:
        key, sep, value = line.partition("=")
        if sep:
            out[key.strip()] = value.strip()
    return out


# ---------------------------------------------------------------- check


@dataclass(frozen=True)
class ProbeTarget:
    """One run attempt to inspect: where its directory is on the worker."""

    key: str
    run_dir: str
    tail_bytes: int = 4096


@dataclass(frozen=True)
class RunProbe:
    """What the worker says about one run attempt."""

    key: str
    dir_exists: bool
    pid: int | None
    alive: bool
    boot_id: str | None
    exit_code: int | None
    log_size: int
    log_age_s: float | None
    log_tail: bytes


@dataclass(frozen=True)
class CheckReport:
    current_boot_id: str | None
    runs: dict[str, RunProbe]


_PROBE_FUNCTION = r"""probe() {
  local key=$1 d=$2 n=$3 pid= code= recorded= alive=0 text
  printf '@@run %s\n' "$key"
  if [ ! -d "$d" ]; then echo 'dir=0'; return; fi
  [ -r "$d/pid" ] && read -r pid < "$d/pid"
  [ -r "$d/exit_code" ] && read -r code < "$d/exit_code"
  [ -r "$d/boot_id" ] && read -r recorded < "$d/boot_id"
  if [ -z "$code" ] && [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
    if [ -r "/proc/$pid/cmdline" ]; then
      local -a argv=()
      mapfile -d '' -t argv < "/proc/$pid/cmdline" 2>/dev/null
      [ "${argv[1]:-}" = "$d/run.sh" ] && alive=1
    else
      case "$(ps -o args= -p "$pid" 2>/dev/null)" in *"$d/run.sh"*) alive=1 ;; esac
    fi
  fi
  printf 'dir=1\npid=%s\nalive=%s\nboot_id=%s\nexit_code=%s\n' "$pid" "$alive" "$recorded" "$code"
  [ -f "$d/log" ] || return
  if [ -z "$code" ]; then
    set -- $(stat -c '%s %Y' "$d/log" 2>/dev/null || stat -f '%z %m' "$d/log" 2>/dev/null)
    [ -n "${2:-}" ] && printf 'log_size=%s\nlog_age=%s\n' "$1" "$((now - $2))"
  fi
  # One byte more than the window, and a sentinel so $(...) keeps trailing newlines: when
  # the log is longer than the window, its cut first line (which would read as a bogus
  # metric, `ss=0.28` of `val_loss=0.28`) is dropped unless that extra byte ends a line.
  text=$(tail -c "$((n + 1))" "$d/log" 2>/dev/null; echo .)  # bash drops NULs; logs rarely hold them
  text=${text%.}
  if [ "${#text}" -gt "$n" ]; then
    if [ "${text:0:1}" = $'\n' ]; then text=${text:1}
    elif [[ $text == *$'\n'* ]]; then text=${text#*$'\n'}
    else text=${text:1}
    fi
  fi
  while [[ $text == *$'\n' ]]; do text=${text%$'\n'}; done
  printf 'tail=%s\n%s\n' "${#text}" "$text"
}
"""


def build_check(targets: Sequence[ProbeTarget]) -> str:
    """One script that reports on every target, so a worker costs one round trip per tick.

    It leans on bash builtins (`read`, `mapfile` on /proc) so a run costs one or two forks:
    a worker with hundreds of runs still answers in a fraction of a second.
    """
    parts = [
        "export LC_ALL=C\n",  # ${#text} must count bytes
        _PRELUDE,
        "now=$(date +%s)\n",
        'printf \'@@host boot_id=%s now=%s\\n\' "$(boot_id)" "$now"\n',
        _PROBE_FUNCTION,
    ]
    for target in targets:
        parts.append(
            f"probe {shlex.quote(target.key)} {sh_path(target.run_dir)} {int(target.tail_bytes)}\n"
        )
    return "".join(parts)


def _int_or_none(text: str) -> int | None:
    return int(text) if text.lstrip("-").isdigit() else None


def parse_check(stdout: bytes) -> CheckReport:
    """Parse the check script's output; a log tail is length-framed raw bytes."""
    current_boot: str | None = None
    runs: dict[str, RunProbe] = {}
    key: str | None = None
    fields: dict[str, str] = {}
    tail = b""

    def flush() -> None:
        if key is None:
            return
        age = _int_or_none(fields.get("log_age", ""))
        runs[key] = RunProbe(
            key=key,
            dir_exists=fields.get("dir") == "1",
            pid=_int_or_none(fields.get("pid", "")),
            alive=fields.get("alive") == "1",
            boot_id=fields.get("boot_id") or None,
            exit_code=_int_or_none(fields.get("exit_code", "")),
            log_size=_int_or_none(fields.get("log_size", "")) or 0,
            log_age_s=float(age) if age is not None else None,
            log_tail=tail,
        )

    pos = 0
    while pos < len(stdout):
        newline = stdout.find(b"\n", pos)
        if newline < 0:
            newline = len(stdout)
        line = stdout[pos:newline].decode("utf-8", "replace")
        pos = newline + 1
        if line.startswith("@@host "):
            current_boot = _key_values(line[len("@@host ") :].split(" ")).get("boot_id") or None
        elif line.startswith("@@run "):
            flush()
            key, fields, tail = line[len("@@run ") :], {}, b""
        elif line.startswith("tail=") and line[5:].isdigit():
            length = int(line[5:])
            tail = stdout[pos : pos + length]
            pos += length + 1
        else:
            name, sep, value = line.partition("=")
            if sep:
                fields[name] = value
    flush()
    return CheckReport(current_boot_id=current_boot, runs=runs)


# ---------------------------------------------------------------- cancel, logs


def build_cancel(run_dir: str, grace_seconds: float) -> str:
    """TERM the run's whole process group, then KILL what is left after the grace period."""
    steps = max(1, int(grace_seconds * 10))
    return f"""
d={sh_path(run_dir)}
pid=$(head -n 1 "$d/pid" 2>/dev/null)
[ -n "$pid" ] || {{ echo 'cancel=nopid'; exit 0; }}
case "$(ps -o args= -p "$pid" 2>/dev/null)" in *"$d/run.sh"*) ;; *) echo 'cancel=gone'; exit 0 ;; esac
pgid=$(ps -o pgid= -p "$pid" 2>/dev/null | tr -d ' ')
[ -n "$pgid" ] || pgid=$pid
kill -TERM -- "-$pgid" 2>/dev/null
for _ in $(seq 1 {steps}); do
  kill -0 -- "-$pgid" 2>/dev/null || {{ echo 'cancel=term'; exit 0; }}
  sleep 0.1
done
kill -KILL -- "-$pgid" 2>/dev/null
echo 'cancel=kill'
"""


def build_log_tail(run_dir: str, lines: int | None = None, offset: int | None = None) -> str:
    """Print the last `lines` lines of the log, or everything after byte `offset`."""
    log = sh_path(run_dir) + "/log"
    if offset is not None:
        return f"[ -f {log} ] && tail -c +{int(offset) + 1} {log}; true"
    if lines is None:
        return f"[ -f {log} ] && cat {log}; true"
    return f"[ -f {log} ] && tail -n {int(lines)} {log}; true"


def build_log_stream(run_dir: str, offset: int, pid: int) -> str:
    """Stream the log from byte `offset` until the run's process exits (GNU tail only).

    Where tail lacks `--pid` (BSD), it prints nothing and exits; callers then poll.
    """
    log = sh_path(run_dir) + "/log"
    return (
        "tail --version 2>/dev/null | grep -q GNU || exit 0\n"
        f"exec tail -c +{int(offset) + 1} -F --pid={int(pid)} {log} 2>/dev/null"
    )


def build_log_snapshot(run_dir: str, lines: int | None) -> str:
    """The log's size on one line, then its last `lines` lines up to exactly that size.

    Following a log starts here: the size is the offset of the next read, so no byte is
    shown twice or skipped however fast the run writes.
    """
    log = sh_path(run_dir) + "/log"
    last = f" | tail -n {int(lines)}" if lines is not None else ""
    return (
        f"if [ -f {log} ]; then size=$(wc -c < {log} | tr -d ' '); echo \"$size\"; "
        f'head -c "$size" {log}{last}; else echo 0; fi'
    )


def parse_log_snapshot(stdout: bytes) -> tuple[int, bytes]:
    first, _, rest = stdout.partition(b"\n")
    return (int(first) if first.strip().isdigit() else 0), rest


# ---------------------------------------------------------------- outputs


@dataclass(frozen=True)
class RemoteFile:
    """An output file on the worker: absolute path, path inside the result, size, sha256."""

    path: str
    relative: str
    size: int
    sha256: str


def build_list_outputs(output_dir: str, workdir: str, globs: Sequence[str], run_dir: str) -> str:
    """List the run's output dir, its glob matches and its log, NUL-separated with sha256.

    Records are four fields: path, name in results/, size, sha256. Two more kinds have an
    empty path: `@@workdir` with the workdir as resolved there (absent when it does not
    exist), and `@@unmatched` with the index of a declared glob that matched no file.
    """
    per_glob = "".join(
        f'm=0; for f in {_glob_word(glob)}; do [ -f "$f" ] && m=1 && emit_match "$f"; done; '
        f"[ $m = 1 ] || printf '\\0@@unmatched\\0%s\\0\\0' {index}\n"
        for index, glob in enumerate(globs)
    )
    return f"""
shopt -s globstar nullglob dotglob
if command -v sha256sum >/dev/null 2>&1; then hash() {{ sha256sum "$1" | cut -d' ' -f1; }}
else hash() {{ shasum -a 256 "$1" | cut -d' ' -f1; }}; fi
emit() {{ printf '%s\\0%s\\0%s\\0%s\\0' "$1" "$2" "$(wc -c < "$1" | tr -d ' ')" "$(hash "$1")"; }}
emit_match() {{ case "$1" in /*) emit "$1" "files$1" ;; *) emit "$wd/$1" "files/$1" ;; esac; }}
out={sh_path(output_dir)}
wd={sh_path(workdir)}
d={sh_path(run_dir)}
[ -f "$d/log" ] && emit "$d/log" "log"
if [ -d "$out" ]; then
  cd "$out" && for f in **; do [ -f "$f" ] && [ ! -L "$f" ] && emit "$out/$f" "outputs/$f"; done
fi
cd -- "$wd" 2>/dev/null || exit 0
printf '\\0@@workdir\\0%s\\0\\0' "$PWD"
{per_glob}true
"""


@dataclass(frozen=True)
class OutputListing:
    """What the worker listed for a pull: files, the resolved workdir, unmatched globs."""

    files: list[RemoteFile]
    workdir: str | None  # None: the run's workdir does not exist on the worker
    unmatched: list[int]  # indexes of declared globs that matched no file


def _glob_word(pattern: str) -> str:
    """Quote a glob so only `*`, `?` and `[...]` stay special to the shell."""
    return "".join(char if char in "*?[]" else shlex.quote(char) for char in pattern) or "''"


def parse_list_outputs(stdout: bytes) -> OutputListing:
    fields = stdout.split(b"\0")
    files: list[RemoteFile] = []
    workdir: str | None = None
    unmatched: list[int] = []
    seen: set[str] = set()
    for i in range(0, len(fields) - 3, 4):
        path, relative, size, digest = (
            f.decode("utf-8", "surrogateescape") for f in fields[i : i + 4]
        )
        if not path and relative == "@@workdir":
            workdir = size
        elif not path and relative == "@@unmatched" and size.isdigit():
            unmatched.append(int(size))
        elif path not in seen and size.isdigit():
            seen.add(path)
            files.append(RemoteFile(path=path, relative=relative, size=int(size), sha256=digest))
    return OutputListing(files, workdir, unmatched)
