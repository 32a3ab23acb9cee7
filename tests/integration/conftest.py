"""Shared fixtures for tests against real SSH servers on 127.0.0.1.

`client_home` (used by `ssh_settings` and so by `pool`) gives a test a private client
HOME (no ~/.ssh/config, keys or known_hosts of the machine running the tests leak in) and
no ssh-agent. Servers:

* `ssh_server`: an in-process asyncssh server running real commands in its own sandbox.
* `openssh_server`: Debian's /usr/sbin/sshd, skipped where it is not installed.

Host keys are NOT trusted by default: `fakes.ssh_helpers.trust(server, settings)`
writes a server's line to the settings' user known_hosts file (the private
~/.ssh/known_hosts).
"""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

_TESTS_DIR = Path(__file__).resolve().parents[1]
if str(_TESTS_DIR) not in sys.path:  # pytest adds it for tests/conftest.py; be sure anyway
    sys.path.insert(0, str(_TESTS_DIR))

from fakes.openssh import OpenSSHServer, sshd_missing_reason  # noqa: E402
from fakes.ssh_server import LoopbackSSHServer, generate_key, write_private_key  # noqa: E402
from runyard.core.fleet.sessions import SessionPool  # noqa: E402
from runyard.core.fleet.ssh_options import KnownHostsFiles, SSHClientSettings  # noqa: E402


@pytest.fixture
def client_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private, empty HOME for the SSH client, and no ssh-agent."""
    home = tmp_path / "client-home"
    (home / ".ssh").mkdir(parents=True)
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)
    return home


@pytest.fixture
def ssh_settings(tmp_path: Path, client_home: Path) -> SSHClientSettings:
    """Strict trust, a user known_hosts file, runyard's own file in a workspace, no config."""
    return SSHClientSettings(
        known_hosts=KnownHostsFiles(
            user_file=client_home / ".ssh" / "known_hosts",
            runyard_file=tmp_path / "workspace" / ".runyard" / "known_hosts",
        ),
        ssh_config=(),
        connect_timeout=5.0,
        command_timeout=20.0,
        keepalive_interval=5.0,
    )


@pytest.fixture
async def ssh_server(tmp_path: Path) -> AsyncIterator[LoopbackSSHServer]:
    async with LoopbackSSHServer(home=tmp_path / "w1") as server:
        yield server


@pytest.fixture
async def pool(ssh_settings: SSHClientSettings) -> AsyncIterator[SessionPool]:
    async with SessionPool(ssh_settings) as session_pool:
        yield session_pool


@pytest.fixture
def client_key(tmp_path: Path) -> Path:
    """A client key pair on disk, for servers started as processes."""
    return write_private_key(generate_key(), tmp_path / "client-keys" / "id_ed25519")


@pytest.fixture
def openssh_server(tmp_path: Path, client_key: Path) -> Iterator[OpenSSHServer]:
    reason = sshd_missing_reason()
    if reason is not None:
        pytest.skip(reason)
    public = Path(f"{client_key}.pub").read_text()
    with OpenSSHServer(tmp_path / "sshd", [public]) as server:
        yield server
