"""The simulated fleet's own process: N loopback SSH servers in one event loop (SIMULATED).

Started by `runyard.sim.fleet.SimulatedFleet` as
`python -m runyard.sim.fleet_server --root ROOT --workers N [--watch-stdin]`.

Every box is a `SimSSHServer` with its own sandbox HOME, its simulated nvidia-smi first on
PATH, its boot-id file (`RUNYARD_SIM_BOOT_ID_FILE`, which the run protocol honours) and a
private tmux socket folder. Every process a box starts carries `RUNYARD_SIM_BOX=<fleet>/<box>`
in its environment, so powering a box off (a staged reboot, or the fleet stopping) kills
exactly its processes, detached runs included, and nothing else.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import secrets
import shutil
import signal
import sys
import tempfile
import uuid
from collections.abc import Collection
from dataclasses import asdict
from pathlib import Path
from typing import Any

import asyncssh

from runyard.core.errors import InputError, RunyardError
from runyard.core.fleet.ssh_options import KnownHostsFiles, public_key_text
from runyard.core.store.atomic import atomic_write_text
from runyard.core.store.workspace_store import WorkspaceStore
from runyard.core.workspace import init_workspace
from runyard.sim.catalog import SimWorkerSpec, demo_specs
from runyard.sim.fake_nvidia_smi import (
    FAULT_DRIVER,
    FAULT_NOT_AVAILABLE,
    live_run_pids,
    write_fake_nvidia_smi,
)
from runyard.sim.fleet import (
    ERROR_PREFIX,
    READY_LINE,
    FleetInfo,
    ServedBox,
    SimLayout,
    check_token,
    check_worker_count,
)
from runyard.sim.ssh_server import (
    LOOPBACK,
    PROC,
    SimSSHServer,
    generate_key,
    kill_tagged,
    write_private_key,
)
from runyard.sim.wiring import Endpoint, register_endpoints, registered_ports, trust_endpoints

BOOT_ID_ENV = "RUNYARD_SIM_BOOT_ID_FILE"
MARKER_ENV = "RUNYARD_SIM_BOX"
GPU_FAULTS = (FAULT_NOT_AVAILABLE, FAULT_DRIVER)

log = logging.getLogger("runyard.sim.fleet")


def load_or_create_key(path: Path) -> asyncssh.SSHKey:
    """The private key at `path`, made (0600, with its .pub) when missing or unreadable."""
    with contextlib.suppress(OSError, asyncssh.KeyImportError):
        return asyncssh.read_private_key(str(path))
    key = generate_key()
    write_private_key(key, path)
    return key


# ---------------------------------------------------------------- powering boxes off


def kill_boxes(fleet_id: str, boxes: Collection[SimBox]) -> None:
    """SIGKILL every process the boxes started, detached runs included.

    Processes are found by the tag in their environment (Linux /proc), so a pid reused by
    an unrelated process is never hit. Without /proc, the run groups named by the boxes'
    pid files are killed instead.
    """
    if PROC.is_dir():
        kill_tagged(MARKER_ENV, {f"{fleet_id}/{box.spec.name}" for box in boxes}, f"{fleet_id}/")
        return
    for pid in (pid for box in boxes for pid in live_run_pids(box.workspace)):
        with contextlib.suppress(OSError):
            os.killpg(pid, signal.SIGKILL)  # setsid made each run its group's leader


# ---------------------------------------------------------------- one box


class SimBox:
    """One simulated worker: its SSH server, sandbox, simulated GPUs and boot id."""

    def __init__(
        self,
        spec: SimWorkerSpec,
        layout: SimLayout,
        *,
        client_key: asyncssh.SSHKey,
        fleet_id: str,
        tmux_dir: Path,
        port_hint: int = 0,
    ) -> None:
        name = spec.name
        self.spec = spec
        self.layout = layout
        self.workspace = layout.home(name) / "runyard"
        self.tmux_dir = tmux_dir
        self.boot_id = ""
        self.fault: str | None = None
        self.server = SimSSHServer(
            home=layout.home(name),
            env={
                BOOT_ID_ENV: str(layout.boot_id(name)),
                MARKER_ENV: f"{fleet_id}/{name}",
                "HOSTNAME": name,
                "TMUX_TMPDIR": str(tmux_dir),  # its own tmux server, not the operator's
                "RUNYARD_SIMULATED": "1",
            },
            env_path_prefix=layout.bin_dir(name),
            authorized_keys=[client_key],
            host_key=load_or_create_key(layout.host_key(name)),
            port=port_hint,
        )

    def install(self) -> None:
        """Sandbox folders and the simulated nvidia-smi (none on a CPU-only box)."""
        self.workspace.mkdir(parents=True, exist_ok=True)
        self.tmux_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        bin_dir = self.layout.bin_dir(self.spec.name)
        if self.spec.gpu_count:
            write_fake_nvidia_smi(bin_dir, self.spec.gpus(), self.workspace, fault=self.fault)
        else:
            (bin_dir / "nvidia-smi").unlink(missing_ok=True)

    async def boot(self) -> None:
        """A new boot id, then the SSH server."""
        self.boot_id = str(uuid.uuid4())
        atomic_write_text(self.layout.boot_id(self.spec.name), self.boot_id + "\n")
        await self.start_sshd()

    async def start_sshd(self) -> None:
        """Listen on the port used before; on a free one if that one was taken meanwhile."""
        if self.server.running:
            return
        try:
            await self.server.start()
        except OSError as exc:
            log.info(
                "%s: port %s is taken (%s); taking a free one",
                self.spec.name,
                self.server.port,
                exc,
            )
            self.server.port = 0
            await self.server.start()

    def endpoint(self) -> Endpoint:
        return Endpoint(self.spec, self.server.port, public_key_text(self.server.host_key))

    def served(self) -> ServedBox:
        return ServedBox(
            name=self.spec.name,
            port=self.server.port,
            host_key=public_key_text(self.server.host_key),
            gpus=self.spec.gpu_count,
            sshd=self.server.running,
            boot_id=self.boot_id,
            home=str(self.server.home),
        )


# ---------------------------------------------------------------- the fleet


class FleetServer:
    """Serves the boxes, wires the workspace, answers control requests until told to stop."""

    def __init__(self, root: Path, count: int) -> None:
        check_worker_count(count)
        workspace, _ = init_workspace(root)
        self.store = WorkspaceStore(workspace)
        self.layout = SimLayout(workspace.root)
        self.known_hosts = KnownHostsFiles.for_workspace(workspace.root)
        self.fleet_id = secrets.token_hex(6)
        self.token = secrets.token_urlsafe(24)
        self.specs = demo_specs(count)
        self.boxes: dict[str, SimBox] = {}
        self.stopping = asyncio.Event()
        self._lock = asyncio.Lock()
        self._control: asyncio.Server | None = None
        self._tmux_root = Path(tempfile.mkdtemp(prefix="ry-sim-", dir=_short_tmp()))

    async def serve(self, watch_stdin: bool) -> int:
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            loop.add_signal_handler(signum, self.stopping.set)
        watcher = asyncio.create_task(self._watch_stdin()) if watch_stdin else None
        try:
            await self._start()
            await self.stopping.wait()
            log.info("stopping: powering off %d simulated workers", len(self.boxes))
        finally:
            if watcher is not None:
                watcher.cancel()
            await self._shutdown()
        return 0

    async def _start(self) -> None:
        self.layout.dir.mkdir(parents=True, exist_ok=True)
        client_key = load_or_create_key(self.layout.client_key)
        hints = registered_ports(self.store)
        for index, spec in enumerate(self.specs):
            box = SimBox(
                spec,
                self.layout,
                client_key=client_key,
                fleet_id=self.fleet_id,
                tmux_dir=self._tmux_root / str(index),
                port_hint=hints.get(spec.name, 0),
            )
            box.install()
            self.boxes[spec.name] = box
        await asyncio.gather(*(box.boot() for box in self.boxes.values()))
        self._wire(list(self.boxes.values()), stale=list(hints.values()), all_served=True)
        self._control = await asyncio.start_server(self._handle, LOOPBACK, 0)
        self._write_info()
        sys.stdout.write(READY_LINE + "\n")
        sys.stdout.flush()
        log.info(
            "serving %d SIMULATED workers on %s: %s",
            len(self.boxes),
            LOOPBACK,
            ", ".join(f"{b.spec.name}:{b.server.port}" for b in self.boxes.values()),
        )

    def _wire(self, boxes: list[SimBox], stale: list[int], all_served: bool) -> None:
        endpoints = [box.endpoint() for box in boxes]
        trust_endpoints(self.known_hosts, endpoints, stale)
        register_endpoints(
            self.store, endpoints, str(self.layout.client_key), all_served=all_served
        )

    def _write_info(self) -> None:
        assert self._control is not None
        info = FleetInfo(
            pid=os.getpid(),
            control_port=int(self._control.sockets[0].getsockname()[1]),
            token=self.token,
            workers=tuple(box.served() for box in self.boxes.values()),
        )
        atomic_write_text(self.layout.info_path, json.dumps(info.to_json(), indent=1), mode=0o600)

    async def _watch_stdin(self) -> None:
        """The parent holds our stdin open: its end (the parent died) stops the fleet."""
        reader = asyncio.StreamReader()
        loop = asyncio.get_running_loop()
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
        while await reader.read(4096):
            pass
        log.info("the parent process is gone")
        self.stopping.set()

    async def _shutdown(self) -> None:
        if self._control is not None:
            self._control.close()
        await asyncio.gather(*(box.server.stop() for box in self.boxes.values()))
        kill_boxes(self.fleet_id, self.boxes.values())
        with contextlib.suppress(OSError, RunyardError):
            info = FleetInfo.read(self.layout.root)
            if info is not None and info.pid == os.getpid():
                self.layout.info_path.unlink()
        shutil.rmtree(self._tmux_root, ignore_errors=True)

    # ------------------------------------------------------------ control requests

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        answer: dict[str, Any]
        try:
            request = json.loads(await asyncio.wait_for(reader.readline(), 10))
            if not isinstance(request, dict) or not check_token(self.token, request.get("token")):
                answer = {"ok": False, "error": "bad control token"}
            else:
                async with self._lock:
                    answer = await self._answer(request)
        except InputError as exc:
            answer = {"ok": False, "error": str(exc), "input_error": True}
        except Exception as exc:  # the answer carries it back to the caller
            log.exception("control request failed")
            answer = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
        with contextlib.suppress(OSError):
            writer.write((json.dumps(answer) + "\n").encode("utf-8"))
            await writer.drain()
            writer.close()

    async def _answer(self, request: dict[str, Any]) -> dict[str, Any]:
        op = request.get("op")
        if op == "status":
            return {"ok": True, "workers": [asdict(b.served()) for b in self.boxes.values()]}
        box = self.boxes.get(str(request.get("worker")))
        if box is None:
            raise InputError(f"no simulated worker named {request.get('worker')!r}")
        port = box.server.port
        log.info("control: %s %s", op, box.spec.name)
        if op == "reboot":
            await box.server.stop()
            kill_boxes(self.fleet_id, [box])
            await box.boot()
        elif op == "stop":
            await box.server.stop()
        elif op == "start":
            await box.start_sshd()
        elif op == "gpu_fault":
            await self._set_fault(box, request.get("fault"))
        else:
            raise InputError(f"unknown control op {op!r}")
        if box.server.port != port:
            self._wire([box], stale=[port], all_served=False)
        self._write_info()
        return {"ok": True, "worker": asdict(box.served())}

    async def _set_fault(self, box: SimBox, fault: object) -> None:
        if fault is not None and fault not in GPU_FAULTS:
            raise InputError(f"fault must be one of {', '.join(GPU_FAULTS)} or null")
        if not box.spec.gpu_count:
            raise InputError(f"{box.spec.name} has no GPUs")
        box.fault = None if fault is None else str(fault)
        box.install()


def _short_tmp() -> str | None:
    """/tmp when it exists: tmux socket paths must stay under ~100 bytes."""
    return "/tmp" if os.path.isdir("/tmp") else None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="serve runyard's SIMULATED demo fleet")
    parser.add_argument("--root", required=True, help="the workspace to wire the fleet into")
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument(
        "--watch-stdin", action="store_true", help="stop when stdin ends (the parent died)"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", stream=sys.stderr
    )
    logging.getLogger("asyncssh").setLevel(logging.WARNING)
    try:
        return asyncio.run(FleetServer(Path(args.root), args.workers).serve(args.watch_stdin))
    except RunyardError as exc:
        log.error("%s", exc)
        sys.stdout.write(f"{ERROR_PREFIX}{exc}\n")
        return exc.exit_code


if __name__ == "__main__":
    sys.exit(main())
