"""Telemetry: parsing real-world nvidia-smi/df output and the probe run end to end."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import shlex
import shutil
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from runyard.core.errors import WorkerUnreachable
from runyard.core.fleet.executor import LocalExecutor
from runyard.core.fleet.telemetry import (
    COMPUTE_APP_FIELDS,
    GPU_QUERY_CORE_FIELDS,
    GPU_QUERY_FIELDS,
    DiskUsage,
    GpuProcess,
    GpuProcessMemo,
    GpuSample,
    Measurement,
    SeenGpuProcesses,
    WorkerSnapshot,
    build_probe_script,
    gpu_is_really_working,
    parse_compute_apps_csv,
    parse_disk_usage,
    parse_gnu_df,
    parse_gpu_csv,
    parse_measurement,
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
LINUX_DF_GNU = """Filesystem      1K-blocks       Used     Avail    Inodes     IUsed  IFree Mounted on
/dev/nvme0n1p1 1967924812 1672736092 195172240 124993536 124000000 993536 /
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


GNU_DF_OUTPUT = """Filesystem      1K-blocks       Used      Avail Inodes IUsed IFree Mounted on
/dev/sda2 on ssd 976762584  876762584  100000000      -     -     - /mnt/big scratch
"""


def test_parse_gnu_df_one_run_for_bytes_and_inodes() -> None:
    disk = parse_gnu_df("/mnt/big scratch/ws", GNU_DF_OUTPUT)
    assert disk is not None
    assert (disk.filesystem, disk.mount_point) == ("/dev/sda2 on ssd", "/mnt/big scratch")
    assert (disk.total_bytes, disk.avail_bytes) == (976762584 * 1024, 100000000 * 1024)
    assert disk.used_pct == pytest.approx(89.8)
    assert (disk.inodes_total, disk.inodes_used_pct) == (None, None)
    linux = parse_gnu_df("/home/me/ws", LINUX_DF_GNU)
    assert linux == parse_disk_usage("/home/me/ws", LINUX_DF_K, LINUX_DF_I)
    assert parse_gnu_df("/x", "df: unrecognized option '--output'") is None


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


@pytest.mark.parametrize(
    ("section", "cpus"),
    [
        ("allowed 0-63\nonline 0-7,9", 9),  # a mask naming offline CPUs: 8 and 10+ are off
        ("allowed 0-3,8,10-11\nonline 0-15", 7),
        ("allowed 2", 1),  # no /sys: the mask alone
        ("allowed 0-3\nonline", 4),
        ("allowed 0-\nonline 0-7", None),
    ],
)
def test_parse_probe_output_counts_the_allowed_cpus_that_are_online(
    section: str, cpus: int | None
) -> None:
    output = f"@@runyard:probe 1\n@@runyard:section nproc\n{section}\n@@runyard:end\n"
    assert parse_probe_output(output.encode(), 1.0).cpu_count == cpus


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


# ---------------------------------------------------------------- every field, pinned
# Equality alone would let 97 become 97.0; `assert_identical` also compares reprs, so the
# types of every field are pinned too.


def assert_identical(actual: object, expected: object) -> None:
    assert actual == expected
    assert repr(actual) == repr(expected)


