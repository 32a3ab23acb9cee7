"""The SSH session pool and host-key trust, against real servers on 127.0.0.1.

Core checks run twice through the `endpoint` fixture: against the in-process asyncssh
server and against Debian's OpenSSH sshd (skipped where it is not installed).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import os
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fakes.openssh import OpenSSHServer
from fakes.ssh_helpers import SSHEndpoint, ssh_worker, trust
from fakes.ssh_server import BlackholeServer, LoopbackSSHServer, generate_key, unused_port
from runyard.core.errors import WorkerUnreachable
from runyard.core.fleet.executor import CommandResult, LocalExecutor
from runyard.core.fleet.sessions import (
    SessionPool,
    SSHExecutor,
    backoff_delay,
    probe_many,
    remote_command,
)
from runyard.core.fleet.ssh_options import (
    ChangedHostKey,
    KnownHostsFiles,
    SSHClientSettings,
    TrustPolicy,
    UnknownHostKey,
    build_target,
    known_hosts_pattern,
    trust_host,
)
from runyard.core.models import Worker
from runyard.core.settings import Settings

# ---------------------------------------------------------------- helpers


@dataclass
class Endpoint:
    """A running server of either kind, trusted, with a worker entry pointing at it."""

    kind: str
    server: SSHEndpoint
    worker: Worker
    scratch: Path  # a directory both this test and the server's commands can use


@pytest.fixture(params=["asyncssh", pytest.param("openssh", marks=pytest.mark.sshd)])
def endpoint(
    request: pytest.FixtureRequest, tmp_path: Path, ssh_settings: SSHClientSettings
) -> Endpoint:
    if request.param == "asyncssh":
        server: SSHEndpoint = request.getfixturevalue("ssh_server")
        key = request.getfixturevalue("ssh_server").client_key_path
    else:
        server = request.getfixturevalue("openssh_server")
        key = request.getfixturevalue("client_key")
    trust(server, ssh_settings)
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    return Endpoint(
        request.param, server, ssh_worker(f"{request.param}-w", server.port, key), scratch
    )


async def wait_for_pid_exit(pid: int, timeout: float = 10.0) -> None:
    """Wait (on a pidfd, not a clock) until process `pid` has exited."""
    try:
        pidfd = os.pidfd_open(pid)
    except ProcessLookupError:
        return
    exited = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_reader(pidfd, exited.set)
    try:
        await asyncio.wait_for(exited.wait(), timeout)
    finally:
        loop.remove_reader(pidfd)
        os.close(pidfd)


class Collector:
    """Gathers a stream's bytes and lets a test wait until some text has arrived."""

    def __init__(self) -> None:
        self.data = b""
        self._changed = asyncio.Condition()

    async def consume(self, chunks: AsyncIterator[bytes]) -> None:
        async for chunk in chunks:
            async with self._changed:
                self.data += chunk
                self._changed.notify_all()

    async def wait_for(self, needle: bytes, timeout: float = 10.0) -> None:
        async with asyncio.timeout(timeout), self._changed:
            await self._changed.wait_for(lambda: needle in self.data)


# ---------------------------------------------------------------- pure pieces


def test_remote_command_quotes_the_script_as_one_word() -> None:
    script = "echo 'it''s' \"$HOME\" `id` ; exit 3"
    words = shlex.split(remote_command(script))
    assert words[:4] == ["exec", "bash", "--noprofile", "--norc"]
    assert words[4:] == ["-c", script]


def test_backoff_grows_exponentially_with_jitter_and_a_cap() -> None:
    assert backoff_delay(0, 0.5, 30) == 0.0
    assert [backoff_delay(n, 0.5, 30, jitter=lambda: 1.0) for n in (1, 2, 3, 4)] == [
        0.5,
        1.0,
        2.0,
        4.0,
    ]
    assert backoff_delay(20, 0.5, 30, jitter=lambda: 1.0) == 30.0
    assert backoff_delay(3, 0.5, 30, jitter=lambda: 0.0) == 1.0  # lower half is never used


def test_known_hosts_pattern_brackets_non_default_ports() -> None:
    assert known_hosts_pattern("gpu1.example", 22) == "gpu1.example"
    assert known_hosts_pattern("ssh5.vast.ai", 31022) == "[ssh5.vast.ai]:31022"


