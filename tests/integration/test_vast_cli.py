"""`runyard vast ...` and `runyard cost` as a user runs them: separate processes, the real
SDK, the SIMULATED marketplace on its own thread, real loopback SSH boxes."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from fakes.vast_workspace import configure_vast
from runyard.core.workspace import Workspace
from runyard.sim.vast_api import SimVast, ThreadedSimVast

pytestmark = pytest.mark.timeout(180)

# `runyard` with the vast verbs registered (a no-op once cli/main.py registers them itself).
ENTRY = """
import argparse, sys
from runyard.cli import main as cli, vast_verbs
build = cli.build_parser
def with_vast():
    parser = build()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    if "vast" not in sub.choices:
        vast_verbs.register(sub)
    return parser
cli.build_parser = with_vast
sys.exit(cli.main(sys.argv[1:]))
"""


class VastCLI:
    def __init__(self, workspace: Path) -> None:
        self.workspace = workspace

    def __call__(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "RUNYARD_WORKSPACE": str(self.workspace)}
        proc = subprocess.run(
            [sys.executable, "-c", ENTRY, *args],
            capture_output=True,
            text=True,
            env=env,
            timeout=120,
            cwd=self.workspace,
        )
        if check and proc.returncode != 0:
            raise AssertionError(
                f"runyard {' '.join(args)} exited {proc.returncode}\n{proc.stderr}"
            )
        return proc

    def json(self, *args: str) -> object:
        return json.loads(self(*args, "--json").stdout)


@pytest.fixture
def market(
    tmp_path: Path, client_home: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[ThreadedSimVast, SimVast]]:
    for name in ("VAST_API_KEY", "VAST_URL", "XDG_CONFIG_HOME"):
        monkeypatch.delenv(name, raising=False)
    threaded = ThreadedSimVast(tmp_path / "vast-sim", boot_seconds=0.05)
    with threaded as sim:
        yield threaded, sim


@pytest.fixture
def ry(workspace: Workspace, market: tuple[ThreadedSimVast, SimVast]) -> VastCLI:
    configure_vast(workspace, market[1], {"max_dph": 0.1, "max_instances": 1})
    return VastCLI(workspace.root)


def test_offers_ranked_with_reference_job_cost(ry: VastCLI) -> None:
    offers = ry.json(
        "vast", "offers", "--max-dph", "0.5", "--ref-hours", "4.5", "--ref-dlp", "12.4"
    )
    assert isinstance(offers, list) and offers
    ratios = [o["dlp_per_dollar"] for o in offers]
    assert ratios == sorted(ratios, reverse=True)
    assert all(o["dph"] <= 0.5 for o in offers)
    best = offers[0]
    assert best["est_hours"] == pytest.approx(4.5 * 12.4 / best["dlperf"], rel=1e-3)
    assert best["est_cost"] == pytest.approx(best["est_hours"] * best["dph"], rel=1e-3)
    only_3060 = ry.json("vast", "offers", "gpu_name=RTX_3060")
    assert {o["gpu_name"] for o in only_3060} == {"RTX 3060"}  # type: ignore[union-attr]
    table = ry("vast", "offers", "--gpu", "RTX 4090").stdout
    assert "DLP/$" in table and "RTX 4090" in table and "RTX 3060" not in table


def test_rent_dispatch_pull_destroy_through_the_cli(
    ry: VastCLI, market: tuple[ThreadedSimVast, SimVast]
) -> None:
    threaded, sim = market
    dry = ry("vast", "rent", "5000003", "--dry-run", "--setup", "--run", "python train.py")
    assert "dry run: nothing is rented" in dry.stdout and "worker setup" in dry.stdout
    assert sim.calls_to("PUT", "/asks/") == []

    rented = ry.json(
        "vast", "rent", "5000003", "--name", "a4000", "--setup",
        "--run", 'echo "Epoch 1/1 | loss=0.3" > "$RUNYARD_OUTPUT_DIR/metrics.txt"',
    )  # fmt: skip
    assert isinstance(rented, dict) and rented["worker"]["worker_id"] == "a4000"
    instance_id = rented["instance_id"]
    run_id = rented["run"]
    assert run_id and rented["trusted"] is True

    stray = threaded.call(lambda s: s.rent(5000001, label="forgotten"))
    threaded.call(lambda s: s.wait_running(stray.id))
    rows = {r["id"]: r for r in ry.json("vast", "instances")}  # type: ignore[union-attr]
    assert rows[instance_id]["tracked"] and rows[instance_id]["worker"] == "a4000"
    assert rows[stray.id]["tracked"] is False and rows[stray.id]["flag"] == "untracked"
    assert "(UNTRACKED)" in ry("vast", "instances").stdout

    ry("check")  # the run is quick; give it a moment to finish if needed
    for _ in range(50):
        runs = json.loads(ry("run", "list", "--json").stdout)
        if runs[0]["status"] == "done":
            break
        ry("check")
    assert runs[0]["status"] == "done"

    refused = ry("vast", "destroy", str(instance_id), "--yes", check=False)
    assert refused.returncode == 1
    assert "is not pulled" in refused.stderr and "Traceback" not in refused.stderr
    assert sim.calls_to("DELETE") == []

    ry("pull", run_id)
    done = ry("vast", "destroy", str(instance_id), "--yes")
    assert "destroyed" in done.stdout
    assert len(sim.calls_to("DELETE")) == 1

    cost = ry.json("cost")
    assert isinstance(cost, dict) and cost["total"] >= 0
    ids = {i["instance_id"]: i for i in cost["instances"]}
    assert ids[instance_id]["state"] == "gone" and ids[stray.id]["worker"] is None


def test_reconcile_fix_through_the_cli(
    ry: VastCLI, market: tuple[ThreadedSimVast, SimVast]
) -> None:
    threaded, _ = market
    rented = ry.json("vast", "rent", "5000004", "--name", "box")
    assert isinstance(rented, dict)
    instance_id = rented["instance_id"]
    moved = threaded.call(lambda s: s.move(instance_id))
    drift = ry("vast", "reconcile", check=False)
    assert drift.returncode == 1 and "PORT CHANGED" in drift.stdout
    fixed = ry.json("vast", "reconcile", "--fix")
    assert isinstance(fixed, dict) and fixed["fixed"] is True
    assert any(f"-> {moved.ssh_port}" in line for line in fixed["applied"])
    assert ry("vast", "reconcile").returncode == 0


def test_blacklist_verbs_and_rent_refuses_a_banned_machine(ry: VastCLI) -> None:
    ry("vast", "blacklist", "add", "10003", "--reason", "ghost machine")
    listed = ry.json("vast", "blacklist", "list")
    assert listed == [{"machine_id": 10003, "reason": "ghost machine"}]
    refused = ry("vast", "rent", "5000003", check=False)
    assert refused.returncode == 2 and "blacklisted" in refused.stderr
    ry("vast", "blacklist", "remove", "10003")
    assert ry.json("vast", "blacklist", "list") == []
    assert ry("vast", "blacklist", "remove", "10003", check=False).returncode == 2


def test_watch_once(ry: VastCLI, market: tuple[ThreadedSimVast, SimVast]) -> None:
    out = ry("vast", "watch", "--once")
    assert "renting offer" in out.stdout and "rented instance" in out.stdout
    again = ry("vast", "watch", "--once")
    assert "nothing to rent" in again.stdout  # max_instances 1
    assert len(market[1].instances) == 1


def test_api_errors_are_one_line_and_never_show_the_key(
    ry: VastCLI, market: tuple[ThreadedSimVast, SimVast], workspace: Workspace
) -> None:
    sim = market[1]
    sim.fail(503, times=10)
    failed = ry("vast", "instances", check=False)
    assert failed.returncode == 1
    assert failed.stderr.strip().splitlines()[-1].startswith("runyard: Vast API server error")
    assert "Traceback" not in failed.stderr
    sim.clear_faults()
    (sim.root / "vast_api_key").write_text("not-the-key-42\n")
    denied = ry("vast", "offers", check=False)
    assert denied.returncode == 1 and "refused the key" in denied.stderr
    assert "not-the-key-42" not in denied.stderr + denied.stdout
    written = [p for p in workspace.root.rglob("*") if p.is_file()]
    assert written and not [p for p in written if sim.api_key.encode() in p.read_bytes()]
    offline = ry("cost", "--offline")  # the ledger alone: no API call, no failure
    assert offline.returncode == 0


def test_file_only_vast_verbs_load_neither_the_sdk_nor_asyncio(ry: VastCLI) -> None:
    code = ENTRY.replace(
        "sys.exit(cli.main(sys.argv[1:]))",
        "code = cli.main(sys.argv[1:])\n"
        "print('LOADED', sorted(m for m in sys.modules if m.split('.')[0] in ('vastai', 'requests', 'asyncssh', 'asyncio')))\n"
        "sys.exit(code)",
    )
    for argv in (
        ["vast", "blacklist", "list"],
        ["cost", "--offline"],
        ["vast", "blacklist", "add", "7"],
    ):
        proc = subprocess.run(
            [sys.executable, "-c", code, *argv],
            capture_output=True,
            text=True,
            env={**os.environ, "RUNYARD_WORKSPACE": str(ry.workspace)},
            timeout=60,
        )
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout.strip().splitlines()[-1] == "LOADED []", (argv, proc.stdout)


def test_worker_add_from_instance_function(
    workspace: Workspace,
    market: tuple[ThreadedSimVast, SimVast],
    capsys: pytest.CaptureFixture[str],
) -> None:
    """What `runyard worker add NAME --vast-instance ID` runs once cli/main.py wires the flag."""
    from runyard.cli.vast_verbs import worker_add_from_vast

    threaded, sim = market
    configure_vast(workspace, sim)
    box = threaded.call(lambda s: s.rent(5000006))
    threaded.call(lambda s: s.wait_running(box.id))
    args = argparse.Namespace(
        workspace=str(workspace.root), name="t4", vast_instance=box.id, pool=None, key=None
    )
    assert worker_add_from_vast(args) == 0
    assert f"vast instance {box.id}" in capsys.readouterr().out
    text = workspace.workers_path.read_text()
    assert f"instance_id: {box.id}" in text and f"port: {box.ssh_port}" in text
