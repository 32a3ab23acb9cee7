"""Fleet refresh: `worker status` over N loopback sshd workers, against plain ssh loops.

N workers (default 10, 50, 100) are N ports of a few OpenSSH sshd processes on 127.0.0.1,
each a distinct ssh worker of a temporary workspace with a simulated nvidia-smi (8 GPUs)
on its PATH. Every measurement runs the probe runyard runs (`probe_function`): the ssh
loops send it whole (`build_probe_script`), the warm refresh calls the function its
persistent shells keep:

* cold: `runyard worker status --json` as a whole process (best of a few runs);
* warm: `fleet_status` in this process on already open connections (median refresh),
  whose probes skip nvidia-smi's process query while its last answer must still hold
  (GpuProcessMemo, as in the console); a second figure has every probe ask;
* sequential: `ssh -p PORT user@127.0.0.1 <probe>` for each worker, one after another;
* parallel: the same ssh commands, 16 in flight.

Two more rows put the figures in context: a bare asyncssh client in a fresh process that
only connects to every worker and runs the probe once (the least any client must do for a
cold status; on loopback the N sshd handshakes and probes use this machine's CPUs too), and
the sequential loop again with the key exchange asyncssh negotiates (curve25519), since
OpenSSH 9.2's client prefers sntrup761x25519 and spends ~110 ms of CPU per connection on it.

Baselines are the ssh loops of the same run (ratios only; absolute times are noise).
Goals (issue, for N=100): warm >= 50x faster than sequential and >= 10x faster than the
16-way loop, client CPU <= 1 ms per worker per refresh, cold `worker status` < 2 s.

Two more lines explain the figures: `true` on every worker through the same pool (the
transport alone) and the N probes run locally without SSH (the workers' own work, which on
loopback lands on this machine's CPUs too).

By default nvidia-smi is runyard's simulated one (runyard.sim.fake_nvidia_smi) replayed:
its output captured once and printed by a /bin/sh script, since starting the Python fake
twice per probe costs ~190 ms of CPU that a real fleet spends on the workers, not here;
`--nvidia-smi sim` runs the fake itself. The workers log in as a system user
(`runyardbench`, login shell /bin/sh, created when missing and left in place) so no
~/.bashrc runs per command; run as non-root, the workers log in as the current user and
the bench warns that its shell's start-up files are included.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import getpass
import io
import json
import os
import platform
import pstats
import pwd
import resource
import shlex
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import asyncssh
from _common import median, runyard_argv

import runyard.sim.fake_nvidia_smi as fake_nvidia_smi
from runyard.core.fleet.sessions import remote_command
from runyard.core.fleet.ssh_options import runyard_known_hosts_path
from runyard.core.fleet.telemetry import (
    COMPUTE_APP_FIELDS,
    GPU_QUERY_FIELDS,
    GpuProcessMemo,
    build_probe_script,
    parse_probe_output,
)
from runyard.core.fleet.transports import Fleet
from runyard.core.models import Resources, SSHSettings, Worker
from runyard.core.store.workspace_store import WorkspaceStore
from runyard.core.telemetry_service import fleet_status
from runyard.core.workers import add_worker, remove_worker
from runyard.core.workspace import init_workspace

SSHD = Path("/usr/sbin/sshd")
BENCH_USER = "runyardbench"
BENCH_USER_COMMENT = "runyard bench worker (bench/fleet_refresh.py)"
LOOPBACK = "127.0.0.1"
PORTS_PER_SSHD = 16  # OpenSSH's MAX_LISTEN_SOCKS: one sshd listens on at most 16 sockets
PARALLEL = 16
GPUS_PER_WORKER = 8
READY_TIMEOUT_S = 20.0

GOAL_SEQUENTIAL_RATIO = 50.0
GOAL_PARALLEL_RATIO = 10.0
GOAL_CPU_MS_PER_WORKER = 1.0
GOAL_COLD_S = 2.0

# What asyncssh negotiates with OpenSSH 9.2; OpenSSH's own client prefers the post-quantum
# sntrup761x25519-sha512 there, which costs it ~110 ms of CPU per connection (measured here).
RUNYARD_KEX = "curve25519-sha256"


# ---------------------------------------------------------------- the workers' account


@dataclass(frozen=True)
class Account:
    """Who the workers log in as, and what the bench did about it."""

    name: str
    home: Path
    notes: tuple[str, ...]


def _run(argv: Sequence[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(argv), capture_output=True, text=True, check=False)


def prepare_account(home: Path) -> Account:
    """The bench user (created or re-homed as root), else the current user with a warning."""
    home.mkdir(mode=0o755, exist_ok=True)
    if os.geteuid() != 0:
        me = getpass.getuser()
        shell = pwd.getpwnam(me).pw_shell
        return Account(
            me,
            Path(pwd.getpwnam(me).pw_dir),
            (
                f"WARNING: not root, workers log in as {me} (shell {shell}); the figures include "
                "that shell's start-up files (~/.bashrc costs ~185 ms per command here)",
            ),
        )
    notes: list[str] = []
    try:
        entry = pwd.getpwnam(BENCH_USER)
    except KeyError:
        made = _run(
            [
                "useradd",
                "--system",
                "--shell",
                "/bin/sh",
                "--home-dir",
                str(home),
                "--no-create-home",
                "--comment",
                BENCH_USER_COMMENT,
                "--password",
                "*",  # no password, but not locked ("!"): sshd without PAM refuses locked ones
                BENCH_USER,
            ]
        )
        if made.returncode != 0:
            return Account(
                "root",
                Path(pwd.getpwnam("root").pw_dir),
                (
                    f"WARNING: cannot create user {BENCH_USER} ({made.stderr.strip()}); workers "
                    "log in as root and the figures include root's ~/.bashrc (~185 ms a command)",
                ),
            )
        notes.append(
            f"created system user {BENCH_USER} (login shell /bin/sh); it is left in place, "
            f"`userdel {BENCH_USER}` removes it"
        )
        return Account(BENCH_USER, home, tuple(notes))
    if entry.pw_gecos == BENCH_USER_COMMENT:
        moved = _run(
            ["usermod", "--home", str(home), "--shell", "/bin/sh", "--password", "*", BENCH_USER]
        )
        if moved.returncode != 0:
            raise SystemExit(f"usermod {BENCH_USER} failed: {moved.stderr.strip()}")
        notes.append(f"workers log in as system user {BENCH_USER} (login shell /bin/sh; kept)")
        return Account(BENCH_USER, home, tuple(notes))
    notes.append(
        f"workers log in as existing user {BENCH_USER} (not made by this bench; shell "
        f"{entry.pw_shell}, home {entry.pw_dir})"
    )
    return Account(BENCH_USER, Path(entry.pw_dir), tuple(notes))


def python_for(account: Account) -> str:
    """An interpreter the workers' user can run (this venv's may live under /root)."""
    candidates = [sys.executable, os.path.realpath(sys.executable), "/usr/bin/python3"]
    user = None if account.name == getpass.getuser() else account.name
    for candidate in dict.fromkeys(candidates):
        with contextlib.suppress(OSError):
            probe = subprocess.run(
                [candidate, "-c", "pass"], user=user, capture_output=True, check=False
            )
            if probe.returncode == 0:
                return candidate
    raise SystemExit(f"no Python that user {account.name} can run for the fake nvidia-smi")


# ---------------------------------------------------------------- fake nvidia-smi


def write_nvidia_smi(bin_dir: Path, workspace: Path, python: str, mode: str) -> Path:
    """runyard's simulated nvidia-smi in `bin_dir`, run by `python`; `cached` replays it."""
    gpus = [dict(fake_nvidia_smi.DEFAULT_GPU) for _ in range(GPUS_PER_WORKER)]
    shim = fake_nvidia_smi.write_fake_nvidia_smi(bin_dir, gpus, workspace)
    module = bin_dir / "fake_nvidia_smi.py"  # a copy the workers' user can read
    shutil.copyfile(fake_nvidia_smi.__file__, module)
    lines = shim.read_text(encoding="utf-8").splitlines()
    if not lines or not lines[-1].startswith("exec "):
        raise SystemExit(f"unexpected fake nvidia-smi shim:\n{shim.read_text()}")
    lines[-1] = f'exec {shlex.quote(python)} {shlex.quote(str(module))} "$@"'
    shim.write_text("\n".join(lines) + "\n", encoding="utf-8")
    if mode == "sim":
        return shim
    fmt = "--format=csv,noheader,nounits"
    queries = {
        "gpus.csv": f"--query-gpu={','.join(GPU_QUERY_FIELDS)}",
        "apps.csv": f"--query-compute-apps={','.join(COMPUTE_APP_FIELDS)}",
    }
    for name, query in queries.items():
        out = subprocess.run([str(shim), query, fmt], capture_output=True, check=True).stdout
        (bin_dir / name).write_bytes(out)
    sim = bin_dir / "nvidia-smi.sim"
    shim.rename(sim)

    def replay(name: str) -> str:
        """A `printf` of the captured output: a shell builtin, so one process per call, as
        a real nvidia-smi is (an `exec cat` would double the processes the probe starts)."""
        lines = (bin_dir / name).read_text(encoding="utf-8").splitlines()
        return "printf '%s\\n' " + " ".join(shlex.quote(line) for line in lines) if lines else ":"

    shim.write_text(
        "#!/bin/sh\n# the simulated nvidia-smi's output, replayed without starting Python\n"
        'case " $* " in\n'
        f'  *" --query-gpu="*) {replay("gpus.csv")} ;;\n'
        f'  *" --query-compute-apps="*) {replay("apps.csv")} ;;\n'
        f'  *) exec {shlex.quote(str(sim))} "$@" ;;\n'
        "esac\n",
        encoding="utf-8",
    )
    shim.chmod(0o755)
    return shim


