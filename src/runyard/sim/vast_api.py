"""A SIMULATED Vast.ai marketplace on 127.0.0.1 that speaks the `vastai` SDK's wire format.

The real SDK points at it with `VastAI(api_key=K, server_url="http://127.0.0.1:P")`: the
same `/api/v0` and `/api/v1` paths and JSON bodies, and `Authorization: Bearer K` checked
on every call (401 otherwise). Offers come from a small catalog; renting one starts a real
loopback SSH server (runyard.sim.ssh_server) for the new instance once it has "loaded", so
runyard dispatches real runs to it. Stop and destroy kill the instance's processes as a
container stop would.

What a test or the demo can do beyond the API (`SimVast` methods, or `POST /_sim/...`):
move an instance to a new SSH port and/or host (a restart: its processes die), make it
vanish (destroyed outside runyard) or exit, add offers, inject failures (an HTTP status or
a delay for the next N calls), and read the log of calls made.

Run it in-process (`async with SimVast(root) as sim`), in a thread of its own
(`ThreadedSimVast`, for synchronous code and CLI tests), or as a process:
`python -m runyard.sim.vast_api --dir DIR [--port P]`, which writes DIR/vast-sim.json
(url, key file, client key) and prints `ready`. `latency` adds a fixed delay to every API
answer, to stand in for a round trip to the real service. Everything it serves is SIMULATED.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import secrets
import signal
import threading
import time
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar
from urllib.parse import parse_qs, urlsplit

import asyncssh

from runyard.sim.ssh_server import LOOPBACK, SimSSHServer, generate_key, kill_tagged, unused_port

T = TypeVar("T")

SIM_LABEL = "SIMULATED Vast.ai"
HOURS_PER_MONTH = 730.0
INFO_FILE = "vast-sim.json"
READY_LINE = "ready"
TOKEN_ENV = "RUNYARD_SIM_VAST_INSTANCE"


# ---------------------------------------------------------------- the catalog


@dataclass
class SimOffer:
    """One rentable machine. Prices in $/hour, storage in $/GB-month, DLPerf as Vast's."""

    id: int
    machine_id: int
    gpu_name: str
    num_gpus: int
    dph_base: float
    dlperf: float
    reliability: float
    geolocation: str
    storage_cost: float = 0.15
    disk_space: float = 200.0
    gpu_ram: int = 24576
    cuda_max_good: float = 12.4
    verified: bool = True
    rented: bool = False

    def storage_dph(self, disk_gb: float) -> float:
        return self.storage_cost * disk_gb / HOURS_PER_MONTH

    def record(self, storage_gb: float, bid: bool) -> dict[str, Any]:
        """The offer as `/api/v0/bundles/` returns it (the fields runyard and the CLI read)."""
        dph_total = self.dph_base + self.storage_dph(storage_gb)
        price = self.min_bid + self.storage_dph(storage_gb) if bid else dph_total
        return {
            "id": self.id,
            "ask_contract_id": self.id,
            "bundle_id": self.id,
            "machine_id": self.machine_id,
            "host_id": 900000 + self.machine_id,
            "num_gpus": self.num_gpus,
            "gpu_name": self.gpu_name,
            "gpu_ram": self.gpu_ram,
            "gpu_total_ram": self.gpu_ram * self.num_gpus,
            "cuda_max_good": self.cuda_max_good,
            "cpu_cores_effective": 8.0 * self.num_gpus,
            "cpu_ram": 32768 * self.num_gpus,
            "disk_space": self.disk_space,
            "dph_base": round(self.dph_base, 6),
            "dph_total": round(dph_total, 6),
            "min_bid": round(self.min_bid, 6),
            "dlperf": self.dlperf,
            "dlperf_per_dphtotal": round(self.dlperf / price, 4) if price > 0 else 0.0,
            "total_flops": self.dlperf * 1.7,
            "reliability": self.reliability,
            "reliability2": self.reliability,
            "geolocation": self.geolocation,
            "storage_cost": self.storage_cost,
            "storage_total_cost": round(self.storage_dph(storage_gb), 6),
            "inet_up": 500.0,
            "inet_down": 800.0,
            "inet_up_cost": 0.0,
            "inet_down_cost": 0.0,
            "verified": self.verified,
            "verification": "verified" if self.verified else "unverified",
            "rentable": not self.rented,
            "rented": self.rented,
            "external": False,
            "hosting_type": 0,
            "is_bid": bid,
            "duration": 30 * 86400.0,
            "direct_port_count": 20,
            "score": self.dlperf / max(dph_total, 1e-9),
        }

    @property
    def min_bid(self) -> float:
        return round(self.dph_base * 0.6, 6)


