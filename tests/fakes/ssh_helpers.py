"""Small helpers tying the test SSH servers to runyard's settings (tests only)."""

from __future__ import annotations

import getpass
from pathlib import Path
from typing import Protocol

from runyard.core.fleet.ssh_options import SSHClientSettings
from runyard.core.models import SSHSettings, Worker


class SSHEndpoint(Protocol):
    """What tests need of a server of either kind."""

    host: str
    port: int

    def known_hosts_line(self) -> str: ...


def trust(server: SSHEndpoint, settings: SSHClientSettings) -> None:
    """Record `server`'s host key in the settings' user known_hosts file (~/.ssh/known_hosts)."""
    path = settings.known_hosts.user_file
    assert path is not None
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        handle.write(server.known_hosts_line())


def ssh_worker(
    name: str,
    port: int | None,
    key: Path | None,
    host: str = "127.0.0.1",
    pool: str = "default",
    user: str | None = None,
) -> Worker:
    """A workers.yaml entry for a server on this machine (the current user by default)."""
    return Worker(
        worker_id=name,
        kind="ssh",
        worker_pool=pool,
        ssh=SSHSettings(
            host=host,
            port=port,
            user=user if user is not None else getpass.getuser(),
            key=str(key) if key else None,
        ),
    )