def test_trust_policy_comes_from_worker_then_pool_then_default(tmp_path: Path) -> None:
    settings = SSHClientSettings(pool_trust={"vast": TrustPolicy.ACCEPT_NEW})
    assert settings.trust_for(ssh_worker("a", 22, None)) is TrustPolicy.STRICT
    assert settings.trust_for(ssh_worker("b", 22, None, pool="vast")) is TrustPolicy.ACCEPT_NEW
    assert TrustPolicy.parse("accept-new") is TrustPolicy.ACCEPT_NEW
    with pytest.raises(Exception, match="strict, accept-new"):
        TrustPolicy.parse("yolo")


def test_runyard_yaml_ssh_section_configures_the_pool(tmp_path: Path) -> None:
    settings = Settings()
    settings.ssh.trust = "strict"
    settings.ssh.pool_trust = {"vastai": "accept-new"}
    settings.ssh.known_hosts = "keys/known_hosts"
    settings.ssh.connect_timeout = 3.0
    pool = SessionPool.from_settings(tmp_path, settings)
    assert pool.settings.known_hosts == KnownHostsFiles(
        user_file=tmp_path / "keys" / "known_hosts",
        runyard_file=tmp_path / ".runyard" / "known_hosts",
    )
    assert pool.settings.trust_for(ssh_worker("v", 1, None, pool="vastai")) is (
        TrustPolicy.ACCEPT_NEW
    )
    assert pool.settings.trust_for(ssh_worker("s", 1, None)) is TrustPolicy.STRICT
    assert pool.settings.connect_timeout == 3.0


def test_local_workers_get_the_local_executor(ssh_settings: SSHClientSettings) -> None:
    pool = SessionPool(ssh_settings)
    assert isinstance(pool.executor(Worker(worker_id="laptop")), LocalExecutor)
    assert isinstance(pool.executor(ssh_worker("gpu", 22, None)), SSHExecutor)