GPU_FIELDS_ARG = ",".join(GPU_QUERY_FIELDS)
APP_FIELDS_ARG = ",".join(COMPUTE_APP_FIELDS)
BOOT_ID = "890d5d68-f7e6-4896-9f8c-2ec0accec422"
T4_UUID = "GPU-0a1b2c3d-4e5f-6071-8293-a4b5c6d7e8f9"
HOST_SECTIONS = f"""@@runyard:probe 1
@@runyard:section heartbeat
ok
@@runyard:rc 0
@@runyard:section boot_id
{BOOT_ID}
@@runyard:section hostname
gpu-node-07
@@runyard:section uptime
17009.45 22010.62
@@runyard:section loadavg
0.56 0.34 0.28 1/89 26756
@@runyard:section nproc
64
@@runyard:section meminfo
MemTotal:       2113564152 kB
MemAvailable:   1843417396 kB
"""
DISK_SECTIONS = f"""@@runyard:section disk_path
/home/me/ws
@@runyard:section df_blocks
{LINUX_DF_K}@@runyard:section df_inodes
{LINUX_DF_I}@@runyard:end
"""
REAL_GPU_SECTIONS = f"""@@runyard:section gpus {GPU_FIELDS_ARG}
{H100_BUSY}
{A100_MIG}
{T4_NO_POWER}
@@runyard:rc 0
@@runyard:section gpu_processes {APP_FIELDS_ARG}
{H100_UUID}, 48213, /usr/bin/python3, 70312
{A100_UUID}, 51007, python train.py --tag a,b, [N/A]
@@runyard:rc 0
"""
H100_BUSY_SAMPLE = GpuSample(
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
A100_MIG_SAMPLE = GpuSample(
    index=1,
    name="NVIDIA A100-SXM4-40GB",
    uuid=A100_UUID,
    util_pct=None,
    mem_used_mib=13,
    mem_total_mib=40960,
    power_w=51.73,
    power_limit_w=400.0,
    temp_c=29,
    sm_clock_mhz=1410,
    sm_clock_max_mhz=1410,
    mig_mode="Enabled",
)
T4_SAMPLE = GpuSample(
    index=2,
    name="Tesla T4",
    uuid=T4_UUID,
    util_pct=0,
    mem_used_mib=0,
    mem_total_mib=15360,
    power_w=None,
    power_limit_w=70.0,
    temp_c=41,
    sm_clock_mhz=300,
    sm_clock_max_mhz=1590,
    mig_mode=None,
)
LINUX_DISK = DiskUsage(
    path="/home/me/ws",
    filesystem="/dev/nvme0n1p1",
    mount_point="/",
    total_bytes=1967924812 * 1024,
    used_bytes=1672736092 * 1024,
    avail_bytes=195172240 * 1024,
    used_pct=89.6,
    inodes_total=124993536,
    inodes_used=124000000,
    inodes_free=993536,
    inodes_used_pct=99.2,
)
# The host and disk part of every snapshot below; each test replaces the GPU part.
GPU_BOX = WorkerSnapshot(
    taken_at=1700000000.5,
    heartbeat_ok=True,
    heartbeat_output="ok",
    heartbeat_exit_status=0,
    hostname="gpu-node-07",
    boot_id=BOOT_ID,
    uptime_s=17009.45,
    load1=0.56,
    load5=0.34,
    load15=0.28,
    cpu_count=64,
    mem_total_bytes=2113564152 * 1024,
    mem_available_bytes=1843417396 * 1024,
    nvidia_smi="ok",
    nvidia_smi_error=None,
    gpus=[H100_BUSY_SAMPLE, A100_MIG_SAMPLE, T4_SAMPLE],
    gpu_processes=[
        GpuProcess(H100_UUID, 0, 48213, "/usr/bin/python3", 70312),
        GpuProcess(A100_UUID, 1, 51007, "python train.py --tag a, b", None),
    ],
    disk=LINUX_DISK,
)


def probe_bytes(gpu_sections: str, host: str = HOST_SECTIONS, disk: str = DISK_SECTIONS) -> bytes:
    return (host + gpu_sections + disk).encode()


def test_parse_probe_output_pins_every_field_of_a_gpu_box() -> None:
    snapshot = parse_probe_output(probe_bytes(REAL_GPU_SECTIONS), 1700000000.5)
    assert_identical(snapshot, GPU_BOX)


def test_parse_probe_output_reads_crlf_and_stray_blank_lines_alike() -> None:
    text = (HOST_SECTIONS + REAL_GPU_SECTIONS + DISK_SECTIONS).replace("\n", "\r\n")
    assert_identical(parse_probe_output(text.encode(), 1700000000.5), GPU_BOX)
    padded = REAL_GPU_SECTIONS.replace(f"{A100_MIG}\n", f"{A100_MIG}\n\n   \n")
    assert_identical(parse_probe_output(probe_bytes(padded), 1700000000.5), GPU_BOX)


DRIVER_FAILURE = fake_nvidia_smi.DRIVER_FAILURE_MESSAGE


@pytest.mark.parametrize(
    ("gpu_sections", "nvidia_smi", "error"),
    [
        (f"@@runyard:section gpus {GPU_FIELDS_ARG}\n{DRIVER_FAILURE}\n@@runyard:rc 9\n",
         "error", DRIVER_FAILURE),
        (f"@@runyard:section gpus {GPU_FIELDS_ARG}\n@@runyard:rc 124\n",
         "error", "nvidia-smi timed out"),
        (f"@@runyard:section gpus {GPU_FIELDS_ARG}\nNo devices were found\n@@runyard:rc 6\n",
         "error", "No devices were found"),
        (f"@@runyard:section gpus {GPU_FIELDS_ARG}\n@@runyard:rc 2\n",
         "error", "nvidia-smi exited with status 2"),
        (f"@@runyard:section gpus {GPU_FIELDS_ARG}\n  Unable to determine  \n\n"
         "  the device handle\n@@runyard:rc 15\n",
         "error", "Unable to determine the device handle"),
        # Cut off before its rc: the rows read as the error, nothing as GPUs.
        (f"@@runyard:section gpus {GPU_FIELDS_ARG}\n{H100_BUSY}\n", "error", H100_BUSY),
        (f"@@runyard:section gpus {GPU_FIELDS_ARG}\n@@runyard:rc x\n",
         "error", "nvidia-smi exited with status None"),
        (f"@@runyard:section gpus {GPU_FIELDS_ARG}\n@@runyard:missing nvidia-smi\n",
         "missing", None),
        ("", "error", "the probe output has no GPU section"),
        # No GPUs at all, and a compute-apps query that found nothing.
        (f"@@runyard:section gpus {GPU_FIELDS_ARG}\n@@runyard:rc 0\n"
         f"@@runyard:section gpu_processes {APP_FIELDS_ARG}\nNo running processes found\n"
         "@@runyard:rc 0\n", "ok", None),
    ],
)  # fmt: skip
def test_parse_probe_output_pins_nvidia_smi_failures(
    gpu_sections: str, nvidia_smi: str, error: str | None
) -> None:
    snapshot = parse_probe_output(probe_bytes(gpu_sections), 1700000000.5)
    expected = dataclasses.replace(
        GPU_BOX, nvidia_smi=nvidia_smi, nvidia_smi_error=error, gpus=[], gpu_processes=[]
    )
    assert_identical(snapshot, expected)


def test_parse_probe_output_long_errors_are_cut_to_500_characters() -> None:
    message = "x" * 300
    gpu = f"@@runyard:section gpus {GPU_FIELDS_ARG}\n{message}\n{message}\n@@runyard:rc 1\n"
    snapshot = parse_probe_output(probe_bytes(gpu), 0.0)
    assert snapshot.nvidia_smi_error == f"{message} {message}"[:500]


def test_parse_probe_output_keeps_gpus_when_the_compute_apps_query_fails() -> None:
    failed_apps = REAL_GPU_SECTIONS.replace(
        f"{A100_UUID}, 51007, python train.py --tag a,b, [N/A]\n@@runyard:rc 0",
        "Failed to initialize NVML: Unknown Error\n@@runyard:rc 255",
    )
    snapshot = parse_probe_output(probe_bytes(failed_apps), 1700000000.5)
    assert_identical(snapshot, dataclasses.replace(GPU_BOX, gpu_processes=[]))
    no_apps = REAL_GPU_SECTIONS.split("@@runyard:section gpu_processes")[0]
    snapshot = parse_probe_output(probe_bytes(no_apps), 1700000000.5)
    assert_identical(snapshot, dataclasses.replace(GPU_BOX, gpu_processes=[]))


def test_parse_probe_output_old_driver_field_set_and_default_fields() -> None:
    core_fields = ",".join(GPU_QUERY_CORE_FIELDS)
    old_rows = "\n".join(row.rsplit(",", 1)[0] for row in (H100_BUSY, A100_MIG, T4_NO_POWER))
    old = f"@@runyard:section gpus {core_fields}\n{old_rows}\n@@runyard:rc 0\n"
    snapshot = parse_probe_output(probe_bytes(old), 1700000000.5)
    gpus = [dataclasses.replace(gpu, mig_mode=None) for gpu in GPU_BOX.gpus]
    assert_identical(snapshot, dataclasses.replace(GPU_BOX, gpus=gpus, gpu_processes=[]))
    # A section without a field list is read with the full field set.
    bare = REAL_GPU_SECTIONS.replace(f"section gpus {GPU_FIELDS_ARG}", "section gpus")
    assert_identical(parse_probe_output(probe_bytes(bare), 1700000000.5), GPU_BOX)


def test_parse_probe_output_first_section_wins_and_end_stops_reading() -> None:
    forged = "@@runyard:section gpus index,name\n9, fake\n@@runyard:rc 0\n"
    text = HOST_SECTIONS + REAL_GPU_SECTIONS + forged + DISK_SECTIONS + "trailing noise\n"
    snapshot = parse_probe_output(text.encode(), 1700000000.5)
    assert_identical(snapshot, GPU_BOX)


def test_parse_probe_output_pins_the_host_sections_edge_cases() -> None:
    host = """banner before the probe
@@runyard:rc 5
@@runyard:section heartbeat
  first line
second line  

@@runyard:rc 3
@@runyard:section boot_id

{ sec = 1700000000, usec = 123456 } Tue Nov 14 22:13:20 2023
@@runyard:section hostname

   studio.local  
other
@@runyard:section uptime
@@runyard:section loadavg
1.5 2
@@runyard:section nproc
eight
@@runyard:section meminfo
MemTotal: 1000
Bogus line
MemAvailable:   12 kB
"""  # noqa: W291
    snapshot = parse_probe_output(probe_bytes(REAL_GPU_SECTIONS, host=host), 7.0)
    expected = dataclasses.replace(
        GPU_BOX,
        taken_at=7.0,
        heartbeat_ok=False,
        heartbeat_output="first line\nsecond line",
        heartbeat_exit_status=3,
        hostname="studio.local",
        boot_id="boottime-1700000000.123456",
        uptime_s=None,
        load1=1.5,
        load5=2.0,
        load15=None,
        cpu_count=None,
        mem_total_bytes=1000,
        mem_available_bytes=12 * 1024,
    )
    assert_identical(snapshot, expected)


def test_parse_probe_output_of_a_cpu_box_pins_every_field() -> None:
    gpu = f"@@runyard:section gpus {GPU_FIELDS_ARG}\n@@runyard:missing nvidia-smi\n"
    disk = DISK_SECTIONS.replace(LINUX_DF_I, "df: invalid option -- 'i'\n")
    snapshot = parse_probe_output(probe_bytes(gpu, disk=disk), 3.0)
    no_inodes = dataclasses.replace(
        LINUX_DISK,
        inodes_total=None,
        inodes_used=None,
        inodes_free=None,
        inodes_used_pct=None,
    )
    expected = dataclasses.replace(
        GPU_BOX, taken_at=3.0, nvidia_smi="missing", gpus=[], gpu_processes=[], disk=no_inodes
    )
    assert_identical(snapshot, expected)
    no_disk = parse_probe_output(probe_bytes(gpu, disk="@@runyard:end\n"), 3.0)
    assert_identical(no_disk, dataclasses.replace(expected, disk=None))


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("97", 97), ("612.34", 612.34), (" 97 ", 97), ("-5", -5), ("+3.5", 3.5), ("0", 0),
        ("35 %", 35), ("250.00 W", 250.0), ("12.5MiB", 12.5), ("1024 MiB", 1024),
        ("1e3", 1000.0), ("1.", 1.0), (".5", 0.5), ("1_000", 1000), ("\uff13", 3),
        ("nan", None), ("inf", None), ("-inf", None), ("[N/A]", None), ("N/A", None),
        ("", None), ("  ", None), ("[Not Supported]", None), ("[Unknown Error]", None),
        ("0x10", None), ("5 W extra", None), ("Disabled", None),
    ],
)  # fmt: skip
def test_parse_measurement_values_and_types(text: str, value: Measurement) -> None:
    assert_identical(parse_measurement(text), value)


