"""The core is headless, and file-only verbs stay light: checked in fresh interpreters."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from runyard.core.workspace import Workspace

HEAVY = ("textual", "asyncssh", "vastai", "google", "kaggle")

IMPORT_ALL_CORE = """
import importlib, json, pkgutil, sys
import runyard.core as core
names = sorted(m.name for m in pkgutil.walk_packages(core.__path__, "runyard.core."))
for name in names:
    importlib.import_module(name)
loaded = sorted(m for m in sys.modules if m.split(".")[0] in ("textual", "runyard"))
print(json.dumps({"imported": names, "loaded": loaded}))
"""

RUN_VERBS = """
import contextlib, io, json, sys
from runyard.cli.main import main
heavy = {heavy!r}
report = []
for argv in json.loads(sys.argv[1]):
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(argv)
    loaded = sorted(m for m in sys.modules if m.split(".")[0] in heavy)
    report.append({{"argv": argv, "code": code, "err": err.getvalue(), "loaded": loaded}})
print(json.dumps(report))
"""


def _fresh_python(code: str, *args: str) -> str:
    proc = subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_importing_every_core_module_never_loads_textual() -> None:
    report = json.loads(_fresh_python(IMPORT_ALL_CORE))
    expected = {
        ".".join(p.relative_to(Path(__file__).parents[2] / "src").with_suffix("").parts)
        for p in (Path(__file__).parents[2] / "src" / "runyard" / "core").rglob("*.py")
        if p.name != "__init__.py"
    }
    assert expected <= set(report["imported"])  # the walk really covered every module
    assert not [m for m in report["loaded"] if m.split(".")[0] == "textual"]
    # ... nor the front ends, nor the simulated fleet.
    assert not [
        m for m in report["loaded"] if m.startswith(("runyard.tui", "runyard.cli", "runyard.sim"))
    ]


def _verbs_report(workspace: Workspace, verbs: list[list[str]]) -> list[dict]:
    argvs = [["--workspace", str(workspace.root), *verb] for verb in verbs]
    return json.loads(_fresh_python(RUN_VERBS.format(heavy=HEAVY), json.dumps(argvs)))


def test_file_only_verbs_never_load_heavy_libraries(workspace: Workspace) -> None:
    verbs = [
        ["run", "list"],
        ["run", "add", "--command", "echo hi", "--name", "light"],
        ["run", "list", "--json"],
        ["worker", "list"],
        ["worker", "list", "--json"],
        ["run", "show", "light", "--json"],
    ]
    for entry in _verbs_report(workspace, verbs):
        assert entry["code"] == 0, entry
        assert entry["loaded"] == [], f"{entry['argv'][2:]} loaded {entry['loaded']}"


def test_local_only_pipeline_verbs_do_not_load_ssh_or_ui(workspace: Workspace) -> None:
    """With only the local worker, dispatch and check need neither asyncssh nor Textual."""
    verbs = [["dispatch", "--dry-run"], ["check"]]
    for entry in _verbs_report(workspace, verbs):
        assert entry["code"] == 0, entry
        assert entry["loaded"] == [], f"{entry['argv'][2:]} loaded {entry['loaded']}"
