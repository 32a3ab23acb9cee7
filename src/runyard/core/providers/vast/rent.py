"""Renting a Vast box and making it a worker: the launch guide's whole flow, one call.

find the offer (still rentable, not blacklisted) -> create the instance -> attach the SSH
key -> wait until it runs and SSH answers -> register it in workers.yaml (instance_id,
pool, price, notes) -> trust its host key per the pool's policy -> optionally: fetch the
code (rsync the workspace, or a shallow git fetch), bootstrap it (tools, venv, credentials
streamed to a mode-600 file), queue a run pinned to it and dispatch it (detached, so it
survives this process).

A box that does not come up in time is left running and named in the error, with the
command that destroys it: runyard never destroys a paid box on its own.
"""

from __future__ import annotations

import asyncio
import shlex
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

from runyard.core.errors import InputError, OperationalError, RunyardError
from runyard.core.fleet.transports import Fleet
from runyard.core.models import WORKER_NAME_PATTERN, Worker
from runyard.core.protocol import sh_path
from runyard.core.providers.base import (
    Compute,
    ComputeWithCreateInstanceSupport,
    ComputeWithSSHKeySupport,
    InstanceRequest,
    InstanceState,
    Offer,
    ProviderInstance,
)
from runyard.core.providers.vast.blacklist import banned_machines, blacklist_path
from runyard.core.providers.vast.registry import (
    Provenance,
    check_not_tracked,
    worker_from_instance,
)
from runyard.core.providers.vast.settings import VastSettings
from runyard.core.runs import RunSpec
from runyard.core.secrets import read_dotenv
from runyard.core.store.workspace_store import WorkspaceStore
from runyard.core.workers import add_worker

Progress = Callable[[str], None]
LABEL_PREFIX = "runyard"


def no_progress(_: str) -> None:
    return None


@dataclass(frozen=True)
class RentRequest:
    """What to rent and how (None: the `vast:` settings' default)."""

    offer_id: int
    name: str | None = None
    image: str | None = None
    disk_gb: float | None = None
    onstart: str | None = None
    bid_dph: float | None = None
    pool: str | None = None
    interruptible: bool = False
    provenance: str = "rented by runyard"


@dataclass(frozen=True)
class LaunchSteps:
    """What to do on the box once it is a worker (the launch guide's steps)."""

    sync: bool = False  # rsync the workspace's code
    git_url: str | None = None  # or fetch this repository (shallow)
    git_ref: str = "HEAD"
    setup: bool = False
    venv: bool = False
    env_file: Path | None = None  # credentials, streamed to ~/.config/runyard/credentials.env
    run: RunSpec | None = None  # queued pinned to the box and dispatched

    @property
    def wanted(self) -> bool:
        """Whether there is anything to do on the box after registering it."""
        return bool(self.sync or self.git_url or self.setup or self.run)

    def describe(self) -> list[str]:
        steps: list[str] = []
        if self.sync:
            steps.append("rsync the workspace's code to the box")
        if self.git_url:
            steps.append(f"git fetch --depth 1 {self.git_url} {self.git_ref} into the workspace")
        if self.setup:
            extra = " + venv" if self.venv else ""
            creds = f" + credentials from {self.env_file}" if self.env_file else ""
            steps.append(f"worker setup (folders, tool check{extra}{creds})")
        if self.run is not None:
            steps.append(f"queue and dispatch: {self.run.command}")
        return steps


@dataclass
class RentPlan:
    """Everything rent will do, computed before anything is rented (`--dry-run` prints it)."""

    offer: Offer
    name: str | None
    pool: str
    request: InstanceRequest
    steps: LaunchSteps
    how: str = "rented by runyard"

    def describe(self) -> list[str]:
        o = self.offer
        ratio = f", DLP/$ {o.dlp_per_dollar:.1f}" if o.dlp_per_dollar else ""
        lines = [
            f"offer {o.id}: {o.num_gpus}x {o.gpu_name} ${o.price_dph:.4f}/h{ratio}, "
            f"machine {o.machine_id}, {o.location or 'location unknown'}",
            f"create: image {self.request.image}, disk {self.request.disk_gb:g} GB, "
            f"label {self.request.label!r}"
            + (f", onstart {self.request.onstart!r}" if self.request.onstart else "")
            + (f", bid ${self.request.bid_dph:.4f}/h" if self.request.bid_dph else ""),
            "wait until it runs and SSH answers",
            f"register worker {self.name or 'vast-<instance id>'} in pool {self.pool} "
            "(instance_id, price, notes) and trust its host key per the pool's policy",
        ]
        return lines + self.steps.describe()


