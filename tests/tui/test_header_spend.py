"""The header shows today's spend from the Vast cost ledger when there is any."""

from __future__ import annotations

from runyard.tui.state import Summary
from runyard.tui.widgets.header import header_markup


def summary(spent_today: float | None) -> Summary:
    return Summary(
        workers=2,
        enabled=2,
        reachable=2,
        gpus=3,
        gpus_busy=1,
        runs_by_status={"running": 1},
        burn_dph=2.49,
        alerts=0,
        critical=0,
        spent_today=spent_today,
    )


def test_header_shows_burn_and_todays_spend() -> None:
    text = header_markup("ws", summary(12.345), simulated=False, auto_dispatch=False)
    assert "$2.49/h" in text and "$12.35 today" in text


def test_header_without_ledger_spend_shows_only_the_burn() -> None:
    text = header_markup("ws", summary(None), simulated=False, auto_dispatch=False)
    assert "$2.49/h" in text and "today" not in text