# ---------------------------------------------------------------- sshd


def unused_ports(count: int) -> list[int]:
    """`count` distinct free loopback ports (held open together while picking)."""
    socks: list[socket.socket] = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind((LOOPBACK, 0))
            socks.append(sock)
        return [sock.getsockname()[1] for sock in socks]
    finally:
        for sock in socks:
            sock.close()


@dataclass
class SshdFleet:
    """sshd processes on loopback, 16 ports each, accepting one client key for one user."""

    root: Path
    user: str
    path: str  # the workers' PATH (sshd SetEnv)
    authorized_key: str
    ports: list[int] = field(default_factory=list)
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)

    @property
    def host_key(self) -> Path:
        return self.root / "ssh_host_ed25519_key"

    def known_hosts_lines(self) -> str:
        public = " ".join(Path(f"{self.host_key}.pub").read_text().split()[:2])
        return "".join(f"[{LOOPBACK}]:{port} {public}\n" for port in self.ports)

    def start(self, count: int) -> None:
        """Listen on `count` ports; returns once every sshd says it listens."""
        self.root.mkdir(mode=0o755, parents=True, exist_ok=True)
        if not self.host_key.exists():
            subprocess.run(
                ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(self.host_key)],
                check=True,
            )
        authorized = self.root / "authorized_keys"
        authorized.write_text(self.authorized_key.rstrip("\n") + "\n")
        authorized.chmod(0o644)
        with contextlib.suppress(PermissionError):
            Path("/run/sshd").mkdir(parents=True, exist_ok=True)
        self.ports = unused_ports(count)
        logs: list[Path] = []
        for group, start in enumerate(range(0, count, PORTS_PER_SSHD)):
            ports = self.ports[start : start + PORTS_PER_SSHD]
            config = self.root / f"sshd_config.{group}"
            log = self.root / f"sshd.{group}.log"
            config.write_text(self._config(ports, group, authorized))
            self.procs.append(
                subprocess.Popen(
                    [str(SSHD), "-D", "-f", str(config), "-E", str(log)],
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.STDOUT,
                )
            )
            logs.append(log)
        deadline = time.monotonic() + READY_TIMEOUT_S
        for group, (proc, log) in enumerate(zip(self.procs, logs, strict=True)):
            want = len(self.ports[group * PORTS_PER_SSHD : (group + 1) * PORTS_PER_SSHD])
            while _listening(log) < want:
                if proc.poll() is not None or time.monotonic() > deadline:
                    text = log.read_text(errors="replace") if log.exists() else ""
                    self.stop()
                    raise SystemExit(f"sshd did not start:\n{text}")
                time.sleep(0.02)

    def _config(self, ports: Sequence[int], group: int, authorized: Path) -> str:
        lines = [f"Port {port}" for port in ports]
        lines += [
            f"ListenAddress {LOOPBACK}",
            f"HostKey {self.host_key}",
            f"PidFile {self.root / f'sshd.{group}.pid'}",
            f"AuthorizedKeysFile {authorized}",
            f"AllowUsers {self.user}",
            "UsePAM no",
            "StrictModes no",
            "PasswordAuthentication no",
            "KbdInteractiveAuthentication no",
            "PubkeyAuthentication yes",
            "PermitRootLogin prohibit-password",
            "MaxStartups 400",
            "MaxSessions 32",
            "UseDNS no",
            "PrintMotd no",
            "PrintLastLog no",
            f"SetEnv PATH={self.path}",
            "LogLevel INFO",
            "",
        ]
        return "\n".join(lines)

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self.procs = []


