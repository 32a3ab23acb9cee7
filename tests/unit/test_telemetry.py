"""Telemetry: parsing real-world nvidia-smi/df output and the probe run end to end."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

import pytest

from runyard.core.fleet.executor import LocalExecutor
from runyard.core.fleet.telemetry import (
    GPU_QUERY_CORE_FIELDS,
    GpuSample,
    WorkerSnapshot,
    build_probe_script,
    gpu_is_really_working,
    parse_compute_apps_csv,
    parse_disk_usage,
    parse_gpu_csv,
    parse_probe_output,
    remote_path_expression,
    snapshot_to_status,
)
from runyard.sim import fake_nvidia_smi
from runyard.sim.fake_nvidia_smi import write_fake_nvidia_smi

H100_UUID = "GPU-4f6b8c2e-91d3-5a7e-b0c4-2d8e6f1a3b5c"
A100_UUID = "GPU-9c1e7a55-03bd-4e2f-8a61-7d9b2c4e6f10"

# --query-gpu=index,name,uuid,utilization.gpu,memory.used,memory.total,power.draw,power.limit,
#             temperature.gpu,clocks.sm,clocks.max.sm,mig.mode.current --format=csv,noheader,nounits
H100_BUSY = f"0, NVIDIA H100 80GB HBM3, {H100_UUID}, 97, 71234, 81559, 612.34, 700.00, 67, 1980, 1980, Disabled"
A100_MIG = f"1, NVIDIA A100-SXM4-40GB, {A100_UUID}, [N/A], 13, 40960, 51.73, 400.00, 29, 1410, 1410, Enabled"
T4_NO_POWER = "2, Tesla T4, GPU-0a1b2c3d-4e5f-6071-8293-a4b5c6d7e8f9, 0, 0, 15360, [N/A], 70.00, 41, 300, 1590, [N/A]"
GEFORCE = (
    "0, NVIDIA GeForce GTX 1060 6GB, GPU-5d2c0e8f-7a31-4b69-9e04-c1f3a8d6b257, 2, 367, 6144, "
    "[Not Supported], [Not Supported], 48, 139, 1961, [N/A]"
)
A10G_WITH_UNITS = (
    "3, NVIDIA A10G, GPU-77e1d0c2-6b4a-4c3f-9d8e-1f2a3b4c5d6e, 35 %, 1024 MiB, 23028 MiB, "
    "250.00 W, 300.00 W, 45, 1710 MHz, 1710 MHz, [N/A]"
)

SIM_H100 = {
    "name": "NVIDIA H100 80GB HBM3",
    "memory_total_mib": 81559,
    "power_limit_w": 700,
    "sm_clock_max_mhz": 1980,
    "uuid": H100_UUID,
}


# ---------------------------------------------------------------- nvidia-smi parsing


def test_parse_gpu_csv_reads_a_busy_h100() -> None:
    (gpu,) = parse_gpu_csv(H100_BUSY)
    assert gpu == GpuSample(
        index=0,
        name="NVIDIA H100 80GB HBM3",
        uuid=H100_UUID,
        util_pct=97,
        mem_used_mib=71234,
        mem_total_mib=81559,
        power_w=612.34,
        power_limit_w=700.0,
        temp_c=67,
        sm_clock_mhz=1980,
        sm_clock_max_mhz=1980,
        mig_mode="Disabled",
    )
    assert gpu_is_really_working(gpu) is True


def test_parse_gpu_csv_turns_placeholders_into_none() -> None:
    mig, t4, geforce = parse_gpu_csv("\n".join([A100_MIG, T4_NO_POWER, GEFORCE]))
    assert (mig.mig_mode, mig.util_pct, mig.mem_used_mib) == ("Enabled", None, 13)
    assert (t4.power_w, t4.power_limit_w, t4.mig_mode) == (None, 70.0, None)
    assert (geforce.power_w, geforce.power_limit_w, geforce.sm_clock_max_mhz) == (None, None, 1961)


def test_parse_gpu_csv_tolerates_units_whitespace_errors_and_garbage() -> None:
    text = "\n".join(
        [
            "index, name, uuid, utilization.gpu [%], memory.used [MiB], memory.total [MiB], "
            "power.draw [W], power.limit [W], temperature.gpu, clocks.sm [MHz], "
            "clocks.max.sm [MHz], mig.mode.current",
            "WARNING: infoROM is corrupted at gpu 0000:00:1E.0",
            "Unable to determine the device handle for GPU 0000:3B:00.0: Unknown Error",
            "",
            A10G_WITH_UNITS,
            "   4 ,  NVIDIA L4 , GPU-x ,  [Unknown Error] , 5 , 23034 , [Insufficient Permissions] "
            ", 72.00 , 38 , 1050 , 2040 , [N/A]   ",
            "x, not, a, gpu, row, at, all, but, twelve, cells, long, ok",
        ]
    )
    a10g, l4 = parse_gpu_csv(text)
    assert (a10g.index, a10g.util_pct, a10g.mem_used_mib, a10g.power_w) == (3, 35, 1024, 250.0)
    assert (a10g.sm_clock_mhz, a10g.sm_clock_max_mhz) == (1710, 1710)
    assert (l4.index, l4.name, l4.util_pct, l4.power_w, l4.power_limit_w) == (
        4,
        "NVIDIA L4",
        None,
        None,
        72.0,
    )


def test_parse_gpu_csv_handles_no_gpus_and_the_older_field_set() -> None:
    assert parse_gpu_csv("") == []
    old_driver_row = H100_BUSY.rsplit(",", 1)[0]
    (gpu,) = parse_gpu_csv(old_driver_row, GPU_QUERY_CORE_FIELDS)
    assert (gpu.index, gpu.sm_clock_max_mhz, gpu.mig_mode) == (0, 1980, None)


def test_parse_compute_apps_csv() -> None:
    gpus = parse_gpu_csv("\n".join([H100_BUSY, A100_MIG]))
    text = "\n".join(
        [
            f"{H100_UUID}, 48213, /usr/bin/python3, 70312",
            f"{A100_UUID}, 51007, python train.py --tag a,b, [N/A]",
            "GPU-ffffffff-0000-0000-0000-000000000000, 777, ghost, 512 MiB",
            "No running processes found",
            "garbage, line",
        ]
    )
    h100, mig, unknown = parse_compute_apps_csv(text, gpus)
    assert (h100.gpu_index, h100.pid, h100.process_name, h100.used_mem_mib) == (
        0,
        48213,
        "/usr/bin/python3",
        70312,
    )
    assert (mig.gpu_index, mig.process_name, mig.used_mem_mib) == (
        1,
        "python train.py --tag a, b",
        None,
    )
    assert (unknown.gpu_index, unknown.used_mem_mib) == (None, 512)
    assert parse_compute_apps_csv("No running processes found\n") == []


def test_gpu_is_really_working_looks_past_util() -> None:
    busy = parse_gpu_csv(H100_BUSY)[0]
    # 100% util from a starved loop of tiny kernels: idle clock, idle power.
    spinning = GpuSample(0, "H100", util_pct=100, power_w=72.0, power_limit_w=700.0,
                         sm_clock_mhz=345, sm_clock_max_mhz=1980)  # fmt: skip
    clock_only = GpuSample(0, "T4", util_pct=None, sm_clock_mhz=1590, sm_clock_max_mhz=1590)
    assert gpu_is_really_working(busy) is True
    assert gpu_is_really_working(spinning) is False
    assert gpu_is_really_working(clock_only) is True
    assert gpu_is_really_working(GpuSample(0, "GeForce", util_pct=99)) is None


# ---------------------------------------------------------------- df parsing

LINUX_DF_K = """Filesystem     1024-blocks       Used  Available Capacity Mounted on
/dev/nvme0n1p1  1967924812 1672736092  195172240      90% /
"""
LINUX_DF_I = """Filesystem        Inodes     IUsed    IFree IUse% Mounted on
/dev/nvme0n1p1  124993536 124000000   993536   100% /
"""
LUSTRE_DF_K = """Filesystem                 1024-blocks              Used         Available Capacity Mounted on
10.0.0.1@o2ib:/scratch 5497558138880000 4398046511104000 1099511627776000      80% /mnt/big scratch
"""
BTRFS_DF_I = """Filesystem     Inodes IUsed IFree IUse% Mounted on
/dev/sda2           0     0     0     - /
"""
MACOS_DF_I = """Filesystem   512-blocks      Used Available Capacity  iused      ifree %iused  Mounted on
/dev/disk3s5 1942700360 1500246912 442453448    78% 2154332 2212267240    0%   /System/Volumes/Data
"""


def test_parse_disk_usage_linux_bytes_and_inodes() -> None:
    disk = parse_disk_usage("/home/me/ws", LINUX_DF_K, LINUX_DF_I)
    assert disk is not None
    assert (disk.filesystem, disk.mount_point) == ("/dev/nvme0n1p1", "/")
    assert disk.total_bytes == 1967924812 * 1024
    assert disk.avail_bytes == 195172240 * 1024
    assert disk.used_pct == pytest.approx(89.6)
    assert (disk.inodes_total, disk.inodes_free) == (124993536, 993536)
    assert disk.inodes_used_pct == pytest.approx(99.2)


def test_parse_disk_usage_huge_filesystem_with_spaces_and_no_inode_table() -> None:
    disk = parse_disk_usage("/mnt/big scratch/ws", LUSTRE_DF_K, BTRFS_DF_I)
    assert disk is not None
    assert disk.mount_point == "/mnt/big scratch"
    assert disk.total_bytes == 5497558138880000 * 1024
    assert disk.used_pct == pytest.approx(80.0)
    assert (disk.inodes_total, disk.inodes_used_pct) == (0, None)


def test_parse_disk_usage_bsd_inode_columns_and_garbage() -> None:
    disk = parse_disk_usage("/Users/me", "", MACOS_DF_I)
    assert disk is not None
    assert (disk.inodes_used, disk.inodes_free, disk.total_bytes) == (2154332, 2212267240, None)
    assert disk.inodes_used_pct == pytest.approx(0.1)
    assert parse_disk_usage("/x", "df: /x: Stale file handle", "") is None


# ---------------------------------------------------------------- the probe output


def test_parse_probe_output_of_a_macos_box_without_gpus() -> None:
    output = b"""@@runyard:probe 1
