"""Malformed workspace files: exit 2, one stderr line naming file, line (and field), file untouched.

Most cases run the real CLI entry point in-process (fast); one case per file also runs it as
a separate `python -m runyard` process, exactly as a user or a script would.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from fakes.research_os import RESEARCH_OS_WORKER
from runyard.cli.main import main
from runyard.core.models import Run
from runyard.core.store.queue_file import dump_queue
from runyard.core.store.workspace_store import WorkspaceStore
from runyard.core.workspace import DEFAULT_WORKERS_YAML, Workspace

QUEUE_RUNS = [
    Run(id=f"r{i:07d}", name=f"run-{i}", command="true", created_at="2026-01-01T00:00:00Z")
    for i in range(3)
]
GOOD_QUEUE = dump_queue(QUEUE_RUNS)  # "[", one run per line (lines 2-4), "]"
QUEUE_LINES = GOOD_QUEUE.splitlines(keepends=True)

GOOD_WORKERS = (
    DEFAULT_WORKERS_YAML
    + """\
- worker_id: gpu-box          # line 13
  kind: ssh
  enabled: true
  worker_pool: gpu
  ssh:
    host: 10.0.0.5
    port: 22
  workspace: ~/runyard
  resources:
    gpu: 1
  health:
    heartbeat_command: "echo ok"
