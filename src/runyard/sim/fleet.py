"""The simulated demo fleet, from the side of whoever starts it (SIMULATED, always).

`SimulatedFleet(root, workers=N).start()` runs `python -m runyard.sim.fleet_server` in a
process of its own, which serves N loopback SSH servers (one event loop), each running real
commands in its own sandbox under `<root>/.runyard/sim/<worker>/home` with a simulated
nvidia-smi on PATH and a boot id of its own. Before it reports ready, that process trusts
every host key in `<root>/.runyard/known_hosts` and registers every worker in
`<root>/workers.yaml`, so any runyard process (the console, the CLI, a test) reaches the
fleet like a real one. It then writes `<root>/.runyard/sim/fleet.json` (pid, ports, host
keys, control endpoint) and prints `ready`.

The fleet process stops on SIGTERM, or when its parent dies (the end of its stdin); it
powers every box off on the way out, so no run or server outlives it. `FleetControl` (from
`fleet.json`, in any process) stages a reboot of a box, stops or starts its SSH server, or
makes its GPUs fail.
"""

from __future__ import annotations

import contextlib
import hmac
import json
import select
import signal
import socket
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from types import TracebackType
from typing import IO, Any

from runyard.core.errors import InputError, OperationalError
from runyard.sim.fake_nvidia_smi import process_alive

DEFAULT_WORKERS = 4
MAX_WORKERS = 512
READY_LINE = "ready"
ERROR_PREFIX = "error: "  # the line the fleet process prints instead when it cannot start


# ---------------------------------------------------------------- where things live


@dataclass(frozen=True)
class SimLayout:
    """The simulated fleet's files inside a workspace (`<root>/.runyard/sim/`)."""

    root: Path

    @property
    def dir(self) -> Path:
        return self.root / ".runyard" / "sim"

    @property
    def info_path(self) -> Path:
        return self.dir / "fleet.json"

    @property
    def log_path(self) -> Path:
        return self.dir / "fleet.log"

    @property
    def client_key(self) -> Path:
        """The demo's one client key (authorized on every box; workers.yaml points at it)."""
        return self.dir / "client_key"

    def box(self, name: str) -> Path:
        return self.dir / name

    def home(self, name: str) -> Path:
        return self.box(name) / "home"

    def bin_dir(self, name: str) -> Path:
        return self.box(name) / "bin"

    def boot_id(self, name: str) -> Path:
        return self.box(name) / "boot_id"

    def host_key(self, name: str) -> Path:
        return self.box(name) / "host_key"


# ---------------------------------------------------------------- fleet.json


@dataclass(frozen=True)
class ServedBox:
    """One box as the fleet process serves it right now."""

    name: str
    port: int
    host_key: str  # `ssh-ed25519 AAAA...`
    gpus: int
    sshd: bool  # whether its SSH server is listening
    boot_id: str
    home: str

    @property
    def known_hosts_line(self) -> str:
        return f"[127.0.0.1]:{self.port} {self.host_key}\n"


@dataclass(frozen=True)
class FleetInfo:
    """What `fleet.json` says: who serves the fleet and how to reach its boxes."""

    pid: int
    control_port: int
    token: str
    workers: tuple[ServedBox, ...]
    simulated: bool = True

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> FleetInfo:
        return cls(
            pid=int(data["pid"]),
            control_port=int(data["control_port"]),
            token=str(data["token"]),
            workers=tuple(ServedBox(**box) for box in data["workers"]),
        )

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "workers": [asdict(box) for box in self.workers]}

    @classmethod
    def read(cls, root: Path) -> FleetInfo | None:
        """The fleet serving `root` as its file says (None without one); maybe stale."""
        try:
            data = json.loads(SimLayout(root).info_path.read_text(encoding="utf-8"))
            return cls.from_json(data)
        except FileNotFoundError:
            return None
        except (ValueError, KeyError, TypeError) as exc:
            raise OperationalError(f"{SimLayout(root).info_path}: unreadable ({exc})") from None

    def box(self, name: str) -> ServedBox:
        for box in self.workers:
            if box.name == name:
                return box
        raise InputError(f"no simulated worker named {name!r} in this fleet")


def running_fleet(root: Path) -> FleetInfo | None:
    """The fleet process serving the workspace at `root`, if one is alive."""
    info = FleetInfo.read(root)
    return info if info is not None and process_alive(info.pid) else None


# ---------------------------------------------------------------- the control endpoint