def _listening(log: Path) -> int:
    try:
        return log.read_text(errors="replace").count("Server listening on")
    except FileNotFoundError:
        return 0


# ---------------------------------------------------------------- the bench's world


@dataclass
class World:
    """Temp workspace, client HOME and key, sshd servers, and the workers that use them."""

    tmp: Path
    account: Account
    nvidia_smi: str
    client_key: Path = field(init=False)
    client_home: Path = field(init=False)
    bin_dir: Path = field(init=False)
    sshd: SshdFleet = field(init=False)

    def __post_init__(self) -> None:
        self.client_home = self.tmp / "client-home"
        self.client_home.mkdir(mode=0o700)
        self.client_key = self.tmp / "client" / "id_ed25519"
        self.client_key.parent.mkdir(mode=0o700)
        subprocess.run(
            ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(self.client_key)],
            check=True,
        )
        self.bin_dir = self.tmp / "bin"
        fake_ws = self.tmp / "fake-nvidia-workspace"
        fake_ws.mkdir(mode=0o755)
        python = python_for(self.account)
        write_nvidia_smi(self.bin_dir, fake_ws, python, self.nvidia_smi)
        self.sshd = SshdFleet(
            self.tmp / "sshd",
            self.account.name,
            f"{self.bin_dir}:/usr/local/bin:/usr/bin:/bin",
            Path(f"{self.client_key}.pub").read_text(),
        )

    def env(self) -> dict[str, str]:
        """The client's environment: private HOME, no ssh-agent."""
        env = {k: v for k, v in os.environ.items() if k != "SSH_AUTH_SOCK"}
        env["HOME"] = str(self.client_home)
        return env

    def make_workspace(self, count: int) -> tuple[WorkspaceStore, list[Worker]]:
        """A fresh workspace with `count` ssh workers, one per sshd port, host keys trusted."""
        self.sshd.stop()
        self.sshd.start(count)
        ws_root = self.tmp / f"ws{count}"
        ws, _ = init_workspace(ws_root)
        store = WorkspaceStore(ws)
        remove_worker(store, "local")  # only the N ssh workers are probed
        for index, port in enumerate(self.sshd.ports):
            remote_ws = self.tmp / "workers" / f"w{count}-{index:03d}"
            remote_ws.mkdir(mode=0o755, parents=True)
            add_worker(
                store,
                Worker(
                    worker_id=f"w{index:03d}",
                    kind="ssh",
                    ssh=SSHSettings(
                        host=LOOPBACK, port=port, user=self.account.name, key=str(self.client_key)
                    ),
                    workspace=str(remote_ws),
                    resources=Resources(gpu=GPUS_PER_WORKER),
                ),
            )
        known_hosts = runyard_known_hosts_path(ws.root)
        known_hosts.parent.mkdir(parents=True, exist_ok=True)
        known_hosts.write_text(self.sshd.known_hosts_lines())
        return store, [w for w in store.workers() if w.enabled]

    def ssh_argv(self, store: WorkspaceStore, worker: Worker) -> list[str]:
        """OpenSSH running the probe runyard would send `worker` (same exec request)."""
        assert worker.ssh is not None and worker.ssh.port is not None
        script = build_probe_script(worker.workspace, worker.health.heartbeat_command)
        known_hosts = runyard_known_hosts_path(store.workspace.root)
        return [
            "ssh",
            "-F",
            "/dev/null",
            "-p",
            str(worker.ssh.port),
            "-i",
            str(self.client_key),
            "-o",
            "IdentitiesOnly=yes",
            "-o",
            "BatchMode=yes",
            "-o",
            f"UserKnownHostsFile={known_hosts}",
            "-o",
            "GlobalKnownHostsFile=/dev/null",
            "-o",
            "StrictHostKeyChecking=yes",
            "-o",
            "ControlPath=none",
            "-o",
            "LogLevel=ERROR",
            f"{self.account.name}@{LOOPBACK}",
            remote_command(script),
        ]