def default_catalog() -> list[SimOffer]:
    """A fixed, varied market: cheap consumer cards up to an 8x H100 box."""
    rows = [
        ("RTX 3060", 1, 0.055, 10.9, 0.970, "Quebec, CA", 12288),
        ("RTX 3060", 1, 0.066, 11.2, 0.991, "Texas, US", 12288),
        ("RTX A4000", 1, 0.094, 21.7, 0.992, "Washington, US", 16384),
        ("RTX 3070", 1, 0.056, 13.0, 0.950, "Bavaria, DE", 8192),
        ("GTX 1660 S", 1, 0.090, 5.5, 0.960, "Mazovia, PL", 6144),
        ("Tesla T4", 1, 0.110, 8.5, 0.985, "Oregon, US", 15360),
        ("RTX 3090", 1, 0.180, 30.1, 0.993, "Ontario, CA", 24576),
        ("RTX 4090", 1, 0.350, 61.0, 0.995, "California, US", 24576),
        ("RTX 4090", 2, 0.700, 120.5, 0.990, "Nevada, US", 24576),
        ("A100 SXM4", 1, 0.950, 80.2, 0.997, "Virginia, US", 81920),
        ("H100 SXM", 1, 2.200, 190.0, 0.998, "Iceland, IS", 81920),
        ("H100 SXM", 8, 17.20, 1480.0, 0.999, "Texas, US", 81920),
    ]
    return [
        SimOffer(5000000 + i, 10000 + i, gpu, n, dph, dlp, rel, geo, gpu_ram=ram)
        for i, (gpu, n, dph, dlp, rel, geo, ram) in enumerate(rows, start=1)
    ]


# ---------------------------------------------------------------- instances


@dataclass
class SimInstance:
    """One rented box: its contract, state and (while running) its SSH server."""

    id: int
    offer: SimOffer
    image: str
    disk_gb: float
    label: str
    onstart: str | None
    bid: float | None
    created_at: float
    ready_at: float
    home: Path
    token: str
    ssh_host: str = LOOPBACK
    ssh_port: int | None = None
    actual_status: str = "loading"
    intended_status: str = "running"
    status_msg: str = "pulling image"
    keys: list[str] = field(default_factory=list)
    server: SimSSHServer | None = None
    host_key: Any = None

    @property
    def storage_dph(self) -> float:
        return self.offer.storage_dph(self.disk_gb)

    @property
    def dph_total(self) -> float:
        gpu = self.bid if self.bid is not None else self.offer.dph_base
        return gpu + self.storage_dph

    def record(self, now: float) -> dict[str, Any]:
        """The instance as `/api/v1/instances/` and `/api/v0/instances/<id>/` return it."""
        port = self.ssh_port if self.actual_status == "running" else None
        running = self.actual_status == "running"
        return {
            "id": self.id,
            "machine_id": self.offer.machine_id,
            "host_id": 900000 + self.offer.machine_id,
            "actual_status": self.actual_status,
            "intended_status": self.intended_status,
            "cur_state": "running" if self.intended_status == "running" else "stopped",
            "next_state": self.intended_status,
            "status_msg": self.status_msg,
            "label": self.label or None,
            "image_uuid": self.image,
            "image_runtype": "ssh",
            "onstart": self.onstart,
            "num_gpus": self.offer.num_gpus,
            "gpu_name": self.offer.gpu_name,
            "gpu_ram": self.offer.gpu_ram,
            "gpu_util": 0.0 if running else None,
            "gpu_temp": 40.0 if running else None,
            "cuda_max_good": self.offer.cuda_max_good,
            "driver_version": "550.54.15",
            "cpu_cores_effective": 8.0 * self.offer.num_gpus,
            "cpu_ram": 32768 * self.offer.num_gpus,
            "disk_space": self.disk_gb,
            "disk_util": 0.1,
            "dph_base": round(self.bid if self.bid is not None else self.offer.dph_base, 6),
            "dph_total": round(self.dph_total, 6),
            "is_bid": self.bid is not None,
            "min_bid": self.offer.min_bid,
            "storage_cost": self.offer.storage_cost,
            "storage_total_cost": round(self.storage_dph, 6),
            "inet_up": 500.0,
            "inet_down": 800.0,
            "reliability2": self.offer.reliability,
            "geolocation": self.offer.geolocation,
            "ssh_host": self.ssh_host if port else None,
            "ssh_port": port,
            "ssh_idx": "1",
            "public_ipaddr": LOOPBACK if port else None,
            "ports": {"22/tcp": [{"HostIp": "0.0.0.0", "HostPort": str(port)}]} if port else {},
            "direct_port_start": port,
            "direct_port_end": port,
            "local_ipaddrs": LOOPBACK,
            "jupyter_token": None,
            "extra_env": [],
            "start_date": self.created_at,
            "end_date": self.created_at + 30 * 86400.0,
            "uptime_mins": round((now - self.created_at) / 60.0, 2) if running else None,
            "template_id": None,
            "template_hash_id": None,
        }


