"""The real console process in a real tmux: keys in with send-keys, the screen out with
capture-pane. It checks what only a terminal shows: 256 colours, a resize, a clean exit.

This test polls the pane (a real terminal has no workers to wait on), bounded by deadlines.
"""

from __future__ import annotations

import inspect
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from runyard.cli import verbs
from runyard.core.runs import RunSpec, add_run
from runyard.core.store.workspace_store import WorkspaceStore
from runyard.core.workspace import Workspace

pytestmark = pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed")
TRUECOLOUR = re.compile(r"\x1b\[[0-9;]*[34]8;2;")
PALETTE = re.compile(r"\x1b\[[0-9;]*[34]8;5;")


def console_argv(workspace: Path) -> list[str]:
    """`runyard console` once the lead has wired it; the console module itself until then."""
    if "run_console" in inspect.getsource(verbs.console):
        return [sys.executable, "-m", "runyard", "--workspace", str(workspace), "console"]
    return [sys.executable, "-m", "runyard.tui", "--workspace", str(workspace)]


class Tmux:
    """A private tmux server (its own socket, no user config) running one command."""

    def __init__(self, socket: Path) -> None:
        self.socket = str(socket)

    def __call__(self, *args: str) -> str:
        proc = subprocess.run(
            ["tmux", "-S", self.socket, "-f", "/dev/null", *args],
            capture_output=True,
            text=True,
            check=True,
        )
        return proc.stdout

    def screen(self, escapes: bool = False) -> str:
        return self("capture-pane", "-p", *(["-e"] if escapes else []), "-t", "console")

    def wait_for(self, predicate: Callable[[str], bool], timeout: float = 40.0) -> str:
        deadline = time.monotonic() + timeout
        while True:
            text = self.screen()
            if predicate(text):
                return text
            if time.monotonic() > deadline:
                raise AssertionError(f"the screen never matched; it shows:\n{text}")
            time.sleep(0.2)


@pytest.fixture
def tmux(tmp_path: Path) -> Iterator[Tmux]:
    server = Tmux(tmp_path / "tmux.sock")
    yield server
    subprocess.run(["tmux", "-S", server.socket, "kill-server"], capture_output=True)


def test_the_console_in_tmux_256_colours_resize_and_quit(
    tmux: Tmux, workspace: Workspace, store: WorkspaceStore
) -> None:
    workspace.settings_path.write_text("refresh: {fleet_seconds: 1, runs_seconds: 1}\n")
    run = add_run(
        store, RunSpec(command="echo hello-from-tmux; echo step 1 loss=0.5", name="tmux-run")
    )
    env = {k: v for k, v in os.environ.items() if k not in ("COLORTERM", "TMUX", "NO_COLOR")}
    command = " ".join(f"'{part}'" for part in console_argv(workspace.root))
    subprocess.run(
        ["tmux", "-S", tmux.socket, "-f", "/dev/null", "new-session", "-d", "-s", "console",
         "-x", "150", "-y", "40", "-e", "TERM=tmux-256color", command],
        check=True, env=env,
    )  # fmt: skip
    tmux("set-option", "-t", "console", "remain-on-exit", "on")

    tmux.wait_for(lambda s: "runyard" in s and "local" in s and "workers 1/1 up" in s)
    coloured = tmux.screen(escapes=True)
    assert PALETTE.search(coloured), "no 256-colour escapes on screen"
    assert not TRUECOLOUR.search(coloured), "24-bit colour sent to a 256-colour terminal"

    tmux("send-keys", "-t", "console", "2")
    tmux.wait_for(lambda s: "tmux-run" in s and "pending" in s)
    tmux("send-keys", "-t", "console", "D")
    tmux.wait_for(lambda s: re.search(r"tmux-run\s+done", s) is not None)
    tmux("send-keys", "-t", "console", "l")
    tmux.wait_for(lambda s: "hello-from-tmux" in s and "the run has ended" in s)

    tmux("resize-window", "-t", "console", "-x", "100", "-y", "28")
    text = tmux.wait_for(
        lambda s: (
            len(s.splitlines()) <= 28 and "hello-from-tmux" in s and "Help" in s.splitlines()[-1]
        )
    )
    lines = text.splitlines()
    assert lines[0].lstrip().startswith("runyard")
    assert all(len(line) <= 100 for line in lines)

    tmux("send-keys", "-t", "console", "q")
    deadline = time.monotonic() + 20
    while tmux("display-message", "-p", "-t", "console", "#{pane_dead}").strip() != "1":
        assert time.monotonic() < deadline, "the console did not quit on q"
        time.sleep(0.2)
    # tmux sometimes reports the exit before it has the status: then no signal and no crash.
    status, _, signal = (
        tmux("display-message", "-p", "-t", "console", "#{pane_dead_status}|#{pane_dead_signal}")
        .strip()
        .partition("|")
    )
    assert status in ("0", "") and signal == "" and "Traceback" not in tmux.screen()
    assert WorkspaceStore(workspace).runs()[0].id == run.id  # the files are the truth