def test_parse_gpu_csv_pins_text_placeholders() -> None:
    row = "5, [N/A], N/A, 1, 2, 3, 4.5, 6, 7, 8, 9, [Unknown Error]"
    assert_identical(
        parse_gpu_csv(row),
        [GpuSample(5, "unknown GPU", None, 1, 2, 3, 4.5, 6, 7, 8, 9, None)],
    )
    # Rows with the wrong number of columns or no integer index are skipped.
    short, long_row = "6, A, B, 1", f"{H100_BUSY}, extra"
    assert parse_gpu_csv("\n".join([short, long_row, H100_BUSY.replace("0,", "1.0,", 1)])) == []
    assert_identical(parse_gpu_csv(" 7 , x " + ", 1" * 10, ("index", "name", *"abcdefghij")),
                     [GpuSample(7, "x")])  # fmt: skip


def test_csv_cells_read_as_their_stripped_text() -> None:
    # str.strip() drops "\x1f" where int() and float() do not: cells must read as stripped.
    row = "\x1f3\x1f, n, u, \x1f1_000, 1e3 , \x1f5, \x1f612.34, 7 W, N/A, nan, [N/A] , x"
    (gpu,) = parse_gpu_csv(row)
    assert_identical(gpu, GpuSample(3, "n", "u", 1000, 1000.0, 5, 612.34, 7, None, None, None, "x"))
    apps = parse_compute_apps_csv("\x1fu\x1f, \x1f42\x1f, \x1fpy\x1f, \x1f1_000", [gpu])
    assert_identical(apps, [GpuProcess("u", 3, 42, "py", 1000)])


