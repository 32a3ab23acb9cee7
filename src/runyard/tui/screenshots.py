"""Regenerate `screens/*.svg`: every console view, taken from the real app on the demo fleet.

    uv run python -m runyard.tui.screenshots [--out screens] [--warmup 24]

It builds a fresh demo workspace in a temporary folder (the simulated sandbox boxes with
their fake GPUs, and the demo queue), opens the real console headless with its timers and
auto-dispatch on, lets the runs start and the GPU history fill for `--warmup` seconds,
then visits each view and saves it. Every run it started is cancelled before it exits.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

from textual.pilot import Pilot

from runyard.core.control import cancel_run
from runyard.core.errors import RunyardError
from runyard.core.store.workspace_store import WorkspaceStore
from runyard.tui.app import RunyardApp
from runyard.tui.demo_fleet import SandboxFleet, build_demo_workspace
from runyard.tui.services import ConsoleServices
from runyard.tui.views.fleet import FleetView

SIZE = (160, 44)
LABEL = "demo-workspace"


async def _wait(pilot: Pilot[int], seconds: float, until: Callable[[], bool] | None = None) -> None:
    """Let the real timers run (this is a recording, not a test): `seconds` or `until`."""
    for _ in range(max(1, round(seconds / 0.25))):
        if until is not None and until():
            break
        await asyncio.sleep(0.25)
    await pilot.pause()


async def record(out: Path, warmup: float) -> list[Path]:
    with tempfile.TemporaryDirectory(prefix="runyard-screens-") as tmp:
        workspace = build_demo_workspace(Path(tmp) / LABEL, fresh=True)
        store = WorkspaceStore(workspace)
        services = ConsoleServices(workspace, fleet=SandboxFleet(workspace, store.settings()))
        app = RunyardApp(services, simulated=True, workspace_label=LABEL)
        app.controller.auto_dispatch = True
        saved: list[Path] = []

        def shot(name: str) -> None:
            path = out / f"{name}.svg"
            app.save_screenshot(filename=path.name, path=str(out))
            saved.append(path)
            print(f"saved {path}")

        async def step(keys: tuple[str, ...], settle: float = 1.0) -> None:
            await pilot.press(*keys)
            await _wait(pilot, settle)

        async with app.run_test(size=SIZE) as pilot:
            await _wait(pilot, warmup)
            app.controller.patrol()
            await _wait(pilot, 3.0)
            shot("fleet")
            await step(("2",))
            shot("runs")
            running = [r for r in app.state.runs if r.is_active][:2]
            app.follow_logs(running)
            await _wait(pilot, 6.0)
            shot("logs")
            app.show_gpu_detail("dgx-a100")
            await _wait(pilot, 4.0)
            shot("gpus")
            await step(("5",))
            shot("alerts")
            await step(("1",))
            fleet = app.views["fleet"]
            assert isinstance(fleet, FleetView)
            # The box where the flaky run failed and was never pulled: the gate refuses.
            failed = next((r for r in app.state.runs if r.status.value == "failed"), None)
            fleet.table.move_cursor(failed.worker if failed and failed.worker else "vast-4090-2")
            await step(("t",), 2.0)
            shot("teardown")
            await step(("escape", "2", "a"))
            shot("run-form")
            await step(("escape", "question_mark"))
            shot("help")
            await step(("escape",))
            await _stop_runs(store, services)
        return saved


async def _stop_runs(store: WorkspaceStore, services: ConsoleServices) -> None:
    """Cancel what the recording started: the demo's runs must not outlive it."""
    for run in store.runs():
        if run.is_active or run.status.value == "pending":
            try:
                await cancel_run(store, services.fleet, run.id)
            except RunyardError as exc:
                print(f"could not cancel {run.name}: {exc}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m runyard.tui.screenshots", description=__doc__)
    parser.add_argument("--out", type=Path, default=Path("screens"), help="where the SVGs go")
    parser.add_argument(
        "--warmup", type=float, default=24.0, help="seconds of real time before the first shot"
    )
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    asyncio.run(record(args.out, args.warmup))
    return 0


if __name__ == "__main__":
    sys.exit(main())