# ---------------------------------------------------------------- measurements


SATURATED_HINT = (
    "the workers share this machine's CPUs; if nvidia-smi timed out, the Python fake's "
    "start-up saturated them: try --nvidia-smi cached or smaller --sizes"
)


def check_probe(output: bytes, where: str) -> None:
    """The probe must have seen every simulated GPU and the workspace's disk."""
    snapshot = parse_probe_output(output, time.time())
    if len(snapshot.gpus) != GPUS_PER_WORKER or snapshot.disk is None:
        raise SystemExit(
            f"{where}: nvidia-smi {snapshot.nvidia_smi} ({snapshot.nvidia_smi_error}); "
            f"{SATURATED_HINT}:\n{output.decode(errors='replace')}"
        )


def with_kex(argv: list[str], kex: str) -> list[str]:
    """`argv` (an `ssh_argv`) with its key exchange pinned to `kex`."""
    return [argv[0], "-o", f"KexAlgorithms={kex}", *argv[1:]]


def ssh_loop(argvs: Sequence[list[str]], env: dict[str, str], parallel: int) -> float:
    """Wall time of running every ssh command, `parallel` at a time; checks each output."""

    def one(argv: list[str]) -> bytes:
        proc = subprocess.run(argv, capture_output=True, env=env, check=False)
        if proc.returncode != 0:
            raise SystemExit(f"{' '.join(argv[:-1])} failed: {proc.stderr.decode()}")
        return proc.stdout

    start = time.perf_counter()
    if parallel <= 1:
        outputs = [one(argv) for argv in argvs]
    else:
        with ThreadPoolExecutor(max_workers=parallel) as pool:
            outputs = list(pool.map(one, argvs))
    elapsed = time.perf_counter() - start
    for output in outputs:
        check_probe(output, "ssh loop")
    return elapsed