def test_parse_disk_usage_pins_every_field() -> None:
    assert_identical(parse_disk_usage("/home/me/ws", LINUX_DF_K, LINUX_DF_I), LINUX_DISK)
    assert_identical(
        parse_disk_usage("/mnt/big scratch/ws", LUSTRE_DF_K, BTRFS_DF_I),
        DiskUsage(
            path="/mnt/big scratch/ws",
            filesystem="10.0.0.1@o2ib:/scratch",
            mount_point="/mnt/big scratch",
            total_bytes=5497558138880000 * 1024,
            used_bytes=4398046511104000 * 1024,
            avail_bytes=1099511627776000 * 1024,
            used_pct=80.0,
            inodes_total=0,
            inodes_used=0,
            inodes_free=0,
            inodes_used_pct=None,
        ),
    )
    assert_identical(
        parse_disk_usage("/Users/me", "", MACOS_DF_I),
        DiskUsage(
            path="/Users/me",
            filesystem="/dev/disk3s5",
            mount_point="/System/Volumes/Data",
            inodes_total=2154332 + 2212267240,
            inodes_used=2154332,
            inodes_free=2212267240,
            inodes_used_pct=0.1,
        ),
    )
    macos_blocks = MACOS_DF_I  # the same columns as `df -P -k` on macOS, in 512-byte blocks
    assert_identical(
        parse_disk_usage("/Users/me", macos_blocks, "df: /Users/me: Permission denied\n"),
        DiskUsage(
            path="/Users/me",
            filesystem="/dev/disk3s5",
            mount_point="/System/Volumes/Data",
            total_bytes=1942700360 * 512,
            used_bytes=1500246912 * 512,
            avail_bytes=442453448 * 512,
            used_pct=77.2,
        ),
    )
    warned = "df: /proc/x: Permission denied\n" + LINUX_DF_K
    assert_identical(parse_disk_usage("/home/me/ws", warned, LINUX_DF_I), LINUX_DISK)
    assert parse_disk_usage("/x", "Filesystem 1024-blocks Used Available Capacity Mounted on\n",
                            "") is None  # fmt: skip