@dataclass(frozen=True)
class Call:
    """One API request the marketplace answered (or refused)."""

    method: str
    path: str
    status: int


@dataclass
class _Fault:
    status: int | None
    delay: float
    times: int
    path_contains: str


class SimError(Exception):
    """An API error answer: HTTP status and the JSON body Vast sends."""

    def __init__(self, status: int, error: str, msg: str) -> None:
        super().__init__(msg)
        self.status = status
        self.body = {"success": False, "error": error, "msg": msg}


BoxOptions = Callable[[SimInstance], Mapping[str, Any]]


class SimVast:
    """The SIMULATED marketplace: offers, instances with real SSH servers, an HTTP API."""

    def __init__(
        self,
        root: Path,
        *,
        api_key: str | None = None,
        offers: list[SimOffer] | None = None,
        boot_seconds: float = 0.2,
        box_options: BoxOptions | None = None,
        port: int = 0,
        latency: float = 0.0,
    ) -> None:
        self.root = Path(root)
        self.latency = latency  # seconds added to every API answer (a WAN round trip)
        self.api_key = api_key or "sim-" + secrets.token_hex(16)
        self.offers = {o.id: o for o in (offers if offers is not None else default_catalog())}
        self.instances: dict[int, SimInstance] = {}
        self.boot_seconds = boot_seconds
        self.box_options = box_options
        self.port = port
        self.calls: list[Call] = []
        self.account_keys: list[str] = []
        self._faults: list[_Fault] = []
        self._next_instance = 30000001
        self._server: asyncio.Server | None = None
        self._lock = asyncio.Lock()
        self.client_key_path = self.root / "client" / "id_ed25519"

    # ------------------------------------------------------------ lifecycle

    async def __aenter__(self) -> SimVast:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    async def start(self) -> None:
        """Listen on 127.0.0.1; make the account's SSH key (authorized on every rental)."""
        self.account_keys.append(self._account_key())
        self._server = await asyncio.start_server(self._serve, LOOPBACK, self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    def _account_key(self) -> str:
        """The account's SSH key pair (made once): its public half, as Vast stores it."""
        self.root.mkdir(parents=True, exist_ok=True)
        if not self.client_key_path.exists():
            key = generate_key()
            self.client_key_path.parent.mkdir(parents=True, exist_ok=True)
            key.write_private_key(str(self.client_key_path))
            self.client_key_path.chmod(0o600)
            key.write_public_key(f"{self.client_key_path}.pub")
        return Path(f"{self.client_key_path}.pub").read_text().strip()

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        for instance in list(self.instances.values()):
            await self._power_off(instance)

    # ------------------------------------------------------------ test and demo controls

    def add_offer(self, offer: SimOffer) -> SimOffer:
        self.offers[offer.id] = offer
        return offer

    def fail(
        self,
        status: int | None = None,
        *,
        times: int = 1,
        delay: float = 0.0,
        path_contains: str = "",
    ) -> None:
        """The next `times` matching calls answer `status` (or only wait `delay` seconds)."""
        self._faults.append(_Fault(status, delay, times, path_contains))

    def clear_faults(self) -> None:
        self._faults.clear()

    def calls_to(self, method: str, path_contains: str = "") -> list[Call]:
        return [c for c in self.calls if c.method == method and path_contains in c.path]

    def api_calls(self) -> int:
        """Calls to the API proper (not the `/_sim/` controls)."""
        return sum(1 for c in self.calls if c.path.startswith("/api/"))

    async def rent(self, offer_id: int, *, label: str = "", disk_gb: float = 16.0) -> SimInstance:
        """Rent without HTTP (seeding a market for a test or a benchmark)."""
        return await self._create(offer_id, {"image": "sim/image", "disk": disk_gb, "label": label})

    async def wait_running(self, instance_id: int, timeout: float = 10.0) -> SimInstance:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            instance = await self._advanced(instance_id)
            if instance is not None and instance.actual_status == "running":
                return instance
            await asyncio.sleep(0.02)
        raise TimeoutError(f"sim instance {instance_id} did not start")

    async def move(
        self, instance_id: int, *, new_port: bool = True, host: str | None = None
    ) -> SimInstance:
        """Restart the box on a new SSH port and/or host name (its processes die)."""
        instance = self._get(instance_id)
        await self._power_off(instance)
        if host is not None:
            instance.ssh_host = host
        port = unused_port() if new_port else (instance.ssh_port or 0)
        instance.actual_status = "running"
        instance.status_msg = "success, running"
        await self._power_on(instance, port)
        return instance

    async def vanish(self, instance_id: int) -> None:
        """The instance is destroyed outside runyard (the host, the web console)."""
        instance = self._get(instance_id)
        await self._power_off(instance)
        instance.offer.rented = False
        del self.instances[instance_id]

    async def set_exited(self, instance_id: int, message: str = "container exited") -> None:
        instance = self._get(instance_id)
        await self._power_off(instance)
        instance.actual_status = "exited"
        instance.status_msg = message

    # ------------------------------------------------------------ the state machine

    def _get(self, instance_id: int) -> SimInstance:
        instance = self.instances.get(instance_id)
        if instance is None:
            raise SimError(404, "no_such_instance", f"Instance {instance_id} not found.")
        return instance

    async def _advanced(self, instance_id: int) -> SimInstance | None:
        instance = self.instances.get(instance_id)
        if instance is not None:
            await self._advance(instance)
        return instance

    async def _advance(self, instance: SimInstance) -> None:
        """A loading box finishes loading once its boot time has passed."""
        if (
            instance.actual_status == "loading"
            and instance.intended_status == "running"
            and time.time() >= instance.ready_at
        ):
            await self._power_on(instance, instance.ssh_port or 0)
            instance.actual_status = "running"
            instance.status_msg = "success, running"

    async def _power_on(self, instance: SimInstance, port: int) -> None:
        keys = [asyncssh.import_public_key(k) for k in (*self.account_keys, *instance.keys)]
        options = dict(self.box_options(instance)) if self.box_options else {}
        env = {**options.pop("env", {}), TOKEN_ENV: instance.token}
        if instance.host_key is None:
            instance.host_key = generate_key()
        server = SimSSHServer(
            home=instance.home,
            env=env,
            authorized_keys=keys,
            host_key=instance.host_key,
            port=port,
            **options,
        )
        await server.start()
        instance.server = server
        instance.ssh_port = server.port

    async def _power_off(self, instance: SimInstance) -> None:
        """Stop the SSH server and kill every process the box runs, detached runs too."""
        if instance.server is not None:
            await instance.server.stop()
            instance.server = None
        await asyncio.to_thread(kill_tagged_processes, instance.token)

    async def _create(self, offer_id: int, body: Mapping[str, Any]) -> SimInstance:
        offer = self.offers.get(offer_id)
        if offer is None or offer.rented:
            raise SimError(404, "no_such_ask", f"Offer {offer_id} is no longer available.")
        instance_id = self._next_instance
        self._next_instance += 1
        now = time.time()
        disk = float(body.get("disk") or 10.0)
        price = body.get("price")
        instance = SimInstance(
            id=instance_id,
            offer=offer,
            image=str(body.get("image") or ""),
            disk_gb=disk,
            label=str(body.get("label") or ""),
            onstart=body.get("onstart"),
            bid=float(price) if price is not None else None,
            created_at=now,
            ready_at=now + self.boot_seconds,
            home=self.root / "instances" / str(instance_id) / "home",
            token=f"{instance_id}-{secrets.token_hex(6)}",
        )
        offer.rented = True
        self.instances[instance_id] = instance
        return instance

    # ------------------------------------------------------------ HTTP

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            request = await _read_request(reader)
            if request is None:
                return
            method, target, headers, body = request
            status, payload, extra = await self._answer(method, target, headers, body)
            await _write_response(writer, status, payload, extra)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    async def _answer(
        self, method: str, target: str, headers: Mapping[str, str], body: bytes
    ) -> tuple[int, Any, dict[str, str]]:
        parts = urlsplit(target)
        path = parts.path
        query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        if self.latency and path.startswith("/api/"):
            await asyncio.sleep(self.latency)
        fault = self._take_fault(path)
        if fault is not None and fault.delay:
            await asyncio.sleep(fault.delay)
        if fault is not None and fault.status is not None:
            self.calls.append(Call(method, path, fault.status))
            message = {429: "Too many requests", 401: "Invalid API key"}.get(
                fault.status, "Simulated server error"
            )
            return (
                fault.status,
                {"success": False, "error": "sim_fault", "msg": message},
                {"Retry-After": "0"},
            )
        public = path == "/api/v0/gpu_names/unique/"
        if not public and headers.get("authorization") != f"Bearer {self.api_key}":
            self.calls.append(Call(method, path, 401))
            return 401, {"success": False, "error": "invalid_api_key", "msg": "Invalid API key"}, {}
        try:
            data = json.loads(body) if body.strip() else {}
        except ValueError:
            self.calls.append(Call(method, path, 400))
            return 400, {"success": False, "error": "bad_json", "msg": "Body is not JSON"}, {}
        try:
            async with self._lock:
                status, payload = await self._route(method, path, query, data)
        except SimError as exc:
            status, payload = exc.status, exc.body
        self.calls.append(Call(method, path, status))
        return status, payload, {}

    def _take_fault(self, path: str) -> _Fault | None:
        for fault in self._faults:
            if fault.times > 0 and fault.path_contains in path and not path.startswith("/_sim/"):
                fault.times -= 1
                if fault.times == 0:
                    self._faults.remove(fault)
                return fault
        return None

    async def _route(
        self, method: str, path: str, query: Mapping[str, str], data: Any
    ) -> tuple[int, Any]:
        body: Mapping[str, Any] = data if isinstance(data, Mapping) else {}
        now = time.time()
        if method == "POST" and path == "/api/v0/bundles/":
            return 200, {"offers": self._search(body)}
        if method == "GET" and path == "/api/v0/gpu_names/unique/":
            return 200, {"gpu_names": sorted({o.gpu_name for o in self.offers.values()})}
        if method == "GET" and path == "/api/v1/instances/":
            return 200, await self._list(query, now)
        if method in ("GET", "POST") and path == "/api/v0/ssh/":
            if method == "POST":
                self.account_keys.append(str(body.get("ssh_key", "")).strip())
            return 200, [{"id": i, "public_key": k} for i, k in enumerate(self.account_keys, 1)]
        match = re.fullmatch(r"/api/v0/asks/(\d+)/", path)
        if match and method == "PUT":
            instance = await self._create(int(match.group(1)), body)
            return 200, {"success": True, "new_contract": instance.id}
        match = re.fullmatch(r"/api/v0/instances/(\d+)/ssh/", path)
        if match and method == "POST":
            instance = self._get(int(match.group(1)))
            instance.keys.append(str(body.get("ssh_key", "")).strip())
            if instance.server is not None:  # authorize the key on the running box
                await self._power_off(instance)
                await self._power_on(instance, instance.ssh_port or 0)
            return 200, {"success": True}
        match = re.fullmatch(r"/api/v0/instances/(\d+)/", path)
        if match:
            return await self._instance_call(method, int(match.group(1)), body, now)
        match = re.fullmatch(r"/_sim/instances/(\d+)/(move|vanish|exit)", path)
        if match and method == "POST":
            instance_id, action = int(match.group(1)), match.group(2)
            if action == "move":
                moved = await self.move(
                    instance_id, new_port=bool(body.get("new_port", True)), host=body.get("host")
                )
                return 200, moved.record(now)
            if action == "vanish":
                await self.vanish(instance_id)
            else:
                await self.set_exited(instance_id)
            return 200, {"success": True}
        if method == "POST" and path == "/_sim/fail":
            self.fail(
                body.get("status"),
                times=int(body.get("times", 1)),
                delay=float(body.get("delay", 0.0)),
                path_contains=str(body.get("path_contains", "")),
            )
            return 200, {"success": True}
        if method == "GET" and path == "/_sim/calls":
            return 200, {"calls": [c.__dict__ for c in self.calls]}
        raise SimError(404, "not_found", f"{method} {path} is not part of the simulated API")

    async def _instance_call(
        self, method: str, instance_id: int, body: Mapping[str, Any], now: float
    ) -> tuple[int, Any]:
        if method == "GET":
            instance = await self._advanced(instance_id)
            return 200, {"instances": instance.record(now) if instance else None}
        instance = self._get(instance_id)
        if method == "DELETE":
            await self.vanish(instance_id)
            return 200, {"success": True}
        if method == "PUT":
            state = body.get("state")
            if state == "stopped":
                await self._power_off(instance)
                instance.intended_status = "stopped"
                instance.actual_status = "exited"
                instance.status_msg = "stopped by user"
            elif state == "running":
                instance.intended_status = "running"
                if instance.actual_status != "running":
                    instance.actual_status = "loading"
                    instance.status_msg = "starting"
                    instance.ready_at = time.time() + self.boot_seconds
            if "label" in body:
                instance.label = str(body["label"] or "")
            return 200, {"success": True}
        raise SimError(405, "method_not_allowed", f"{method} is not allowed here")

    async def _list(self, query: Mapping[str, str], now: float) -> dict[str, Any]:
        for instance in self.instances.values():
            await self._advance(instance)
        rows = sorted(self.instances.values(), key=lambda i: i.id)
        after = int(query.get("after_token") or 0)
        limit = max(1, min(int(json.loads(query.get("limit", "25"))), 500))
        page = [i for i in rows if i.id > after][:limit]
        more = bool(page) and any(i.id > page[-1].id for i in rows)
        return {
            "instances": [i.record(now) for i in page],
            "next_token": str(page[-1].id) if more else None,
            "total_instances": len(rows),
        }

    def _search(self, body: Mapping[str, Any]) -> list[dict[str, Any]]:
        bid = body.get("type") == "bid"
        storage = float(body.get("allocated_storage") or 5.0)
        records = [o.record(storage, bid) for o in self.offers.values()]
        filters = {k: v for k, v in body.items() if isinstance(v, Mapping)}
        found = [r for r in records if all(_matches(r, k, ops) for k, ops in filters.items())]
        for name, direction in reversed(body.get("order") or []):
            found.sort(key=_field_key(str(name)), reverse=direction == "desc")
        limit = body.get("limit")
        return found[: int(limit)] if limit else found


# ---------------------------------------------------------------- filters


def _field_key(name: str) -> Callable[[Mapping[str, Any]], tuple[int, Any]]:
    """A sort key on one field: numbers first, by value, then the rest as text."""

    def key(record: Mapping[str, Any]) -> tuple[int, Any]:
        value = record.get(name)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return 0, float(value)
        return 1, str(value)

    return key


def _as_number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _equal(have: Any, want: Any) -> bool:
    a, b = _as_number(have), _as_number(want)
    if a is not None and b is not None:
        return a == b
    if isinstance(have, bool) or isinstance(want, bool):
        return str(have).lower() == str(want).lower()
    return str(have) == str(want)


def _matches(record: Mapping[str, Any], name: str, ops: Mapping[str, Any]) -> bool:
    """One filter of the query language (`{"dph_total": {"lte": "0.5"}}`); values arrive
    as the SDK's parser leaves them (strings) or as JSON numbers and booleans."""
    if name not in record:
        return True  # the real API ignores what it does not know; so does the simulation
    have = record[name]
    for op, want in ops.items():
        if op == "eq" and not _equal(have, want):
            return False
        if op == "neq" and _equal(have, want):
            return False
        if op in ("in", "notin"):
            choices = want if isinstance(want, list) else [want]
            inside = any(_equal(have, c) for c in choices)
            if inside != (op == "in"):
                return False
        if op in ("lt", "lte", "gt", "gte"):
            a, b = _as_number(have), _as_number(want)
            if a is None or b is None:
                return False
            ok = {"lt": a < b, "lte": a <= b, "gt": a > b, "gte": a >= b}[op]
            if not ok:
                return False
    return True


# ---------------------------------------------------------------- HTTP plumbing


async def _read_request(
    reader: asyncio.StreamReader,
) -> tuple[str, str, dict[str, str], bytes] | None:
    line = await reader.readline()
    if not line:
        return None
    method, target, _ = line.decode("latin-1").split(" ", 2)
    headers: dict[str, str] = {}
    while True:
        raw = await reader.readline()
        if raw in (b"\r\n", b"\n", b""):
            break
        name, _, value = raw.decode("latin-1").partition(":")
        headers[name.strip().lower()] = value.strip()
    length = int(headers.get("content-length") or 0)
    body = await reader.readexactly(length) if length else b""
    return method.upper(), target, headers, body


_REASONS = {200: "OK", 400: "Bad Request", 401: "Unauthorized", 404: "Not Found",
            405: "Method Not Allowed", 429: "Too Many Requests", 500: "Internal Server Error",
            502: "Bad Gateway", 503: "Service Unavailable", 504: "Gateway Timeout"}  # fmt: skip


async def _write_response(
    writer: asyncio.StreamWriter, status: int, payload: Any, extra: Mapping[str, str]
) -> None:
    body = json.dumps(payload).encode()
    head = [
        f"HTTP/1.1 {status} {_REASONS.get(status, 'Error')}",
        "Content-Type: application/json",
        f"Content-Length: {len(body)}",
        "Connection: close",
        *(f"{k}: {v}" for k, v in extra.items()),
    ]
    writer.write(("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body)
    await writer.drain()


def kill_tagged_processes(token: str) -> int:
    """SIGKILL every process whose environment carries this box's token (Linux /proc)."""
    return kill_tagged(TOKEN_ENV, {token})


# ---------------------------------------------------------------- in a thread of its own


class ThreadedSimVast:
    """A `SimVast` on an event loop in a background thread, for synchronous callers."""

    def __init__(self, root: Path, **options: Any) -> None:
        self._options = options
        self._root = Path(root)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self.sim: SimVast | None = None

    def __enter__(self) -> SimVast:
        self._thread.start()
        self.sim = SimVast(self._root, **self._options)
        self.run(self.sim.start())
        return self.sim

    def __exit__(self, *exc_info: object) -> None:
        if self.sim is not None:
            self.run(self.sim.stop())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 30.0) -> T:
        """Run one of the sim's coroutines on its loop and wait for the result."""
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    def call(self, make: Callable[[SimVast], Awaitable[T]], timeout: float = 30.0) -> T:
        assert self.sim is not None
        sim = self.sim

        async def body() -> T:
            return await make(sim)

        return self.run(body(), timeout)


# ---------------------------------------------------------------- as a process


def write_info(sim: SimVast, directory: Path) -> Path:
    """`vast-sim.json`: where the sim listens, its key file and the account's SSH key."""
    key_file = directory / "vast_api_key"
    key_file.write_text(sim.api_key + "\n")
    key_file.chmod(0o600)
    info = directory / INFO_FILE
    info.write_text(
        json.dumps(
            {
                "url": sim.url,
                "api_key_file": str(key_file),
                "ssh_key": str(sim.client_key_path),
                "pid": os.getpid(),
                "label": SIM_LABEL,
            },
            indent=2,
        )
    )
    return info


async def serve(directory: Path, port: int, boot_seconds: float) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    async with SimVast(directory, port=port, boot_seconds=boot_seconds) as sim:
        write_info(sim, directory)
        print(READY_LINE, sim.url, flush=True)
        await stop.wait()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=f"{SIM_LABEL} marketplace on 127.0.0.1")
    parser.add_argument("--dir", type=Path, required=True, help="state folder (instances' homes)")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--boot-seconds", type=float, default=0.5)
    args = parser.parse_args(argv)
    args.dir.mkdir(parents=True, exist_ok=True)
    asyncio.run(serve(args.dir.resolve(), args.port, args.boot_seconds))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
