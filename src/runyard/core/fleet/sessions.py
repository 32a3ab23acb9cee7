"""The SSH session pool: one persistent asyncssh connection per worker, many channels.

Every command, probe and log follow on a worker is a channel on that worker's single
connection, so a round trip costs milliseconds instead of a fresh handshake. Connections
open concurrently and lazily, are kept alive with SSH keepalives, and are re-opened after
a drop: a command that finds its connection gone reconnects once, transparently, and
raises `WorkerUnreachable` if that fails. Failed connects back off exponentially with
jitter, so a dead box costs one quick refusal per command, not a stalled console. Each
worker has its own connect and command timeouts, so one dead box never delays the others.

Remote commands run as `exec bash --noprofile --norc -c <quoted script>`, so the worker's
login shell (fish, zsh, ...) only has to parse one quoted word.

Short scripts (telemetry probes, check) can instead go through `SessionPool.run_short`: one
long-lived bash per worker reads framed requests on its stdin, which saves the channel
open/exec/exit/EOF/close round of packets that dominates the client's CPU per probe.

Exit status: what the script exited with; when the remote process was killed by a signal
and sshd reports that signal, the negative signal number (-9 for SIGKILL), as
`subprocess` does. A shell between the process and sshd reports 128+N instead, as bash
always does.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import secrets
import shlex
import time
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from pathlib import Path

import asyncssh

from runyard.core.errors import WorkerUnreachable
from runyard.core.fleet.executor import (
    CommandResult,
    Executor,
    LocalExecutor,
    ShellFunction,
    standalone_script,
)
from runyard.core.fleet.ssh_options import SSHClientSettings, SSHTarget, build_target
from runyard.core.models import Worker
from runyard.core.settings import Settings

_READ_CHUNK = 64 * 1024
_CLOSE_GRACE_S = 2.0
_CHANNEL_RETRY_S = 5.0

# The persistent shell's server side (see `_Shell`). A request is `<token> <nbytes>\n` and
# nbytes of script (LC_ALL=C so `read -N` counts bytes; the script gets the login locale
# back). The script runs in a subshell, so `exit` ends only it, with stdin from /dev/null
# and stderr in a temp file; the answer is its stdout, then `\n<token> END <rc> <len>\n`
# and `len` bytes of stderr. `wc`/`cat` only run when there was stderr.
_SHELL_LOOP = r"""
_ry_err=$(mktemp "${TMPDIR:-/tmp}/runyard-sh.XXXXXX") || exit 97
trap 'rm -f -- "$_ry_err"' EXIT
printf '@@runyard:shell\n'
_ry_lc=${LC_ALL+set:$LC_ALL}
LC_ALL=C
while IFS=' ' read -r _ry_tok _ry_n && read -r -N "$_ry_n" _ry_s; do
  # "-": function definitions, kept in this shell for the requests that call them.
  if [ "$_ry_tok" = - ]; then eval "$_ry_s"; continue; fi
  (
    _ry_tok=
    if [ -n "$_ry_lc" ]; then LC_ALL=${_ry_lc#set:}; else unset LC_ALL; fi
    eval "$_ry_s"
  ) </dev/null 2>"$_ry_err"
  _ry_rc=$?
  if [ -s "$_ry_err" ]; then
    _ry_len=$(wc -c <"$_ry_err")
    printf '\n%s END %d %d\n' "$_ry_tok" "$_ry_rc" "$((_ry_len))"
    cat -- "$_ry_err"
  else
    printf '\n%s END %d 0\n' "$_ry_tok" "$_ry_rc"
  fi
done
"""


# The shell loop's first line. A shell that never printed it is stuck before running any
# command: in its login start-up files, more often than not (a hung `pyenv rehash`, conda
# init, an NFS home).
_SHELL_READY = b"@@runyard:shell\n"
SILENT_SHELL_HINT = (
    "connected, but the login shell did not start a command in {limit:g}s: its start-up "
    "files (~/.bashrc, ~/.zshenv, $BASH_ENV) may hang; see if `ssh HOST true` returns"
)


def remote_command(script: str) -> str:
    """The exec request for `script`: bash, whatever the worker's login shell is.

    `--norc`: Debian's bash sources ~/.bashrc for commands sshd starts; the login shell
    already did (its exports are inherited), so a second bash must not pay for it again.
    """
    return f"exec bash --noprofile --norc -c {shlex.quote(script)}"


def stream_command(script: str) -> str:
    """`script` wrapped to die with its channel, for `SessionPool.stream`.

    sshd does not kill a command when its (pty-less) channel closes, and refuses signal
    requests in some sessions, so a `tail -F` would outlive the console. Instead the
    script runs in its own process group while the wrapper reads the channel's stdin,
    which sshd closes when the channel closes: then the group gets SIGTERM.
    """
    quoted = shlex.quote(script)
    return (
        "exec 2>&1 3<&0\n"  # fd 3: the channel's stdin (a background job's stdin is /dev/null)
        "if command -v setsid >/dev/null 2>&1; then\n"
        f"  setsid bash -c {quoted} </dev/null 3<&- &\n"
        "else\n"
        f"  bash -c {quoted} </dev/null 3<&- &\n"
        "fi\n"
        "script_pid=$!\n"
        '( cat <&3 >/dev/null; kill -TERM -- "-$script_pid" || kill -TERM "$script_pid" ) '
        ">/dev/null 2>&1 &\n"
        'wait "$script_pid"\n'
    )


def backoff_delay(
    failures: int, base: float, cap: float, jitter: Callable[[], float] = random.random
) -> float:
    """Seconds to wait before the next connect after `failures` failed ones in a row.

    Exponential (base, 2*base, 4*base, ... up to cap) with "equal jitter": a random point in
    the upper half of the step, so many consoles retrying one box do not retry in lockstep.
    """
    if failures <= 0 or base <= 0:
        return 0.0
    step = min(cap, base * 2.0 ** (failures - 1))
    return step / 2 + step / 2 * jitter()


class _ChannelNotOpened(Exception):
    """The connection was found closed before the channel opened: the command never ran."""


class _ShellDied(Exception):
    """The persistent shell's channel ended before it answered a request."""


class _Shell:
    """One worker's long-lived bash answering framed requests (`_SHELL_LOOP`).

    Not safe for concurrent requests: `_WorkerSession.shell_lock` serialises them.
    """

    def __init__(
        self, conn: asyncssh.SSHClientConnection, process: asyncssh.SSHClientProcess[bytes]
    ) -> None:
        self.conn = conn
        self.process = process
        self.started = False  # its ready line came: the login and its start-up files are done
        self.defined: set[str] = set()  # ShellFunction names sent to this shell

    def usable_on(self, conn: asyncssh.SSHClientConnection | None) -> bool:
        """Whether the shell still runs on `conn`, the worker's live connection."""
        process = self.process
        return (
            conn is self.conn
            and process.returncode is None
            and not process.is_closing()
            and not process.stdout.at_eof()
        )

    async def request(self, script: str, functions: Sequence[ShellFunction] = ()) -> CommandResult:
        """Run `script` in the shell; byte-exact stdout and stderr, and its exit status.

        The functions it calls are defined first, once per shell. The end marker carries a
        random token sent with this request only, so no output of the script (nor of an
        earlier one) can be taken for it.
        """
        frames = bytearray()
        for function in functions:
            if function.name not in self.defined:
                definition = function.definition.encode()
                frames += b"- %d\n%s" % (len(definition), definition)
                self.defined.add(function.name)
        token = secrets.token_hex(16).encode()
        body = script.encode() + b"\n"
        frames += b"%s %d\n%s" % (token, len(body), body)
        self.process.stdin.write(bytes(frames))
        marker = b"\n" + token + b" END "
        buf = bytearray()
        if not self.started:
            # Whatever a chatty ~/.bashrc printed before the loop is dropped with the line.
            while (ready := buf.find(_SHELL_READY)) < 0:
                buf += await self._read()
            del buf[: ready + len(_SHELL_READY)]
            self.started = True
        start = 0
        while (end := buf.find(marker, start)) < 0:
            start = max(0, len(buf) - len(marker) + 1)
            buf += await self._read()
        stdout = bytes(buf[:end])
        del buf[: end + len(marker)]
        while (newline := buf.find(b"\n")) < 0:
            buf += await self._read()
        status, stderr_len = (int(field) for field in buf[:newline].split())
        del buf[: newline + 1]
        while len(buf) < stderr_len:
            buf += await self._read()
        return CommandResult(status, stdout, bytes(buf[:stderr_len]))

    async def _read(self) -> bytes:
        chunk = await self.process.stdout.read(_READ_CHUNK)
        if not chunk:
            raise _ShellDied("the shell's channel closed")
        return chunk


class _WorkerSession:
    """One worker's connection, its reconnect state, and its channel limit."""

    def __init__(self, worker: Worker, settings: SSHClientSettings) -> None:
        self.worker = worker
        self.name = worker.worker_id
        self._settings = settings
        self._target: SSHTarget | None = None
        self._conn: asyncssh.SSHClientConnection | None = None
        self._connecting: asyncio.Task[asyncssh.SSHClientConnection] | None = None
        self._failures = 0
        self._retry_at = 0.0
        self._last_error: WorkerUnreachable | None = None
        self.channels = asyncio.Semaphore(settings.max_channels)
        self.latency_ms: float | None = None
        self.connections_opened = 0
        self.shell: _Shell | None = None
        self.shell_lock = asyncio.Lock()
        self.shell_broken = False  # it died twice on a live connection: use channels
        self.shell_silent = False  # the last shell given up on never reached its loop

    def discard_shell(self, kill: bool = False) -> None:
        """Close the persistent shell (SIGKILL first with `kill`) and free its channel."""
        shell, self.shell = self.shell, None
        if shell is not None:
            if kill:
                _kill(shell.process)
            else:
                shell.process.close()
            self.channels.release()

    def live_connection(self) -> asyncssh.SSHClientConnection | None:
        if self._conn is not None and not self._conn.is_closed():
            return self._conn
        return None

    async def connection(self) -> asyncssh.SSHClientConnection:
        """The open connection, opening it first if needed (one open shared by all callers).

        The open runs as its own task: a caller that gives up (its timeout, a cancel) does
        not abort it, so its outcome still feeds the backoff.
        """
        live = self.live_connection()
        if live is not None:
            return live
        if self._connecting is None:
            wait = self._retry_at - time.monotonic()
            if wait > 0 and self._last_error is not None:
                raise WorkerUnreachable(
                    self.name, f"{self._last_error.reason} (next try in {wait:.1f}s)"
                )
            self._connecting = asyncio.create_task(self._open(), name=f"ssh-connect-{self.name}")
            self._connecting.add_done_callback(_consume_outcome)
        return await asyncio.shield(self._connecting)

    async def _open(self) -> asyncssh.SSHClientConnection:
        try:
            if self._target is None:
                self._target = await asyncio.to_thread(build_target, self.worker, self._settings)
            conn = await self._target.open()
        except WorkerUnreachable as exc:
            self._failures += 1
            self._last_error = exc
            self._retry_at = time.monotonic() + backoff_delay(
                self._failures,
                self._settings.reconnect_backoff,
                self._settings.reconnect_backoff_max,
            )
            raise
        finally:
            self._connecting = None
        self._failures = 0
        self._last_error = None
        self._retry_at = 0.0
        self._conn = conn
        self.connections_opened += 1
        return conn

    def reset_backoff(self) -> None:
        self._retry_at = 0.0

    def drop(self, conn: asyncssh.SSHClientConnection) -> None:
        conn.abort()
        if self._conn is conn:
            self._conn = None

    async def open_process(
        self, conn: asyncssh.SSHClientConnection, command: str
    ) -> asyncssh.SSHClientProcess[bytes]:
        """Open a channel running `command`; records the round trip as the worker's latency.

        A live connection whose server refuses the channel is usually at its session limit
        for a moment (sshd frees a session slot a little after the channel closes), so the
        open is retried with short, growing pauses for up to `_CHANNEL_RETRY_S`.
        """
        pause = 0.01
        deadline = time.monotonic() + _CHANNEL_RETRY_S
        while True:
            started = time.perf_counter()
            try:
                process = await conn.create_process(command, encoding=None)
            except asyncssh.ChannelOpenError as exc:
                if conn.is_closed():
                    raise _ChannelNotOpened(str(exc)) from exc
                if time.monotonic() + pause > deadline:
                    raise WorkerUnreachable(
                        self.name, f"the server keeps refusing channels: {exc.reason}"
                    ) from exc
                await asyncio.sleep(pause)
                pause = min(pause * 2, 0.25)
                continue
            except (asyncssh.Error, OSError) as exc:
                raise WorkerUnreachable(self.name, f"connection lost: {exc}") from exc
            self.latency_ms = (time.perf_counter() - started) * 1000
            return process

    async def close(self) -> None:
        self.discard_shell()
        connecting = self._connecting
        if connecting is not None:
            connecting.cancel()
            await asyncio.wait([connecting])
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()
            try:
                async with asyncio.timeout(_CLOSE_GRACE_S):
                    await conn.wait_closed()
            except TimeoutError:
                conn.abort()


def _consume_outcome(task: asyncio.Task[asyncssh.SSHClientConnection]) -> None:
    """Mark a connect's error as seen when every waiter gave up before it ended."""
    if not task.cancelled():
        task.exception()


class SessionPool:
    """One persistent SSH connection per worker, shared by every command on that worker.

    Use as `async with SessionPool(settings) as pool:` or call `close()`.
    """

    def __init__(self, settings: SSHClientSettings | None = None) -> None:
        self.settings = settings or SSHClientSettings()
        self._sessions: dict[str, _WorkerSession] = {}
        self._retiring: set[asyncio.Task[None]] = set()

    @classmethod
    def from_settings(cls, workspace: Path, settings: Settings) -> SessionPool:
        """A pool configured by a workspace's runyard.yaml (`ssh:` section)."""
        return cls(SSHClientSettings.from_runyard_settings(workspace, settings))

    async def __aenter__(self) -> SessionPool:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    def _session(self, worker: Worker) -> _WorkerSession:
        if worker.ssh is None:
            raise ValueError(f"worker {worker.worker_id} is not an ssh worker")
        session = self._sessions.get(worker.worker_id)
        if session is None or session.worker != worker:
            if session is not None:  # workers.yaml changed: the old options are stale
                self._retire(session)
            session = _WorkerSession(worker, self.settings)
            self._sessions[worker.worker_id] = session
        return session

    def _retire(self, session: _WorkerSession) -> None:
        """Close a session whose worker entry changed, without making the caller wait."""
        task = asyncio.create_task(session.close())
        self._retiring.add(task)
        task.add_done_callback(self._retiring.discard)

    async def connect(self, worker: Worker) -> None:
        """Open `worker`'s connection now (commands open it lazily otherwise)."""
        await self._session(worker).connection()

    async def connect_all(self, workers: Iterable[Worker]) -> dict[str, WorkerUnreachable | None]:
        """Open every ssh worker's connection concurrently; None for each that opened."""
        ssh_workers = [worker for worker in workers if worker.ssh is not None]
        outcomes = await asyncio.gather(
            *(self.connect(worker) for worker in ssh_workers), return_exceptions=True
        )
        results: dict[str, WorkerUnreachable | None] = {}
        for worker, outcome in zip(ssh_workers, outcomes, strict=True):
            if isinstance(outcome, WorkerUnreachable) or outcome is None:
                results[worker.worker_id] = outcome
            else:
                raise outcome
        return results

    def executor(self, worker: Worker) -> Executor:
        """The worker's transport: pooled SSH, or bash on this machine for a local worker."""
        if worker.ssh is None:
            return LocalExecutor(worker.worker_id)
        return SSHExecutor(self, worker)

    async def run(
        self, worker: Worker, script: str, stdin: bytes = b"", timeout: float | None = None
    ) -> CommandResult:
        """Run `script` with bash on `worker`, feeding `stdin`; exact bytes back.

        `timeout` (default: settings.command_timeout) bounds the whole call, connecting
        included (a connect is also bounded by settings.connect_timeout). On timeout, or
        when the caller is cancelled, the remote command is sent SIGKILL and its channel
        closed. That kill is best effort: OpenSSH honours signal requests only for
        non-root logins, so a probe that may hang (nvidia-smi on a wedged GPU) should
        bound itself too (`timeout 10 nvidia-smi ...`).
        """
        session = self._session(worker)
        limit = self.settings.command_timeout if timeout is None else timeout
        process: asyncssh.SSHClientProcess[bytes] | None = None
        try:
            async with asyncio.timeout(limit), session.channels:
                process = await self._start(session, remote_command(script))
                if stdin:
                    process.stdin.write(stdin)
                process.stdin.write_eof()
                stdout, stderr = await process.communicate()
        except TimeoutError:
            if process is not None:
                _kill(process)
            stage = "command" if process is not None else "connect or channel open"
            raise WorkerUnreachable(session.name, f"{stage} timed out after {limit:g}s") from None
        except (asyncssh.Error, OSError) as exc:
            if process is not None:
                process.close()
            raise WorkerUnreachable(session.name, f"connection lost while running: {exc}") from exc
        except BaseException:
            if process is not None:
                _kill(process)
            raise
        status = process.returncode
        if status is None:
            raise WorkerUnreachable(
                session.name, "connection lost while running (no exit status came back)"
            )
        return CommandResult(status, stdout, stderr)

    async def run_short(
        self,
        worker: Worker,
        script: str,
        timeout: float | None = None,
        functions: Sequence[ShellFunction] = (),
    ) -> CommandResult:
        """`run` without stdin, through the worker's persistent shell: for short, idempotent
        scripts run often (probes, check), where a channel per command costs the client
        more CPU than the script's own bytes.

        Differences from `run`: the script runs in a subshell of that shell (`$$` is the
        shell's pid, a kill signal shows as 128+N), its stdin is /dev/null, and it must not
        leave background jobs writing to stdout. Requests on one worker queue behind each
        other. On timeout or cancel the shell is killed and the next request opens another.
        A shell found dead is replaced, and a request it died in is run once more, so the
        script must be safe to repeat. `functions` (those the script calls) are defined in
        the shell the first time it needs them. Falls back to `run` when
        `settings.persistent_shell` is off, when the connection allows a single channel, or
        when the worker's shell keeps dying on a live connection (say, no writable temp dir).
        """
        session = self._session(worker)
        limit = self.settings.command_timeout if timeout is None else timeout
        if (
            not self.settings.persistent_shell
            or self.settings.max_channels < 2
            or session.shell_broken
        ):
            return await self.run(worker, standalone_script(script, functions), timeout=limit)
        deadline = time.monotonic() + limit
        session.shell_silent = False
        try:
            async with asyncio.timeout(limit), session.shell_lock:
                result = await self._shell_request(session, script, functions)
        except TimeoutError:
            raise WorkerUnreachable(
                session.name,
                SILENT_SHELL_HINT.format(limit=limit)
                if session.shell_silent
                else f"command or shell open timed out after {limit:g}s",
            ) from None
        if result is not None:
            return result
        session.shell_broken = True
        return await self.run(
            worker,
            standalone_script(script, functions),
            timeout=max(deadline - time.monotonic(), 0.001),
        )

    async def _shell_request(
        self, session: _WorkerSession, script: str, functions: Sequence[ShellFunction]
    ) -> CommandResult | None:
        """`script` through the session's shell (its lock held), reopening a dead shell once;
        None when the fresh shell died too while the connection stayed up."""
        for _attempt in (1, 2):
            shell = await self._shell(session)
            try:
                return await shell.request(script, functions)
            except _ShellDied:
                session.discard_shell()
                if session.live_connection() is not shell.conn:
                    raise WorkerUnreachable(session.name, "connection lost while running") from None
            except (asyncssh.Error, OSError) as exc:
                session.discard_shell()
                raise WorkerUnreachable(
                    session.name, f"connection lost while running: {exc}"
                ) from exc
            except BaseException:  # cancelled, by the timeout too: the answer is half read
                session.shell_silent = not shell.started
                session.discard_shell(kill=True)
                raise
        return None

    async def _shell(self, session: _WorkerSession) -> _Shell:
        """The worker's persistent shell, (re)opened if missing or dead; holds one channel."""
        shell = session.shell
        if shell is not None and shell.usable_on(session.live_connection()):
            return shell
        session.discard_shell()
        async with contextlib.AsyncExitStack() as undo:
            await session.channels.acquire()
            undo.callback(session.channels.release)
            process = await self._start(session, remote_command(_SHELL_LOOP))
            conn = session.live_connection()
            if conn is None:
                process.close()
                raise WorkerUnreachable(session.name, "connection lost while opening a shell")
            undo.pop_all()
        session.shell = _Shell(conn, process)
        return session.shell

    async def _start(
        self, session: _WorkerSession, command: str
    ) -> asyncssh.SSHClientProcess[bytes]:
        """Open a channel running `command`, reconnecting once if the connection had dropped."""
        for attempt in (1, 2):
            conn = await session.connection()
            try:
                return await session.open_process(conn, command)
            except _ChannelNotOpened as exc:
                session.drop(conn)
                if attempt == 2:
                    raise WorkerUnreachable(session.name, f"connection lost: {exc}") from exc
        raise AssertionError("not reached")

    async def stream(self, worker: Worker, script: str) -> AsyncIterator[bytes]:
        """Yield the output (stderr merged into stdout) of `script` as it arrives.

        For following a log (`tail -F`). Ends when the remote command exits. Cancelling
        the consuming task, or closing the generator (`contextlib.aclosing`), closes the
        channel, and the remote side then stops the script's whole process group (see
        `stream_command`). Holds one of the connection's channels while it runs. A
        connection lost mid-stream raises `WorkerUnreachable`.
        """
        session = self._session(worker)
        async with session.channels:
            process = await self._start(session, remote_command(stream_command(script)))
            try:
                while chunk := await process.stdout.read(_READ_CHUNK):
                    yield chunk
                await process.wait_closed()
            except (asyncssh.Error, OSError) as exc:
                raise WorkerUnreachable(
                    session.name, f"connection lost while streaming: {exc}"
                ) from exc
            finally:
                # Only close: a signal would kill the wrapper's watchdog before it stops
                # the script; the channel closing is what stops it.
                process.close()
            if process.returncode is None:
                raise WorkerUnreachable(session.name, "connection lost while streaming")

    def latency_ms(self, worker: Worker | str) -> float | None:
        """Milliseconds of the worker's last round trip: opening a channel and starting a
        command on the open connection (so a slow command does not inflate it)."""
        session = self._sessions.get(_name(worker))
        return session.latency_ms if session else None

    def is_connected(self, worker: Worker | str) -> bool:
        session = self._sessions.get(_name(worker))
        return session is not None and session.live_connection() is not None

    def connections_opened(self, worker: Worker | str) -> int:
        """How many connections the pool has opened to the worker (1 unless it dropped)."""
        session = self._sessions.get(_name(worker))
        return session.connections_opened if session else 0

    def reset_backoff(self, worker: Worker | str) -> None:
        """Let the next command try to connect now (an operator's explicit retry)."""
        session = self._sessions.get(_name(worker))
        if session is not None:
            session.reset_backoff()

    async def close(self) -> None:
        """Close every connection (waits briefly for each to say goodbye)."""
        sessions, self._sessions = list(self._sessions.values()), {}
        await asyncio.gather(*(session.close() for session in sessions), *self._retiring)


def _name(worker: Worker | str) -> str:
    return worker if isinstance(worker, str) else worker.worker_id


def _kill(process: asyncssh.SSHClientProcess[bytes]) -> None:
    """Best effort: SIGKILL the remote command, then close its channel."""
    if process.returncode is None:
        with contextlib.suppress(asyncssh.Error, OSError):
            process.send_signal("KILL")
    process.close()


class SSHExecutor:
    """The `Executor` for one ssh worker, over its pooled connection."""

    def __init__(self, pool: SessionPool, worker: Worker) -> None:
        self.name = worker.worker_id
        self._pool = pool
        self._worker = worker

    async def run(
        self, script: str, stdin: bytes = b"", timeout: float | None = None
    ) -> CommandResult:
        return await self._pool.run(self._worker, script, stdin, timeout)

    async def run_short(
        self,
        script: str,
        timeout: float | None = None,
        functions: Sequence[ShellFunction] = (),
    ) -> CommandResult:
        """A short, repeatable script through the worker's persistent shell (probes)."""
        return await self._pool.run_short(self._worker, script, timeout, functions)

    def stream(self, script: str) -> AsyncIterator[bytes]:
        """The script's output as it arrives, over the pooled connection."""
        return self._pool.stream(self._worker, script)


async def probe_many(
    pool: SessionPool, workers: Iterable[Worker], script: str, timeout: float | None = None
) -> dict[str, CommandResult | WorkerUnreachable]:
    """Run `script` on every worker at once; each worker's answer or why it gave none.

    `timeout` bounds each worker's whole probe, connecting included (by default the
    pool's connect and command timeouts apply); a dead worker costs the others nothing.
    """

    async def probe(worker: Worker) -> CommandResult | WorkerUnreachable:
        try:
            return await pool.executor(worker).run(script, timeout=timeout)
        except WorkerUnreachable as exc:
            return exc

    workers = list(workers)
    results = await asyncio.gather(*(probe(worker) for worker in workers))
    return {worker.worker_id: result for worker, result in zip(workers, results, strict=True)}


__all__ = [
    "SSHExecutor",
    "SessionPool",
    "backoff_delay",
    "probe_many",
    "remote_command",
    "stream_command",
]