@dataclass
class RentOutcome:
    instance_id: int
    worker: Worker
    offer: Offer
    host_key: str | None
    trusted: bool
    notes: list[str] = field(default_factory=list)
    dispatched_run: str | None = None


def worker_name(requested: str | None, instance_id: int) -> str:
    return requested or f"vast-{instance_id}"


async def find_offer(
    compute: ComputeWithCreateInstanceSupport,
    offer_id: int,
    interruptible: bool,
    storage_gb: float,
) -> Offer:
    """The offer, priced for `storage_gb` of disk, if it is still rentable (one search call);
    `InputError` otherwise."""
    query = {"id": {"eq": offer_id}, "rentable": {"eq": True}, "rented": {"eq": False}}
    offers = await compute.search_offers(
        query, 5, interruptible=interruptible, storage_gb=storage_gb
    )
    for offer in offers:
        if offer.id == offer_id:
            return offer
    raise InputError(f"offer {offer_id} is not available any more (see `runyard vast offers`)")


async def plan_rent(
    store: WorkspaceStore,
    compute: ComputeWithCreateInstanceSupport,
    settings: VastSettings,
    request: RentRequest,
    steps: LaunchSteps,
) -> RentPlan:
    """Check the request against the files and the market; nothing is rented here."""
    if request.name is not None:
        if any(w.worker_id == request.name for w in store.workers()):
            raise InputError(f"a worker named {request.name!r} already exists")
        if not WORKER_NAME_PATTERN.match(request.name):
            raise InputError(f"{request.name!r} is not a valid worker name")
    if steps.env_file is not None:  # its lines are checked before any money is spent
        read_dotenv(steps.env_file.expanduser(), missing_ok=False)
    disk_gb = request.disk_gb if request.disk_gb is not None else settings.disk_gb
    offer = await find_offer(compute, request.offer_id, request.interruptible, disk_gb)
    banned = banned_machines(blacklist_path(store, settings.blacklist_file))
    if offer.machine_id in banned:
        raise InputError(
            f"offer {offer.id} is on machine {offer.machine_id}, which is blacklisted "
            f"(`runyard vast blacklist remove {offer.machine_id}` to allow it)"
        )
    label = f"{LABEL_PREFIX}:{request.name}" if request.name else LABEL_PREFIX
    bid = request.bid_dph
    if bid is None and request.interruptible:
        bid = offer.price_dph
    instance_request = InstanceRequest(
        image=request.image or settings.image,
        disk_gb=disk_gb,
        label=label,
        onstart=request.onstart,
        bid_dph=bid,
    )
    return RentPlan(
        offer,
        request.name,
        request.pool or settings.pool,
        instance_request,
        steps,
        request.provenance,
    )


async def wait_until_running(
    compute: Compute,
    instance_id: int,
    timeout: float,
    poll: float,
    progress: Progress = no_progress,
) -> ProviderInstance:
    """Poll until the instance runs with an SSH endpoint; a clear error on exit or timeout."""
    deadline = time.monotonic() + timeout
    last_status = ""
    while True:
        instance = await compute.get_instance(instance_id)
        if instance is None:
            raise OperationalError(f"instance {instance_id} disappeared while starting")
        if instance.status_text != last_status:
            progress(f"instance {instance_id}: {instance.status_text}")
            last_status = instance.status_text
        if instance.state is InstanceState.RUNNING and instance.ssh is not None:
            return instance
        if instance.state is InstanceState.EXITED:
            raise OperationalError(
                f"instance {instance_id} exited while starting ({instance.status_text}); it may "
                f"still bill storage: `runyard vast destroy {instance_id}`"
            )
        if time.monotonic() + poll > deadline:
            raise OperationalError(
                f"instance {instance_id} did not run with SSH within {timeout:g}s (last status: "
                f"{instance.status_text}); it is STILL BILLING: wait and "
                f"`runyard worker add NAME --vast-instance {instance_id}`, or "
                f"`runyard vast destroy {instance_id}`"
            )
        await asyncio.sleep(poll)


