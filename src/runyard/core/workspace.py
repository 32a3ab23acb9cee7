"""Where the workspace is and what it holds; `init` scaffolds a new one.

The workspace is `--workspace`, else `RUNYARD_WORKSPACE`, else the nearest parent holding
`runyard.yaml`, the way git finds `.git`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from runyard.core.errors import InputError
from runyard.core.settings import DEFAULT_SETTINGS_YAML
from runyard.core.store.atomic import atomic_write_text

SETTINGS_FILE = "runyard.yaml"

DEFAULT_WORKERS_YAML = """\
# runyard workers. One entry per machine; field names follow research-os.
# Add more with `runyard worker add NAME --host HOST` or edit this file by hand.
- worker_id: local
  kind: local
  enabled: true
  worker_pool: default
  workspace: .           # runs start in the workspace root on this machine
  resources:
    gpu: 0
  health:
    heartbeat_command: "echo ok"
  notes: "this machine (local-first: every baseline runs here before anything is rented)"
"""

QUEUE_README = """\
# queues/

`run_queue.json` is runyard's run queue: a JSON array with one run per line, so that
`grep`, `jq` and `git diff` show whole runs. Edit it by hand while no runyard process is
writing (or go through `runyard run ...`); a malformed file is reported, never overwritten.
"""


@dataclass(frozen=True)
class Workspace:
    """The paths of one workspace; no I/O beyond what its methods say."""

    root: Path

    @property
    def settings_path(self) -> Path:
        return self.root / SETTINGS_FILE

    @property
    def workers_path(self) -> Path:
        return self.root / "workers.yaml"

    @property
    def queue_path(self) -> Path:
        return self.root / "queues" / "run_queue.json"

    @property
    def state_dir(self) -> Path:
        return self.root / ".runyard"

    @property
    def lock_path(self) -> Path:
        return self.state_dir / "lock"

    @property
    def events_path(self) -> Path:
        return self.state_dir / "events.jsonl"

    @property
    def results_dir(self) -> Path:
        return self.root / "results"

    @property
    def profiles_dir(self) -> Path:
        return self.root / "profiles"

    @property
    def competitions_dir(self) -> Path:
        return self.root / "competitions"

    def result_dir(self, run_id: str) -> Path:
        return self.results_dir / run_id


def find_workspace(explicit: str | None = None, cwd: Path | None = None) -> Workspace:
    """Resolve the workspace by flag, environment, then the nearest parent with runyard.yaml."""
    if explicit:
        root = Path(explicit).expanduser().resolve()
        if not (root / SETTINGS_FILE).is_file():
            raise InputError(
                f"{root}: not a runyard workspace (no {SETTINGS_FILE}; run `runyard init {explicit}`)"
            )
        return Workspace(root)
    from_env = os.environ.get("RUNYARD_WORKSPACE")
    if from_env:
        root = Path(from_env).expanduser().resolve()
        if not (root / SETTINGS_FILE).is_file():
            raise InputError(f"RUNYARD_WORKSPACE={from_env}: no {SETTINGS_FILE} there")
        return Workspace(root)
    start = (cwd or Path.cwd()).resolve()
    for candidate in (start, *start.parents):
        if (candidate / SETTINGS_FILE).is_file():
            return Workspace(candidate)
    raise InputError(
        f"no runyard workspace in {start} or its parents (run `runyard init` to make one)"
    )


def init_workspace(directory: Path) -> tuple[Workspace, list[Path]]:
    """Scaffold a workspace; existing files are kept untouched. Returns what was created."""
    root = directory.expanduser().resolve()
    root.mkdir(parents=True, exist_ok=True)
    ws = Workspace(root)
    created: list[Path] = []
    for folder in (
        root / "queues",
        ws.profiles_dir,
        ws.competitions_dir,
        ws.results_dir,
        ws.state_dir,
    ):
        if not folder.exists():
            folder.mkdir(parents=True)
            created.append(folder)
    files = {
        ws.settings_path: DEFAULT_SETTINGS_YAML,
        ws.workers_path: DEFAULT_WORKERS_YAML,
        ws.queue_path: "[]\n",
        root / "queues" / "README.md": QUEUE_README,
        root / "queues" / ".gitignore": ".*.tmp\n",
        ws.state_dir / ".gitignore": "lock\n*.tmp\n",
    }
    for path, text in files.items():
        if not path.exists():
            atomic_write_text(path, text)
            created.append(path)
    return ws, created
