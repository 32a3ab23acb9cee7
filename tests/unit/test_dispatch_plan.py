"""plan_dispatch: the pure planner that maps pending runs onto free worker slots."""

from __future__ import annotations

from collections import Counter

from runyard.core.dispatch import Assignment, plan_dispatch
from runyard.core.models import Run, RunStatus, Worker


def run(
    run_id: str,
    priority: int = 0,
    created: str = "2026-01-01T00:00:00Z",
    pool: str | None = None,
    pinned: str | None = None,
    status: RunStatus = RunStatus.PENDING,
    worker: str | None = None,
) -> Run:
    return Run(
        id=run_id,
        name=f"name-{run_id}",
        command="true",
        priority=priority,
        created_at=created,
        pool=pool,
        pinned_worker=pinned,
        status=status,
        worker=worker,
    )


def worker(name: str, pool: str = "default", slots: int = 1, enabled: bool = True) -> Worker:
    return Worker(worker_id=name, worker_pool=pool, slots=slots, enabled=enabled)


def pairs(plan: list[Assignment]) -> list[tuple[str, str]]:
    return [(a.run_id, a.worker) for a in plan]


def test_highest_priority_first_with_one_slot() -> None:
    runs = [run("low", 0), run("high", 9), run("mid", 5)]
    assert pairs(plan_dispatch(runs, [worker("w")], "default")) == [("high", "w")]


def test_order_is_priority_then_age() -> None:
    runs = [
        run("young-hi", 5, "2026-01-03T00:00:00Z"),
        run("old-lo", 0, "2026-01-01T00:00:00Z"),
        run("old-hi", 5, "2026-01-02T00:00:00Z"),
        run("neg", -1, "2025-01-01T00:00:00Z"),
    ]
    plan = plan_dispatch(runs, [worker("w", slots=10)], "default")
    assert [a.run_id for a in plan] == ["old-hi", "young-hi", "old-lo", "neg"]


def test_runs_added_in_the_same_second_keep_queue_order() -> None:
    # Timestamps have one-second resolution; two runs queued within the same second must still
    # go oldest (earlier in the queue) first, whatever their random ids say.
    same = "2026-01-01T00:00:00Z"
    runs = [run("rzzzzzz", 0, same), run("rmmmmmm", 0, same), run("raaaaaa", 0, same)]
    assert pairs(plan_dispatch(runs, [worker("w")], "default")) == [("rzzzzzz", "w")]
    plan = plan_dispatch(runs, [worker("w", slots=3)], "default")
    assert [a.run_id for a in plan] == ["rzzzzzz", "rmmmmmm", "raaaaaa"]


def test_a_run_with_a_pool_goes_only_to_that_pool() -> None:
    workers = [worker("cpu"), worker("gpu1", pool="gpu")]
    runs = [run("a", pool="gpu"), run("b", pool="gpu")]
    assert pairs(plan_dispatch(runs, workers, "default")) == [("a", "gpu1")]


def test_a_run_without_a_pool_goes_to_the_default_pool() -> None:
    workers = [worker("gpu1", pool="gpu"), worker("cpu", pool="cpu")]
    runs = [run("a"), run("b")]
    assert pairs(plan_dispatch(runs, workers, "cpu")) == [("a", "cpu")]
    assert pairs(plan_dispatch(runs, workers, "gpu")) == [("a", "gpu1")]
    assert plan_dispatch(runs, workers, "default") == []


def test_a_run_for_a_pool_with_no_worker_waits() -> None:
    assert plan_dispatch([run("a", pool="tpu")], [worker("w")], "default") == []


def test_the_pool_filter_dispatches_only_that_pools_runs() -> None:
    workers = [worker("cpu"), worker("gpu1", pool="gpu")]
    runs = [run("c1", 9), run("g1", 0, pool="gpu")]
    assert pairs(plan_dispatch(runs, workers, "default", pool="gpu")) == [("g1", "gpu1")]
    assert pairs(plan_dispatch(runs, workers, "default", pool="default")) == [("c1", "cpu")]


def test_a_pinned_run_waits_for_its_worker_even_when_others_are_free() -> None:
    workers = [worker("a"), worker("b")]
    busy = run("busy", status=RunStatus.RUNNING, worker="b")
    pinned = run("pinned", 9, pinned="b")
    other = run("other", 0)
    assert pairs(plan_dispatch([busy, pinned, other], workers, "default")) == [("other", "a")]
    # Once b is free, the pinned run goes there.
    busy.status = RunStatus.DONE
    assert pairs(plan_dispatch([busy, pinned, other], workers, "default")) == [
        ("pinned", "b"),
        ("other", "a"),
    ]