@@runyard:section heartbeat
ok
@@runyard:rc 0
@@runyard:section boot_id
{ sec = 1700000000, usec = 123456 } Tue Nov 14 22:13:20 2023
@@runyard:section hostname
studio.local
@@runyard:section uptime
86400
@@runyard:section loadavg
{ 1.95 2.03 2.10 }
@@runyard:section nproc
12
@@runyard:section meminfo
MemTotal: 33554432 kB
@@runyard:section gpus index,name
@@runyard:missing nvidia-smi
@@runyard:end
"""
    snapshot = parse_probe_output(output, 1000.0)
    assert snapshot.heartbeat_ok and snapshot.heartbeat_output == "ok"
    assert snapshot.boot_id == "boottime-1700000000.123456"
    assert (snapshot.load1, snapshot.load5, snapshot.load15) == (1.95, 2.03, 2.10)
    assert (snapshot.cpu_count, snapshot.uptime_s) == (12, 86400.0)
    assert (snapshot.mem_total_bytes, snapshot.mem_available_bytes) == (32 * 1024**3, None)
    assert (snapshot.nvidia_smi, snapshot.gpus, snapshot.disk) == ("missing", [], None)


def test_parse_probe_output_survives_empty_and_garbage_input() -> None:
    for data in (b"", b"Welcome to Ubuntu\n\x00\xff@@runyard:rc x\n@@runyard:section"):
        snapshot = parse_probe_output(data, 5.0)
        assert snapshot.taken_at == 5.0
        assert not snapshot.heartbeat_ok
        assert snapshot.nvidia_smi == "error"
        assert snapshot.gpus == []


def test_snapshot_to_status_is_json_with_nulls_for_na() -> None:
    gpus = parse_gpu_csv("\n".join([H100_BUSY, T4_NO_POWER]))
    snapshot = WorkerSnapshot(
        taken_at=1.0,
        heartbeat_ok=True,
        boot_id="b",
        load1=0.5,
        load5=0.4,
        load15=0.3,
        nvidia_smi="ok",
        gpus=gpus,
        gpu_processes=parse_compute_apps_csv(f"{H100_UUID}, 48213, python, 70312", gpus),
        disk=parse_disk_usage("/ws", LINUX_DF_K, LINUX_DF_I),
    )
    status = json.loads(json.dumps(snapshot_to_status(snapshot)))
    h100, t4 = status["gpus"]
    assert {"index", "name", "util_pct", "mem_used_mib", "mem_total_mib", "power_w", "temp_c",
            "sm_clock_mhz", "sm_clock_max_mhz", "power_limit_w", "uuid"} <= h100.keys()  # fmt: skip
    assert (h100["util_pct"], h100["working"]) == (97, True)
    assert (t4["power_w"], t4["mig_mode"]) == (None, None)
    assert status["disk"]["used_pct"] == pytest.approx(89.6)
    assert status["disk"]["inodes_used_pct"] == pytest.approx(99.2)
    assert status["load"] == {"1m": 0.5, "5m": 0.4, "15m": 0.3}
    assert (status["boot_id"], status["nvidia_smi"]) == ("b", "ok")
    assert status["processes"] == [
        {"gpu_uuid": H100_UUID, "gpu_index": 0, "pid": 48213, "process_name": "python",
         "used_mem_mib": 70312}
    ]  # fmt: skip


def test_remote_path_expression_expands_home_there_and_quotes_the_rest() -> None:
    assert remote_path_expression("~") == '"$HOME"'
    assert remote_path_expression("~/runs/a b") == "\"$HOME\"/'runs/a b'"
    assert remote_path_expression("/data/$(reboot)") == "'/data/$(reboot)'"
    assert remote_path_expression("") == "."


# ---------------------------------------------------------------- the probe, end to end


async def probe(
    workspace: str | Path, heartbeat: str = "echo ok", cwd: Path | None = None, **kwargs: Any
) -> WorkerSnapshot:
    """Run the real probe script on this machine and parse what it printed."""
    script = build_probe_script(str(workspace), heartbeat, **kwargs)
    result = await LocalExecutor(cwd=str(cwd) if cwd else None).run(script, timeout=30)
    assert result.exit_status == 0, result.stderr
    return parse_probe_output(result.stdout, time.time())


@pytest.fixture
def sandbox(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A worker workspace whose PATH resolves `nvidia-smi` to the fake with one H100."""
    workspace = tmp_path / "ws"
    workspace.mkdir()
    bin_dir = tmp_path / "bin"
    write_fake_nvidia_smi(bin_dir, [SIM_H100], workspace)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.delenv(fake_nvidia_smi.FAULT_ENV, raising=False)
    return workspace


