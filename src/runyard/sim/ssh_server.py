"""A loopback SSH server that runs real commands in a sandbox: the simulated fleet's boxes.

Each exec request runs `bash -c <command>` as a subprocess in the server's sandbox (its own
HOME/cwd and PATH), with stdin, stdout and stderr pumped by hand (not `process.redirect`,
which lost stderr and exit codes in a trial) and the exit status, or the killing signal,
sent back. It behaves like OpenSSH's sshd where runyard relies on it: closing a channel
only closes the command's stdin, and a `signal` request signals the command's process
group. Shell requests are refused; there is no sftp. It only ever listens on 127.0.0.1.

`runyard demo` serves a fleet of these (runyard.sim.fleet); the integration tests use them
directly (tests/fakes/ssh_server.py). Everything served here is SIMULATED.
"""

from __future__ import annotations

import asyncio
import contextlib
import getpass
import hashlib
import os
import signal
import socket
import tempfile
from collections.abc import Collection, Mapping, Sequence
from pathlib import Path
from types import TracebackType

import asyncssh

_CHUNK = 64 * 1024
LOOPBACK = "127.0.0.1"
PROC = Path("/proc")


def unused_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on (it was free a moment ago)."""
    with socket.socket() as sock:
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])


def generate_key(algorithm: str = "ssh-ed25519") -> asyncssh.SSHKey:
    return asyncssh.generate_private_key(algorithm)


def write_private_key(key: asyncssh.SSHKey, path: Path) -> Path:
    """Write an OpenSSH private key file (0600) and its .pub next to it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    key.write_private_key(str(path))
    path.chmod(0o600)
    key.write_public_key(str(path) + ".pub")
    return path


