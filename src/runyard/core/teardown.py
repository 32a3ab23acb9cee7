"""The teardown gate: may this worker be stopped or destroyed now, and what would it cost?

The Iron Law of the seeds, in code: never stop or destroy a box until every run on it has
finished and its results are pulled to local *and verified*, and the operator approved that
specific action by typing the worker's name. The console's modal and the CLI's
`runyard worker stop|teardown` both go through `plan_teardown` and `authorize`, so neither
front end can skip the rule.

What is checked, per run whose current attempt is on the worker: the run is finished, and
`run.pull` is verified and was taken after the run ended (a pull of a still-running run does
not count). Attempts of a run that the operator retried elsewhere are listed as superseded:
the retry replaced their results on purpose.

Executing a teardown: for platforms with no provider API (local, generic SSH) the action is
to disable the worker in workers.yaml (`enabled: false`) so nothing is dispatched to it,
and to print the profile's manual meter-stop instructions. A provider (Vast) passes its own
`ProviderAction`, which runs only after the gate has passed.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from runyard.core.errors import InputError, OperationalError
from runyard.core.models import FINISHED_STATES, Run, RunStatus, Worker
from runyard.core.profiles import PlatformProfile, TeardownVerb, load_profile, teardown_consequences
from runyard.core.store.workers_file import find_index
from runyard.core.store.workspace_store import WorkspaceStore


class TeardownAction(StrEnum):
    """What the operator asks for: stop the meter reversibly, or destroy the box."""

    STOP = "stop"
    DESTROY = "destroy"


@dataclass(frozen=True)
class RunResults:
    """One run on the worker and whether its results are safe on this machine."""

    run_id: str
    name: str
    status: RunStatus
    attempt: int
    pulled_at: str | None
    files: int
    verified: bool
    problem: str | None  # why the run blocks the teardown; None when its results are safe
    superseded: bool = False  # an earlier attempt; the run was retried elsewhere

    @property
    def safe(self) -> bool:
        return self.problem is None


@dataclass(frozen=True)
class TeardownPlan:
    """Everything the modal and the CLI show before asking for the worker's name."""

    worker: str
    platform: str
    action: TeardownAction
    verb: str | None  # the profile's verb for the action; None when it has none
    reversible: bool
    meter_stop_verb: str
    meter_stop_irreversible: bool
    runs: tuple[RunResults, ...]
    consequences: tuple[str, ...]
    standing_dangers: tuple[str, ...]
    manual_steps: tuple[str, ...]
    price_dph: float | None
    uptime_s: float | None
    blockers: tuple[str, ...]

    @property
    def allowed(self) -> bool:
        return not self.blockers

    @property
    def cost_so_far(self) -> float | None:
        """price_dph x uptime, where both are known (the box's uptime since boot)."""
        if self.price_dph is None or self.uptime_s is None:
            return None
        return self.price_dph * self.uptime_s / 3600.0

    def refusal(self) -> str:
        """One paragraph saying why the gate refuses (empty when it does not)."""
        if self.allowed:
            return ""
        reasons = "; ".join(self.blockers)
        return (
            f"refusing to {self.action.value} worker {self.worker!r}: {reasons}. "
            "Pull and verify every run's results first (`runyard pull ID`)."
        )


@dataclass
class TeardownOutcome:
    """What happened after the gate passed."""

    plan: TeardownPlan
    disabled: bool
    provider_message: str | None = None
    instructions: list[str] = field(default_factory=list)


# A provider's own stop/destroy call (e.g. Vast); it runs only after the gate has passed and
# returns a line for the operator.
ProviderAction = Callable[[Worker, TeardownVerb], Awaitable[str]]


def platform_of(worker: Worker) -> str:
    """The worker's platform profile name: its `platform`, else local or generic-ssh."""
    if worker.platform:
        return worker.platform
    if worker.instance_id is not None:
        return "vast"  # research-os files: an instance_id without a platform is a Vast box
    return "local" if worker.is_local else "generic-ssh"


def audit_run(run: Run, worker: str) -> RunResults:
    """Whether one run's results on `worker` are safe to lose the worker over (pure)."""
    pull = run.pull
    superseded = run.worker != worker
    problem: str | None = None
    if superseded:
        problem = None
    elif run.status not in FINISHED_STATES:
        problem = f"run {run.id} ({run.name}) is {run.status.value}"
    elif pull is None:
        problem = f"run {run.id} ({run.name}) is not pulled"
    elif not pull.verified:
        detail = f": {pull.problems[0]}" if pull.problems else ""
        problem = f"run {run.id} ({run.name}) was pulled but not verified{detail}"
    elif run.ended_at is not None and pull.at < run.ended_at:
        problem = f"run {run.id} ({run.name}) was pulled before it ended; pull it again"
    return RunResults(
        run_id=run.id,
        name=run.name,
        status=run.status,
        attempt=run.attempts,
        pulled_at=pull.at if pull and not superseded else None,
        files=pull.files if pull and not superseded else 0,
        verified=bool(pull and pull.verified) and not superseded,
        problem=problem,
        superseded=superseded,
    )