def local_boot_id() -> str | None:
    boot_id = Path("/proc/sys/kernel/random/boot_id")
    return boot_id.read_text().strip() if boot_id.exists() else None


def files_under(root: Path, pattern: str) -> list[Path]:
    return list(root.rglob(pattern))


def write_pid_file(workspace: Path, run_id: str, attempt: int, pid: int) -> Path:
    attempt_dir = workspace / ".runyard" / "runs" / run_id / str(attempt)
    attempt_dir.mkdir(parents=True)
    (attempt_dir / "pid").write_text(f"{pid}\n")
    return attempt_dir


async def test_probe_reads_this_host_and_the_simulated_gpu(sandbox: Path) -> None:
    snapshot = await probe(sandbox)
    assert snapshot.heartbeat_ok and snapshot.heartbeat_output == "ok"
    assert snapshot.boot_id == local_boot_id()
    assert snapshot.cpu_count == len(os.sched_getaffinity(0))
    assert snapshot.mem_total_bytes and snapshot.mem_available_bytes
    assert snapshot.uptime_s and snapshot.load1 is not None and snapshot.hostname
    assert snapshot.nvidia_smi == "ok"
    (gpu,) = snapshot.gpus
    assert (gpu.name, gpu.uuid, gpu.mem_total_mib) == (SIM_H100["name"], H100_UUID, 81559)
    assert (gpu.util_pct, gpu.mem_used_mib, snapshot.gpu_processes) == (0, 0, [])
    assert gpu_is_really_working(gpu) is False
    assert snapshot.disk is not None and snapshot.disk.path == str(sandbox)
    assert snapshot.disk.total_bytes and snapshot.disk.used_pct is not None