class SimSSHServer:
    """An asyncssh server on 127.0.0.1 running real commands in the sandbox `home`.

    It listens on `port` (0: any free port; once listening, restarts reuse the port it got).
    Public-key auth against `authorized_keys`, any user name accepted. Commands get
    `env` over a login-like environment, with `env_path_prefix` first on PATH.
    `connections_made` counts TCP connections accepted, and `connection_event` is set on
    each, so callers wait on it instead of sleeping.
    """

    def __init__(
        self,
        *,
        home: Path,
        env: Mapping[str, str] | None = None,
        env_path_prefix: str | Path | None = None,
        authorized_keys: Sequence[asyncssh.SSHKey] = (),
        host_key: asyncssh.SSHKey | None = None,
        allow_forwarding: bool = False,
        port: int = 0,
    ) -> None:
        self.home = Path(home)
        # Each box has its own tmux server, as a real one would: never the operator's (a
        # demo run in tmux would list its runs' sessions). Short, since tmux caps socket paths.
        box = hashlib.sha1(str(self.home.resolve()).encode()).hexdigest()[:12]
        self.tmux_dir = Path(tempfile.gettempdir()) / f"runyard-sim-tmux-{box}"
        self.host = LOOPBACK
        self.port = port
        self.host_key = host_key or generate_key()
        self._authorized = list(authorized_keys)
        self._env = dict(env or {})
        self._path_prefix = str(env_path_prefix) if env_path_prefix else None
        self._allow_forwarding = allow_forwarding
        self._acceptor: asyncssh.SSHAcceptor | None = None
        self._connections: set[asyncssh.SSHServerConnection] = set()
        self.commands: set[asyncio.subprocess.Process] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self.connections_made = 0
        self.connection_event = asyncio.Event()
        self.commands_started = 0

    # ------------------------------------------------------------ lifecycle

    async def __aenter__(self) -> SimSSHServer:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.stop()

    @property
    def running(self) -> bool:
        return self._acceptor is not None

    async def start(self) -> None:
        """Listen (again) on 127.0.0.1, on the same port as before once one was chosen."""
        self.home.mkdir(parents=True, exist_ok=True)
        self.tmux_dir.mkdir(mode=0o700, exist_ok=True)
        owner = self

        class _Server(asyncssh.SSHServer):
            def __init__(self) -> None:
                self._conn: asyncssh.SSHServerConnection | None = None

            def connection_made(self, conn: asyncssh.SSHServerConnection) -> None:
                owner._connections.add(conn)
                owner.connections_made += 1
                owner.connection_event.set()
                self._conn = conn

            def connection_lost(self, exc: Exception | None) -> None:
                if self._conn is not None:
                    owner._connections.discard(self._conn)

            def session_requested(self) -> _CommandSession:
                return _CommandSession(owner)

            def connection_requested(
                self, dest_host: str, dest_port: int, orig_host: str, orig_port: int
            ) -> bool:
                return owner._allow_forwarding and dest_host in (LOOPBACK, "localhost")

        self._acceptor = await asyncssh.create_server(
            _Server,
            LOOPBACK,
            self.port,
            server_host_keys=[self.host_key],
            authorized_client_keys=asyncssh.import_authorized_keys(
                "".join(key.export_public_key("openssh").decode() for key in self._authorized)
            ),
            encoding=None,
        )
        self.port = self._acceptor.get_port()

    async def stop(self) -> None:
        """Stop listening, drop every connection, and kill every command still running."""
        if self._acceptor is not None:
            self._acceptor.close()
            await self._acceptor.wait_closed()
            self._acceptor = None
        for conn in list(self._connections):
            conn.abort()
        self._connections.clear()
        for proc in list(self.commands):
            kill_tree(proc)
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def restart(self) -> None:
        await self.stop()
        await self.start()

    def swap_host_key(self, key: asyncssh.SSHKey | None = None) -> asyncssh.SSHKey:
        """Serve a new host key to connections made from now on; returns it."""
        self.host_key = key or generate_key()
        if self._acceptor is not None:
            self._acceptor.update(server_host_keys=[self.host_key])
        return self.host_key

    def track(self, task: asyncio.Task[None]) -> None:
        """Keep a command's task until it ends, so `stop()` can wait for it."""
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def known_hosts_line(self) -> str:
        """This server's known_hosts line (`[127.0.0.1]:PORT ssh-ed25519 ...`)."""
        public = self.host_key.export_public_key("openssh").decode().split()[:2]
        return f"[{self.host}]:{self.port} {' '.join(public)}\n"

    # ------------------------------------------------------------ commands

    def command_env(self, chan: asyncssh.SSHServerChannel[bytes]) -> dict[str, str]:
        """A login-like environment: sandbox HOME and PATH, and sshd's SSH_CONNECTION."""
        peer_host, peer_port = chan.get_extra_info("peername")[:2]
        local_host, local_port = chan.get_extra_info("sockname")[:2]
        path = os.environ.get("PATH", "/usr/bin:/bin")
        if self._path_prefix:
            path = f"{self._path_prefix}{os.pathsep}{path}"
        user = getpass.getuser()
        return {
            "PATH": path,
            "HOME": str(self.home),
            "USER": user,
            "LOGNAME": user,
            "SHELL": "/bin/bash",
            "LANG": "C.UTF-8",
            "TMUX_TMPDIR": str(self.tmux_dir),
            "SSH_CONNECTION": f"{peer_host} {peer_port} {local_host} {local_port}",
            **self._env,
        }