def runs_on_worker(runs: Sequence[Run], worker: str) -> list[Run]:
    """Runs whose current attempt is on `worker`, or that ever had an attempt there."""
    return [
        run
        for run in runs
        if run.worker == worker or any(h.get("worker") == worker for h in run.history)
    ]


def _manual_steps(profile: PlatformProfile, verb: TeardownVerb | None, worker: Worker) -> list[str]:
    """What the operator must still do by hand on a platform without an API in runyard."""
    if verb is None:
        return [f"{profile.platform}: nothing bills; the worker is only disabled in workers.yaml."]
    where = f" (instance {worker.instance_id})" if worker.instance_id is not None else ""
    return [
        f"runyard has no {profile.platform} API: {verb.verb} the box yourself{where} "
        f"with the provider's {profile.meter_stop_verb} ({verb.note}).",
        f"After that, still billing: {verb.still_bills}.",
    ]


def plan_teardown(
    worker: Worker,
    runs: Sequence[Run],
    profile: PlatformProfile,
    action: TeardownAction,
    uptime_s: float | None = None,
) -> TeardownPlan:
    """The gate's verdict and the consequences of `action` on `worker` (pure)."""
    name = worker.worker_id
    audits = tuple(audit_run(run, name) for run in runs_on_worker(runs, name))
    blockers = [audit.problem for audit in audits if audit.problem is not None]
    verb = profile.verb(action.value)
    if verb is not None:
        consequences = teardown_consequences(profile, verb.verb)
    elif profile.teardown_verbs:
        have = ", ".join(v.verb for v in profile.teardown_verbs)
        consequences = [f"{profile.platform} has no '{action.value}' (it has {have})."]
        blockers.append(f"the {profile.platform} profile has no '{action.value}' verb")
    else:
        consequences = [
            f"{profile.platform}: {profile.summary}",
            "Nothing to stop or destroy here: the worker is disabled so nothing new is dispatched to it.",
        ]
    return TeardownPlan(
        worker=name,
        platform=profile.platform,
        action=action,
        verb=verb.verb if verb else None,
        reversible=verb.reversible if verb else True,
        meter_stop_verb=profile.meter_stop_verb,
        meter_stop_irreversible=profile.meter_stop_irreversible,
        runs=audits,
        consequences=tuple(consequences),
        standing_dangers=tuple(clock.message for clock in profile.standing_clocks()),
        manual_steps=tuple(_manual_steps(profile, verb, worker)),
        price_dph=worker.price_dph,
        uptime_s=uptime_s,
        blockers=tuple(blockers),
    )


def authorize(plan: TeardownPlan, typed_name: str | None) -> None:
    """The gate itself: refuse unless every result is safe and the exact name was typed.

    Raises `OperationalError` while anything is unpulled, unverified or still running (the
    world must change first) and `InputError` when the typed name is not the worker's.
    """
    if not plan.allowed:
        raise OperationalError(plan.refusal())
    if typed_name != plan.worker:
        raise InputError(
            f"type the worker's exact name ({plan.worker!r}) to {plan.action.value} it; "
            f"got {typed_name!r}"
        )


def load_plan(
    store: WorkspaceStore, worker_name: str, action: TeardownAction, uptime_s: float | None = None
) -> TeardownPlan:
    """The plan from the workspace's files: workers.yaml, the queue and the profile."""
    worker = store.worker(worker_name)
    profile = load_profile(store.workspace.profiles_dir, platform_of(worker))
    return plan_teardown(worker, store.runs(), profile, action, uptime_s)


async def execute_teardown(
    store: WorkspaceStore,
    worker_name: str,
    action: TeardownAction,
    typed_name: str | None,
    *,
    uptime_s: float | None = None,
    provider_action: ProviderAction | None = None,
) -> TeardownOutcome:
    """Re-plan from the files, pass the gate, run the provider's action, disable the worker.

    The plan is rebuilt here (not taken from the caller) so a run dispatched or a pull
    invalidated since the modal opened still blocks. The worker is disabled under the
    workspace lock after one more look at the queue.
    """
    plan = load_plan(store, worker_name, action, uptime_s)
    authorize(plan, typed_name)
    worker = store.worker(worker_name)
    profile = load_profile(store.workspace.profiles_dir, platform_of(worker))
    provider_message: str | None = None
    verb = profile.verb(action.value)
    if provider_action is not None and verb is not None:
        provider_message = await provider_action(worker, verb)

    def disable(entries: Any) -> None:
        # Under the lock: no dispatch can slip a run onto the worker between check and edit.
        fresh = plan_teardown(worker, store.runs(), profile, action, uptime_s)
        if not fresh.allowed:
            raise OperationalError(fresh.refusal())
        entries[find_index(entries, worker_name)]["enabled"] = False

    store.edit_workers(disable, "worker.teardown", worker=worker_name, action=action.value)
    instructions = [] if provider_action is not None else list(plan.manual_steps)
    return TeardownOutcome(
        plan=plan, disabled=True, provider_message=provider_message, instructions=instructions
    )