def sim_cards(count: int, **extra: Any) -> list[fake_nvidia_smi.SimGpu]:
    zombie = {"pid": 4242, "used_memory_mib": 3000, "process_name": "ghost, a"}
    entries = [{**fake_nvidia_smi.DEFAULT_GPU, **extra} for _ in range(count)]
    if entries:
        entries[-1]["zombies"] = [zombie]
    return [fake_nvidia_smi._gpu_from_entry(index, entry) for index, entry in enumerate(entries)]


def expected_samples(readings: list[fake_nvidia_smi.GpuReading]) -> list[GpuSample]:
    """What the parser must make of the simulator's readings (floats print with 2 decimals)."""

    def two_decimals(value: float | None) -> float | None:
        return None if value is None else float(f"{value:.2f}")

    return [
        GpuSample(
            index=r.gpu.index,
            name=r.gpu.name,
            uuid=r.gpu.uuid,
            util_pct=r.util_pct,
            mem_used_mib=r.mem_used_mib,
            mem_total_mib=r.gpu.memory_total_mib,
            power_w=two_decimals(r.power_w),
            power_limit_w=two_decimals(r.gpu.power_limit_w),
            temp_c=r.temp_c,
            sm_clock_mhz=r.sm_clock_mhz,
            sm_clock_max_mhz=r.gpu.sm_clock_max_mhz,
            mig_mode=r.gpu.mig_mode,
        )
        for r in readings
    ]


@pytest.mark.parametrize("csv_format", ["csv,noheader,nounits", "csv,noheader", "csv,nounits"])
@pytest.mark.parametrize(
    ("count", "extra", "fault"),
    [
        (8, {}, ""),
        (8, {}, fake_nvidia_smi.FAULT_NOT_AVAILABLE),
        (8, {"mig_mode": "Enabled", "name": "NVIDIA A100-SXM4-80GB"}, ""),
        (3, {"power_limit_w": 72.5, "sm_clock_max_mhz": 2040, "name": "NVIDIA L4"}, ""),
        (0, {}, ""),
    ],
)
def test_probe_output_of_the_simulated_nvidia_smi_matches_its_readings(
    csv_format: str, count: int, extra: dict[str, Any], fault: str
) -> None:
    cards = sim_cards(count, **extra)
    # Runs on some cards only (pids need not exist; their names then read "python").
    pids = [4_000_001 + 7 * i for i in range(max(0, count - 2))]
    for now in (0.0, 3.7, 1_700_000_011.25):
        readings = fake_nvidia_smi.read_gpus(cards, pids, fault, now)
        gpu_lines = fake_nvidia_smi.render_query(
            GPU_QUERY_FIELDS, fake_nvidia_smi.GPU_COLUMNS, readings, csv_format
        )
        apps = [fake_nvidia_smi.AppRow(r, p) for r in readings for p in r.processes]
        app_lines = fake_nvidia_smi.render_query(
            COMPUTE_APP_FIELDS, fake_nvidia_smi.APP_COLUMNS, apps, csv_format
        )
        gpu_sections = "".join(
            [
                f"@@runyard:section gpus {GPU_FIELDS_ARG}\n",
                "".join(f"{line}\n" for line in gpu_lines),
                f"@@runyard:rc 0\n@@runyard:section gpu_processes {APP_FIELDS_ARG}\n",
                "".join(f"{line}\n" for line in app_lines),
                "@@runyard:rc 0\n",
            ]
        )
        snapshot = parse_probe_output(probe_bytes(gpu_sections), 1700000000.5)
        processes = [
            GpuProcess(
                gpu_uuid=app.reading.gpu.uuid,
                gpu_index=app.reading.gpu.index,
                pid=app.process.pid,
                process_name=app.process.process_name.replace(",", ", ").replace(",  ", ", "),
                used_mem_mib=None if app.reading.gpu.mig_mode else app.process.used_memory_mib,
            )
            for app in apps
        ]
        expected = dataclasses.replace(
            GPU_BOX, gpus=expected_samples(readings), gpu_processes=processes
        )
        assert_identical(snapshot, expected)


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
    return parse_probe_output(result.stdout, time.time(), kwargs.get("seen"))


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


