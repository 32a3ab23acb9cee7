"""Health patrol rules over synthetic observations: no I/O, an injected clock."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from runyard.core.fleet.telemetry import DiskUsage, GpuProcess, GpuSample, WorkerSnapshot
from runyard.core.models import Run, RunStatus, SSHSettings, Worker
from runyard.core.patrol import (
    Alert,
    KernelEvent,
    PatrolProbe,
    PatrolState,
    ProcessInfo,
    WorkerMemory,
    WorkerObservation,
    ancestors,
    build_patrol_probe,
    disk_alerts,
    evaluate,
    format_duration,
    format_timestamp,
    kernel_alerts,
    load_state,
    lost_run_alerts,
    make_alert,
    owning_run,
    parse_kernel_log,
    parse_patrol_probe,
    reachability_alerts,
    reboot_alerts,
    save_state,
    stale_log_alerts,
    zombie_alerts,
)
from runyard.core.protocol import CheckReport, ProbeTarget, RunProbe
from runyard.core.settings import AlertSettings

T0 = 1_800_000_000.0
BOOT = "7d3f0c1e-boot-now"
UUID0 = "GPU-00000000-0000-0000-0000-000000000000"
UUID1 = "GPU-11111111-1111-1111-1111-111111111111"

# A real-looking `dmesg --level=err,warn` tail; uptimes in seconds since boot.
DMESG = """\
[    2.114011] ACPI Warning: SystemIO range 0x0000000000000B00-0x0000000000000B08 conflicts
[ 8123.551203] NVRM: Xid (PCI:0000:3b:00): 79, pid='<unknown>', name=<unknown>, GPU has fallen off the bus.
[ 8123.551290] NVRM: GPU 0000:3b:00.0: GPU has fallen off the bus.
[ 9001.000001] NVRM: Xid (PCI:0000:65:00): 13, pid=2717, name=python3, Graphics SM Warp Exception on (GPC 0, TPC 1, SM 0): Out Of Range Address
[ 9001.000950] NVRM: Xid (PCI:0000:65:00): 13, pid=2717, name=python3, Graphics SM Warp Exception on (GPC 1, TPC 0, SM 1): Out Of Range Address
[ 9500.120000] Out of memory: Killed process 4321 (python) total-vm:98765432kB, anon-rss:61234567kB, file-rss:0kB, shmem-rss:0kB, UID:1000 pgtables:123456kB oom_score_adj:0
[ 9500.120500] oom-kill:constraint=CONSTRAINT_NONE,nodemask=(null),cpuset=/,mems_allowed=0,global_oom,task_memcg=/user.slice,task=python,pid=4321,uid=1000
"""
# `journalctl -k -o short-monotonic` prints the same kind of line behind a host prefix.
JOURNAL = """\
-- Journal begins at Mon 2026-05-04 10:00:00 UTC. --
[ 9700.000000] gpu-box-7 kernel: NVRM: Xid (PCI:0000:17:00): 48, pid=991, name=torchrun, An uncorrectable double bit error (DBE) has been detected on GPU in the framebuffer at partition 6, subpartition 0.
[ 9710.000000] gpu-box-7 kernel: Memory cgroup out of memory: Killed process 5555 (pt_data_worker) total-vm:1kB
"""


# ---------------------------------------------------------------- builders


def worker(name: str = "w1", gpus: int = 2) -> Worker:
    w = Worker(worker_id=name, kind="ssh", ssh=SSHSettings("10.0.0.7", 2222, "ubuntu"))
    w.resources.gpu = gpus
    return w


def run(
    run_id: str,
    status: RunStatus = RunStatus.RUNNING,
    pid: int | None = None,
    **fields: Any,
) -> Run:
    return Run(
        id=run_id,
        name=f"train-{run_id}",
        command="python train.py",
        status=status,
        worker="w1",
        pid=pid,
        run_dir=f"/ws/.runyard/runs/{run_id}/1",
        **fields,
    )


def gpu(index: int, working: bool, util: int = 0, uuid: str | None = None) -> GpuSample:
    """A card that really works (clock near max, high power) or idles, whatever util% says."""
    return GpuSample(
        index=index,
        name="NVIDIA H100 80GB HBM3",
        uuid=uuid or (UUID0 if index == 0 else UUID1),
        util_pct=util,
        mem_used_mib=60000,
        mem_total_mib=81559,
        power_w=610.0 if working else 71.0,
        power_limit_w=700.0,
        sm_clock_mhz=1980 if working else 210,
        sm_clock_max_mhz=1980,
    )


def on_gpu(pid: int, index: int, name: str = "python", mib: int = 20000) -> GpuProcess:
    return GpuProcess(UUID0 if index == 0 else UUID1, index, pid, name, mib)


def snapshot(
    gpus: Sequence[GpuSample] = (),
    processes: Sequence[GpuProcess] = (),
    disk: DiskUsage | None = None,
    uptime_s: float | None = 10_000.0,
) -> WorkerSnapshot:
    return WorkerSnapshot(
        taken_at=T0,
        heartbeat_ok=True,
        heartbeat_output="ok",
        boot_id=BOOT,
        uptime_s=uptime_s,
        nvidia_smi="ok",
        gpus=list(gpus),
        gpu_processes=list(processes),
        disk=disk,
    )


def probe_of(run_id: str, pid: int | None = None, **fields: Any) -> RunProbe:
    values: dict[str, Any] = dict(
        dir_exists=True,
        pid=pid,
        alive=True,
        boot_id=BOOT,
        exit_code=None,
        log_size=10,
        log_age_s=5.0,
        log_tail=b"",
    )
    values.update(fields)
    return RunProbe(key=run_id, **values)


def patrol_probe(
    probes: Sequence[RunProbe] = (),
    processes: dict[int, ProcessInfo] | None = None,
    kernel: Sequence[KernelEvent] = (),
    boot: str | None = BOOT,
) -> PatrolProbe:
    return PatrolProbe(
        processes=processes or {},
        kernel_events=list(kernel),
        check=CheckReport(boot, {p.key: p for p in probes}),
    )


def observe(
    runs: Sequence[Run] = (),
    snap: WorkerSnapshot | None = None,
    probe: PatrolProbe | None = None,
    w: Worker | None = None,
    **fields: Any,
) -> WorkerObservation:
    return WorkerObservation(w or worker(), runs, snap, patrol=probe, **fields)


def kinds(alerts: Sequence[Alert]) -> list[str]:
    return [a.kind for a in alerts]


SETTINGS = AlertSettings()  # disk 90%, inodes 90%, GPU idle 10 min, stale log 30 min


# ---------------------------------------------------------------- disk and reachability


def disk(used_pct: float, inodes_used_pct: float | None) -> DiskUsage:
    return DiskUsage(
        path="/data/runyard",
        mount_point="/data",
        used_pct=used_pct,
        inodes_used_pct=inodes_used_pct,
    )


def test_disk_alerts_on_bytes_and_on_inodes_separately() -> None:
    assert disk_alerts(observe(snap=snapshot(disk=disk(89.9, 10.0))), SETTINGS) == []
    # Inodes run out first on a dataset of millions of small files: bytes look fine.
    (inodes,) = disk_alerts(observe(snap=snapshot(disk=disk(41.0, 95.5))), SETTINGS)
    assert (inodes.kind, inodes.severity, inodes.id) == ("inodes", "warning", "inodes:w1:/data")
    assert "95.5% used on /data" in inodes.message and "--inodes /data/runyard" in inodes.fix
    full, nearly = disk_alerts(observe(snap=snapshot(disk=disk(99.0, 92.0))), SETTINGS)
    assert (full.kind, full.severity) == ("disk", "critical")
    assert full.fix == "free space on w1: `du -xh /data/runyard | sort -h | tail`"
    assert (nearly.kind, nearly.severity) == ("inodes", "warning")
    # A filesystem without an inode table reports None: no inode alert, no crash.
    assert kinds(disk_alerts(observe(snap=snapshot(disk=disk(95.0, None))), SETTINGS)) == ["disk"]
    zero = AlertSettings(disk_used_pct=0)
    assert kinds(disk_alerts(observe(snap=snapshot(disk=disk(0.0, 0.0))), zero)) == ["disk"]


def test_unreachable_heartbeat_and_driver_alerts() -> None:
    (down,) = reachability_alerts(observe(probe_error="worker w1: Connection refused"))
    assert (down.kind, down.severity, down.id) == (
        "unreachable",
        "critical",
        "unreachable:w1:probe",
    )
    assert "Connection refused" in down.message and "ssh -p 2222 ubuntu@10.0.0.7" in down.fix
    keyed = worker()
    assert keyed.ssh is not None
    keyed.ssh.key = "/keys/my box"
    (down,) = reachability_alerts(observe(probe_error="refused", w=keyed))
    assert "`ssh -p 2222 -i '/keys/my box' ubuntu@10.0.0.7`" in down.fix  # pasteable as is
    sick = WorkerSnapshot(
        taken_at=T0,
        heartbeat_ok=False,
        heartbeat_output="disk full\n",
        heartbeat_exit_status=1,
        nvidia_smi="error",
        nvidia_smi_error="nvidia-smi timed out",
    )
    alerts = reachability_alerts(observe(snap=sick, patrol_error="script timed out after 40s"))
    assert kinds(alerts) == ["heartbeat", "gpu_driver", "patrol_probe"]
    assert "disk full" in alerts[0].message and "timed out" in alerts[1].message
    no_smi = WorkerSnapshot(taken_at=T0, heartbeat_ok=True, nvidia_smi="missing")
    assert kinds(reachability_alerts(observe(snap=no_smi, probe=patrol_probe()))) == ["gpu_driver"]
    cpu_box = worker(gpus=0)
    assert reachability_alerts(observe(snap=no_smi, probe=patrol_probe(), w=cpu_box)) == []


# ---------------------------------------------------------------- process tree and zombies

# 100 is a run's wrapper; 300 its trainer (100 -> 200 -> 300); 350 an orphaned dataloader
# reparented to init but still in the run's session; 400 a leftover of a dead run.
TREE = {
    100: ProcessInfo(1, 100),
    200: ProcessInfo(100, 100),
    300: ProcessInfo(200, 100),
    350: ProcessInfo(1, 100),
    400: ProcessInfo(1, 400),
    401: ProcessInfo(400, 400),
}


def test_ancestors_and_owning_run() -> None:
    assert ancestors(300, TREE) == [200, 100, 1]
    assert ancestors(999, TREE) == []
    cycle = {5: ProcessInfo(6), 6: ProcessInfo(5)}
    assert ancestors(5, cycle) == [6]
    runs = {100: "r1"}
    assert [owning_run(pid, TREE, runs) for pid in (100, 300, 350, 401, 999)] == [
        "r1",
        "r1",
        "r1",
        None,
        None,
    ]
    without_sessions = {pid: ProcessInfo(info.ppid) for pid, info in TREE.items()}
    assert owning_run(300, without_sessions, runs) == "r1"
    assert owning_run(350, without_sessions, runs) is None


def test_zombie_vram_is_a_gpu_process_of_no_live_run() -> None:
    r1 = run("r1", pid=100)
    processes = [on_gpu(300, 0), on_gpu(350, 0, mib=900), on_gpu(401, 1, "python3", 31000)]
    obs = observe(
        [r1],
        snapshot([gpu(0, True), gpu(1, False)], processes),
        patrol_probe([probe_of("r1", pid=100)], TREE),
    )
    (zombie,) = zombie_alerts(obs)
    assert (zombie.kind, zombie.gpu_index, zombie.severity) == ("zombie_vram", 1, "warning")
    assert zombie.id == "zombie_vram:w1:gpu1:pid401"
    assert zombie.message == "pid 401 (python3) holds 31000 MiB on GPU 1 but belongs to no run"
    assert zombie.fix == "kill 401 on w1"
    # Once r1 is over, its processes are zombies too.
    done = run("r1", RunStatus.DONE, pid=100)
    obs = observe([done], obs.snapshot, patrol_probe([], TREE))
    assert sorted(a.id for a in zombie_alerts(obs)) == [
        "zombie_vram:w1:gpu0:pid300",
        "zombie_vram:w1:gpu0:pid350",
        "zombie_vram:w1:gpu1:pid401",
    ]


def test_gpu_pids_outside_the_process_table() -> None:
    """nvidia-smi in a container may list host pids: only zombies when no run is active."""
    snap = snapshot([gpu(0, True)], [on_gpu(88888, 0)])
    busy = observe([run("r1", pid=100)], snap, patrol_probe([probe_of("r1", 100)], TREE))
    assert zombie_alerts(busy) == []
    idle = observe([], snap, patrol_probe([], TREE))
    assert [a.id for a in zombie_alerts(idle)] == ["zombie_vram:w1:gpu0:pid88888"]
    assert zombie_alerts(observe([], snap, None)) == []  # no process table: no judgement


# ---------------------------------------------------------------- the idle-GPU timer


def idle_tick(
    state: PatrolState, now: float, cards: Sequence[GpuSample], runs: Sequence[Run] | None = None
) -> tuple[list[Alert], PatrolState]:
    runs = [run("r1", pid=100)] if runs is None else runs
    obs = observe(
        runs,
        snapshot(cards, [on_gpu(300, 0)]),
        patrol_probe([probe_of(r.id, r.pid) for r in runs], TREE),
    )
    outcome = evaluate([obs], state, SETTINGS, now)
    return [a for a in outcome.alerts if a.kind == "gpu_idle"], outcome.state


def test_gpu_idle_under_a_run_alerts_after_the_configured_minutes() -> None:
    # GPU 0 holds r1's trainer and idles at 100% util (a starved loop of tiny kernels);
    # GPU 1 holds no run's process, so it is not "under a run".
    cards = [gpu(0, False, util=100), gpu(1, False)]
    alerts, state = idle_tick(PatrolState(), T0, cards)
    assert alerts == [] and state.gpu_idle_since == {f"w1|{UUID0}|r1": T0}
    alerts, state = idle_tick(state, T0 + 9 * 60, cards)
    assert alerts == [] and state.gpu_idle_since == {f"w1|{UUID0}|r1": T0}
    alerts, state = idle_tick(state, T0 + 10 * 60, cards)
    (alert,) = alerts
    assert (alert.id, alert.run_id, alert.gpu_index) == ("gpu_idle:w1:gpu0:r1", "r1", 0)
    assert alert.message.startswith("GPU 0 idle for 10m under run train-r1 (r1): SM 210/1980 MHz")
    assert "runyard run cancel r1" in alert.fix
    assert alert.first_seen == format_timestamp(T0 + 10 * 60)
    alerts, state = idle_tick(state, T0 + 15 * 60, cards)
    assert alerts[0].first_seen == alert.first_seen
    assert alerts[0].last_seen == format_timestamp(T0 + 15 * 60)
    # The patrol probe fails once: the alert and its timer are kept as they were.
    blind = observe([run("r1", pid=100)], snapshot(cards), patrol_error="timed out after 40s")
    kept = evaluate([blind], state, SETTINGS, T0 + 15.5 * 60)
    assert kinds(kept.alerts) == ["gpu_idle", "patrol_probe"] and kept.alerts[0] == alerts[0]
    assert kept.state.gpu_idle_since == state.gpu_idle_since and kept.cleared == []
    # It works again: timer and alert are gone; idling again restarts the clock.
    alerts, state = idle_tick(state, T0 + 16 * 60, [gpu(0, True), gpu(1, False)])
    assert alerts == [] and state.gpu_idle_since == {}
    alerts, state = idle_tick(state, T0 + 17 * 60, cards)
    assert alerts == [] and state.gpu_idle_since == {f"w1|{UUID0}|r1": T0 + 17 * 60}
    # No run running: no timer at all.
    alerts, state = idle_tick(state, T0 + 40 * 60, cards, runs=[])
    assert alerts == [] and state.gpu_idle_since == {}


def test_gpu_idle_when_no_gpu_process_belongs_to_a_run() -> None:
    """A run that fell back to the CPU: every GPU of its worker counts as under it."""
    obs = observe(
        [run("r1", pid=100)],
        snapshot([gpu(0, False), gpu(1, True)]),
        patrol_probe([probe_of("r1", 100)], TREE),
    )
    settings = AlertSettings(gpu_idle_minutes=0)
    outcome = evaluate([obs], PatrolState(), settings, T0)
    assert [a.id for a in outcome.alerts] == ["gpu_idle:w1:gpu0:r1"]
    # A GPU that reports neither clocks nor power is unknown, never "idle".
    blind = GpuSample(index=0, name="GPU", uuid=UUID0, util_pct=0)
    obs = observe(obs.runs, snapshot([blind]), obs.patrol)
    assert evaluate([obs], PatrolState(), settings, T0).alerts == []


def test_gpu_idle_timer_restarts_when_the_run_under_it_changes() -> None:
    cards = [gpu(0, False)]
    _, state = idle_tick(PatrolState(), T0, cards)
    r2 = run("r2", pid=100)
    alerts, state = idle_tick(state, T0 + 3600, cards, runs=[r2])
    assert alerts == [] and state.gpu_idle_since == {f"w1|{UUID0}|r2": T0 + 3600}


# ---------------------------------------------------------------- logs, reboots, lost runs


def test_stale_log_of_a_running_run() -> None:
    runs = [
        run("r1", pid=100),
        run("r2", pid=101),
        run("r3", pid=102),
        run("r4", RunStatus.DISPATCHED, pid=103),
    ]
    probes = [
        probe_of("r1", 100, log_age_s=31 * 60.0),
        probe_of("r2", 101, log_age_s=60.0),
        probe_of("r3", 102, log_age_s=7200.0, alive=False),
        probe_of("r4", 103, log_age_s=7200.0),
    ]
    (stale,) = stale_log_alerts(observe(runs, snapshot(), patrol_probe(probes)), SETTINGS)
    assert (stale.id, stale.severity, stale.run_id) == ("stale_log:w1:r1", "warning", "r1")
    assert stale.message == "run train-r1 (r1): log silent for 31m"
    assert stale.fix == "runyard logs r1 -n 50; if it hangs: runyard run cancel r1"


def test_reboot_under_active_runs() -> None:
    runs = [
        run("r1", pid=100, boot_id="old-boot"),
        run("r2", pid=101),
        run("r3", pid=102),
        run("r4", pid=103, boot_id="old-boot"),
    ]
    probes = [
        probe_of("r1", 100, boot_id="old-boot", alive=False),
        probe_of("r2", 101, boot_id=BOOT),
        probe_of("r3", 102, boot_id=None, dir_exists=False),
        probe_of("r4", 103, boot_id="old-boot", exit_code=0),
    ]
    obs = observe(runs, snapshot(), patrol_probe(probes))
    # r1 recorded another boot; r2 runs on this boot; r4 finished before the reboot; r3
    # recorded nothing, so only a boot id change seen while it was active counts.
    assert [a.id for a in reboot_alerts(obs, None)] == ["rebooted:w1:r1"]
    before = WorkerMemory("old-boot", ("r1", "r2", "r3"))
    alerts = reboot_alerts(obs, before)
    assert [a.id for a in alerts] == ["rebooted:w1:r1", "rebooted:w1:r3"]
    assert alerts[0].severity == "critical" and "runyard run retry r1" in alerts[0].fix
    assert reboot_alerts(obs, WorkerMemory(BOOT, ("r3",))) == [alerts[0]]


def test_boot_id_change_is_remembered_between_ticks() -> None:
    r3 = run("r3", pid=102)
    obs = observe([r3], snapshot(), patrol_probe([probe_of("r3", 102, boot_id=None)], boot="b1"))
    state = evaluate([obs], PatrolState(), SETTINGS, T0).state
    assert state.workers["w1"] == WorkerMemory("b1", ("r3",))
    obs = observe([r3], snapshot(), patrol_probe([probe_of("r3", 102, boot_id=None)], boot="b2"))
    assert kinds(evaluate([obs], state, SETTINGS, T0 + 60).alerts) == ["rebooted"]


def test_runs_lost_to_a_reboot_recently() -> None:
    now = T0
    recent = run(
        "r1", RunStatus.LOST, error="worker rebooted", ended_at=format_timestamp(now - 3600)
    )
    old = run(
        "r2", RunStatus.LOST, error="worker rebooted", ended_at=format_timestamp(now - 3 * 86400)
    )
    killed = run(
        "r3",
        RunStatus.LOST,
        error="process gone without an exit code",
        ended_at=format_timestamp(now),
    )
    (alert,) = lost_run_alerts(observe([recent, old, killed]), now)
    assert (alert.id, alert.severity, alert.fix) == (
        "run_lost:w1:r1",
        "critical",
        "runyard run retry r1",
    )
    assert "worker rebooted" in alert.message


# ---------------------------------------------------------------- the kernel log


def test_parse_kernel_log_finds_xids_and_oom_kills_once_each() -> None:
    events = {(e.kind, e.key): e for e in parse_kernel_log(DMESG)}
    assert set(events) == {
        ("xid", "79:0000:3b:00:-"),
        ("xid", "13:0000:65:00:2717"),
        ("oom", "pid4321"),
    }
    fallen = events[("xid", "79:0000:3b:00:-")]
    assert (fallen.xid, fallen.pid, fallen.process, fallen.device) == (79, None, None, "0000:3b:00")
    assert fallen.timestamp_s == 8123.551203
    warp = events[("xid", "13:0000:65:00:2717")]
    assert (warp.xid, warp.pid, warp.process, warp.count) == (13, 2717, "python3", 2)
    assert warp.detail.startswith("Graphics SM Warp Exception on (GPC 0, TPC 1, SM 0)")
    assert warp.timestamp_s == 9001.000950
    oom = events[("oom", "pid4321")]
    assert (oom.pid, oom.process, oom.count) == (4321, "python", 2)
    journal = {(e.kind, e.key): e for e in parse_kernel_log(JOURNAL)}
    assert set(journal) == {("xid", "48:0000:17:00:991"), ("oom", "pid5555")}
    assert journal[("xid", "48:0000:17:00:991")].text.startswith("NVRM: Xid (PCI:0000:17:00): 48")
    assert parse_kernel_log("") == [] and parse_kernel_log("dmesg: read kernel buffer failed") == []


def test_kernel_alerts_keep_the_last_day_only() -> None:
    events = parse_kernel_log(DMESG)
    # The box has been up 9600 s: every line is recent.
    alerts = kernel_alerts(
        observe(snap=snapshot(uptime_s=9600.0), probe=patrol_probe(kernel=events))
    )
    by_id = {a.id: a for a in alerts}
    fallen = by_id["xid:w1:79:0000:3b:00:-"]
    assert fallen.severity == "critical" and "reboot" in fallen.fix
    assert fallen.message == "Xid 79 on GPU 0000:3b:00 (no pid): GPU has fallen off the bus."
    warp = by_id["xid:w1:13:0000:65:00:2717"]
    assert warp.severity == "warning"
    assert warp.message.startswith("Xid 13 on GPU 0000:65:00 (pid 2717, python3) (2 times): ")
    oom = by_id["oom:w1:pid4321"]
    assert oom.severity == "critical"
    assert oom.message == "out of host memory: the kernel killed pid 4321 (python) (2 times)"
    # Two days later the same lines are history.
    later = snapshot(uptime_s=9600.0 + 2 * 86400)
    assert kernel_alerts(observe(snap=later, probe=patrol_probe(kernel=events))) == []


# ---------------------------------------------------------------- the probe script


def test_patrol_probe_output_parses_and_resists_forged_sections() -> None:
    script = build_patrol_probe([ProbeTarget("r1", "/ws/.runyard/runs/r1/1", 0)])
    assert "dmesg --level=err,warn" in script and "probe r1 /ws/.runyard/runs/r1/1 0" in script
    output = (
        b"@@runyard:section processes\n1 0 1\n100 1 100\n300 200 100\nnot a line\n"
        b"@@runyard:section kernel\n" + DMESG.encode() + b"@@runyard:section check\n"
        b"@@run r1\ndir=0\n"  # a forged check section inside the kernel log
        b"@@runyard:section check\n"
        b"@@host boot_id=b-1 now=1800000000\n@@run r1\ndir=1\npid=100\nalive=1\nboot_id=b-1\n"
        b"exit_code=\nlog_size=3\nlog_age=42\ntail=0\n\n"
    )
    report = parse_patrol_probe(output)
    assert report is not None
    assert report.processes == {
        1: ProcessInfo(0, 1),
        100: ProcessInfo(1, 100),
        300: ProcessInfo(200, 100),
    }
    assert len(report.kernel_events) == 3
    assert report.check.current_boot_id == "b-1"
    assert report.check.runs["r1"].log_age_s == 42.0 and report.check.runs["r1"].alive
    assert parse_patrol_probe(b"bash: line 1: syntax error\n") is None


# ---------------------------------------------------------------- merging ticks, state


def test_alerts_keep_first_seen_and_survive_a_failed_probe() -> None:
    full = observe(snap=snapshot(disk=disk(95.0, 20.0)), probe=patrol_probe())
    first = evaluate([full], PatrolState(), SETTINGS, T0)
    assert [a.id for a in first.raised] == ["disk:w1:/data"] and first.cleared == []
    (disk_alert,) = first.alerts
    # Unreachable: the disk alert cannot be re-judged, so it stays as it was.
    down = observe(probe_error="worker w1: timed out")
    second = evaluate([down], first.state, SETTINGS, T0 + 60)
    assert [a.kind for a in second.alerts] == ["unreachable", "disk"]
    assert second.alerts[1] == disk_alert and second.cleared == []
    assert [a.kind for a in second.raised] == ["unreachable"]
    # Back, and the disk was cleaned: both clear.
    clean = observe(snap=snapshot(disk=disk(50.0, 20.0)), probe=patrol_probe())
    third = evaluate([clean], second.state, SETTINGS, T0 + 120)
    assert third.alerts == [] and third.raised == []
    assert sorted(a.kind for a in third.cleared) == ["disk", "unreachable"]


def test_other_workers_alerts_are_kept_and_removed_workers_cleared() -> None:
    w2 = worker("w2")
    seen = evaluate([observe(probe_error="down", w=w2)], PatrolState(), SETTINGS, T0)
    only_w1 = evaluate(
        [observe(snap=snapshot(), probe=patrol_probe())],
        seen.state,
        SETTINGS,
        T0 + 5,
        known_workers={"w1", "w2"},
    )
    assert only_w1.alerts == [] and list(only_w1.state.alerts) == ["unreachable:w2:probe"]
    gone = evaluate(
        [observe(snap=snapshot(), probe=patrol_probe())],
        seen.state,
        SETTINGS,
        T0 + 5,
        known_workers={"w1"},
    )
    assert gone.state.alerts == {} and [a.id for a in gone.cleared] == ["unreachable:w2:probe"]


def test_alerts_sort_critical_first_then_worker() -> None:
    state = PatrolState()
    observations = [
        observe(snap=snapshot(disk=disk(95.0, 20.0)), probe=patrol_probe(), w=worker("a")),
        observe(probe_error="down", w=worker("b")),
    ]
    alerts = evaluate(observations, state, SETTINGS, T0).alerts
    assert [(a.severity, a.worker) for a in alerts] == [("critical", "b"), ("warning", "a")]


def test_state_file_round_trip_missing_and_corrupt(tmp_path: Path) -> None:
    path = tmp_path / ".runyard" / "patrol.json"
    assert load_state(path) == PatrolState()
    alert = make_alert("disk", "warning", "w1", "/", "disk space 95% used", "free space")
    stamped = Alert(
        **{
            **alert.to_dict(),
            "first_seen": "2026-01-01T00:00:00Z",
            "last_seen": "2026-01-01T00:05:00Z",
        }
    )
    state = PatrolState(
        {stamped.id: stamped}, {"w1|GPU-0|r1": T0}, {"w1": WorkerMemory("b", ("r1",))}, T0
    )
    save_state(path, state)
    saved = json.loads(path.read_text())
    assert saved["version"] == 1 and saved["gpu_idle_since"] == {"w1|GPU-0|r1": T0}
    assert saved["workers"] == {"w1": {"boot_id": "b", "active_runs": ["r1"]}}
    assert load_state(path) == state
    for garbage in ("{not json", "[]", '{"version": 99}'):
        path.write_text(garbage)
        warnings: list[str] = []
        assert load_state(path, warnings) == PatrolState()
        assert len(warnings) == 1 and "starting fresh" in warnings[0]
        assert path.with_name("patrol.json.bad").read_text() == garbage  # kept, not lost
        assert not path.exists()
    # Bad entries are dropped one by one, the rest is kept.
    path.write_text(
        json.dumps(
            {
                **saved,
                "alerts": {**saved["alerts"], "x": {"id": "x"}},
                "gpu_idle_since": {"k": "soon"},
            }
        )
    )
    loaded = load_state(path)
    assert list(loaded.alerts) == [stamped.id] and loaded.gpu_idle_since == {}


def test_format_duration() -> None:
    assert [format_duration(s) for s in (0, 59, 600, 3900, 50 * 3600)] == [
        "0s",
        "59s",
        "10m",
        "1h05m",
        "2d02h",
    ]