def test_asyncssh_is_not_imported_by_the_rest_of_core() -> None:
    code = (
        "import sys, runyard.core.models, runyard.core.errors, runyard.core.fleet.executor\n"
        "assert 'asyncssh' not in sys.modules, 'asyncssh was imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


# ---------------------------------------------------------------- exec, bytes, exit codes


async def test_exit_status_stdout_and_stderr_come_back_separately(
    endpoint: Endpoint, pool: SessionPool
) -> None:
    result = await pool.run(endpoint.worker, "echo out; echo err >&2; exit 3")
    assert result == CommandResult(3, b"out\n", b"err\n")
    assert (await pool.run(endpoint.worker, "exit 255")).exit_status == 255
    assert (await pool.run(endpoint.worker, "true")).ok


async def test_a_signal_kill_is_a_negative_status_and_a_shell_reports_128_plus_n(
    endpoint: Endpoint, pool: SessionPool
) -> None:
    assert (await pool.run(endpoint.worker, "kill -9 $$")).exit_status == -9
    assert (await pool.run(endpoint.worker, "bash -c 'kill -9 $$'; exit $?")).exit_status == 137


SHELL_SPECIAL = 'it\'s "quoted" $HOME `id` $(id) \\ ; | & > < * ? ~ # ! {a,b}\n\ttab\r\nüñí €'


async def test_shell_special_characters_arrive_byte_exact(
    endpoint: Endpoint, pool: SessionPool
) -> None:
    result = await pool.run(endpoint.worker, f"printf %s {shlex.quote(SHELL_SPECIAL)}")
    assert result.stdout == SHELL_SPECIAL.encode()


async def test_binary_stdin_and_stdout_are_byte_exact(
    endpoint: Endpoint, pool: SessionPool
) -> None:
    payload = bytes(range(256)) * 64 + os.urandom(1 << 20)
    echoed = await pool.run(endpoint.worker, "cat", stdin=payload)
    assert echoed.stdout == payload
    digest = await pool.run(endpoint.worker, "sha256sum -b | cut -d' ' -f1", stdin=payload)
    assert digest.stdout.decode().strip() == hashlib.sha256(payload).hexdigest()
    binary_out = await pool.run(endpoint.worker, r"printf '\000\001\377\n\r'")
    assert binary_out.stdout == b"\x00\x01\xff\n\r"


async def test_empty_stdin_is_an_immediate_eof(endpoint: Endpoint, pool: SessionPool) -> None:
    assert (await pool.run(endpoint.worker, "cat; echo done")).stdout == b"done\n"


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
# Text a shell can receive: no NUL, no lone surrogate (it has no UTF-8 encoding).
@given(
    text=st.text(
        alphabet=st.characters(blacklist_characters="\x00", blacklist_categories=("Cs",)),
        max_size=200,
    )
)
async def test_any_text_survives_printf_through_ssh(
    ssh_server: LoopbackSSHServer, pool: SessionPool, ssh_settings: SSHClientSettings, text: str
) -> None:
    if not ssh_settings.known_hosts.user_file or not ssh_settings.known_hosts.user_file.exists():
        trust(ssh_server, ssh_settings)
    worker = ssh_worker("w1", ssh_server.port, ssh_server.client_key_path)
    result = await pool.run(worker, f"printf %s {shlex.quote(text)}")
    assert result.stdout == text.encode()


# ---------------------------------------------------------------- one connection, many channels


async def test_one_connection_carries_every_command(endpoint: Endpoint, pool: SessionPool) -> None:
    seen = {(await pool.run(endpoint.worker, "echo $SSH_CONNECTION")).stdout for _ in range(15)}
    assert len(seen) == 1  # the same client port each time: one TCP connection
    assert pool.connections_opened(endpoint.worker) == 1
    if isinstance(endpoint.server, LoopbackSSHServer):
        assert endpoint.server.connections_made == 1


async def test_concurrent_commands_share_the_connection(
    endpoint: Endpoint, pool: SessionPool
) -> None:
    barrier_size = pool.settings.max_channels
    barrier = endpoint.scratch / "barrier"
    barrier.mkdir()
    # Each command waits until all of them have started: it only finishes if they overlap.
    script = (
        f"cd {shlex.quote(str(barrier))} && touch $$ && "
        f'while [ "$(ls | wc -l)" -lt {barrier_size} ]; do sleep 0.01; done; echo {{}}'
    )
    results = await asyncio.gather(
        *(pool.run(endpoint.worker, script.replace("{}", str(i))) for i in range(barrier_size)),
        *(pool.run(endpoint.worker, f"echo {i}") for i in range(barrier_size, 30)),
    )
    assert [r.stdout for r in results] == [f"{i}\n".encode() for i in range(30)]
    assert pool.connections_opened(endpoint.worker) == 1


async def test_latency_is_measured_on_the_open_connection(
    endpoint: Endpoint, pool: SessionPool
) -> None:
    assert pool.latency_ms(endpoint.worker) is None
    await pool.run(endpoint.worker, "true")
    latency = pool.latency_ms(endpoint.worker)
    assert latency is not None and 0 < latency < 5000


# ---------------------------------------------------------------- dead workers


async def test_dead_workers_cost_the_healthy_ones_only_their_timeout(
    tmp_path: Path, ssh_settings: SSHClientSettings
) -> None:
    timeout = 1.0
    settings = dataclasses.replace(ssh_settings, connect_timeout=timeout)
    async with contextlib.AsyncExitStack() as stack:
        healthy = [
            await stack.enter_async_context(LoopbackSSHServer(home=tmp_path / f"h{i}"))
            for i in range(3)
        ]
        blackhole = await stack.enter_async_context(BlackholeServer())
        pool = await stack.enter_async_context(SessionPool(settings))
        for server in healthy:
            trust(server, settings)
        workers = [
            ssh_worker(f"h{i}", server.port, server.client_key_path)
            for i, server in enumerate(healthy)
        ]
        workers.append(ssh_worker("hung", blackhole.port, healthy[0].client_key_path))
        workers.append(ssh_worker("off", unused_port(), healthy[0].client_key_path))

        started = time.perf_counter()
        results = await probe_many(pool, workers, "echo ok")
        elapsed = time.perf_counter() - started

    for name in ("h0", "h1", "h2"):
        assert results[name] == CommandResult(0, b"ok\n", b"")
    hung, off = results["hung"], results["off"]
    assert isinstance(hung, WorkerUnreachable) and "within 1s" in hung.reason
    assert isinstance(off, WorkerUnreachable) and "cannot connect" in off.reason
    assert timeout * 0.9 <= elapsed < timeout + 0.75


async def test_connect_all_opens_every_worker_at_once(
    tmp_path: Path, ssh_settings: SSHClientSettings
) -> None:
    async with contextlib.AsyncExitStack() as stack:
        servers = [
            await stack.enter_async_context(LoopbackSSHServer(home=tmp_path / f"c{i}"))
            for i in range(3)
        ]
        pool = await stack.enter_async_context(SessionPool(ssh_settings))
        for server in servers:
            trust(server, ssh_settings)
        workers = [ssh_worker(f"c{i}", s.port, s.client_key_path) for i, s in enumerate(servers)]
        off = ssh_worker("off", unused_port(), servers[0].client_key_path)
        outcome = await pool.connect_all([*workers, off, Worker(worker_id="laptop")])
        assert {name: error is None for name, error in outcome.items()} == {
            "c0": True,
            "c1": True,
            "c2": True,
            "off": False,
        }
        assert all(pool.is_connected(worker) for worker in workers)
        await pool.run(workers[0], "true")
        assert servers[0].connections_made == 1


async def test_a_command_that_overruns_its_timeout_is_killed(
    ssh_server: LoopbackSSHServer, pool: SessionPool, ssh_settings: SSHClientSettings
) -> None:
    trust(ssh_server, ssh_settings)
    worker = ssh_worker("w1", ssh_server.port, ssh_server.client_key_path)
    pid_file = ssh_server.home / "sleeper.pid"
    with pytest.raises(WorkerUnreachable, match=r"timed out after 0\.5s"):
        await pool.run(worker, f"echo $$ > {pid_file}; exec sleep 60", timeout=0.5)
    await wait_for_pid_exit(int(pid_file.read_text()))
    assert (await pool.run(worker, "echo still here")).stdout == b"still here\n"
    assert pool.connections_opened(worker) == 1


# ---------------------------------------------------------------- reconnect


async def test_reconnects_transparently_after_the_server_restarts(
    ssh_server: LoopbackSSHServer, pool: SessionPool, ssh_settings: SSHClientSettings
) -> None:
    trust(ssh_server, ssh_settings)
    worker = ssh_worker("w1", ssh_server.port, ssh_server.client_key_path)
    assert (await pool.run(worker, "echo one")).stdout == b"one\n"
    await ssh_server.restart()  # same port; the old connection is dropped
    assert (await pool.run(worker, "echo two")).stdout == b"two\n"
    assert ssh_server.connections_made == 2
    assert pool.connections_opened(worker) == 2


async def test_a_down_worker_fails_fast_during_backoff_then_recovers(
    ssh_server: LoopbackSSHServer, pool: SessionPool, ssh_settings: SSHClientSettings
) -> None:
    trust(ssh_server, ssh_settings)
    worker = ssh_worker("w1", ssh_server.port, ssh_server.client_key_path)
    await pool.run(worker, "true")
    await ssh_server.stop()
    with pytest.raises(WorkerUnreachable, match="cannot connect"):
        await pool.run(worker, "true")
    with pytest.raises(WorkerUnreachable, match="next try in"):
        await pool.run(worker, "true")  # inside the backoff window: no new attempt
    await ssh_server.start()
    pool.reset_backoff(worker)
    assert (await pool.run(worker, "echo back")).stdout == b"back\n"


# ---------------------------------------------------------------- host keys


async def test_strict_policy_refuses_an_unknown_host(
    ssh_server: LoopbackSSHServer, pool: SessionPool, ssh_settings: SSHClientSettings
) -> None:
    worker = ssh_worker("w1", ssh_server.port, ssh_server.client_key_path)
    with pytest.raises(UnknownHostKey) as refused:
        await pool.run(worker, "true")
    assert "runyard worker trust w1" in str(refused.value)
    assert f"127.0.0.1:{ssh_server.port}" in str(refused.value)
    assert ssh_server.commands_started == 0
    assert ssh_settings.known_hosts.runyard_file is not None
    assert not ssh_settings.known_hosts.runyard_file.exists()


async def test_accept_new_records_an_unknown_host_then_strict_trusts_it(
    ssh_server: LoopbackSSHServer, ssh_settings: SSHClientSettings
) -> None:
    worker = ssh_worker("w1", ssh_server.port, ssh_server.client_key_path, pool="vast")
    accepting = dataclasses.replace(ssh_settings, pool_trust={"vast": TrustPolicy.ACCEPT_NEW})
    async with SessionPool(accepting) as pool:
        assert (await pool.run(worker, "echo hi")).stdout == b"hi\n"
    runyard_file = ssh_settings.known_hosts.runyard_file
    assert runyard_file is not None
    assert runyard_file.read_text() == ssh_server.known_hosts_line()
    async with SessionPool(ssh_settings) as strict_pool:  # now known: strict connects
        assert (await strict_pool.run(worker, "echo again")).stdout == b"again\n"
    async with SessionPool(accepting) as pool:  # and it is not recorded twice
        await pool.run(worker, "true")
    assert runyard_file.read_text() == ssh_server.known_hosts_line()


@pytest.mark.parametrize("policy", list(TrustPolicy))
async def test_a_changed_host_key_is_refused_naming_host_and_port(
    ssh_server: LoopbackSSHServer, ssh_settings: SSHClientSettings, policy: TrustPolicy
) -> None:
    trust(ssh_server, ssh_settings)
    settings = dataclasses.replace(ssh_settings, default_trust=policy)
    worker = ssh_worker("w1", ssh_server.port, ssh_server.client_key_path)
    async with SessionPool(settings) as pool:
        await pool.run(worker, "true")
        ssh_server.swap_host_key()
        await ssh_server.restart()
        with pytest.raises(ChangedHostKey) as refused:
            await pool.run(worker, "true")
    message = str(refused.value)
    assert f"127.0.0.1:{ssh_server.port}" in message and "HOST KEY CHANGED" in message
    assert (refused.value.host, refused.value.port) == ("127.0.0.1", ssh_server.port)
    assert ssh_server.commands_started == 1
    assert settings.known_hosts.runyard_file is not None
    assert not settings.known_hosts.runyard_file.exists()  # accept-new did not overwrite it


async def test_a_changed_key_of_another_type_is_refused_too(
    ssh_server: LoopbackSSHServer, pool: SessionPool, ssh_settings: SSHClientSettings
) -> None:
    trust(ssh_server, ssh_settings)
    worker = ssh_worker("w1", ssh_server.port, ssh_server.client_key_path)
    ssh_server.swap_host_key(generate_key("ecdsa-sha2-nistp256"))
    with pytest.raises(ChangedHostKey, match="offers none of them"):
        await pool.run(worker, "true")


async def test_trust_host_writes_a_correct_known_hosts_line(
    ssh_server: LoopbackSSHServer, ssh_settings: SSHClientSettings
) -> None:
    worker = ssh_worker("w1", ssh_server.port, ssh_server.client_key_path)
    trusted = await trust_host(worker, ssh_settings)
    assert trusted.newly_recorded
    assert trusted.line + "\n" == ssh_server.known_hosts_line()
    assert trusted.line.startswith(f"[127.0.0.1]:{ssh_server.port} ssh-ed25519 ")
    assert trusted.path == ssh_settings.known_hosts.runyard_file
    assert trusted.path.read_text() == ssh_server.known_hosts_line()
    assert trusted.key_description.startswith("ssh-ed25519 SHA256:")

    again = await trust_host(worker, ssh_settings)
    assert not again.newly_recorded
    assert trusted.path.read_text() == ssh_server.known_hosts_line()

    async with SessionPool(ssh_settings) as pool:  # strict accepts the trusted host
        assert (await pool.run(worker, "echo ok")).ok

    ssh_server.swap_host_key()
    with pytest.raises(ChangedHostKey):
        await trust_host(worker, ssh_settings)
    replaced = await trust_host(worker, ssh_settings, replace=True)
    assert replaced.newly_recorded
    assert trusted.path.read_text() == ssh_server.known_hosts_line()


async def test_trust_host_reads_hashed_operator_entries(
    ssh_server: LoopbackSSHServer, ssh_settings: SSHClientSettings, client_home: Path
) -> None:
    if shutil.which("ssh-keygen") is None:
        pytest.skip("ssh-keygen is not installed")
    user_file = ssh_settings.known_hosts.user_file
    assert user_file is not None
    trust(ssh_server, ssh_settings)
    hashing = await asyncio.create_subprocess_exec(
        "ssh-keygen", "-H", "-f", str(user_file), stdout=subprocess.DEVNULL
    )
    assert await hashing.wait() == 0
    assert user_file.read_text().startswith("|1|")
    worker = ssh_worker("w1", ssh_server.port, ssh_server.client_key_path)
    async with SessionPool(ssh_settings) as pool:
        assert (await pool.run(worker, "echo hashed")).stdout == b"hashed\n"


# ---------------------------------------------------------------- ssh config, keys, agent


async def test_ssh_config_alias_supplies_host_port_user_and_key(
    ssh_server: LoopbackSSHServer, ssh_settings: SSHClientSettings, tmp_path: Path
) -> None:
    trust(ssh_server, ssh_settings)
    config = tmp_path / "ssh_config"
    config.write_text(
        f"Host box1\n  HostName 127.0.0.1\n  Port {ssh_server.port}\n"
        f"  User {os.environ.get('USER', 'root')}\n  IdentityFile {ssh_server.client_key_path}\n"
        f"Host box2\n  HostName 127.0.0.1\n  Port {unused_port()}\n"
        f"  IdentityFile {ssh_server.client_key_path}\n"
    )
    settings = dataclasses.replace(ssh_settings, ssh_config=(config,))
    alias_only = ssh_worker("a", None, None, host="box1", user="")
    overridden = ssh_worker("b", ssh_server.port, None, host="box2")  # workers.yaml port wins
    async with SessionPool(settings) as pool:
        assert (await pool.run(alias_only, "echo alias")).stdout == b"alias\n"
        assert (await pool.run(overridden, "echo override")).stdout == b"override\n"


async def test_proxyjump_from_ssh_config(tmp_path: Path, ssh_settings: SSHClientSettings) -> None:
    async with (
        LoopbackSSHServer(home=tmp_path / "target") as target,
        LoopbackSSHServer(
            home=tmp_path / "jump", authorized_keys=[target.client_key], allow_forwarding=True
        ) as jump,
    ):
        trust(target, ssh_settings)
        trust(jump, ssh_settings)  # the jump host is checked against ~/.ssh/known_hosts
        config = tmp_path / "ssh_config"
        config.write_text(
            f"Host inner\n  HostName 127.0.0.1\n  Port {target.port}\n"
            f"  ProxyJump 127.0.0.1:{jump.port}\n"
            f"Host *\n  IdentityFile {target.client_key_path}\n"
        )
        settings = dataclasses.replace(ssh_settings, ssh_config=(config,))
        worker = ssh_worker("inner", None, None, host="inner")
        async with SessionPool(settings) as pool:
            result = await pool.run(worker, "echo $HOME")
        assert result.stdout.decode().strip() == str(target.home)
        assert jump.connections_made == 1 and target.connections_made == 1


async def test_key_path_with_tilde_is_expanded(
    ssh_server: LoopbackSSHServer, ssh_settings: SSHClientSettings, client_home: Path
) -> None:
    trust(ssh_server, ssh_settings)
    shutil.copy(ssh_server.client_key_path, client_home / ".ssh" / "runyard_test")
    worker = ssh_worker("w1", ssh_server.port, None)
    assert worker.ssh is not None
    worker.ssh.key = "~/.ssh/runyard_test"
    async with SessionPool(ssh_settings) as pool:
        assert (await pool.run(worker, "echo tilde")).stdout == b"tilde\n"


@pytest.fixture
def ssh_agent(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, client_home: Path
) -> Iterator[Callable[[Path], None]]:
    """A private ssh-agent on SSH_AUTH_SOCK (set after `client_home` cleared it); yields a
    function that adds a key to it."""
    if shutil.which("ssh-agent") is None or shutil.which("ssh-add") is None:
        pytest.skip("ssh-agent is not installed")
    socket_path = tmp_path / "agent.sock"
    agent = subprocess.Popen(["ssh-agent", "-D", "-a", str(socket_path)], stdout=subprocess.PIPE)
    assert agent.stdout is not None
    agent.stdout.readline()  # the agent prints its settings once the socket is bound
    monkeypatch.setenv("SSH_AUTH_SOCK", str(socket_path))

    def add(key: Path) -> None:
        subprocess.run(["ssh-add", "-q", str(key)], check=True, capture_output=True)

    yield add
    agent.terminate()
    agent.wait()


async def test_keys_in_ssh_agent_are_used(
    ssh_server: LoopbackSSHServer,
    ssh_settings: SSHClientSettings,
    ssh_agent: Callable[[Path], None],
) -> None:
    trust(ssh_server, ssh_settings)
    ssh_agent(ssh_server.client_key_path)
    worker = ssh_worker("w1", ssh_server.port, None)  # no key in workers.yaml, none in ~/.ssh
    async with SessionPool(ssh_settings) as pool:
        assert (await pool.run(worker, "echo agent")).stdout == b"agent\n"


async def test_a_missing_key_file_is_a_clear_per_worker_error(
    ssh_settings: SSHClientSettings, tmp_path: Path
) -> None:
    worker = ssh_worker("w1", 22, tmp_path / "no-such-key")
    with pytest.raises(WorkerUnreachable, match="bad SSH settings"):
        build_target(worker, ssh_settings)


# ---------------------------------------------------------------- streaming


async def test_stream_follows_a_growing_file_and_stops_when_cancelled(
    endpoint: Endpoint, pool: SessionPool
) -> None:
    log = endpoint.scratch / "train.log"
    log.write_bytes(b"epoch 1\n")
    pid_file = endpoint.scratch / "tail.pid"
    script = f"echo $$ > {shlex.quote(str(pid_file))}; exec tail -n +1 -F {shlex.quote(str(log))}"
    collector = Collector()
    follower = asyncio.create_task(collector.consume(pool.stream(endpoint.worker, script)))
    await collector.wait_for(b"epoch 1\n")
    for epoch in (2, 3):
        with log.open("ab") as handle:
            handle.write(f"epoch {epoch}\n".encode())
        await collector.wait_for(f"epoch {epoch}\n".encode())
    assert collector.data == b"epoch 1\nepoch 2\nepoch 3\n"

    follower.cancel()
    with pytest.raises(asyncio.CancelledError):
        await follower
    await wait_for_pid_exit(int(pid_file.read_text()))  # the remote tail is gone
    assert (await pool.run(endpoint.worker, "echo after")).stdout == b"after\n"
    assert pool.connections_opened(endpoint.worker) == 1


async def test_stream_raises_when_the_connection_drops(
    ssh_server: LoopbackSSHServer, pool: SessionPool, ssh_settings: SSHClientSettings
) -> None:
    trust(ssh_server, ssh_settings)
    worker = ssh_worker("w1", ssh_server.port, ssh_server.client_key_path)
    collector = Collector()
    follower = asyncio.create_task(collector.consume(pool.stream(worker, "echo up; exec sleep 60")))
    await collector.wait_for(b"up\n")
    await ssh_server.stop()
    with pytest.raises(WorkerUnreachable, match="connection lost while streaming"):
        await follower


async def test_stream_ends_when_the_command_does(endpoint: Endpoint, pool: SessionPool) -> None:
    chunks = [chunk async for chunk in pool.stream(endpoint.worker, "printf 'a\\n'; echo b >&2")]
    assert b"".join(chunks) == b"a\nb\n"


# ---------------------------------------------------------------- OpenSSH-only


@pytest.mark.sshd
async def test_openssh_changed_host_key_is_refused(
    openssh_server: OpenSSHServer, client_key: Path, ssh_settings: SSHClientSettings
) -> None:
    trust(openssh_server, ssh_settings)
    worker = ssh_worker("o1", openssh_server.port, client_key)
    async with SessionPool(ssh_settings) as pool:
        assert (await pool.run(worker, "echo ok")).ok
    # sshd's per-connection processes outlive a restart of the listener, so connect afresh.
    openssh_server.restart(new_host_key=True)
    async with SessionPool(ssh_settings) as pool:
        with pytest.raises(ChangedHostKey, match=f"127.0.0.1:{openssh_server.port}"):
            await pool.run(worker, "true")


@pytest.mark.sshd
async def test_openssh_trust_host_then_strict_connects(
    openssh_server: OpenSSHServer, client_key: Path, ssh_settings: SSHClientSettings
) -> None:
    worker = ssh_worker("o1", openssh_server.port, client_key)
    async with SessionPool(ssh_settings) as pool:
        with pytest.raises(UnknownHostKey):
            await pool.run(worker, "true")
    trusted = await trust_host(worker, ssh_settings)
    assert trusted.line + "\n" == openssh_server.known_hosts_line()
    async with SessionPool(ssh_settings) as pool:
        assert (await pool.run(worker, "echo trusted")).stdout == b"trusted\n"


# A known_hosts file for OpenSSH's own client agrees with ours.
def test_known_hosts_files_default_to_the_operators_file(client_home: Path) -> None:
    files = KnownHostsFiles()
    assert files.user_file == client_home / ".ssh" / "known_hosts"
    assert files.record_file == files.user_file
    workspace = KnownHostsFiles.for_workspace(Path("/ws"))
    assert workspace.record_file == Path("/ws/.runyard/known_hosts")