def box_cpu_seconds() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine so far, from /proc/stat (steal and
    idle/iowait count as not busy); (0, 0) where there is no /proc/stat."""
    try:
        fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    except OSError:
        return 0.0, 0.0
    ticks = [int(value) for value in fields]
    idle = ticks[3] + ticks[4] + (ticks[7] if len(ticks) > 7 else 0)
    per_second = os.sysconf("SC_CLK_TCK")
    return (sum(ticks[:8]) - idle) / per_second, sum(ticks[:8]) / per_second


@dataclass(frozen=True)
class ColdResult:
    """The best cold `worker status` run: wall time, its own CPU, the machine's busy CPU."""

    wall_s: float
    own_cpu_s: float
    box_busy_s: float
    box_total_s: float


def cold_status(store: WorkspaceStore, env: dict[str, str], count: int, repeat: int) -> ColdResult:
    """Best run of `runyard worker status --json`, with that run's own CPU time (the client's
    share) and the whole machine's (on loopback sshd and the probes use the same CPUs);
    every worker must be reachable."""
    env = {**env, "RUNYARD_WORKSPACE": str(store.workspace.root)}
    best = ColdResult(float("inf"), 0.0, 0.0, 0.0)
    for _ in range(repeat):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        box_before = box_cpu_seconds()
        start = time.perf_counter()
        proc = subprocess.run(
            runyard_argv("worker", "status", "--json"), capture_output=True, env=env, check=False
        )
        wall = time.perf_counter() - start
        box_after = box_cpu_seconds()
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        if wall < best.wall_s:
            best = ColdResult(
                wall,
                (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime),
                box_after[0] - box_before[0],
                box_after[1] - box_before[1],
            )
        if proc.returncode != 0:
            raise SystemExit(f"worker status failed: {proc.stderr.decode()}")
        records = json.loads(proc.stdout)
        good = [r for r in records if r["reachable"] and len(r["gpus"]) == GPUS_PER_WORKER]
        if len(good) != count or len(records) != count:
            bad = [r for r in records if r not in good][:2]
            raise SystemExit(
                f"worker status: {len(good)}/{count} complete; {SATURATED_HINT}: {bad}"
            )
    return best


# The least any SSH client must do for a cold status: a fresh Python that imports asyncssh,
# connects to every worker (asyncssh's default algorithms) and runs the probe once on each,
# as the ssh loops send it. Argument: a JSON file of [port, exec command] pairs.
BARE_CLIENT = """
import asyncio, json, sys, asyncssh
user, key, known_hosts, jobs = sys.argv[1:]
async def one(port, command):
    async with asyncssh.connect("127.0.0.1", port, username=user, client_keys=[key],
                                known_hosts=known_hosts, agent_path=None, config=[]) as conn:
        result = await conn.run(command)
        return result.exit_status == 0 and b"@@runyard:end" in result.stdout.encode()
async def main():
    with open(jobs) as f:
        ok = await asyncio.gather(*(one(port, command) for port, command in json.load(f)))
    sys.exit(0 if all(ok) else 1)
asyncio.run(main())
"""