async def test_gpu_follows_a_run_really_running_in_the_sandbox(sandbox: Path) -> None:
    run = await asyncio.create_subprocess_exec("sleep", "30")
    try:
        write_pid_file(sandbox, "r1", 1, run.pid)
        busy = await probe(sandbox)
        (gpu,) = busy.gpus
        assert gpu.util_pct is not None and 85 <= gpu.util_pct <= 99
        assert gpu.mem_used_mib and gpu.mem_used_mib > 0
        assert gpu_is_really_working(gpu) is True
        (process,) = busy.gpu_processes
        assert (process.pid, process.gpu_index, process.process_name) == (run.pid, 0, "sleep")
    finally:
        run.kill()
        await run.wait()
    idle = await probe(sandbox)
    assert (idle.gpus[0].util_pct, idle.gpus[0].mem_used_mib, idle.gpu_processes) == (0, 0, [])
    assert gpu_is_really_working(idle.gpus[0]) is False


async def test_finished_runs_leave_the_gpu_idle_and_zombies_hold_vram(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    workspace = tmp_path / "ws"
    # Two cards; an attempt with an exit_code is finished even though its pid (ours) lives.
    zombie = {"pid": 4242, "used_memory_mib": 3000, "process_name": "python"}
    bin_dir = tmp_path / "bin"
    write_fake_nvidia_smi(bin_dir, [SIM_H100, {**SIM_H100, "uuid": A100_UUID, "zombies": [zombie]}],
                          workspace)  # fmt: skip
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    (write_pid_file(workspace, "r0", 1, os.getpid()) / "exit_code").write_text("0\n")
    snapshot = await probe(workspace)
    first, second = snapshot.gpus
    assert (first.util_pct, second.util_pct, second.mem_used_mib) == (0, 0, 3000)
    (process,) = snapshot.gpu_processes
    assert (process.pid, process.gpu_index, process.used_mem_mib) == (4242, 1, 3000)


async def test_probe_reports_gpu_faults(sandbox: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(fake_nvidia_smi.FAULT_ENV, fake_nvidia_smi.FAULT_NOT_AVAILABLE)
    (gpu,) = (await probe(sandbox)).gpus
    assert (gpu.util_pct, gpu.power_w, gpu.mem_total_mib) == (None, None, 81559)

    monkeypatch.setenv(fake_nvidia_smi.FAULT_ENV, fake_nvidia_smi.FAULT_DRIVER)
    broken = await probe(sandbox)
    assert broken.nvidia_smi == "error"
    assert broken.nvidia_smi_error and "couldn't communicate with the NVIDIA driver" in (
        broken.nvidia_smi_error
    )
    assert (broken.gpus, broken.gpu_processes, broken.heartbeat_ok) == ([], [], True)


async def test_probe_retries_without_fields_an_old_driver_rejects(
    sandbox: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    old_driver = tmp_path / "old-driver"
    old_driver.mkdir()
    shim = old_driver / "nvidia-smi"
    shim.write_text(
        "#!/bin/sh\n"
        'case "$*" in *mig.mode.current*)\n'
        "  echo 'Field \"mig.mode.current\" is not a valid field to query.'; exit 2 ;;\n"
        "esac\n"
        f'exec {tmp_path / "bin" / "nvidia-smi"} "$@"\n'
    )
    shim.chmod(0o755)
    monkeypatch.setenv("PATH", f"{old_driver}{os.pathsep}{os.environ['PATH']}")
    snapshot = await probe(sandbox)
    assert snapshot.nvidia_smi == "ok"
    (gpu,) = snapshot.gpus
    assert (gpu.name, gpu.sm_clock_max_mhz, gpu.mig_mode) == (SIM_H100["name"], 1980, None)


async def test_probe_on_a_cpu_box_without_nvidia_smi(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Only the tools the probe uses, so an nvidia-smi on this machine stays out of sight.
    tools = tmp_path / "tools"
    tools.mkdir()
    for tool in ("bash", "df", "nproc", "timeout", "uname", "getconf", "date", "sleep"):
        found = shutil.which(tool)
        if found:
            (tools / tool).symlink_to(found)
    monkeypatch.setenv("PATH", str(tools))
    snapshot = await probe(tmp_path)
    assert (snapshot.nvidia_smi, snapshot.nvidia_smi_error) == ("missing", None)
    assert (snapshot.gpus, snapshot.gpu_processes) == ([], [])
    assert snapshot.heartbeat_ok and snapshot.disk is not None
    assert snapshot_to_status(snapshot)["gpus"] == []


async def test_probe_quotes_and_expands_the_workspace(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = tmp_path / "home"
    (home / "proj dir").mkdir(parents=True)
    monkeypatch.setenv("HOME", str(home))
    hostile = "~/proj dir/$(touch pwned)/`touch pwned2`"
    snapshot = await probe(hostile, cwd=tmp_path)
    assert snapshot.disk is not None and snapshot.disk.path == str(home / "proj dir")
    assert not files_under(tmp_path, "pwned*")
    missing = await probe("~/not/there/yet", cwd=tmp_path)
    assert missing.disk is not None and missing.disk.path == str(home)


async def test_heartbeat_failure_timeout_and_forged_markers(sandbox: Path) -> None:
    failed = await probe(sandbox, "echo down >&2; exit 3")
    assert (failed.heartbeat_ok, failed.heartbeat_exit_status, failed.heartbeat_output) == (
        False,
        3,
        "down",
    )
    forged = await probe(sandbox, "printf '@@runyard:section gpus index\\n9, fake\\n'")
    assert forged.heartbeat_ok and [gpu.name for gpu in forged.gpus] == [SIM_H100["name"]]

    hung = await probe(sandbox, "sleep 5", command_timeout_s=1)
    assert (hung.heartbeat_ok, hung.heartbeat_exit_status) == (False, 124)
    assert hung.nvidia_smi == "ok"


# ---------------------------------------------------------------- the fake itself


def test_fake_nvidia_smi_human_outputs(sandbox: Path) -> None:
    environ = {**os.environ, fake_nvidia_smi.WORKSPACE_ENV: str(sandbox)}
    environ[fake_nvidia_smi.GPUS_ENV] = str(sandbox.parent / "bin" / "nvidia-smi.gpus.json")
    status, lines = fake_nvidia_smi.run(["-L"], environ, 0.0)
    assert (status, lines) == (0, [f"GPU 0: {SIM_H100['name']} (UUID: {H100_UUID})"])
    status, lines = fake_nvidia_smi.run([], environ, 0.0)
    assert status == 0 and "simulated" in lines[1] and "No running processes found" in lines
    status, lines = fake_nvidia_smi.run(
        ["--query-gpu=index,power.draw,clocks.sm", "--format=csv"], environ, 0.0
    )
    assert lines == ["index, power.draw [W], clocks.sm [MHz]", "0, 70.00 W, 210 MHz"]
    assert fake_nvidia_smi.run(["--query-gpu=bogus", "--format=csv"], environ, 0.0) == (
        2,
        ['Field "bogus" is not a valid field to query.'],
    )
    assert fake_nvidia_smi.run(["-q"], environ, 0.0)[0] == 2
    assert fake_nvidia_smi.run([], {}, 0.0) == (6, ["No devices were found"])
