"""The watcher's decision (pure): every threshold, the blacklist and the budget hold."""

from __future__ import annotations

from dataclasses import replace

import pytest

from runyard.core.providers.base import InstanceState, Offer, ProviderInstance
from runyard.core.providers.vast.settings import WatcherSettings
from runyard.core.providers.vast.watcher import decide

T = WatcherSettings(max_dph=0.10, min_dlp_per_dollar=150, gpu_names=[], max_instances=3,
                    budget_dph=0.50, min_reliability=0.9, max_rentals_per_poll=5)  # fmt: skip


def offer(oid: int, gpu: str = "RTX 3060", dph: float = 0.06, dlperf: float = 12.0,
          machine: int | None = None, reliability: float = 0.99) -> Offer:  # fmt: skip
    return Offer(oid, machine or oid, gpu, 1, dph, dlperf, reliability, "US", False)


def live(
    iid: int, state: InstanceState = InstanceState.RUNNING, dph: float = 0.1
) -> ProviderInstance:
    return ProviderInstance(iid, state, state.value, None, dph, 0.02, "RTX 3060", 1, iid, "", None)


def rented(decision: object) -> list[int]:
    return [r.offer.id for r in decision.rent]  # type: ignore[attr-defined]


def reasons(decision: object) -> dict[int, str]:
    return dict(decision.skipped)  # type: ignore[attr-defined]


def test_max_dph_and_min_dlp_per_dollar() -> None:
    d = decide(
        [offer(1, dph=0.2, dlperf=60), offer(2, dph=0.09, dlperf=9), offer(3)],
        [],
        T,
        frozenset(),
        0,
    )
    assert rented(d) == [3]
    assert "over $0.1000/h" in reasons(d)[1]
    assert "DLP/$ 100.0 is under 150" in reasons(d)[2]


def test_gpu_filter_and_reliability() -> None:
    t = replace(T, gpu_names=["RTX A4000"])
    d = decide([offer(1), offer(2, gpu="RTX A4000", dph=0.09, dlperf=20, reliability=0.5),
                offer(3, gpu="RTX A4000", dph=0.09, dlperf=20)], [], t, frozenset(), 0)  # fmt: skip
    assert rented(d) == [3]
    assert "not one of RTX A4000" in reasons(d)[1] and "reliability" in reasons(d)[2]


def test_blacklisted_machines_are_never_rented() -> None:
    d = decide([offer(1, dlperf=20, machine=77), offer(2)], [], T, frozenset({77}), 0)
    assert rented(d) == [2] and "machine 77 is blacklisted" in reasons(d)[1]


def test_max_instances_counts_every_box_on_the_account() -> None:
    boxes = [live(1), live(2, InstanceState.STOPPED)]  # a stopped box still exists (and bills)
    d = decide([offer(1, dlperf=20), offer(2, dlperf=15)], boxes, T, frozenset(), 0)
    assert rented(d) == [1] and "max_instances 3" in reasons(d)[2]
    assert d.live_instances == 2


def test_fleet_budget_includes_stopped_storage_and_new_rentals() -> None:
    t = replace(T, budget_dph=0.25, max_instances=10)
    boxes = [live(1, dph=0.1), live(2, InstanceState.STOPPED)]  # 0.10 + 0.02 storage
    d = decide([offer(1, dph=0.08, dlperf=20), offer(2, dph=0.06), offer(3, dph=0.05, dlperf=8)],
               boxes, t, frozenset(), 0)  # fmt: skip
    assert d.fleet_dph == pytest.approx(0.12)
    assert rented(d) == [1, 3]  # 0.12 + 0.08 + 0.05 = 0.25: within budget
    assert "over budget_dph" in reasons(d)[2]


def test_one_rental_per_machine_and_per_poll_limit() -> None:
    t = replace(T, max_rentals_per_poll=1)
    d = decide([offer(1, dlperf=20, machine=5), offer(2, dlperf=19, machine=5), offer(3)], [], t,
               frozenset(), 0)  # fmt: skip
    assert rented(d) == [1]
    assert "already chosen" in reasons(d)[2] and "max_rentals_per_poll" in reasons(d)[3]
    event = d.to_event()
    assert event["rent"] == [1] and event["skipped_total"] == 2