def counting_nvidia_smi(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Puts a wrapper before the sandbox's fake nvidia-smi that logs each call's query."""
    log = tmp_path / "nvidia-smi.calls"
    wrapper = tmp_path / "counting"
    wrapper.mkdir()
    shim = wrapper / "nvidia-smi"
    shim.write_text(
        f'#!/bin/sh\nprintf "%s\\n" "${{1%%=*}}" >> {log}\n'
        f'exec {tmp_path / "bin" / "nvidia-smi"} "$@"\n'
    )
    shim.chmod(0o755)
    monkeypatch.setenv("PATH", f"{wrapper}{os.pathsep}{os.environ['PATH']}")
    return log


def queries(log: Path) -> list[str]:
    """The queries logged since the last look, and a clean log for the next."""
    calls = log.read_text().split() if log.exists() else []
    log.unlink(missing_ok=True)
    return calls


async def test_probe_reuses_the_process_list_only_while_it_must_still_hold(
    sandbox: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = counting_nvidia_smi(tmp_path, monkeypatch)
    memo = GpuProcessMemo()
    run = await asyncio.create_subprocess_exec("sleep", "30")

    async def tick() -> WorkerSnapshot:
        snapshot = await probe(sandbox, seen=memo.recall("w", time.time()))
        memo.remember("w", snapshot)
        return snapshot

    try:
        write_pid_file(sandbox, "r1", 1, run.pid)
        first = await tick()
        assert queries(log) == ["--query-gpu", "--query-compute-apps"]
        assert [p.pid for p in first.gpu_processes] == [run.pid]
        assert first.gpu_memory_key and not first.gpu_processes_reused

        again = await tick()  # same memory, the run's pid lives: nvidia-smi runs once
        assert queries(log) == ["--query-gpu"]
        assert again.gpu_processes == first.gpu_processes and again.gpu_processes_reused
        assert again.gpus[0].util_pct is not None and again.gpus[0].util_pct > 50
    finally:
        run.kill()
        await run.wait()
    # The run is gone: its memory is freed and its pid left /proc; asked again.
    idle = await tick()
    assert queries(log) == ["--query-gpu", "--query-compute-apps"]
    assert (idle.gpu_processes, idle.gpu_processes_reused) == ([], False)
    await tick()
    assert queries(log) == ["--query-gpu"]


async def test_no_reuse_where_gpu_memory_reads_not_available(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Boards that report memory.used as [N/A] give the probe nothing to compare: it asks
    for the processes every time, and a new one shows at once."""
    apps = tmp_path / "apps.csv"
    apps.write_text("")
    bin_dir = tmp_path / "na-bin"
    bin_dir.mkdir()
    row = H100_BUSY.replace(", 71234,", ", [N/A],")
    (bin_dir / "nvidia-smi").write_text(
        "#!/bin/sh\n"
        f'case "$*" in *--query-gpu=*) echo {shlex.quote(row)} ;; *) cat {apps} ;; esac\n'
    )
    (bin_dir / "nvidia-smi").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    memo = GpuProcessMemo()
    first = await probe(tmp_path)
    assert (first.gpus[0].mem_used_mib, first.gpu_processes, first.gpu_memory_key) == (
        None,
        [],
        None,
    )
    memo.remember("w", first)
    assert memo.recall("w", time.time()) is None
    apps.write_text(f"{H100_UUID}, {os.getpid()}, python, 300\n")
    (process,) = (await probe(tmp_path, seen=memo.recall("w", time.time()))).gpu_processes
    assert process.pid == os.getpid()


async def test_a_listed_pid_that_exits_is_asked_again_even_if_memory_reads_the_same(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    holder = await asyncio.create_subprocess_exec("sleep", "30")
    workspace = tmp_path / "ws"
    # A process the fake lists with fixed memory: only its pid tells it is gone.
    zombie = {"pid": holder.pid, "used_memory_mib": 3000, "process_name": "python"}
    write_fake_nvidia_smi(tmp_path / "bin", [{**SIM_H100, "zombies": [zombie]}], workspace)
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}")
    log = counting_nvidia_smi(tmp_path, monkeypatch)
    memo = GpuProcessMemo()
    try:
        memo.remember("w", await probe(workspace))
        seen = memo.recall("w", time.time())
        assert seen is not None and [p.pid for p in seen.processes] == [holder.pid]
        queries(log)
        assert (await probe(workspace, seen=seen)).gpu_processes_reused
        assert queries(log) == ["--query-gpu"]
    finally:
        holder.kill()
        await holder.wait()
    after = await probe(workspace, seen=seen)
    assert queries(log) == ["--query-gpu", "--query-compute-apps"]
    assert not after.gpu_processes_reused and after.gpu_memory_key == seen.memory_key
    # Too old to stand in, whatever the worker says.
    assert memo.recall("w", seen.taken_at + memo.max_age_s + 1) is None


def test_parse_probe_output_takes_the_seen_processes_only_where_the_probe_says_unchanged() -> None:
    process = GpuProcess(gpu_uuid=H100_UUID, gpu_index=0, pid=77, process_name="python")
    seen = SeenGpuProcesses("71234;", (process,), taken_at=1.0)
    head = f"@@runyard:section gpus\n{H100_BUSY}\n@@runyard:rc 0\n"
    reused = head + "@@runyard:section gpu_processes\n@@runyard:unchanged\n@@runyard:rc 0\n"
    snapshot = parse_probe_output(reused.encode(), 2.0, seen)
    assert (snapshot.gpu_processes, snapshot.gpu_memory_key) == ([process], "71234;")
    assert snapshot.gpu_processes_reused
    # Without the answer it refers to, "unchanged" proves nothing: no processes, no key.
    orphan = parse_probe_output(reused.encode(), 2.0)
    assert (orphan.gpu_processes, orphan.gpu_memory_key, orphan.gpu_processes_reused) == (
        [],
        None,
        False,
    )
    # A failed compute-apps query leaves nothing to remember.
    failed = head + "@@runyard:section gpu_memory\n71234;\n@@runyard:section gpu_processes\n"
    failed += "oops\n@@runyard:rc 9\n"
    assert parse_probe_output(failed.encode(), 2.0, seen).gpu_memory_key is None
    memo = GpuProcessMemo()
    memo.remember("w", parse_probe_output(failed.encode(), 2.0))
    assert memo.recall("w", 2.0) is None


def processes_named(name: str) -> list[str]:
    """Pids of live processes whose argv[0] is `name`."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            if (
                entry.name.isdigit()
                and (entry / "cmdline").read_bytes().split(b"\0")[0] == name.encode()
            ):
                found.append(entry.name)
        except OSError:
            continue
    return found


async def test_a_hanging_nvidia_smi_is_killed_and_the_rest_of_the_probe_answers(
    sandbox: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A wedged driver: nvidia-smi never returns. `timeout` ends it, and the heartbeat,
    host and disk sections still answer."""
    hung = tmp_path / "hung"
    hung.mkdir()
    marker = f"hung-nvidia-smi-{os.getpid()}"
    (hung / "nvidia-smi").write_text(f"#!/usr/bin/env bash\nexec -a {marker} sleep 60\n")
    (hung / "nvidia-smi").chmod(0o755)
    monkeypatch.setenv("PATH", f"{hung}{os.pathsep}{os.environ['PATH']}")
    start = time.monotonic()
    snapshot = await probe(sandbox, command_timeout_s=1)
    assert time.monotonic() - start < 5
    assert (snapshot.nvidia_smi, snapshot.nvidia_smi_error) == ("error", "nvidia-smi timed out")
    assert snapshot.heartbeat_ok and snapshot.disk is not None and snapshot.cpu_count
    await asyncio.sleep(0.2)
    assert not processes_named(marker), "the hung nvidia-smi is still running"


def wedged_nvidia_smi(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path]:
    """An nvidia-smi that, while `hang` exists, never returns and ignores `timeout`'s TERM
    (as one stuck in the kernel does); every call is logged. Its pid file goes to tmp_path."""
    bin_dir, hang, calls = tmp_path / "wedged", tmp_path / "hang", tmp_path / "calls"
    bin_dir.mkdir()
    real = tmp_path / "bin" / "nvidia-smi"
    (bin_dir / "nvidia-smi").write_text(
        "#!/usr/bin/env bash\n"
        f"echo call >> {calls}\n"
        f"if [ -e {hang} ]; then trap '' TERM; sleep 60; fi\n"
        f'exec {real} "$@"\n'
    )
    (bin_dir / "nvidia-smi").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    monkeypatch.delenv("XDG_RUNTIME_DIR", raising=False)
    return hang, calls


async def test_an_nvidia_smi_stuck_past_its_time_limit_is_reported_not_joined(
    sandbox: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    hang, calls = wedged_nvidia_smi(tmp_path, monkeypatch)
    hang.touch()
    script = build_probe_script(str(sandbox), command_timeout_s=1)
    with pytest.raises(WorkerUnreachable):  # `timeout` waits on it for ever: so does the probe
        await LocalExecutor().run(script, timeout=2)
    stuck = int((tmp_path / f"runyard-nvidia-smi.{os.getuid()}").read_text())
    try:
        await asyncio.sleep(5)  # older than the 1 s limit plus 5 s of grace
        start = time.monotonic()
        snapshot = await probe(sandbox, command_timeout_s=1)
        assert time.monotonic() - start < 2
        assert snapshot.nvidia_smi == "error" and snapshot.heartbeat_ok and snapshot.disk
        assert snapshot.nvidia_smi_error is not None
        assert f"has not returned (pid {stuck})" in snapshot.nvidia_smi_error
        assert calls.read_text() == "call\n"  # no second nvidia-smi behind the first
    finally:
        os.killpg(stuck, signal.SIGKILL)  # the driver recovers (timeout leads its own group)
        hang.unlink()
    await asyncio.sleep(0.2)
    recovered = await probe(sandbox, command_timeout_s=1)
    assert recovered.nvidia_smi == "ok" and len(recovered.gpus) == 1


async def test_probes_side_by_side_never_take_each_others_nvidia_smi_for_stuck(
    sandbox: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, calls = wedged_nvidia_smi(tmp_path, monkeypatch)
    snapshots = await asyncio.gather(*(probe(sandbox) for _ in range(6)))
    assert [s.nvidia_smi for s in snapshots] == ["ok"] * 6
    assert len(calls.read_text().split()) >= 6


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


def posix_df(path: Path) -> DiskUsage | None:
    blocks = subprocess.run(["df", "-P", "-k", str(path)], capture_output=True, text=True)
    inodes = subprocess.run(["df", "-P", "-i", str(path)], capture_output=True, text=True)
    return parse_disk_usage(str(path), blocks.stdout, inodes.stdout)


def same_filesystem(disk: DiskUsage | None, expected: DiskUsage | None) -> None:
    """Everything but the used/free counts, which move between two df runs."""
    assert disk is not None and expected is not None
    fields = ("path", "filesystem", "mount_point", "total_bytes", "inodes_total")
    assert [getattr(disk, f) for f in fields] == [getattr(expected, f) for f in fields]
    assert disk.used_pct is not None and disk.inodes_used is not None


async def test_probe_disk_agrees_with_posix_df_with_or_without_gnu_df(
    sandbox: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    same_filesystem((await probe(sandbox)).disk, posix_df(sandbox))
    # A df without --output (busybox, BSD): the probe falls back to two POSIX runs.
    plain_df = tmp_path / "plain-df"
    plain_df.mkdir()
    shim = plain_df / "df"
    shim.write_text(
        '#!/bin/sh\ncase "$*" in *--output*) echo "df: unrecognized option" >&2; exit 1 ;; esac\n'
        f'exec {shutil.which("df")} "$@"\n'
    )
    shim.chmod(0o755)
    monkeypatch.setenv("PATH", f"{plain_df}{os.pathsep}{os.environ['PATH']}")
    same_filesystem((await probe(sandbox)).disk, posix_df(sandbox))


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs two CPUs to leave one out")
async def test_probe_counts_the_cpus_the_worker_shell_may_use(sandbox: Path) -> None:
    allowed = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {min(allowed)})  # the probe's shell inherits it
    try:
        pinned = await probe(sandbox)
    finally:
        os.sched_setaffinity(0, allowed)
    assert pinned.cpu_count == 1
    assert (await probe(sandbox)).cpu_count == len(allowed)


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
    (tmp_path / "rel" / "ws").mkdir(parents=True)
    relative = await probe("rel/ws", cwd=tmp_path)  # relative to the login directory
    assert relative.disk is not None and relative.disk.path == str(tmp_path / "rel" / "ws")
    assert relative.disk.total_bytes and relative.disk.inodes_total is not None


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


def test_a_carriage_return_in_heartbeat_output_cannot_forge_a_gpu_section() -> None:
    forged = "ok\r@@runyard:section gpus index,name\n9, forged card\n"
    host = HOST_SECTIONS.replace(
        "@@runyard:section heartbeat\nok\n", f"@@runyard:section heartbeat\n{forged}"
    )
    snapshot = parse_probe_output(probe_bytes(REAL_GPU_SECTIONS, host=host), 1700000000.5)
    assert [gpu.name for gpu in snapshot.gpus] == [gpu.name for gpu in GPU_BOX.gpus]
    assert all(gpu.name != "forged card" for gpu in snapshot.gpus)
