"""Commands and env values run exactly as typed, whatever characters they hold.

Property tests drive the real run protocol (dispatch through the LocalExecutor: the same
bash scripts an SSH worker gets); one nasty example also goes through the CLI process.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import shlex
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from hypothesis import assume, given, settings
from hypothesis import strategies as st

from runyard.core.check import check as core_check
from runyard.core.dispatch import dispatch as core_dispatch
from runyard.core.fleet.transports import Fleet
from runyard.core.models import Run, RunStatus
from runyard.core.runs import RunSpec, add_run, find_run
from runyard.core.secrets import SECRET_REF
from runyard.core.store.workspace_store import WorkspaceStore
from runyard.core.workspace import init_workspace

T = TypeVar("T")

SHELL_SPECIALS = [*list("'\"$`;|\\\n\t\r *?![]{}()<>&~#%^=,-"), "$(", "${", "\\n", "'\\''", "$'"]
# Any unicode text but NUL (a C string cannot carry it) and lone surrogates (not UTF-8).
TEXT = st.lists(
    st.one_of(
        st.sampled_from(SHELL_SPECIALS),
        st.text(
            st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=6
        ),
    ),
    max_size=12,
).map("".join)
NASTY = "it's \"quoted\" $HOME `id` $(id) ${X:-y} ; | & \\ \\n \n\tnaïve ☃ 日本 🚀 '\\'' %s -- -n"


def command_for(text: str) -> str:
    return (
        "printf %s " + shlex.quote(text) + ' > "$RUNYARD_OUTPUT_DIR/out"; '
        'printf %s "$V" > "$RUNYARD_OUTPUT_DIR/env"'
    )


def wait_for(probe: Callable[[], T], timeout: float = 20.0, interval: float = 0.01) -> T:
    deadline = time.monotonic() + timeout
    while not (value := probe()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {probe}")
        time.sleep(interval)
    return value


async def _with_fleet(store: WorkspaceStore, body: Callable[[Fleet], Any]) -> Any:
    fleet = Fleet(store.workspace.root, store.settings())
    try:
        return await body(fleet)
    finally:
        await fleet.close()


def make_store(root: Path) -> WorkspaceStore:
    workspace, _ = init_workspace(root)
    path = workspace.workers_path
    # One worker that takes every run at once, so no example waits for an earlier one's check.
    path.write_text(
        path.read_text().replace("  enabled: true\n", "  enabled: true\n  slots: 1000\n")
    )
    return WorkspaceStore(workspace)


def launch_and_wait(store: WorkspaceStore, run: Run) -> Path:
    outcomes = asyncio.run(_with_fleet(store, lambda fleet: core_dispatch(store, fleet)))
    assert [(o.run_id, o.ok) for o in outcomes] == [(run.id, True)], outcomes
    run_dir = Path(find_run(store.runs(), run.id).run_dir or "")
    code = wait_for(
        lambda: (run_dir / "exit_code").is_file() and (run_dir / "exit_code").read_text()
    )
    log = (run_dir / "log").read_text("utf-8", "replace")
    assert code.strip() == "0", log
    return run_dir


def test_commands_and_env_values_arrive_byte_exact(tmp_path: Path) -> None:
    store = make_store(tmp_path / "ws")
    names = (f"q{i}" for i in itertools.count())

    @settings(max_examples=25, deadline=None)
    @given(text=TEXT, value=TEXT)
    def one(text: str, value: str) -> None:
        assume(not SECRET_REF.match(value))
        command = command_for(text)
        run = add_run(store, RunSpec(command=command, name=next(names), env={"V": value}))
        run_dir = launch_and_wait(store, run)
        out_dir = store.workspace.root / "outputs" / run.name
        assert (out_dir / "out").read_bytes() == text.encode("utf-8")
        assert (out_dir / "env").read_bytes() == value.encode("utf-8")
        # The command is stored byte-exact beside the run, and so is the queue's copy.
        assert (run_dir / "command").read_bytes() == command.encode("utf-8")
        assert find_run(store.runs(), run.id).command == command

    one()
    results = asyncio.run(_with_fleet(store, lambda fleet: core_check(store, fleet)))
    assert results and all(r.new == RunStatus.DONE for r in results)


def test_metacharacters_in_a_command_are_not_interpreted_by_runyard(tmp_path: Path) -> None:
    """What the user quoted stays quoted: no expansion happens on the way to the worker."""
    store = make_store(tmp_path / "ws")
    text = "$(touch pwned) `touch pwned2` ${HOME} $RUNYARD_RUN_ID"
    run = add_run(store, RunSpec(command=command_for(text), name="inert", env={"V": text}))
    launch_and_wait(store, run)
    out_dir = store.workspace.root / "outputs" / "inert"
    assert (out_dir / "out").read_text() == text
    assert (out_dir / "env").read_text() == text
    assert not list(store.workspace.root.rglob("pwned*"))


def test_a_nasty_command_and_env_value_through_the_cli(cli: Any) -> None:
    command = command_for(NASTY)
    proc = cli("run", "add", "--name", "nasty", "--env", f"V={NASTY}", "--command", command)
    run_id = proc.stdout.split()[-1]
    cli("dispatch")
    queue = cli.workspace / "queues" / "run_queue.json"

    def exit_code() -> str:
        run_dir = next(r for r in json.loads(queue.read_text()) if r["id"] == run_id)["run_dir"]
        path = Path(run_dir, "exit_code")
        return path.read_text() if path.is_file() else ""

    assert wait_for(exit_code).strip() == "0"
    listed = {r["id"]: r for r in json.loads(cli("run", "list", "--json").stdout)}
    assert listed[run_id]["command"] == command
    out_dir = cli.workspace / "outputs" / "nasty"
    assert (out_dir / "out").read_bytes() == NASTY.encode("utf-8")
    assert (out_dir / "env").read_bytes() == NASTY.encode("utf-8")
