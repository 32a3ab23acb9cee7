"""`LogLines` on its own: what the operator sees of a followed log, batch after batch."""

from __future__ import annotations

from textual.app import App, ComposeResult

from runyard.tui.widgets.log_lines import LogLines

ROWS = 10


class OneLog(App[None]):
    CSS = "LogLines { height: 10; }"

    def compose(self) -> ComposeResult:
        yield LogLines(max_lines=1000)


def batch(start: int, count: int) -> list[str]:
    return [f"line {i}" for i in range(start, start + count)]


def shown(log: LogLines) -> list[str]:
    """The text of every row on screen, top to bottom."""
    return [log.render_line(y).text.rstrip() for y in range(log.size.height)]


async def test_following_shows_the_newest_lines_after_every_batch() -> None:
    app = OneLog()
    async with app.run_test(size=(60, 20)) as pilot:
        log = app.query_one(LogLines)
        log.append(batch(0, 3))  # fewer lines than rows: no scrolling yet
        await pilot.pause()
        assert shown(log)[:3] == ["line 0", "line 1", "line 2"]
        for start in (3, 50, 52):  # one big batch, then small ones
            log.append(batch(start, 47 if start == 3 else 2))
            await pilot.pause()
            assert shown(log)[-1] == log.lines[-1]
            assert shown(log) == list(log.lines)[-ROWS:]


async def test_paused_holds_still_and_resuming_jumps_to_the_end() -> None:
    app = OneLog()
    async with app.run_test(size=(60, 20)) as pilot:
        log = app.query_one(LogLines)
        log.append(batch(0, 30))
        await pilot.pause()
        log.set_following(False)
        log.action_scroll_lines(-5)
        await pilot.pause()
        held = shown(log)
        assert held[-1] == "line 24"
        log.append(batch(30, 40))
        await pilot.pause()
        assert shown(log) == held and log.pending_count == 40
        log.set_following(True)
        await pilot.pause()
        assert shown(log) == [f"line {i}" for i in range(60, 70)]