async def wait_for_ssh(host: str, port: int, timeout: float, poll: float = 0.5) -> str:
    """Wait until the endpoint answers with an SSH banner; returns the banner line."""
    deadline = time.monotonic() + timeout
    problem = "no answer"
    while True:
        try:
            async with asyncio.timeout(max(0.1, min(5.0, deadline - time.monotonic()))):
                reader, writer = await asyncio.open_connection(host, port)
                try:
                    line = await reader.readline()
                finally:
                    writer.close()
            if line.startswith(b"SSH-"):
                return line.decode("ascii", "replace").strip()
            problem = f"not an SSH server ({line[:40]!r})"
        except (OSError, TimeoutError) as exc:
            problem = getattr(exc, "strerror", None) or type(exc).__name__
        if time.monotonic() + poll > deadline:
            raise OperationalError(
                f"SSH at {host}:{port} did not answer within {timeout:g}s: {problem}"
            )
        await asyncio.sleep(poll)


def read_public_key(private_key: str) -> tuple[Path, str | None]:
    """The `.pub` beside a private key file, and its text (None when it is missing)."""
    public = Path(f"{Path(private_key).expanduser()}.pub")
    try:
        return public, public.read_text(encoding="utf-8").strip()
    except OSError:
        return public, None


async def _attach_key(compute: Compute, instance_id: int, key: str | None) -> str | None:
    """Attach the configured key's public half; a warning line when that fails."""
    if not key or not isinstance(compute, ComputeWithSSHKeySupport):
        return None
    public, text = read_public_key(key)
    if text is None:
        return f"no {public}: the box trusts only the keys on your Vast account"
    try:
        await compute.attach_ssh_key(instance_id, text)
    except RunyardError as exc:
        return f"could not attach {public}: {exc}"
    return None


async def trust_per_policy(store: WorkspaceStore, worker: Worker) -> tuple[bool, str]:
    """Record the box's host key when its pool trusts new keys; say what to do otherwise."""
    from runyard.core.fleet.ssh_options import SSHClientSettings, TrustPolicy, trust_host

    settings = SSHClientSettings.from_runyard_settings(store.workspace.root, store.settings())
    if settings.trust_for(worker) is not TrustPolicy.ACCEPT_NEW:
        return False, (
            f"host key not trusted (pool {worker.worker_pool} is strict): check it and run "
            f"`runyard worker trust {worker.worker_id}`"
        )
    trusted = await trust_host(worker, settings)
    store.events.append("worker.trusted", worker=worker.worker_id, key=trusted.key_description)
    return True, trusted.key_description


def register_instance(
    store: WorkspaceStore,
    settings: VastSettings,
    name: str,
    instance: ProviderInstance,
    provenance: Provenance,
    *,
    pool: str | None = None,
    key: str | None = None,
) -> Worker:
    """Write a running instance into workers.yaml (`worker.added` in the events log)."""
    check_not_tracked(store.workers(), instance.id)
    worker = worker_from_instance(name, instance, settings, provenance, pool=pool, key=key)
    add_worker(store, worker)
    return worker


async def rent(
    store: WorkspaceStore,
    compute: Compute,
    settings: VastSettings,
    plan: RentPlan,
    progress: Progress = no_progress,
) -> RentOutcome:
    """Carry out a `RentPlan` (see the module docstring)."""
    if not isinstance(compute, ComputeWithCreateInstanceSupport):
        raise InputError(f"{compute.name} cannot create instances")
    instance_id = await compute.create_instance(plan.offer.id, plan.request)
    store.events.append(
        "vast.rented",
        instance_id=instance_id,
        offer_id=plan.offer.id,
        machine_id=plan.offer.machine_id,
        gpu=plan.offer.gpu_name,
        dph=plan.offer.price_dph,
        label=plan.request.label,
    )
    progress(f"rented offer {plan.offer.id} -> instance {instance_id} (billing from now)")
    notes: list[str] = []
    warning = await _attach_key(compute, instance_id, settings.ssh_key)
    if warning:
        notes.append(warning)
    instance = await wait_until_running(
        compute, instance_id, settings.boot_timeout_seconds, settings.poll_seconds, progress
    )
    assert instance.ssh is not None
    banner = await wait_for_ssh(
        instance.ssh.host, instance.ssh.port, settings.boot_timeout_seconds, settings.poll_seconds
    )
    progress(f"SSH answers at {instance.ssh.host}:{instance.ssh.port} ({banner})")
    name = worker_name(plan.name, instance_id)
    worker = register_instance(
        store,
        settings,
        name,
        instance,
        Provenance(plan.how, plan.offer),
        pool=plan.pool,
    )
    progress(f"registered worker {name} (pool {worker.worker_pool}, instance {instance_id})")
    trusted, trust_note = await trust_per_policy(store, worker)
    progress(f"host key {'trusted: ' if trusted else ''}{trust_note}")
    outcome = RentOutcome(instance_id, worker, plan.offer, trust_note if trusted else None, trusted)
    outcome.notes = notes
    if plan.steps.wanted:
        outcome.dispatched_run = await launch(store, worker, plan.steps, progress)
    return outcome