def bare_client_floor(
    world: World, store: WorkspaceStore, workers: Sequence[Worker], env: dict[str, str], repeat: int
) -> float:
    """Best wall time of `BARE_CLIENT` over all N workers: a floor under any cold status
    here, since on loopback the N sshd handshakes and probes share this machine's CPUs."""
    jobs = world.tmp / "bare-client-jobs.json"
    commands = []
    for worker in workers:
        assert worker.ssh is not None
        script = build_probe_script(worker.workspace, worker.health.heartbeat_command)
        commands.append([worker.ssh.port, remote_command(script)])
    jobs.write_text(json.dumps(commands))
    known_hosts = str(runyard_known_hosts_path(store.workspace.root))
    argv = [sys.executable, "-c", BARE_CLIENT, world.account.name, str(world.client_key)]
    argv += [known_hosts, str(jobs)]
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        proc = subprocess.run(argv, capture_output=True, env=env, check=False)
        best = min(best, time.perf_counter() - start)
        if proc.returncode != 0:
            raise SystemExit(f"bare asyncssh client failed: {proc.stderr.decode()[-2000:]}")
    return best


@dataclass
class WarmResult:
    """Timings of one in-process session: connect, refreshes, and `true` on every worker."""

    connect_s: float
    refresh_s: list[float]
    cpu_s: float
    asking_s: list[float]  # refreshes whose probes all ask nvidia-smi for the processes
    transport_s: list[float]
    transport_cpu_s: float
    connections: int
    profile: str = ""


async def warm_refresh(
    store: WorkspaceStore, workers: Sequence[Worker], refreshes: int, profile: bool
) -> WarmResult:
    """Connect all once, then time `refreshes` `fleet_status` calls on the open connections."""
    fleet = Fleet(store.workspace.root, store.settings())
    try:
        start = time.perf_counter()
        failed = {k: v for k, v in (await fleet.ssh_pool().connect_all(workers)).items() if v}
        connect_s = time.perf_counter() - start
        if failed:
            raise SystemExit(f"connect failed: {list(failed.items())[:3]}")
        for _ in range(2):  # warm-up: shells started, the cold runs' load settled a little
            _check_records(await fleet_status(store, fleet, workers), len(workers))
        profiler = cProfile.Profile() if profile else None
        times: list[float] = []
        asking: list[float] = []
        cpu_s = 0.0
        # Interleaved, so both figures see the same machine: a refresh as the console does
        # it, then one whose probes must all ask nvidia-smi for the processes.
        for _ in range(refreshes):
            cpu_start = time.process_time()
            if profiler is not None:
                profiler.enable()
            start = time.perf_counter()
            records = await fleet_status(store, fleet, workers)
            times.append(time.perf_counter() - start)
            if profiler is not None:
                profiler.disable()
            cpu_s += time.process_time() - cpu_start
            _check_records(records, len(workers))
            memo = fleet.gpu_processes
            fleet.gpu_processes = GpuProcessMemo()  # nothing to reuse
            start = time.perf_counter()
            records = await fleet_status(store, fleet, workers)
            asking.append(time.perf_counter() - start)
            fleet.gpu_processes = memo
            _check_records(records, len(workers))
        transport, transport_cpu = await exec_true(fleet, workers, refreshes)
        sessions = getattr(fleet.ssh_pool(), "_sessions", {})
        connections = sum(getattr(s, "connections_opened", 0) for s in sessions.values())
        text = ""
        if profiler is not None:
            buffer = io.StringIO()
            pstats.Stats(profiler, stream=buffer).sort_stats("tottime").print_stats(25)
            text = buffer.getvalue()
        return WarmResult(
            connect_s, times, cpu_s, asking, transport, transport_cpu, connections, text
        )
    finally:
        await fleet.close()


async def exec_true(
    fleet: Fleet, workers: Sequence[Worker], refreshes: int
) -> tuple[list[float], float]:
    """Transport only: `true` on every worker at once through the pool, `refreshes` times."""
    pool = fleet.ssh_pool()
    times: list[float] = []
    cpu_start = time.process_time()
    for _ in range(refreshes):
        start = time.perf_counter()
        results = await asyncio.gather(*(pool.run(w, "true") for w in workers))
        times.append(time.perf_counter() - start)
        if any(r.exit_status != 0 for r in results):
            raise SystemExit(f"`true` failed: {results[:2]}")
    return times, time.process_time() - cpu_start


def _check_records(records: Sequence[dict[str, Any]], count: int) -> None:
    good = [r for r in records if r["reachable"] and len(r["gpus"]) == GPUS_PER_WORKER]
    if len(good) != count or len(records) != count:
        bad = [r for r in records if r not in good][:2]
        raise SystemExit(f"warm refresh: {len(good)}/{count} complete; {SATURATED_HINT}: {bad}")


