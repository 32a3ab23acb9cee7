"""`SessionPool.run_short`: short scripts through one persistent bash per worker.

Byte-exactness and exit codes run against both servers (the in-process asyncssh server
and Debian's sshd where installed); channel counting and restarts use the asyncssh server,
which counts the commands it starts.
"""

from __future__ import annotations

import asyncio
import dataclasses
import shlex
from pathlib import Path

import pytest

from fakes.ssh_helpers import SSHEndpoint, ssh_worker, trust
from fakes.ssh_server import LoopbackSSHServer
from runyard.core.errors import WorkerUnreachable
from runyard.core.fleet.executor import CommandResult, ShellFunction
from runyard.core.fleet.sessions import SessionPool, SSHExecutor
from runyard.core.fleet.ssh_options import SSHClientSettings
from runyard.core.models import Worker


@pytest.fixture(params=["asyncssh", pytest.param("openssh", marks=pytest.mark.sshd)])
def worker(request: pytest.FixtureRequest, ssh_settings: SSHClientSettings) -> Worker:
    """A trusted worker on either kind of server."""
    if request.param == "asyncssh":
        server: SSHEndpoint = request.getfixturevalue("ssh_server")
        key = request.getfixturevalue("ssh_server").client_key_path
    else:
        server = request.getfixturevalue("openssh_server")
        key = request.getfixturevalue("client_key")
    trust(server, ssh_settings)
    return ssh_worker(f"{request.param}-w", server.port, key)


@pytest.fixture
def sim_worker(ssh_server: LoopbackSSHServer, ssh_settings: SSHClientSettings) -> Worker:
    trust(ssh_server, ssh_settings)
    return ssh_worker("w1", ssh_server.port, ssh_server.client_key_path)


# Every byte value, then text that looks like the framing, with and without newlines.
BINARY = bytes(range(256)) * 3
LOOKALIKE = b"\nEND 0 0\nabc END 0 0\n0123456789abcdef END 1 5\n"


def octal(data: bytes) -> str:
    """`data` as a printf format of octal escapes (NUL included)."""
    return "".join(f"\\{byte:03o}" for byte in data)


async def test_stdout_and_stderr_are_byte_exact(worker: Worker, pool: SessionPool) -> None:
    script = f"printf '{octal(BINARY)}'; printf '{octal(LOOKALIKE)}' >&2"
    assert await pool.run_short(worker, script) == CommandResult(0, BINARY, LOOKALIKE)
    assert await pool.run_short(worker, "printf 'no newline'") == CommandResult(
        0, b"no newline", b""
    )
    assert await pool.run_short(worker, "printf '\\n\\n'; printf 'x\\n\\n' >&2") == (
        CommandResult(0, b"\n\n", b"x\n\n")
    )
    assert await pool.run_short(worker, "echo 'h\u00e9 \u2603'") == CommandResult(
        0, "h\u00e9 \u2603\n".encode(), b""
    )
    assert await pool.run_short(worker, "true") == CommandResult(0, b"", b"")


async def test_exit_codes_and_exit_do_not_end_the_shell(worker: Worker, pool: SessionPool) -> None:
    assert await pool.run_short(worker, "echo out; echo err >&2; exit 3") == CommandResult(
        3, b"out\n", b"err\n"
    )
    assert (await pool.run_short(worker, "exit 255")).exit_status == 255
    assert (await pool.run_short(worker, "set -e; false; echo never")).exit_status == 1
    assert await pool.run_short(worker, "exec echo replaced") == CommandResult(
        0, b"replaced\n", b""
    )
    assert (await pool.run_short(worker, "kill -9 $BASHPID")).exit_status == 128 + 9
    assert await pool.run_short(worker, "echo still") == CommandResult(0, b"still\n", b"")


async def test_scripts_get_no_stdin_and_the_login_locale(worker: Worker, pool: SessionPool) -> None:
    assert (await pool.run_short(worker, "cat; echo done")).stdout == b"done\n"
    plain = await pool.run(worker, 'echo "${LC_ALL-unset} ${#_ry_tok}"')
    short = await pool.run_short(worker, 'echo "${LC_ALL-unset} ${#_ry_tok}"')
    assert short.stdout == plain.stdout


