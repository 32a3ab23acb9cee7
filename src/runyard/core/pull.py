"""Pull: bring a run's outputs into `results/<id>/` and prove they arrived intact.

The worker lists its files with sha256; after the transfer every file is hashed here and
`manifest.json` records both digests. A pull is verified only when every file matches,
every `--outputs` glob the run declared matched at least one file, and the run's own verify
command, if any, passes on the pulled files — the fact the teardown gate relies on.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import shlex
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from runyard.core.errors import InputError, OperationalError
from runyard.core.fleet.transports import Fleet
from runyard.core.metrics import parse_metrics
from runyard.core.models import PullRecord, Run, Worker
from runyard.core.protocol import (
    OutputListing,
    RemoteFile,
    build_list_outputs,
    output_dir_path,
    parse_list_outputs,
)
from runyard.core.runs import find_run
from runyard.core.store.atomic import atomic_write_text
from runyard.core.store.events import utc_now
from runyard.core.store.workspace_store import WorkspaceStore


@dataclass
class PulledFile:
    relative: str
    size: int
    sha256_worker: str
    sha256_local: str | None

    @property
    def ok(self) -> bool:
        return self.sha256_local == self.sha256_worker


@dataclass
class PullOutcome:
    run: Run
    directory: Path
    files: list[PulledFile] = field(default_factory=list)
    verified: bool = False
    problems: list[str] = field(default_factory=list)


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def safe_relative(relative: str) -> PurePosixPath:
    """A worker-supplied path that cannot escape the results folder."""
    path = PurePosixPath(relative)
    if path.is_absolute() or ".." in path.parts or not path.parts:
        raise OperationalError(f"refusing unsafe output path from the worker: {relative!r}")
    return path


async def fetch_local(files: list[RemoteFile], destination: Path) -> None:
    """The local worker's transfer: plain copies."""

    def copy_all() -> None:
        for remote in files:
            target = destination / safe_relative(remote.relative)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(remote.path, target)

    await asyncio.to_thread(copy_all)


async def fetch(fleet: Fleet, worker: Worker, files: list[RemoteFile], destination: Path) -> None:
    if worker.is_local:
        await fetch_local(files, destination)
        return
    from runyard.core.fleet.rsync import fetch_with_rsync  # lazy: only SSH workers need it

    await fetch_with_rsync(fleet, worker, files, destination)


async def run_verify_command(command: str, directory: Path) -> tuple[int, str]:
    """Run the run's `--verify` command in its pulled folder: (exit status, last output line)."""
    proc = await asyncio.create_subprocess_exec(
        "bash",
        "-c",
        command,
        cwd=directory,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await proc.communicate()
    text = out.decode("utf-8", "replace").strip()
    return proc.returncode or 0, text.splitlines()[-1] if text else ""


def unmatched_glob_problems(
    globs: Sequence[str], listing: OutputListing, workdir: str, worker: str
) -> list[str]:
    """One problem per declared glob that matched no file on the worker."""
    if globs and listing.workdir is None:
        return [
            f"--outputs {shlex.quote(glob)}: the run's workdir {workdir} does not exist on "
            f"{worker}, so nothing could match"
            for glob in globs
        ]
    problems = []
    for index in listing.unmatched:
        shown = f"--outputs {shlex.quote(globs[index])}"
        if globs[index].startswith("/"):
            problems.append(f"{shown} matched no file on {worker}")
        else:
            problems.append(
                f"{shown} matched no file under {listing.workdir} (the run's workdir) on {worker}"
            )
    return problems


async def pull_run(store: WorkspaceStore, fleet: Fleet, ref: str) -> PullOutcome:
    run = find_run(store.runs(), ref)
    if run.run_dir is None or run.worker is None:
        raise InputError(f"run {run.id} is {run.status.value} and has produced nothing to pull")
    worker = store.worker(run.worker)
    workspace = fleet.workspace_path(worker)
    workdir = run.workdir or workspace
    if run.workdir and not run.workdir.startswith(("/", "~")):
        workdir = f"{workspace.rstrip('/')}/{run.workdir}"
    executor = fleet.executor(worker)
    listing = await executor.run(
        build_list_outputs(output_dir_path(workspace, run.name), workdir, run.outputs, run.run_dir),
        timeout=store.settings().ssh.command_timeout * 10,
    )
    listed = parse_list_outputs(listing.stdout)
    remote_files = listed.files
    for remote in remote_files:
        safe_relative(remote.relative)
    destination = store.workspace.result_dir(run.id)
    destination.mkdir(parents=True, exist_ok=True)
    outcome = PullOutcome(run, destination)
    await fetch(fleet, worker, remote_files, destination)

    for remote in remote_files:
        local = destination / safe_relative(remote.relative)
        digest = sha256_file(local) if local.is_file() else None
        pulled = PulledFile(remote.relative, remote.size, remote.sha256, digest)
        outcome.files.append(pulled)
        if digest is None:
            outcome.problems.append(f"{remote.relative}: missing after transfer")
        elif not pulled.ok:
            outcome.problems.append(f"{remote.relative}: sha256 differs from the worker's")
    if not remote_files:
        outcome.problems.append("the worker listed no files for this run")
    if run.is_active:  # what was copied may be half-written: a verified pull is a final one
        outcome.problems.append(
            f"the run is still {run.status.value}: its outputs may change; pull again once it ends"
        )
    outcome.problems += unmatched_glob_problems(run.outputs, listed, workdir, worker.worker_id)

    log_path = destination / "log"
    metrics: dict[str, float] = {}
    if log_path.is_file():
        try:
            metrics = parse_metrics(log_path.read_text("utf-8", "replace"), run.metrics_regex)
        except ValueError:
            metrics = {}
    atomic_write_text(
        destination / "metrics.json", json.dumps(metrics, indent=2, sort_keys=True) + "\n"
    )

    verify: dict[str, Any] | None = None
    if run.verify_command and not outcome.problems:
        status, message = await run_verify_command(run.verify_command, destination)
        verify = {"command": run.verify_command, "passed": status == 0, "output": message}
        if status != 0:
            outcome.problems.append(
                f"verify command failed: `{run.verify_command}` exited {status}"
                + (f": {message}" if message else " with no output")
            )
    outcome.verified = not outcome.problems
    pulled_at = utc_now()
    manifest = {
        "run_id": run.id,
        "name": run.name,
        "worker": run.worker,
        "attempt": run.attempts,
        "run_status": run.status.value,
        "pulled_at": pulled_at,
        "verified": outcome.verified,
        "problems": outcome.problems,
        "verify": verify,
        "files": [
            {
                "path": f.relative,
                "size": f.size,
                "sha256_worker": f.sha256_worker,
                "sha256_local": f.sha256_local,
                "ok": f.ok,
            }
            for f in outcome.files
        ],
    }
    atomic_write_text(destination / "manifest.json", json.dumps(manifest, indent=2) + "\n")

    record = PullRecord(
        at=pulled_at,
        files=len(outcome.files),
        bytes=sum(f.size for f in outcome.files),
        verified=outcome.verified,
        problems=list(outcome.problems),
    )
    with store.queue_transaction() as runs:
        current = find_run(runs, run.id)
        if current.attempts == run.attempts:
            current.pull = record
            if metrics:
                current.metrics.update(metrics)
            outcome.run = current
    store.events.append(
        "run.pulled", run=run.id, verified=outcome.verified, files=len(outcome.files)
    )
    return outcome
