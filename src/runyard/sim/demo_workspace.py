"""The demo's workspace, staged on the SIMULATED fleet: one place for `runyard demo` and the
screenshots (`python -m runyard.tui.screenshots`), so both show the same fleet and runs.

`prepare_demo_workspace` makes (or reuses) the workspace and copies the demo competition
into it; once a `SimulatedFleet` serves it, `stage_demo` pushes the demo code to every
served worker over its SSH connection, queues the demo runs (a learning-rate sweep spread
over the fleet's pools and one run that fails) and dispatches them, through the same core
calls as the CLI verbs.
"""

from __future__ import annotations

import asyncio
import io
import shutil
import tarfile
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from runyard.core.errors import OperationalError, RunyardError
from runyard.core.workspace import Workspace, init_workspace

if TYPE_CHECKING:
    from runyard.core.dispatch import DispatchOutcome
    from runyard.core.fleet.transports import Fleet
    from runyard.core.models import Run, Worker
    from runyard.core.store.workspace_store import WorkspaceStore

REPO_ROOT = Path(__file__).resolve().parents[3]
DEMO_COMPETITION = REPO_ROOT / "competitions" / "demo"
COPY_IGNORE = ("submissions", "outputs", "__pycache__", "data")
LABEL = "SIMULATED"
# The runs the console opens on: long enough to watch them train, short enough to end.
CONSOLE_EPOCHS = 60
CONSOLE_SLEEP = 0.5


def prepare_demo_workspace(root: Path, *, fresh: bool) -> Workspace:
    """Make (or reuse) the demo workspace and copy the demo competition into it."""
    from runyard.sim.fleet import running_fleet

    serving = running_fleet(root) if root.exists() else None
    if serving is not None:
        raise OperationalError(
            f"a {LABEL} fleet (pid {serving.pid}) already serves {root}; stop it or use --dir"
        )
    if fresh and root.exists():
        shutil.rmtree(root)
    workspace, _ = init_workspace(root)
    target = workspace.competitions_dir / "demo"
    if not target.exists() and DEMO_COMPETITION.is_dir():
        shutil.copytree(DEMO_COMPETITION, target, ignore=shutil.ignore_patterns(*COPY_IGNORE))
    return workspace


@dataclass(frozen=True)
class StagedDemo:
    """What `stage_demo` did: where the code went, what it queued, what it launched."""

    workers: list[Worker]  # the served workers the code was pushed to
    push_failures: dict[str, str]  # worker -> why the push failed
    runs: list[Run]
    launched: list[DispatchOutcome]


async def stage_demo(
    workspace: Workspace,
    served: Collection[str],
    *,
    epochs: int = CONSOLE_EPOCHS,
    sleep: float = CONSOLE_SLEEP,
) -> StagedDemo:
    """Push the demo code to the `served` workers, queue the demo runs, dispatch them."""
    from runyard.core.dispatch import dispatch
    from runyard.core.fleet.transports import Fleet
    from runyard.core.store.workspace_store import WorkspaceStore

    store = WorkspaceStore(workspace)
    workers = [w for w in store.workers() if w.worker_id in served]
    fleet = Fleet(workspace.root, store.settings())
    try:
        failures = await push_demo_code(fleet, workers, workspace.root)
        runs = queue_demo_runs(store, workers, epochs=epochs, sleep=sleep)
        launched = await dispatch(store, fleet)
    finally:
        await fleet.close()
    return StagedDemo(workers, failures, runs, launched)


def _demo_tarball(source: Path) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        tar.add(
            source,
            arcname="competitions/demo",
            filter=lambda info: None if Path(info.name).name in COPY_IGNORE else info,
        )
    return buffer.getvalue()


async def push_demo_code(fleet: Fleet, workers: Sequence[Worker], root: Path) -> dict[str, str]:
    """Unpack the demo competition into each worker's workspace; failures by worker."""
    from runyard.core.protocol import sh_path

    payload = _demo_tarball(root / "competitions" / "demo")

    async def push(worker: Worker) -> str | None:
        target = sh_path(fleet.workspace_path(worker))
        script = f"mkdir -p {target} && tar -xzf - -C {target}"
        try:
            result = await fleet.executor(worker).run(script, payload)
        except RunyardError as exc:
            return str(exc)
        return None if result.ok else result.stderr.decode(errors="replace").strip()

    outcomes = await asyncio.gather(*(push(w) for w in workers))
    return {w.worker_id: error for w, error in zip(workers, outcomes, strict=True) if error}


def queue_demo_runs(
    store: WorkspaceStore, workers: Sequence[Worker], *, epochs: int, sleep: float
) -> list[Run]:
    """A learning-rate sweep spread over the fleet's pools, and one run that fails."""
    from runyard.core.runs import RunSpec, add_run

    pools = sorted({w.worker_pool for w in workers})
    batch = sum(1 for run in store.runs() if run.project == "demo")
    suffix = f"-{batch // 4 + 1}" if batch else ""
    train = f"python3 competitions/demo/train.py --epochs {epochs} --sleep {sleep}"
    specs = [
        RunSpec(
            command=f"{train} --lr {lr} && python3 competitions/demo/predict.py",
            name=f"sweep-lr{lr}{suffix}",
            project="demo",
            pool=pools[i % len(pools)],
            priority=5 - i,
        )
        for i, lr in enumerate(("0.003", "0.01", "0.03"))
    ]
    specs.append(
        RunSpec(
            command=f"{train} --fail-at-epoch 3",
            name=f"fails-at-3{suffix}",
            project="demo",
            pool=pools[-1],
        )
    )
    return [add_run(store, spec) for spec in specs]