async def test_many_requests_share_one_channel(
    sim_worker: Worker, ssh_server: LoopbackSSHServer, pool: SessionPool
) -> None:
    for i in range(30):
        assert (await pool.run_short(sim_worker, f"echo {i}")).stdout == f"{i}\n".encode()
    assert ssh_server.commands_started == 1
    executor = pool.executor(sim_worker)
    assert isinstance(executor, SSHExecutor)
    assert (await executor.run_short("echo via executor")).stdout == b"via executor\n"
    assert ssh_server.commands_started == 1
    assert (await pool.run(sim_worker, "echo own channel")).ok  # run() keeps its channels
    assert ssh_server.commands_started == 2


async def test_concurrent_requests_queue_on_the_one_shell(
    sim_worker: Worker, ssh_server: LoopbackSSHServer, pool: SessionPool
) -> None:
    results = await asyncio.gather(
        *(pool.run_short(sim_worker, f"sleep 0.0{i % 3}; echo {i}") for i in range(12))
    )
    assert [r.stdout for r in results] == [f"{i}\n".encode() for i in range(12)]
    assert ssh_server.commands_started == 1


async def test_a_request_timing_out_in_the_queue_leaves_the_shell_alone(
    sim_worker: Worker, ssh_server: LoopbackSSHServer, pool: SessionPool
) -> None:
    slow = asyncio.create_task(pool.run_short(sim_worker, "sleep 1; echo slow", timeout=10))
    await asyncio.sleep(0.2)
    with pytest.raises(WorkerUnreachable, match="timed out"):
        await pool.run_short(sim_worker, "echo queued", timeout=0.3)
    assert (await slow).stdout == b"slow\n"
    assert ssh_server.commands_started == 1


async def test_a_hanging_script_times_out_and_the_next_request_works(
    worker: Worker, pool: SessionPool
) -> None:
    assert (await pool.run_short(worker, "echo warm")).ok
    with pytest.raises(WorkerUnreachable, match=r"timed out after 0\.5s"):
        await pool.run_short(worker, "sleep 30", timeout=0.5)
    assert await pool.run_short(worker, "echo next") == CommandResult(0, b"next\n", b"")


async def test_the_shell_is_reopened_after_the_server_restarts(
    sim_worker: Worker, ssh_server: LoopbackSSHServer, pool: SessionPool
) -> None:
    assert (await pool.run_short(sim_worker, "echo one")).stdout == b"one\n"
    await ssh_server.restart()
    assert (await pool.run_short(sim_worker, "echo two")).stdout == b"two\n"
    assert pool.connections_opened(sim_worker) == 2


async def test_a_shell_that_dies_is_reopened_once_then_channels_are_used(
    sim_worker: Worker, ssh_server: LoopbackSSHServer, pool: SessionPool
) -> None:
    assert (await pool.run_short(sim_worker, "echo one")).ok
    # The shell's own pid is $$ inside the subshell: killing it ends the shell mid-request.
    assert (await pool.run_short(sim_worker, "[ -e gone ] || { touch gone; kill -9 $$; }")).ok
    assert ssh_server.commands_started == 2  # reopened once, the request ran again
    assert (await pool.run_short(sim_worker, "kill -9 $$")).exit_status == -9  # via run()
    assert ssh_server.commands_started == 4  # the shell and its replacement died: run()
    assert (await pool.run_short(sim_worker, "echo three")).stdout == b"three\n"
    assert ssh_server.commands_started == 5  # the worker now uses a channel per command