"""
)


def _replace_line(text: str, line: int, old: str, new: str) -> str:
    lines = text.splitlines(keepends=True)
    assert old in lines[line - 1], (old, lines[line - 1])
    lines[line - 1] = lines[line - 1].replace(old, new)
    return "".join(lines)


@dataclass(frozen=True)
class Case:
    id: str
    file: str  # "queue", "workers" or "settings"
    text: str
    line: int
    field: str | None
    words: str  # a fragment the message must contain


QUEUE_CASES = [
    # Cut inside the third run's line: the string that starts there never ends.
    Case("queue-truncated", "queue", "".join(QUEUE_LINES[:3]) + QUEUE_LINES[3][:25], 4, None,
         "invalid JSON"),
    # Cut after a whole line: the next value is missing where the file ends (line 4, col 1).
    Case("queue-truncated-between-runs", "queue", "".join(QUEUE_LINES[:3]), 4, None, "invalid JSON"),
    # The comma missing at the end of line 3.
    Case("queue-missing-comma", "queue", _replace_line(GOOD_QUEUE, 3, "},", "}"), 3, None,
         "invalid JSON"),
    Case("queue-empty-file", "queue", "", 1, None, "invalid JSON"),
    Case("queue-not-an-array", "queue", '{"runs": []}\n', 1, None, "JSON array"),
    Case("queue-wrong-type", "queue", _replace_line(GOOD_QUEUE, 3, '"priority": 0', '"priority": "high"'),
         3, "[1].priority", "integer"),
    Case("queue-bad-metrics-regex", "queue",
         _replace_line(GOOD_QUEUE, 3, '"metrics_regex": null', '"metrics_regex": "(bad"'), 3,
         "[1].metrics_regex", "not a usable regex"),
    Case("queue-unknown-status", "queue",
         _replace_line(GOOD_QUEUE, 4, '"status": "pending"', '"status": "finished"'), 4,
         "[2].status", "unknown status 'finished'"),
    Case("queue-missing-command", "queue", _replace_line(GOOD_QUEUE, 2, '"command": "true", ', ""),
         2, "[0].command", "is required"),
    # Half a UTF-16 pair: json.loads keeps it, but no file or SSH channel could encode it.
    Case("queue-lone-surrogate", "queue",
         _replace_line(GOOD_QUEUE, 3, '"command": "true"', '"command": "echo \\ud800 x"'), 3,
         "[1].command", "surrogate"),
    Case("queue-lone-surrogate-in-a-key", "queue",
         _replace_line(GOOD_QUEUE, 4, '"env": {}', '"env": {"A\\uDC00": "1"}'), 4, "[2].env",
         "surrogate"),
]  # fmt: skip

WORKERS_CASES = [
    Case("workers-syntax", "workers", _replace_line(GOOD_WORKERS, 19, "port: 22", "port: [22"), 20,
         None, "invalid YAML"),
    Case("workers-truncated", "workers", GOOD_WORKERS[: GOOD_WORKERS.rindex('ok"')], 24, None,
         "invalid YAML"),
    Case("workers-wrong-type", "workers", _replace_line(GOOD_WORKERS, 22, "gpu: 1", "gpu: one"), 22,
         "[1].resources.gpu", "integer"),
    Case("workers-enabled-yes", "workers",
         _replace_line(GOOD_WORKERS, 15, "enabled: true", "enabled: sometimes"), 15, "[1].enabled",
         "true or false"),
    Case("workers-missing-id", "workers",
         _replace_line(GOOD_WORKERS, 13, "- worker_id: gpu-box", "- name: gpu-box"), 13,
         "[1].worker_id", "is required"),
    Case("workers-lone-surrogate", "workers",
         _replace_line(GOOD_WORKERS, 18, "host: 10.0.0.5", 'host: "10.0.0.5\\ud800"'), 18,
         "[1].ssh.host", "surrogate"),
    Case("workers-port-out-of-range", "workers",
         _replace_line(GOOD_WORKERS, 19, "port: 22", "port: 99999"), 19, "[1].ssh.port",
         "must be <= 65535"),
    Case("workers-empty-host", "workers",
         _replace_line(GOOD_WORKERS, 18, "host: 10.0.0.5", 'host: ""'), 18, "[1].ssh.host",
         "must not be empty"),
    Case("workers-duplicate-id", "workers",
         _replace_line(GOOD_WORKERS, 13, "worker_id: gpu-box", "worker_id: local"), 13,
         "[1].worker_id", "duplicate"),
]  # fmt: skip

SETTINGS_TEXT = "default_pool: default\nrefresh:\n  fleet_seconds: 5\n  runs_seconds: 5\nruns:\n  retry_lost: 0\n"
SETTINGS_CASES = [
    Case("settings-syntax", "settings", SETTINGS_TEXT.replace("retry_lost: 0", "retry_lost: {0"), 7,
         None, "invalid YAML"),
    Case("settings-truncated", "settings", SETTINGS_TEXT + 'ssh:\n  trust: "stri', 8, None,
         "invalid YAML"),
    Case("settings-wrong-type", "settings", SETTINGS_TEXT.replace("fleet_seconds: 5", "fleet_seconds: fast"),
         3, "refresh.fleet_seconds", "must be a number"),
    Case("settings-section-not-a-mapping", "settings", SETTINGS_TEXT.replace("runs:\n  retry_lost: 0\n", "runs: 3\n"),
         5, "runs", "must be a mapping"),
    # In range as well as of the right type: a zero period or time limit, a negative count.
    Case("settings-zero-period", "settings", SETTINGS_TEXT.replace("fleet_seconds: 5", "fleet_seconds: 0"),
         3, "refresh.fleet_seconds", "must be above 0, not 0"),
    Case("settings-negative-count", "settings", SETTINGS_TEXT.replace("retry_lost: 0", "retry_lost: -1"),
         6, "runs.retry_lost", "must be at least 0, not -1"),
    Case("settings-nan", "settings", SETTINGS_TEXT.replace("runs_seconds: 5", "runs_seconds: .nan"),
         4, "refresh.runs_seconds", "must be a finite number"),
    Case("settings-percent-over-100", "settings", SETTINGS_TEXT + "alerts:\n  disk_used_pct: 150\n",
         8, "alerts.disk_used_pct", "must be at most 100, not 150"),
]  # fmt: skip

# The verbs that read each file; each must refuse the bad file the same way.
VERBS = {
    "queue": [("run", "list"), ("run", "list", "--json"), ("run", "add", "-c", "true"), ("dispatch",)],
    "workers": [("worker", "list"), ("worker", "list", "--json"), ("dispatch",),
                ("run", "add", "-c", "true", "--worker", "local"),
                ("worker", "remove", "gpu-box"), ("worker", "add", "other", "--local")],
    "settings": [("dispatch",), ("check",), ("worker", "add", "box", "--local")],
}  # fmt: skip


def _path(workspace: Workspace, kind: str) -> Path:
    return {
        "queue": workspace.queue_path,
        "workers": workspace.workers_path,
        "settings": workspace.settings_path,
    }[kind]


def _write_case(workspace: Workspace, case: Case) -> Path:
    workspace.queue_path.write_text(GOOD_QUEUE)
    workspace.workers_path.write_text(GOOD_WORKERS)
    path = _path(workspace, case.file)
    path.write_text(case.text)
    return path


def _assert_one_line_error(case: Case, path: Path, code: int, out: str, err: str) -> None:
    assert code == 2, (case.id, out, err)
    lines = err.splitlines()
    assert len(lines) == 1, (case.id, err)
    message = lines[0]
    assert f"{path}:{case.line}:" in message, (case.id, message)
    if case.field is not None:
        assert f"'{case.field}'" in message, (case.id, message)
    assert case.words in message, (case.id, message)
    assert out == "", (case.id, out)


def _snapshot(workspace: Workspace) -> dict[str, bytes]:
    return {
        str(p): p.read_bytes()
        for p in (workspace.queue_path, workspace.workers_path, workspace.settings_path)
    }


@pytest.mark.parametrize("case", QUEUE_CASES + WORKERS_CASES + SETTINGS_CASES, ids=lambda c: c.id)
def test_bad_file_is_refused_with_one_line_and_left_untouched(
    workspace: Workspace, case: Case, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _write_case(workspace, case)
    before = _snapshot(workspace)
    capsys.readouterr()
    for verb in VERBS[case.file]:
        code = main(["--workspace", str(workspace.root), *verb])
        captured = capsys.readouterr()
        _assert_one_line_error(case, path, code, captured.out, captured.err)
        assert _snapshot(workspace) == before, (case.id, verb)
    assert not (workspace.root / ".runyard" / "runs").exists()  # nothing was launched


@pytest.mark.parametrize(
    ("case", "verb"),
    [
        (QUEUE_CASES[0], ("run", "list")),
        (WORKERS_CASES[2], ("worker", "list")),
        (SETTINGS_CASES[2], ("dispatch",)),
    ],
    ids=["queue", "workers", "settings"],
)
def test_bad_file_through_the_cli_process(
    workspace: Workspace, cli: Any, case: Case, verb: tuple[str, ...]
) -> None:
    path = _write_case(workspace, case)
    before = _snapshot(workspace)
    proc = cli(*verb, check=False)
    _assert_one_line_error(case, path, proc.returncode, proc.stdout, proc.stderr)
    assert _snapshot(workspace) == before


def test_the_good_files_used_above_are_good(
    workspace: Workspace, capsys: pytest.CaptureFixture[str]
) -> None:
    """Guards the cases: each is one edit away from files that load cleanly."""
    workspace.queue_path.write_text(GOOD_QUEUE)
    workspace.workers_path.write_text(GOOD_WORKERS)
    workspace.settings_path.write_text(SETTINGS_TEXT)
    store = WorkspaceStore(workspace)
    assert store.runs() == QUEUE_RUNS
    assert [w.worker_id for w in store.workers()] == ["local", "gpu-box"]
    assert store.settings().refresh.fleet_seconds == 5
    for verb in (("run", "list"), ("worker", "list"), ("dispatch", "--dry-run")):
        assert main(["--workspace", str(workspace.root), *verb]) == 0
    assert capsys.readouterr().err == ""


def test_a_research_os_workers_file_loads_as_is(workspace: Workspace, cli: Any) -> None:
    text = RESEARCH_OS_WORKER
    workspace.workers_path.write_text(text)
    proc = cli("worker", "list", "--json")
    assert proc.stderr == ""  # not even a warning
    [worker] = json.loads(proc.stdout)
    assert worker["name"] == "vastai_auto_20260531_003650"
    assert worker["instance_id"] == 38664456
    assert worker["worker_pool"] == "vastai"
    assert worker["ssh"] == {"host": "ssh1.vast.ai", "port": 24456, "user": "root",
                             "key": "~/.ssh/vastai_id_ed25519"}  # fmt: skip
    assert worker["notes"].endswith("DLP/$=230.8. Washington, US.")
    assert workspace.workers_path.read_text() == text


def test_text_beyond_the_basic_plane_is_fine_in_the_queue_and_on_the_command_line(
    workspace: Workspace, cli: Any
) -> None:
    """A whole surrogate pair is one character (an emoji), not a lone half."""
    workspace.queue_path.write_text(
        _replace_line(GOOD_QUEUE, 2, '"command": "true"', '"command": "echo \\ud83d\\ude80"')
    )
    listed = json.loads(cli("run", "list", "--json").stdout)
    assert listed[0]["command"] == "echo \U0001f680"
    assert cli("run", "add", "-c", "echo \u2713 \U0001f680").returncode == 0
    assert [run.command for run in WorkspaceStore(workspace).runs()][-1] == "echo \u2713 \U0001f680"


def test_a_command_line_argument_that_is_not_utf8_is_refused(
    workspace: Workspace, cli: Any
) -> None:
    workspace.queue_path.write_text(GOOD_QUEUE)
    before = _snapshot(workspace)
    # The byte 0xff reaches Python as a lone surrogate (surrogateescape).
    proc = cli("run", "add", "-c", "echo \udcff", check=False)
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.splitlines() == ["runyard: argument 'echo \\xff' is not valid UTF-8 text"]
    assert _snapshot(workspace) == before
