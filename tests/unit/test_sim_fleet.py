"""Parts of the simulated fleet that need no servers: catalog, wiring, powering off."""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

import pytest

from runyard.core.fleet.ssh_options import KnownHostsFiles
from runyard.core.store.workspace_store import WorkspaceStore
from runyard.sim.catalog import SIM_NOTE, demo_specs
from runyard.sim.ssh_server import PROC, kill_tagged, tagged_processes
from runyard.sim.wiring import Endpoint, register_endpoints, registered_ports, trust_endpoints

KEY_A = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIJRnX/j88YhIzSai2cHr/sKxPYakXTsQt2jnimlkPVbS"
KEY_B = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIKOmeV93veOkxfD0DaEoIeqCTXsfPeP0Ae61j9N+C6QF"


def test_the_first_five_boxes_are_one_of_each_and_names_stay_unique_at_scale() -> None:
    specs = demo_specs(5)
    assert [(s.name, s.gpu_count) for s in specs] == [
        ("sim-rtx4090-1", 1),
        ("sim-a100x2-1", 2),
        ("sim-h100x8-1", 8),
        ("sim-t4-1", 1),
        ("sim-cpu-1", 0),
    ]
    many = demo_specs(120)
    assert len({s.name for s in many}) == 120
    uuids = [gpu["uuid"] for s in many for gpu in s.gpus()]
    assert len(set(uuids)) == len(uuids)
    assert all(s.notes().startswith(SIM_NOTE) for s in many)


def test_register_adds_then_updates_in_place_keeping_comments_and_hand_edits(
    store: WorkspaceStore,
) -> None:
    a100, h100 = demo_specs(3)[1:]
    register_endpoints(
        store, [Endpoint(a100, 2001, KEY_A), Endpoint(h100, 2002, KEY_B)], "/k", all_served=True
    )
    path = store.workspace.workers_path
    text = path.read_text().replace("  slots: 2\n", "  slots: 3   # my edit\n", 1)
    path.write_text("# my fleet\n" + text)

    register_endpoints(store, [Endpoint(a100, 3001, KEY_A)], "/k2", all_served=True)

    workers = {w.worker_id: w for w in store.workers()}
    assert workers["sim-a100x2-1"].ssh is not None
    assert (workers["sim-a100x2-1"].ssh.port, workers["sim-a100x2-1"].ssh.key) == (3001, "/k2")
    assert workers["sim-a100x2-1"].slots == 3 and workers["sim-a100x2-1"].price_dph == 2.35
    assert not workers["sim-h100x8-1"].enabled  # not served this time: disabled, kept
    assert workers["local"].enabled
    assert path.read_text().startswith("# my fleet\n") and "# my edit" in path.read_text()
    assert registered_ports(store) == {"sim-a100x2-1": 3001, "sim-h100x8-1": 2002}


def test_trust_drops_stale_and_changed_lines_and_keeps_the_rest(tmp_path: Path) -> None:
    files = KnownHostsFiles(user_file=None, runyard_file=tmp_path / "known_hosts")
    files.record_file.write_text(
        "# keep me\n"
        f"[127.0.0.1]:2001 {KEY_A}\n"  # a stale port
        f"[127.0.0.1]:3001 {KEY_A}\n"  # the port, another key
        f"gpu1.tailnet {KEY_B}\n"
    )
    spec = demo_specs(1)[0]

    trust_endpoints(files, [Endpoint(spec, 3001, KEY_B)], stale_ports=[2001])

    assert files.record_file.read_text() == (
        f"# keep me\ngpu1.tailnet {KEY_B}\n[127.0.0.1]:3001 {KEY_B}\n"
    )
    before = files.record_file.stat().st_mtime_ns
    trust_endpoints(files, [Endpoint(spec, 3001, KEY_B)], stale_ports=[3001])
    assert files.record_file.stat().st_mtime_ns == before  # nothing to change: not rewritten


@pytest.mark.skipif(not PROC.is_dir(), reason="needs Linux /proc")
def test_kill_tagged_kills_exactly_the_tagged_box() -> None:
    def sleeper(tag: str) -> subprocess.Popen[bytes]:
        return subprocess.Popen(["sleep", "60"], env={**os.environ, "RY_TEST_TAG": tag})

    fleet = f"fleet-{os.getpid()}/"  # another test session on this machine has its own
    mine, other = sleeper(f"{fleet}box-1"), sleeper(f"{fleet}box-10")  # a prefix, not the box
    try:
        assert kill_tagged("RY_TEST_TAG", {f"{fleet}box-1"}, fleet) == 1
        assert mine.wait(10) == -signal.SIGKILL
        assert other.poll() is None
        assert tagged_processes("RY_TEST_TAG", fleet) == {f"{fleet}box-10": [other.pid]}
    finally:
        other.kill()
        other.wait()