async def test_functions_are_sent_once_per_shell_and_again_to_a_new_one(
    sim_worker: Worker,
    ssh_server: LoopbackSSHServer,
    pool: SessionPool,
    ssh_settings: SSHClientSettings,
    tmp_path: Path,
) -> None:
    sent = tmp_path / "definitions"  # one line each time the definition is evaluated
    greet = ShellFunction(
        "_ry_test_greet",
        f'_ry_test_greet() {{ echo "hi $1"; }}\necho . >> {shlex.quote(str(sent))}\n',
    )

    async def call(line: str, on: SessionPool = pool) -> bytes:
        return (await on.run_short(sim_worker, line, functions=(greet,))).stdout

    assert [await call(f"_ry_test_greet {name}") for name in "abc"] == [
        b"hi a\n",
        b"hi b\n",
        b"hi c\n",
    ]
    assert sent.read_text() == ".\n"
    # A request runs in a subshell: it cannot undo the definition for the next one.
    assert await call("unset -f _ry_test_greet; echo gone") == b"gone\n"
    assert await call("_ry_test_greet d") == b"hi d\n"
    assert ssh_server.commands_started == 1
    await ssh_server.restart()  # a new connection and shell: defined there again
    assert await call("_ry_test_greet e") == b"hi e\n"
    assert sent.read_text() == ".\n.\n"
    # Without a persistent shell the definition travels with every script.
    async with SessionPool(dataclasses.replace(ssh_settings, persistent_shell=False)) as off:
        assert [await call("_ry_test_greet f", off) for _ in range(2)] == [b"hi f\n"] * 2
    assert sent.read_text() == ".\n" * 4


async def test_the_shell_holds_one_channel_and_one_channel_pools_fall_back(
    sim_worker: Worker, ssh_server: LoopbackSSHServer, ssh_settings: SSHClientSettings
) -> None:
    single = dataclasses.replace(ssh_settings, max_channels=1)
    async with SessionPool(single) as pool:
        assert (await pool.run_short(sim_worker, "echo a")).stdout == b"a\n"
        assert (await pool.run(sim_worker, "echo b")).stdout == b"b\n"
        assert ssh_server.commands_started == 2
    off = dataclasses.replace(ssh_settings, persistent_shell=False)
    async with SessionPool(off) as pool:
        assert (await pool.run_short(sim_worker, "echo c")).stdout == b"c\n"
        assert (await pool.run_short(sim_worker, "echo d")).stdout == b"d\n"
        assert ssh_server.commands_started == 4
    two = dataclasses.replace(ssh_settings, max_channels=2)
    async with SessionPool(two) as pool:
        assert (await pool.run_short(sim_worker, "echo e")).ok
        assert (await pool.run(sim_worker, "echo f")).ok  # one channel left besides the shell
        assert (await pool.run_short(sim_worker, "echo g")).ok


async def test_a_login_that_hangs_is_named_and_chatter_before_the_loop_is_dropped(
    tmp_path: Path, ssh_settings: SSHClientSettings, pool: SessionPool
) -> None:
    """A start-up file that never returns (a stale `pyenv rehash` lock) is reported as such,
    not as a slow command; one that prints a banner does not leak it into the first answer."""
    startup = tmp_path / "startup.sh"  # what every non-interactive bash reads ($BASH_ENV)
    hung = tmp_path / "hung"
    startup.write_text(f'[ -e {hung} ] && sleep 30\necho "Welcome to the box"\n')
    async with LoopbackSSHServer(home=tmp_path / "box", env={"BASH_ENV": str(startup)}) as box:
        trust(box, ssh_settings)
        worker = ssh_worker("box", box.port, box.client_key_path)
        assert await pool.run_short(worker, "echo first") == CommandResult(0, b"first\n", b"")
        hung.touch()
        await box.restart()  # a new login: the hung start-up file runs
        with pytest.raises(WorkerUnreachable, match=r"start-up files .*may hang"):
            await pool.run_short(worker, "echo second", timeout=1.5)
        hung.unlink()
        assert await pool.run_short(worker, "echo third") == CommandResult(0, b"third\n", b"")
        with pytest.raises(WorkerUnreachable, match=r"timed out after 0\.5s"):
            await pool.run_short(worker, "sleep 30", timeout=0.5)  # a slow script is not