def test_a_run_pinned_to_a_disabled_or_unknown_worker_waits() -> None:
    workers = [worker("a"), worker("off", enabled=False)]
    assert plan_dispatch([run("x", pinned="off")], workers, "default") == []
    assert plan_dispatch([run("y", pinned="ghost")], workers, "default") == []


def test_slots_default_to_one_run_per_worker() -> None:
    assert Worker(worker_id="w").slots == 1
    runs = [run(f"r{i}") for i in range(3)]
    assert len(plan_dispatch(runs, [Worker(worker_id="w")], "default")) == 1


def test_a_worker_with_more_slots_takes_more_runs() -> None:
    runs = [run(f"r{i}") for i in range(5)]
    plan = plan_dispatch(runs, [worker("big", slots=3)], "default")
    assert pairs(plan) == [("r0", "big"), ("r1", "big"), ("r2", "big")]


def test_active_runs_take_up_slots() -> None:
    runs = [
        run("d", status=RunStatus.DISPATCHED, worker="w"),
        run("r", status=RunStatus.RUNNING, worker="w"),
        run("finished", status=RunStatus.DONE, worker="w"),
        run("lost", status=RunStatus.LOST, worker="w"),
        run("p1"),
        run("p2"),
    ]
    assert pairs(plan_dispatch(runs, [worker("w", slots=3)], "default")) == [("p1", "w")]


def test_disabled_workers_are_skipped() -> None:
    workers = [worker("off", enabled=False), worker("on")]
    runs = [run("a"), run("b")]
    assert pairs(plan_dispatch(runs, workers, "default")) == [("a", "on")]
    assert plan_dispatch(runs, [worker("off", enabled=False)], "default") == []


def test_skip_workers_are_treated_as_unavailable() -> None:
    workers = [worker("down"), worker("up")]
    plan = plan_dispatch([run("a"), run("b")], workers, "default", skip_workers=frozenset({"down"}))
    assert pairs(plan) == [("a", "up")]


def test_runs_spread_across_workers() -> None:
    workers = [worker("w1", slots=2), worker("w2", slots=2), worker("w3", slots=2)]
    runs = [run(f"r{i}") for i in range(3)]
    plan = plan_dispatch(runs, workers, "default")
    assert sorted(a.worker for a in plan) == ["w1", "w2", "w3"]


def test_the_emptiest_worker_gets_the_next_run() -> None:
    workers = [worker("half", slots=2), worker("empty", slots=2)]
    runs = [run("busy", status=RunStatus.RUNNING, worker="half"), run("a"), run("b")]
    plan = plan_dispatch(runs, workers, "default")
    assert pairs(plan)[0] == ("a", "empty")
    assert Counter(a.worker for a in plan) == {"empty": 1, "half": 1}


def test_no_slot_is_ever_overbooked() -> None:
    workers = [worker("a", slots=2), worker("b", slots=1), worker("c", pool="gpu", slots=4)]
    runs = [run(f"d{i}", priority=i % 3) for i in range(10)]
    runs += [run(f"g{i}", pool="gpu") for i in range(10)]
    runs.append(run("busy", status=RunStatus.RUNNING, worker="c"))
    plan = plan_dispatch(runs, workers, "default")
    assert Counter(a.worker for a in plan) == {"a": 2, "b": 1, "c": 3}
    assert len({a.run_id for a in plan}) == len(plan)


def test_only_pending_runs_are_planned() -> None:
    runs = [run(s.value, status=s) for s in RunStatus]
    plan = plan_dispatch(runs, [worker("w", slots=10)], "default")
    assert [a.run_id for a in plan] == ["pending"]
    assert plan[0].run_name == "name-pending"


def test_a_cancelled_run_whose_kill_is_owed_still_holds_its_slot() -> None:
    owed = run("owed", status=RunStatus.CANCELLED, worker="w")
    owed.kill_pending_since = "2026-01-02T00:00:00Z"  # its process may still be running
    plan = plan_dispatch([owed, run("next")], [worker("w"), worker("v")], "default")
    assert pairs(plan) == [("next", "v")]
    owed.kill_pending_since = None  # confirmed stopped: the slot is free again
    assert pairs(plan_dispatch([owed, run("next")], [worker("w")], "default")) == [("next", "w")]