def local_floor(world: World, workers: Sequence[Worker]) -> float:
    """The N probes run here without SSH, 16 at a time: the workers' own work.

    On loopback the workers' work lands on this machine's CPUs too: a refresh cannot beat
    this by much.
    """
    env = {"PATH": world.sshd.path, "HOME": str(world.account.home)}

    def one(worker: Worker) -> bytes:
        script = build_probe_script(worker.workspace, worker.health.heartbeat_command)
        argv = ["bash", "--noprofile", "--norc", "-c", script]
        return subprocess.run(argv, capture_output=True, env=env, check=False).stdout

    start = time.perf_counter()
    with ThreadPoolExecutor(max_workers=PARALLEL) as pool:
        outputs = list(pool.map(one, workers))
    elapsed = time.perf_counter() - start
    for output in outputs:
        check_probe(output, "local probe")
    return elapsed


# ---------------------------------------------------------------- report


def verdict(ok: bool) -> str:
    return "PASS" if ok else "MISS"


def row(label: str, value: str, ratio: str = "", goal: str = "") -> None:
    print(f"  {label:<50} {value:>10} {ratio:>10}  {goal}".rstrip())


def bench_size(world: World, count: int, args: argparse.Namespace) -> dict[str, bool]:
    """Measure one fleet size and print its table; returns each goal's outcome."""
    store, workers = world.make_workspace(count)
    env = world.env()
    load_before = os.getloadavg()[0]
    groups = len(world.sshd.procs)
    print(
        f"\nN = {count} workers ({groups} sshd process{'es' * (groups > 1)}, "
        f"{GPUS_PER_WORKER} simulated GPUs each, nvidia-smi: {args.nvidia_smi})"
    )
    cold_run = cold_status(store, env, count, args.cold_repeat)
    cold = cold_run.wall_s
    bare = bare_client_floor(world, store, workers, env, args.cold_repeat)
    warm = asyncio.run(warm_refresh(store, workers, args.refreshes, args.profile))
    warm_s = median(warm.refresh_s)
    argvs = [world.ssh_argv(store, w) for w in workers]
    sequential = ssh_loop(argvs, env, 1)
    same_kex = ssh_loop([with_kex(argv, RUNYARD_KEX) for argv in argvs], env, 1)
    parallel = ssh_loop(argvs, env, PARALLEL)
    floor = local_floor(world, workers)
    cpu_ms = warm.cpu_s / (len(warm.refresh_s) * count) * 1000
    seq_ratio = sequential / warm_s
    par_ratio = parallel / warm_s
    outcomes = {
        "sequential": seq_ratio >= GOAL_SEQUENTIAL_RATIO,
        "parallel": par_ratio >= GOAL_PARALLEL_RATIO,
        "cpu": cpu_ms <= GOAL_CPU_MS_PER_WORKER,
        "cold": cold < GOAL_COLD_S,
    }
    row("measurement", "time", "x warm", "goal")
    row(
        f"cold `runyard worker status --json` (best of {args.cold_repeat})",
        f"{cold * 1000:.0f} ms",
        "",
        f"< {GOAL_COLD_S:g} s  {verdict(outcomes['cold'])}",
    )
    row("  ... of which the runyard process's own CPU", f"{cold_run.own_cpu_s * 1000:.0f} ms")
    if cold_run.box_total_s:
        row(
            "  ... the machine's busy CPU meanwhile (all processes)",
            f"{cold_run.box_busy_s * 1000:.0f} ms",
            "",
            f"of {cold_run.box_total_s * 1000:.0f} ms its CPUs had",
        )
    row(
        "  ... floor: bare asyncssh, the probe on all N",
        f"{bare * 1000:.0f} ms",
        "",
        f"(cold is {cold / bare:.2f}x this)",
    )
    row("connect all N, in process (once)", f"{warm.connect_s * 1000:.0f} ms")
    row(
        f"warm refresh, in process (median of {len(warm.refresh_s)})",
        f"{warm_s * 1000:.0f} ms",
        "1.00x",
    )
    asking_s = median(warm.asking_s)
    row(
        "  ... with every probe asking for the GPU processes",
        f"{asking_s * 1000:.0f} ms",
        f"{asking_s / warm_s:.2f}x",
        f"(sequential is {sequential / asking_s:.1f}x this)",
    )
    row(
        "sequential `ssh host probe` loop",
        f"{sequential * 1000:.0f} ms",
        f"{seq_ratio:.1f}x",
        f">= {GOAL_SEQUENTIAL_RATIO:g}x  {verdict(outcomes['sequential'])}",
    )
    row(
        f"  ... the same loop with {RUNYARD_KEX}",
        f"{same_kex * 1000:.0f} ms",
        f"{same_kex / warm_s:.1f}x",
        "(runyard's key exchange here; ssh's default costs more)",
    )
    row(
        f"{PARALLEL}-way parallel ssh loop",
        f"{parallel * 1000:.0f} ms",
        f"{par_ratio:.1f}x",
        f">= {GOAL_PARALLEL_RATIO:g}x  {verdict(outcomes['parallel'])}",
    )
    row(
        "client CPU per worker per refresh (warm)",
        f"{cpu_ms:.2f} ms",
        "",
        f"<= {GOAL_CPU_MS_PER_WORKER:g} ms  {verdict(outcomes['cpu'])}",
    )
    transport_s = median(warm.transport_s)
    transport_cpu = warm.transport_cpu_s / (len(warm.transport_s) * count) * 1000
    row(
        "transport only: `true` on all N through the pool",
        f"{transport_s * 1000:.0f} ms",
        f"{transport_s / warm_s:.2f}x",
        f"(sequential is {sequential / transport_s:.0f}x this; "
        f"client CPU {transport_cpu:.2f} ms/worker)",
    )
    row(
        f"floor: N probes run locally, {PARALLEL} at a time, no SSH",
        f"{floor * 1000:.0f} ms",
        f"{floor / warm_s:.2f}x",
    )
    print(
        f"  (warm: {warm.connections} connections opened for {count} workers; "
        f"refreshes {', '.join(f'{t * 1000:.0f}' for t in warm.refresh_s)} ms; "
        f"load average {load_before:.1f} before, {os.getloadavg()[0]:.1f} after)"
    )
    if warm.profile:
        print(warm.profile)
    return outcomes