class _CommandSession(asyncssh.SSHServerSession[bytes]):
    """One exec channel: `bash -c <command>` in the server's sandbox, pumped by hand.

    Like sshd: the command gets its own session (process group); the client's EOF, or the
    channel closing, closes its stdin; a `signal` request signals its process group; the
    exit status, or the signal that killed it, goes back to the client.
    """

    def __init__(self, owner: SimSSHServer) -> None:
        self._owner = owner
        self._chan: asyncssh.SSHServerChannel[bytes] | None = None
        self._command: str | None = None
        self._proc: asyncio.subprocess.Process | None = None
        self._early_stdin: list[bytes] = []
        self._stdin_done = False
        self._closed = False
        self._writable = asyncio.Event()
        self._writable.set()

    def connection_made(self, chan: asyncssh.SSHServerChannel[bytes]) -> None:
        self._chan = chan

    def shell_requested(self) -> bool:
        return False

    def exec_requested(self, command: str) -> bool:
        self._command = command
        return True

    def session_started(self) -> None:
        self._owner.track(asyncio.create_task(self._run()))

    def data_received(self, data: bytes, datatype: int | None) -> None:
        if self._proc is None:
            self._early_stdin.append(data)
        elif self._proc.stdin is not None and not self._proc.stdin.is_closing():
            self._proc.stdin.write(data)

    def eof_received(self) -> bool:
        self._close_stdin()
        return True  # stay half open: the command's output is still to come

    def signal_received(self, signal_name: str) -> None:
        signum = getattr(signal, f"SIG{signal_name}", None)
        if self._proc is not None and signum is not None:
            kill_group(self._proc, signum)

    def pause_writing(self) -> None:
        self._writable.clear()

    def resume_writing(self) -> None:
        self._writable.set()

    def connection_lost(self, exc: Exception | None) -> None:
        self._closed = True
        self._writable.set()
        self._close_stdin()

    def _close_stdin(self) -> None:
        self._stdin_done = True
        if self._proc is not None and self._proc.stdin is not None:
            self._proc.stdin.close()

    async def _run(self) -> None:
        chan, command = self._chan, self._command
        assert chan is not None and command is not None
        self._owner.commands_started += 1
        proc = await asyncio.create_subprocess_exec(
            "bash",
            "-c",
            command,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            cwd=self._owner.home,
            env=self._owner.command_env(chan),
            start_new_session=True,
        )
        self._proc = proc
        self._owner.commands.add(proc)
        assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
        for data in self._early_stdin:
            proc.stdin.write(data)
        if self._stdin_done:
            proc.stdin.close()
        try:
            await asyncio.gather(
                self._pump(proc.stdout, None),
                self._pump(proc.stderr, asyncssh.EXTENDED_DATA_STDERR),
            )
            returncode = await proc.wait()
        except asyncio.CancelledError:  # the server is stopping: kill and reap the command
            kill_tree(proc)
            await proc.wait()
            raise
        finally:
            self._owner.commands.discard(proc)
        if self._closed:
            return
        if returncode < 0:
            chan.exit_with_signal(signal.Signals(-returncode).name.removeprefix("SIG"))
        else:
            chan.exit(returncode)

    async def _pump(self, source: asyncio.StreamReader, datatype: int | None) -> None:
        """Copy output to the channel, respecting its window; dropped once it is closed."""
        assert self._chan is not None
        while chunk := await source.read(_CHUNK):
            await self._writable.wait()
            if not self._closed:
                self._chan.write(chunk, datatype)


def kill_group(proc: asyncio.subprocess.Process, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signum)


def kill_tree(proc: asyncio.subprocess.Process) -> None:
    """SIGKILL a command with every descendant, even those that left its process group
    (which would otherwise keep its output pipes, and a stopping server, open)."""
    doomed = _descendants(proc.pid)
    kill_group(proc, signal.SIGKILL)
    for pid in doomed:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)


def _descendants(root: int) -> list[int]:
    """Pids below `root` in the process tree, read from /proc (Linux)."""
    children: dict[int, list[int]] = {}
    for entry in PROC.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        parent = int(stat.rsplit(")", 1)[1].split()[1])  # the field after the state
        children.setdefault(parent, []).append(int(entry.name))
    found: list[int] = []
    pending = [root]
    while pending:
        for child in children.get(pending.pop(), []):
            found.append(child)
            pending.append(child)
    return found


def tagged_processes(variable: str, prefix: str = "") -> dict[str, list[int]]:
    """Pids whose environment sets `variable` to a value starting with `prefix`, by value.

    A simulated box tags every command it runs (its `env`), and children inherit the tag,
    so this finds everything a box started, detached runs included (Linux /proc).
    """
    needle = f"\0{variable}={prefix}".encode()
    found: dict[str, list[int]] = {}
    for entry in PROC.iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            environ = b"\0" + (entry / "environ").read_bytes()
        except OSError:
            continue
        start = environ.find(needle)
        if start >= 0 and not _is_zombie(entry):
            value_start = start + len(needle) - len(prefix.encode())
            value = environ[value_start : environ.find(b"\0", value_start)]
            found.setdefault(value.decode(errors="replace"), []).append(int(entry.name))
    return found


def _is_zombie(proc_entry: Path) -> bool:
    """A process that has exited and waits to be reaped (killing it again is pointless)."""
    try:
        stat = (proc_entry / "stat").read_text(errors="replace")
    except OSError:
        return True
    return stat.rpartition(")")[2].split()[:1] == ["Z"]


def kill_tagged(variable: str, values: Collection[str], prefix: str = "", rounds: int = 5) -> int:
    """SIGKILL every process tagged with one of `values`; looks again for forks in flight."""
    killed = 0
    for _ in range(rounds):
        tagged = tagged_processes(variable, prefix)
        doomed = [pid for value in values for pid in tagged.get(value, [])]
        if not doomed:
            break
        for pid in doomed:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
                killed += 1
    return killed
