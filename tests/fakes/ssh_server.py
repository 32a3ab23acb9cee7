"""Test SSH servers: the product's loopback server with a client key of its own, and a
server that never speaks (tests only, not product).

`LoopbackSSHServer` is runyard.sim.ssh_server.SimSSHServer (one implementation) plus a
freshly generated client key written to disk, which it authorizes; `BlackholeServer`
accepts TCP and never sends a byte (a hung box).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import asyncssh

from runyard.sim.ssh_server import (
    LOOPBACK,
    SimSSHServer,
    generate_key,
    kill_group,
    kill_tree,
    unused_port,
    write_private_key,
)

__all__ = [
    "BlackholeServer",
    "LoopbackSSHServer",
    "generate_key",
    "kill_group",
    "kill_tree",
    "unused_port",
    "write_private_key",
]


class LoopbackSSHServer(SimSSHServer):
    """A `SimSSHServer` that also authorizes `client_key`, written to `client_key_path`."""

    def __init__(
        self, *, home: Path, authorized_keys: Sequence[asyncssh.SSHKey] = (), **kwargs: Any
    ) -> None:
        self.client_key = generate_key()
        self.client_key_path = write_private_key(
            self.client_key, Path(home).parent / f".{Path(home).name}-keys" / "id_ed25519"
        )
        super().__init__(home=home, authorized_keys=(self.client_key, *authorized_keys), **kwargs)


class BlackholeServer:
    """Accepts TCP connections on 127.0.0.1 and never sends a byte: a hung SSH box."""

    def __init__(self) -> None:
        self.host = LOOPBACK
        self.port = 0
        self._server: asyncio.Server | None = None
        self._writers: list[asyncio.StreamWriter] = []
        self.connection_event = asyncio.Event()

    async def __aenter__(self) -> BlackholeServer:
        self._server = await asyncio.start_server(self._hold, LOOPBACK, 0)
        self.port = int(self._server.sockets[0].getsockname()[1])
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        assert self._server is not None
        self._server.close()
        for writer in self._writers:
            writer.close()
        await self._server.wait_closed()

    async def _hold(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.append(writer)
        self.connection_event.set()