def describe_machine(account: Account) -> str:
    ssh_version = _run(["ssh", "-V"]).stderr.strip()
    return (
        f"machine: {os.cpu_count()} CPUs ({platform.machine()}, {platform.system()} "
        f"{platform.release()}), python {platform.python_version()}, asyncssh "
        f"{asyncssh.__version__}, {ssh_version}; workers log in as {account.name}"
    )


@contextlib.contextmanager
def client_environment(world: World) -> Iterator[None]:
    """This process's HOME and agent as the client sees them, restored afterwards."""
    saved = dict(os.environ)
    os.environ.clear()
    os.environ.update(world.env())
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="10,50,100", help="worker counts (default 10,50,100)")
    parser.add_argument("--quick", action="store_true", help="sizes 10,50 and fewer repeats")
    parser.add_argument(
        "--nvidia-smi",
        choices=("sim", "cached"),
        default="cached",
        help="cached (default): the Python fake's output replayed by /bin/sh; sim: the fake "
        "itself (~95 ms of CPU a call, all on this machine: the probes then dominate)",
    )
    parser.add_argument("--profile", action="store_true", help="cProfile the warm refreshes")
    args = parser.parse_args(argv)
    sizes = "10,50" if args.quick and args.sizes == "10,50,100" else args.sizes
    args.counts = [int(part) for part in sizes.split(",") if part.strip()]
    args.cold_repeat = 2 if args.quick else 3
    args.refreshes = 3 if args.quick else 7
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if not SSHD.exists() or shutil.which("ssh") is None:
        print(f"skipped: needs {SSHD} and ssh (apt-get install openssh-server openssh-client)")
        return 0
    with tempfile.TemporaryDirectory(prefix="runyard-fleet-bench-") as tmp_name:
        tmp = Path(tmp_name)
        tmp.chmod(0o755)  # the workers' user reads its home, PATH and workspaces in here
        account = prepare_account(tmp / "worker-home")
        world = World(tmp, account, args.nvidia_smi)
        print(describe_machine(account))
        for note in account.notes:
            print(note)
        results: dict[int, dict[str, bool]] = {}
        try:
            with client_environment(world):
                for count in args.counts:
                    results[count] = bench_size(world, count, args)
        finally:
            world.sshd.stop()
    print()
    for count, outcomes in results.items():
        summary = ", ".join(f"{name} {verdict(ok)}" for name, ok in outcomes.items())
        print(f"N={count}: {summary}")
    print("goals are the issue's for N=100; smaller N is shown for the trend")
    print(
        f"this machine has {os.cpu_count()} CPUs shared by client, sshd and the probes; a load "
        "average above that means other work skewed the figures"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