async def launch(
    store: WorkspaceStore, worker: Worker, steps: LaunchSteps, progress: Progress = no_progress
) -> str | None:
    """Code, setup and the first run on a registered worker; returns the dispatched run id."""
    from runyard.core.dispatch import dispatch
    from runyard.core.fleet.rsync import push_workspace
    from runyard.core.runs import add_run
    from runyard.core.setup import setup_worker

    fleet = Fleet(store.workspace.root, store.settings())
    try:
        if steps.sync:
            target = await push_workspace(fleet, worker, store.workspace.root)
            store.events.append("worker.synced", worker=worker.worker_id)
            progress(f"synced the workspace -> {worker.worker_id}:{target}")
        if steps.git_url:
            await fetch_code(fleet, worker, steps.git_url, steps.git_ref)
            progress(f"fetched {steps.git_url} {steps.git_ref} into {worker.workspace}")
        if steps.setup:
            report = await setup_worker(fleet, worker, steps.venv, steps.env_file)
            store.events.append("worker.setup", worker=worker.worker_id, ok=report.ok)
            if not report.ok:
                raise OperationalError(f"setup of {worker.worker_id}: {'; '.join(report.problems)}")
            progress(f"setup done: {', '.join(t for t, v in report.tools.items() if v)}")
        if steps.run is None:
            return None
        run = add_run(store, replace(steps.run, worker=worker.worker_id, pool=worker.worker_pool))
        outcomes = await dispatch(store, fleet, worker.worker_pool)
        mine = [o for o in outcomes if o.run_id == run.id]
        if not mine or not mine[0].ok:
            error = mine[0].error if mine else "no free slot on the new worker"
            raise OperationalError(f"run {run.id} was queued but not started: {error}")
        progress(f"dispatched {run.name} {run.id} -> {worker.worker_id} pid={mine[0].pid}")
        return run.id
    finally:
        await fleet.close()


async def fetch_code(fleet: Fleet, worker: Worker, url: str, ref: str) -> None:
    """A shallow fetch of `ref` into the worker's workspace (works in a non-empty folder)."""
    ws = sh_path(worker.workspace)
    script = (
        f"set -e; mkdir -p {ws}; cd {ws}; git init -q .; "
        f"git fetch -q --depth 1 {shlex.quote(url)} {shlex.quote(ref)}; "
        "git checkout -q -f FETCH_HEAD\n"
    )
    result = await fleet.executor(worker).run(script, timeout=600)
    if not result.ok:
        lines = result.stderr.decode("utf-8", "replace").strip().splitlines()
        raise OperationalError(
            f"git fetch on {worker.worker_id} failed: {lines[-1] if lines else result.exit_status}"
        )


async def add_worker_from_instance(
    store: WorkspaceStore,
    compute: Compute,
    settings: VastSettings,
    name: str,
    instance_id: int,
    *,
    pool: str | None = None,
    key: str | None = None,
) -> Worker:
    """`runyard worker add NAME --vast-instance ID`: host and port from the live instance."""
    instance = await compute.get_instance(instance_id)
    if instance is None:
        raise InputError(f"instance {instance_id} is not on your Vast account")
    return register_instance(
        store,
        settings,
        name,
        instance,
        Provenance("added from the live instance"),
        pool=pool,
        key=key,
    )