class FleetControl:
    """Simulated controls of a running fleet, from any process (one request per call)."""

    def __init__(self, info: FleetInfo, timeout: float = 30.0) -> None:
        self.info = info
        self.timeout = timeout

    @classmethod
    def for_workspace(cls, root: Path, timeout: float = 30.0) -> FleetControl:
        info = running_fleet(root)
        if info is None:
            raise OperationalError(f"no simulated fleet is serving {root} (runyard demo)")
        return cls(info, timeout)

    def request(self, op: str, **fields: Any) -> dict[str, Any]:
        """Send one request; the fleet's answer, or `OperationalError` with its reason."""
        message = json.dumps({"token": self.info.token, "op": op, **fields}) + "\n"
        try:
            with socket.create_connection(
                ("127.0.0.1", self.info.control_port), timeout=self.timeout
            ) as sock:
                sock.sendall(message.encode("utf-8"))
                with sock.makefile("r", encoding="utf-8") as reader:
                    line = reader.readline()
        except OSError as exc:
            raise OperationalError(f"simulated fleet control: {exc}") from None
        if not line:
            raise OperationalError("simulated fleet control: no answer")
        answer: dict[str, Any] = json.loads(line)
        if not answer.get("ok"):
            error = str(answer.get("error", "request refused"))
            raise (InputError if answer.get("input_error") else OperationalError)(error)
        return answer

    def status(self) -> list[ServedBox]:
        return [ServedBox(**box) for box in self.request("status")["workers"]]

    def _box(self, op: str, name: str, **fields: Any) -> ServedBox:
        return ServedBox(**self.request(op, worker=name, **fields)["worker"])

    def reboot(self, name: str) -> ServedBox:
        """Power-cycle a box: its runs die, its boot id changes, its SSH server comes back."""
        return self._box("reboot", name)

    def stop_worker(self, name: str) -> ServedBox:
        """Stop a box's SSH server (connections drop; its runs go on): unreachable."""
        return self._box("stop", name)

    def start_worker(self, name: str) -> ServedBox:
        """Start a box's SSH server again, on the same port when it is still free."""
        return self._box("start", name)

    def set_gpu_fault(self, name: str, fault: str | None) -> ServedBox:
        """Make a box's simulated nvidia-smi fail (`na`, `driver`) or recover (None)."""
        return self._box("gpu_fault", name, fault=fault)


def check_worker_count(count: int) -> int:
    if not 1 <= count <= MAX_WORKERS:
        raise InputError(f"--workers must be between 1 and {MAX_WORKERS}, not {count}")
    return count


def check_token(expected: str, given: object) -> bool:
    return isinstance(given, str) and hmac.compare_digest(expected, given)


# ---------------------------------------------------------------- the fleet process


class SimulatedFleet:
    """Starts, controls and stops the simulated fleet process for one workspace."""

    def __init__(
        self, root: Path, workers: int = DEFAULT_WORKERS, *, python: str = sys.executable
    ) -> None:
        check_worker_count(workers)
        self.root = Path(root).resolve()
        self.layout = SimLayout(self.root)
        self.workers = workers
        self.python = python
        self._proc: subprocess.Popen[str] | None = None
        self._info: FleetInfo | None = None

    def __enter__(self) -> SimulatedFleet:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def info(self) -> FleetInfo:
        if self._info is None:
            raise OperationalError("the simulated fleet is not started")
        return self._info

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    @property
    def control(self) -> FleetControl:
        return FleetControl(self.info)

    def alive(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self, timeout: float = 60.0) -> FleetInfo:
        """Start the fleet process and wait until it serves and the workspace is wired."""
        if self._proc is not None:
            raise OperationalError("the simulated fleet is already started")
        other = running_fleet(self.root)
        if other is not None:
            raise OperationalError(
                f"a simulated fleet already serves {self.root} (pid {other.pid}); stop it first"
            )
        self.layout.dir.mkdir(parents=True, exist_ok=True)
        with self.layout.log_path.open("a", encoding="utf-8") as log:
            self._proc = subprocess.Popen(
                [
                    self.python,
                    "-m",
                    "runyard.sim.fleet_server",
                    "--root",
                    str(self.root),
                    "--workers",
                    str(self.workers),
                    "--watch-stdin",
                ],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=log,
                text=True,
                start_new_session=True,  # the terminal's Ctrl-C is the parent's to handle
            )
        try:
            self._wait_ready(timeout)
        except BaseException:
            self.stop()
            raise
        info = FleetInfo.read(self.root)
        assert info is not None
        self._info = info
        return info

    def _wait_ready(self, timeout: float) -> None:
        proc = self._proc
        assert proc is not None and proc.stdout is not None
        line = _readline_before(proc.stdout, time.monotonic() + timeout)
        if line is not None and line.startswith(ERROR_PREFIX):  # a bad workspace file, say
            error = InputError if self.wait(5) == InputError.exit_code else OperationalError
            raise error(line.removeprefix(ERROR_PREFIX).strip())
        if line is None or not line.startswith(READY_LINE):
            code = self.wait(5) if line is not None else None  # at EOF it is exiting
            why = f"exited {code}" if code is not None else f"not ready after {timeout:.0f}s"
            raise OperationalError(
                f"the simulated fleet {why}; its log {self.layout.log_path} ends:\n"
                + self.log_tail()
            )

    def log_tail(self, lines: int = 15) -> str:
        try:
            text = self.layout.log_path.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    def wait(self, timeout: float | None = None) -> int | None:
        """The fleet process's exit status once it ends (None while it runs after `timeout`)."""
        if self._proc is None:
            return None
        with contextlib.suppress(subprocess.TimeoutExpired):
            return self._proc.wait(timeout)
        return None

    def stop(self, timeout: float = 20.0) -> None:
        """Power every box off and end the fleet process (SIGKILL if it does not end)."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        for stream in (proc.stdin, proc.stdout):
            if stream is not None:
                with contextlib.suppress(OSError):
                    stream.close()

    # The controls, for the one who started the fleet.

    def reboot(self, name: str) -> ServedBox:
        return self.control.reboot(name)

    def stop_worker(self, name: str) -> ServedBox:
        return self.control.stop_worker(name)

    def start_worker(self, name: str) -> ServedBox:
        return self.control.start_worker(name)

    def set_gpu_fault(self, name: str, fault: str | None) -> ServedBox:
        return self.control.set_gpu_fault(name, fault)

    def status(self) -> list[ServedBox]:
        return self.control.status()


def _readline_before(stream: IO[str], deadline: float) -> str | None:
    """One line from a pipe ('' at its end), or None when the deadline passes first."""
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return None
        readable, _, _ = select.select([stream], [], [], remaining)
        if readable:
            return stream.readline()
