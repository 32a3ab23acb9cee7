"""Messages the controller's workers post to the app with what the core returned."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

from textual.message import Message

from runyard.core.check import RunCheck
from runyard.core.gpu_processes import GpuProcessOwner
from runyard.core.log_follow import LogChunk
from runyard.core.models import Run, Worker
from runyard.core.providers.vast.ledger import CostReport
from runyard.core.providers.vast.offers import RankedOffer
from runyard.core.providers.vast.reconcile import InventoryRow
from runyard.core.providers.vast.watcher import WatcherState
from runyard.core.teardown import TeardownOutcome, TeardownPlan
from runyard.tui.state import AlertLike, Probe

Severity = Literal["information", "warning", "error"]


class WorkersLoaded(Message):
    """workers.yaml changed (or was read for the first time)."""

    def __init__(self, workers: Sequence[Worker]) -> None:
        super().__init__()
        self.workers = list(workers)


class FleetProbed(Message):
    """A telemetry probe of every enabled worker finished."""

    def __init__(self, probes: Sequence[Probe]) -> None:
        super().__init__()
        self.probes = list(probes)


class RunsLoaded(Message):
    """The queue file changed (by the console, a CLI, or a hand edit)."""

    def __init__(self, runs: Sequence[Run]) -> None:
        super().__init__()
        self.runs = list(runs)


class RunsChecked(Message):
    """A check round finished; `changes` are the runs whose state moved."""

    def __init__(self, checks: Sequence[RunCheck]) -> None:
        super().__init__()
        self.changes = [c for c in checks if c.old != c.new]


class AlertsFound(Message):
    """A health patrol tick finished."""

    def __init__(self, alerts: Sequence[AlertLike]) -> None:
        super().__init__()
        self.alerts = list(alerts)


class Notice(Message):
    """Something to tell the operator in a toast (an outcome, or an error)."""

    def __init__(self, text: str, severity: Severity = "information") -> None:
        super().__init__()
        self.text = text
        self.severity: Severity = severity


class LogBatch(Message):
    """New lines of a followed log, one read's worth (coalesced)."""

    def __init__(self, run_id: str, chunk: LogChunk) -> None:
        super().__init__()
        self.run_id = run_id
        self.chunk = chunk


class LogFollowStopped(Message):
    """A follow ended: the run finished, or the log could not be read."""

    def __init__(self, run_id: str, reason: str) -> None:
        super().__init__()
        self.run_id = run_id
        self.reason = reason


class GpuOwnersFound(Message):
    """Which run each GPU process of a worker belongs to."""

    def __init__(self, worker: str, owners: Sequence[GpuProcessOwner]) -> None:
        super().__init__()
        self.worker = worker
        self.owners = list(owners)


class TeardownPlanned(Message):
    """The teardown gate's plan for a worker, ready for the modal."""

    def __init__(self, plan: TeardownPlan) -> None:
        super().__init__()
        self.plan = plan


class TeardownDone(Message):
    """The gate passed and the worker was stopped/disabled."""

    def __init__(self, outcome: TeardownOutcome) -> None:
        super().__init__()
        self.outcome = outcome


class VastLoaded(Message):
    """A Vast refresh finished: instances, ranked offers, spend, or why there is none."""

    def __init__(
        self,
        instances: Sequence[InventoryRow],
        offers: Sequence[RankedOffer],
        cost: CostReport | None,
        problem: str | None = None,
        offers_error: str | None = None,
    ) -> None:
        super().__init__()
        self.instances = list(instances)
        self.offers = list(offers)
        self.cost = cost
        self.problem = problem
        self.offers_error = offers_error


class VastWatcherChanged(Message):
    """The watcher started, polled or stopped (read `state` for what it did)."""

    def __init__(self, state: WatcherState | None) -> None:
        super().__init__()
        self.state = state


class SpendLoaded(Message):
    """Today's spend from the Vast cost ledger (a file read, no API call)."""

    def __init__(self, today: float | None) -> None:
        super().__init__()
        self.today = today
