"""`ConsoleController`: runs `ConsoleServices` calls in Textual workers and posts the results.

Screens never touch files or workers: they call a method here, which starts a worker (one
exclusive group per kind of work, so a slow worker never stacks up refreshes) and posts a
message with what the core returned. Every failure becomes a `Notice`, so a worker that is
down or a queue edited badly by hand shows as a toast, and the console keeps running; it is
also kept in `errors` (the header counts the unseen ones, `E` lists them). An exception that
is not a `RunyardError` is a bug: its traceback goes to `.runyard/console.log` (bounded).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
import traceback
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any

from textual.worker import Worker as TextualWorker

from runyard.core.attach import run_interactive
from runyard.core.dispatch import DispatchReport
from runyard.core.errors import RunyardError
from runyard.core.models import Run, Worker
from runyard.core.providers.vast.offers import OfferFilters, RankedOffer, ReferenceJob
from runyard.core.providers.vast.watcher import VastWatcher
from runyard.core.runs import RunSpec
from runyard.core.store.journal import JOURNAL_NAME, append_journal
from runyard.core.teardown import TeardownAction
from runyard.tui.messages import (
    AlertsFound,
    FleetProbed,
    GpuOwnersFound,
    LogBatch,
    LogFollowStopped,
    Notice,
    RunsChecked,
    RunsLoaded,
    SpendLoaded,
    TeardownDone,
    TeardownPlanned,
    VastLoaded,
    VastWatcherChanged,
    WorkersLoaded,
)
from runyard.tui.services import ConsoleServices
from runyard.tui.state import ConsoleError

if TYPE_CHECKING:
    from textual.app import App

# How often a followed log is read: each read returns everything new (bounded), so a run
# printing 10,000 lines a second costs four messages a second, not 10,000.
LOG_POLL_SECONDS = 0.25
ERRORS_KEPT = 200  # the newest failures the errors list shows


class ConsoleController:
    """The console's actions and refresh loops, as Textual workers over `ConsoleServices`."""

    def __init__(
        self,
        app: App[Any],
        services: ConsoleServices,
        *,
        clock: Callable[[], float] = time.time,
        redact: Callable[[str], str] = lambda text: text,
    ) -> None:
        self.app = app
        self.services = services
        self.clock = clock
        self.redact = redact  # scrubs secrets from what goes to the journal
        self.workers: list[Worker] = []
        self.auto_dispatch = False
        self.errors: list[ConsoleError] = []  # the newest ERRORS_KEPT failures, newest last
        self.errors_unseen = 0  # noticed since the operator last opened the list
        self.journal_path = services.workspace.state_dir / JOURNAL_NAME
        self.followed: list[str] = []  # run ids with a follower started here, in order
        self.vast_watch_wanted = False  # the operator's last watcher toggle
        self._last_reconcile_problem: str | None = None
        self.log_poll_seconds = LOG_POLL_SECONDS
        self.vast_watcher: VastWatcher | None = None
        self._vast_stop: asyncio.Event | None = None
        self._vast_args: tuple[str, ReferenceJob | None, int] = ("", None, 10)

    # ------------------------------------------------------------ plumbing

    def _post(self, message: Any) -> None:
        self.app.post_message(message)

    def fail(self, text: str) -> None:
        """A failure the operator must see: a toast now, and the errors list until seen."""
        self.errors.append(ConsoleError(self.clock(), text))
        del self.errors[:-ERRORS_KEPT]
        self.errors_unseen += 1
        self._post(Notice(text, "error"))

    def mark_errors_seen(self) -> None:
        self.errors_unseen = 0

    def _unexpected(self, exc: Exception, group: str) -> None:
        """A bug, not an operational failure: the traceback to the journal, a line to the list."""
        text = self._scrub(f"{type(exc).__name__}: {exc}")
        stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.clock()))
        entry = (
            f"{stamp} worker {group!r} raised {type(exc).__name__} (pid {os.getpid()})\n"
            + "".join(traceback.format_exception(exc))
            + "\n"
        )
        try:
            append_journal(self.journal_path, self._scrub(entry))
            where = f"traceback in {self.journal_path}"
        except OSError as err:
            where = f"no traceback: cannot write {self.journal_path}: {err.strerror or err}"
        self.fail(f"{text} ({where})")

    def _scrub(self, text: str) -> str:
        try:
            return self.redact(text)
        except Exception:  # never lose the report itself; keep no text that was not scrubbed
            return "(not shown: redacting secrets from it failed)"

    def _start(
        self,
        body: Callable[[], Awaitable[None]],
        group: str,
        *,
        exclusive: bool = False,
        skip_if_busy: bool = False,
    ) -> TextualWorker[None] | None:
        """Run `body` in a worker of `group`; every exception becomes a notice."""
        if skip_if_busy and self.busy(group):
            return None

        async def guarded() -> None:
            try:
                await body()
            except asyncio.CancelledError:
                raise
            except RunyardError as exc:
                self.fail(str(exc))
            except Exception as exc:  # the console must outlive any one failure
                self._unexpected(exc, group)

        return self.app.run_worker(
            guarded(), name=group, group=group, exclusive=exclusive, exit_on_error=False
        )

    def busy(self, group: str) -> bool:
        return any(w.group == group and w.is_running for w in self.app.workers)

    # ------------------------------------------------------------ refresh loops

    def refresh_fleet(self) -> None:
        """Reload workers.yaml if it changed, then probe every enabled worker."""

        async def tick() -> None:
            workers, changed = await self.services.load_workers()
            if changed:
                self._post(WorkersLoaded(workers))
            self.workers = workers
            self._post(FleetProbed(await self.services.probe(workers)))
            with contextlib.suppress(RunyardError, OSError):
                cost = await self.services.vast_cost()
                self._post(SpendLoaded(cost.today or None))

        self._start(tick, "fleet", skip_if_busy=True)

    def refresh_runs(self) -> None:
        """Advance the pipeline: check active runs, auto-dispatch if on, reload the queue."""

        async def tick() -> None:
            self._post(RunsChecked(await self.services.check()))
            if self.auto_dispatch:
                report = await self.services.dispatch()
                self._report_reconcile(report, quiet_when_unchanged=True)
                launched = [o for o in report.outcomes if o.ok]
                if launched:
                    self._post(Notice(f"auto-dispatched {len(launched)} run(s)"))
            await self._reload_runs()

        self._start(tick, "runs", skip_if_busy=True)

    def patrol(self) -> None:
        """One health patrol tick (its own probes; slower than the fleet view's)."""

        async def tick() -> None:
            self._post(AlertsFound(await self.services.patrol(self.workers)))

        self._start(tick, "patrol", skip_if_busy=True)

    async def _reload_runs(self, force: bool = False) -> None:
        runs = await self.services.load_runs(force=force)
        if runs is not None:
            self._post(RunsLoaded(runs))

    def reload_runs(self) -> None:
        """Show the queue file as it is now (after a change made here)."""

        async def body() -> None:
            await self._reload_runs()

        self._start(body, "reload")

    def load_files(self) -> None:
        """First load of workers and runs, before any probe answers."""

        async def body() -> None:
            self.workers, _ = await self.services.load_workers(force=True)
            self._post(WorkersLoaded(self.workers))
            await self._reload_runs(force=True)
            for warning in self.services.warnings():
                self._post(Notice(warning, "warning"))

        self._start(body, "load")

    # ------------------------------------------------------------ queue actions

    def _action(self, body: Callable[[], Awaitable[str | None]]) -> None:
        """An operator action: its outcome as a notice, then the queue reloaded."""

        async def run() -> None:
            try:
                text = await body()
                if text:
                    self._post(Notice(text))
            finally:
                await self._reload_runs()

        self._start(run, "action")

    def add_run(self, spec: RunSpec) -> None:
        async def body() -> str:
            run = await self.services.add_run(spec)
            return f"queued {run.name} ({run.id})"

        self._action(body)

    def edit_run(self, run_id: str, spec: RunSpec) -> None:
        async def body() -> str:
            run = await self.services.edit_run(run_id, spec)
            return f"edited {run.name} ({run.id})"

        self._action(body)

    def change_priority(self, runs: Sequence[Run], delta: int) -> None:
        async def body() -> str:
            for run in runs:
                await self.services.set_priority(run.id, run.priority + delta)
            return f"priority {'+' if delta > 0 else ''}{delta} on {len(runs)} run(s)"

        self._action(body)

    def cancel(self, run_ids: Sequence[str]) -> None:
        async def body() -> str:
            for run_id in run_ids:
                await self.services.cancel(run_id)
            return f"cancelled {', '.join(run_ids)}"

        self._action(body)

    def retry(self, run_ids: Sequence[str]) -> None:
        async def body() -> str:
            for run_id in run_ids:
                await self.services.retry(run_id)
            return f"requeued {', '.join(run_ids)}"

        self._action(body)

    def dispatch(self, run_ids: Sequence[str] | None = None) -> None:
        async def body() -> str:
            report = await self.services.dispatch(run_ids)
            self._report_reconcile(report)
            outcomes = report.outcomes
            if not outcomes:
                return "nothing to dispatch: no pending run fits a free worker slot"
            failed = [o for o in outcomes if not o.ok]
            for outcome in failed:
                self.fail(f"{outcome.run_name} on {outcome.worker}: {outcome.error}")
            launched = [f"{o.run_name} → {o.worker}" for o in outcomes if o.ok]
            return f"dispatched {', '.join(launched)}" if launched else ""

        self._action(body)

    def _report_reconcile(self, report: DispatchReport, quiet_when_unchanged: bool = False) -> None:
        """Say what the reconcile before a dispatch fixed, or why it could not run (once per
        distinct problem for auto-dispatch, which comes back every few seconds)."""
        if report.reconciled:
            self._post(Notice("Vast drift fixed before dispatch: " + "; ".join(report.reconciled)))
        problem = report.reconcile_problem
        if problem and not (quiet_when_unchanged and problem == self._last_reconcile_problem):
            self.fail(problem)
        self._last_reconcile_problem = problem

    def pull(self, run_ids: Sequence[str]) -> None:
        async def body() -> str:
            lines = []
            for run_id in run_ids:
                outcome = await self.services.pull(run_id)
                verdict = "verified" if outcome.verified else "NOT verified"
                lines.append(f"{outcome.run.name}: {len(outcome.files)} file(s) {verdict}")
                for problem in outcome.problems[:3]:
                    self.fail(f"{outcome.run.name}: {problem}")
            return "; ".join(lines)

        self._action(body)

    def set_auto_dispatch(self, on: bool) -> None:
        self.auto_dispatch = on
        if on:
            self.refresh_runs()

    # ------------------------------------------------------------ workers

    def plan_teardown(self, worker: str, action: TeardownAction, uptime_s: float | None) -> None:
        async def body() -> None:
            self._post(TeardownPlanned(await self.services.teardown_plan(worker, action, uptime_s)))

        self._start(body, "teardown")

    def teardown(
        self, worker: str, action: TeardownAction, typed_name: str, uptime_s: float | None
    ) -> None:
        async def body() -> None:
            outcome = await self.services.teardown(worker, action, typed_name, uptime_s)
            self._post(TeardownDone(outcome))
            self.refresh_fleet()

        self._start(body, "teardown")

    def find_gpu_owners(
        self, worker: Worker, processes: Sequence[Any], runs: Sequence[Run]
    ) -> None:
        async def body() -> None:
            owners = await self.services.gpu_owners(worker, processes, runs)
            self._post(GpuOwnersFound(worker.worker_id, owners))

        self._start(body, "gpu-owners", exclusive=True)

    def attach(self, worker: Worker, run: Run | None) -> int | None:
        """Suspend the console, run a shell (or tmux attach) on the worker, come back."""
        argv = self.services.attach_argv(worker, run)
        try:
            with self.app.suspend():
                return run_interactive(argv, cwd=self.services.workspace.root)
        except Exception as exc:  # SuspendNotSupported (headless, web), OS errors
            self.fail(f"cannot attach here: {exc}")
            return None

    # ------------------------------------------------------------ logs

    def follow(self, run: Run) -> None:
        """Follow a run's log until it ends, posting one `LogBatch` per read."""
        if run.id not in self.followed:
            self.followed.append(run.id)
        group = f"follow:{run.id}"
        try:
            follower = self.services.follower(run)
        except RunyardError as exc:  # no worker yet, or its worker left workers.yaml
            self._post(LogFollowStopped(run.id, str(exc)))
            return

        async def body() -> None:
            try:
                while True:
                    chunk = await follower.read()
                    if chunk.lines or chunk.ended or chunk.skipped_bytes:
                        self._post(LogBatch(run.id, chunk))
                    if chunk.ended:
                        self._post(LogFollowStopped(run.id, "the run has ended"))
                        return
                    await asyncio.sleep(self.log_poll_seconds)
            except RunyardError as exc:
                self._post(LogFollowStopped(run.id, str(exc)))

        self._start(body, group, exclusive=True)

    def unfollow(self, run_id: str) -> None:
        with contextlib.suppress(ValueError):
            self.followed.remove(run_id)
        self.app.workers.cancel_group(self.app, f"follow:{run_id}")

    # ------------------------------------------------------------ Vast

    def vast_refresh(
        self, query: str, reference: ReferenceJob | None = None, top: int = 10
    ) -> None:
        """Instances, the top `top` offers for `query` and spend, as one `VastLoaded`."""
        self._vast_args = (query, reference, top)

        async def body() -> None:
            problem = await self.services.vast_problem()
            if problem is not None:
                self._post(VastLoaded([], [], await self.services.vast_cost(), problem))
                return
            vast = self.services.vast
            instances = await vast.instances()
            offers: list[RankedOffer] = []
            offers_error: str | None = None
            try:
                offers, warnings = await vast.offers(
                    query or None, OfferFilters(), reference=reference
                )
                offers_error = "; ".join(warnings) or None
            except RunyardError as exc:
                offers_error = str(exc)
            cost = await self.services.vast_cost()
            self._post(VastLoaded(instances, offers[:top], cost, None, offers_error))

        self._start(body, "vast", skip_if_busy=True)

    @property
    def vast_watching(self) -> bool:
        """Whether the watcher runs (or is starting) in this console."""
        return self._vast_stop is not None and not self._vast_stop.is_set()

    def vast_watch(self, on: bool) -> None:
        """Start the watcher as a worker, or ask the running one to stop."""
        self.vast_watch_wanted = on
        if not on:
            if self._vast_stop is not None:
                self._vast_stop.set()
            self._post(VastWatcherChanged(self.vast_watcher.state if self.vast_watcher else None))
            return
        if self.vast_watching:
            return
        stop = asyncio.Event()
        self._vast_stop = stop

        async def body() -> None:
            try:
                problem = await self.services.vast_problem()
                if problem is not None:
                    self.fail(problem)
                    return
                watcher = self.services.vast.watcher()
                self.vast_watcher = watcher
                self._post(VastWatcherChanged(watcher.state))
                await watcher.run(stop, lambda state: self._post(VastWatcherChanged(state)))
            finally:
                if self._vast_stop is stop:
                    self._vast_stop = None
                self._post(
                    VastWatcherChanged(self.vast_watcher.state if self.vast_watcher else None)
                )

        self._start(body, "vast-watch")

    def vast_reconcile(self, fix: bool = True) -> None:
        """Reconcile workers.yaml with the account (`vast reconcile --fix`), then refresh."""

        async def body() -> None:
            problem = await self.services.vast_problem()
            if problem is not None:
                self.fail(problem)
                return
            report = await self.services.vast.reconcile(fix)
            findings = len(report.plan.findings)
            applied = "; ".join(report.applied) if report.applied else "nothing to change"
            self._post(Notice(f"reconcile: {findings} finding(s); {applied}"))
            self.refresh_fleet()
            self.vast_refresh(*self._vast_args)

        self._start(body, "vast-reconcile", exclusive=True)
