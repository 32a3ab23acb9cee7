"""The Vast view: the account's instances, ranked offers, the watcher and the spend.

Every API call goes through the controller (Textual workers); the view only draws the
`VastLoaded` and `VastWatcherChanged` messages the app hands it. Without a key it shows
one line saying so, and nothing fails.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

from rich.markup import escape
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.widgets import Input

from runyard.core.providers.base import InstanceState
from runyard.core.providers.vast.ledger import CostReport
from runyard.core.providers.vast.offers import RankedOffer, ReferenceJob
from runyard.core.providers.vast.reconcile import InventoryRow
from runyard.core.providers.vast.watcher import WatcherState
from runyard.tui import format as fmt
from runyard.tui.format import cell
from runyard.tui.state import ConsoleState
from runyard.tui.views.base import ConsoleView
from runyard.tui.widgets.fast_table import Column, FastTable, Row
from runyard.tui.widgets.text_line import TextLine

TOP_OFFERS = 10

INSTANCE_COLUMNS = (
    Column("id", "INSTANCE", 10, "right"),
    Column("gpu", "GPU", 16),
    Column("status", "STATUS", 10),
    Column("dph", "$/H", 8, "right"),
    Column("ssh", "SSH", 24),
    Column("worker", "WORKER"),
)

OFFER_COLUMNS = (
    Column("rank", "#", 3, "right"),
    Column("id", "OFFER", 9, "right"),
    Column("gpu", "GPU", 18),
    Column("dph", "$/H", 8, "right"),
    Column("dlp", "DLP/$", 7, "right"),
    Column("rel", "REL", 5, "right"),
    Column("hours", "JOB H", 7, "right"),
    Column("cost", "JOB $", 8, "right"),
    Column("where", "WHERE"),
)


def parse_query(text: str) -> tuple[str, ReferenceJob | None]:
    """Split `ref=HOURS[@DLPERF]` (the reference job) off a vastai query text."""
    words: list[str] = []
    reference: ReferenceJob | None = None
    for word in text.split():
        if word.startswith("ref="):
            hours, _, dlperf = word[4:].partition("@")
            try:
                reference = ReferenceJob(float(hours), float(dlperf) if dlperf else None)
            except ValueError:
                words.append(word)
            continue
        words.append(word)
    return " ".join(words), reference


def instance_row(row: InventoryRow) -> Row:
    i = row.instance
    running = i.state == InstanceState.RUNNING
    ssh = f"{i.ssh.host}:{i.ssh.port}" if i.ssh else fmt.MISSING
    worker = cell(row.worker or "", "bold") if row.tracked else cell("UNTRACKED", f"bold {fmt.BAD}")
    return Row(
        key=str(i.id),
        cells=(
            cell(str(i.id)),
            cell(f"{i.num_gpus}x {i.gpu_name}"),
            cell(i.status_text or i.state.value, fmt.GOOD if running else fmt.WARN),
            cell(f"${row.burn_dph:.3f}"),
            cell(ssh, fmt.MUTED),
            worker,
        ),
        sort_values=(i.id,),
    )


def offer_row(ranked: RankedOffer) -> Row:
    o = ranked.offer
    dlp = o.dlp_per_dollar
    return Row(
        key=str(o.id),
        cells=(
            cell(str(ranked.rank), fmt.MUTED),
            cell(str(o.id)),
            cell(f"{o.num_gpus}x {o.gpu_name}", fmt.BAD if ranked.blacklisted else ""),
            cell(f"${o.price_dph:.3f}"),
            cell(fmt.MISSING if dlp is None else f"{dlp:.0f}", fmt.ACCENT),
            cell(fmt.MISSING if o.reliability is None else f"{o.reliability:.2f}"),
            cell(fmt.MISSING if ranked.est_hours is None else f"{ranked.est_hours:.1f}"),
            cell(fmt.MISSING if ranked.est_cost is None else f"${ranked.est_cost:.2f}"),
            cell(o.location, fmt.MUTED),
        ),
        sort_values=(ranked.rank,),
    )


def watcher_text(on: bool, state: WatcherState | None) -> str:
    """`watcher on · 3 polls · <last decision> · error: …` for the status line."""
    parts = [f"watcher [b]{'on' if on else 'off'}[/]"]
    if state is not None:
        parts.append(f"{state.polls} poll(s)")
        if state.last_decision is not None:
            parts.append(escape(state.last_decision.summary()))
        if state.last_error:
            parts.append(f"[{fmt.BAD}]error: {escape(state.last_error)}[/]")
    return " · ".join(parts)


def spend_text(cost: CostReport | None) -> str:
    if cost is None:
        return f"spend {fmt.MISSING}"
    return f"burn ${cost.burn_dph:.3f}/h · today ${cost.today:.2f} · total ${cost.total:.2f}"


class VastView(ConsoleView):
    """Vast: instances (tracked or not), the best offers by DLP/$, watcher and spend."""

    TITLE = "Vast"
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("r", "refresh", "Refresh"),
        Binding("w", "toggle_watcher", "Watcher on/off"),
        Binding("R", "reconcile", "Reconcile --fix"),
        Binding("slash", "query", "Offer query"),
        Binding("escape", "close_query", "Close query", show=False),
        Binding("tab", "switch_table", "Switch table", show=False),
    ]

    DEFAULT_CSS = """
    VastView > Input.query { display: none; height: 3; }
    VastView > Input.query.-shown { display: block; }
    VastView > .title { height: 1; padding: 0 1; text-style: bold; }
    VastView > #vast-instances { height: 1fr; }
    VastView > #vast-offers { height: 1fr; }
    VastView > .status { height: 1; color: $text-muted; padding: 0 1; }
    """

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.query_text = ""
        self.problem: str | None = None
        self.offers_error: str | None = None
        self.cost: CostReport | None = None
        self.instances: list[InventoryRow] = []
        self.offers: list[RankedOffer] = []
        self.watcher_state: WatcherState | None = None
        self.loaded = False

    def compose(self) -> ComposeResult:
        yield Input(
            placeholder="offer query: vastai words (gpu_name=RTX_4090 dph<0.5) and ref=HOURS@DLPERF",
            classes="query",
        )
        yield TextLine("instances", classes="title instances-title")
        yield FastTable(INSTANCE_COLUMNS, id="vast-instances")
        yield TextLine("offers", classes="title offers-title")
        yield FastTable(OFFER_COLUMNS, id="vast-offers")
        yield TextLine(classes="status watcher-line")
        yield TextLine(classes="status spend-line")

    @property
    def instances_table(self) -> FastTable:
        return self.query_one("#vast-instances", FastTable)

    @property
    def offers_table(self) -> FastTable:
        return self.query_one("#vast-offers", FastTable)

    def focus_main(self) -> None:
        self.instances_table.focus()

    def show(self, state: ConsoleState) -> None:
        if not self.loaded:
            self.loaded = True
            self.action_refresh()
        self.draw()

    # ------------------------------------------------------------ drawing

    def set_data(
        self,
        instances: Sequence[InventoryRow],
        offers: Sequence[RankedOffer],
        cost: CostReport | None,
        problem: str | None,
        offers_error: str | None,
    ) -> None:
        """What a refresh found (from the app's `VastLoaded` handler)."""
        self.instances = list(instances)
        self.offers = list(offers)
        self.cost = cost
        self.problem = problem
        self.offers_error = offers_error
        self.draw()

    def set_watcher(self, state: WatcherState | None) -> None:
        self.watcher_state = state
        self.draw_status()

    def draw(self) -> None:
        self.instances_table.set_rows([instance_row(r) for r in self.instances])
        self.offers_table.set_rows([offer_row(o) for o in self.offers])
        untracked = sum(1 for r in self.instances if not r.tracked)
        if self.problem:
            title = f"[{fmt.WARN}]{escape(self.problem)}[/]"
        else:
            extra = f" · [{fmt.BAD}]{untracked} UNTRACKED[/]" if untracked else ""
            title = f"instances: {len(self.instances)}{extra} · r refresh · R reconcile --fix"
        self.query_one(".instances-title", TextLine).show(title)
        query = escape(self.query_text) if self.query_text else "default filters"
        offers_title = f"offers: top {len(self.offers)} by DLP/$ · query “{query}” · / edits"
        if self.offers_error:
            offers_title += f" · [{fmt.WARN}]{escape(self.offers_error)}[/]"
        self.query_one(".offers-title", TextLine).show(offers_title)
        self.draw_status()

    def draw_status(self) -> None:
        on = self.console.controller.vast_watching
        self.query_one(".watcher-line", TextLine).show(
            watcher_text(on, self.watcher_state) + " · w toggles"
        )
        self.query_one(".spend-line", TextLine).show(spend_text(self.cost))

    # ------------------------------------------------------------ actions

    def action_refresh(self) -> None:
        query, reference = parse_query(self.query_text)
        self.console.controller.vast_refresh(query, reference, TOP_OFFERS)

    def action_toggle_watcher(self) -> None:
        controller = self.console.controller
        controller.vast_watch(not controller.vast_watching)
        self.draw_status()

    def action_reconcile(self) -> None:
        self.console.confirm(
            "Reconcile workers.yaml with the Vast account and apply the fixes "
            "(vast reconcile --fix)?",
            self.console.controller.vast_reconcile,
        )

    def action_switch_table(self) -> None:
        target = self.offers_table if self.instances_table.has_focus else self.instances_table
        target.focus()

    def action_query(self) -> None:
        box = self.query_one("Input.query", Input)
        box.add_class("-shown")
        box.value = self.query_text
        box.focus()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        if event.input.has_class("query"):
            event.stop()
            self.query_text = event.value.strip()
            event.input.remove_class("-shown")
            self.offers_table.focus()
            self.action_refresh()

    def action_close_query(self) -> None:
        box = self.query_one("Input.query", Input)
        if box.has_class("-shown"):
            box.remove_class("-shown")
            self.offers_table.focus()
