"""Probe parsing: client CPU of `parse_probe_output` for one worker, against JSON of the same data.

The probe output is real: `build_probe_script` runs under bash on this machine, with an
`nvidia-smi` on PATH that replays what runyard's simulated one (runyard.sim.fake_nvidia_smi)
prints for 8 H100s, each running a training process (plus one zombie holding VRAM). Variants:
the same box with every GPU reading [N/A] power/util, a MIG box, and a CPU box without
nvidia-smi.

Baselines (same run): `json.loads` of the snapshot as `worker status --json` would print it
(what parsing would cost if the worker sent JSON), and the bare decode + splitlines.
Goal (issue 3): client CPU <= 1 ms per worker per fleet refresh in all; parsing is one part.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import shlex
import subprocess
import sys
import tempfile
import time
import timeit
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import runyard.sim.fake_nvidia_smi as fake_nvidia_smi
from runyard.core.fleet.telemetry import (
    COMPUTE_APP_FIELDS,
    GPU_QUERY_FIELDS,
    build_probe_script,
    parse_probe_output,
    snapshot_to_status,
)

GPUS_PER_WORKER = 8
BUDGET_S = 1e-3  # issue 3: client CPU per worker per refresh, everything included
FIRST_RUN_PID = 48213
CSV_FORMAT = "csv,noheader,nounits"


def nvidia_smi_outputs(gpus: Sequence[Mapping[str, Any]], fault: str = "") -> tuple[str, str]:
    """What the simulated nvidia-smi prints for the probe's two queries, one run per GPU."""
    cards = [fake_nvidia_smi._gpu_from_entry(i, entry) for i, entry in enumerate(gpus)]
    pids = [FIRST_RUN_PID + 97 * i for i in range(len(cards))]
    readings = fake_nvidia_smi.read_gpus(cards, pids, fault, now=1_700_000_000.0)
    gpu_lines = fake_nvidia_smi.render_query(
        GPU_QUERY_FIELDS, fake_nvidia_smi.GPU_COLUMNS, readings, CSV_FORMAT
    )
    apps = [fake_nvidia_smi.AppRow(r, p) for r in readings for p in r.processes]
    app_lines = fake_nvidia_smi.render_query(
        COMPUTE_APP_FIELDS, fake_nvidia_smi.APP_COLUMNS, apps, CSV_FORMAT
    )
    return "\n".join(gpu_lines) + "\n", "\n".join(app_lines) + "\n"


def replay_shim(bin_dir: Path, gpu_csv: str, apps_csv: str) -> None:
    """An `nvidia-smi` in `bin_dir` that prints the captured query outputs."""
    bin_dir.mkdir(parents=True)
    (bin_dir / "gpus.csv").write_text(gpu_csv)
    (bin_dir / "apps.csv").write_text(apps_csv)
    shim = bin_dir / "nvidia-smi"
    shim.write_text(
        "#!/bin/sh\n"
        'case " $* " in\n'
        f'  *" --query-gpu="*) exec cat {shlex.quote(str(bin_dir / "gpus.csv"))} ;;\n'
        f'  *" --query-compute-apps="*) exec cat {shlex.quote(str(bin_dir / "apps.csv"))} ;;\n'
        "esac\nexit 2\n"
    )
    shim.chmod(0o755)


def probe_output(workspace: Path, path: str) -> bytes:
    """Run the real probe under bash with `path` as PATH, as a worker would."""
    env = {**os.environ, "PATH": path}
    script = build_probe_script(str(workspace))
    proc = subprocess.run(["bash", "-c", script], capture_output=True, env=env, check=True)
    return proc.stdout


def best_per_call(calls: Mapping[str, Callable[[], object]], repeat_s: float) -> dict[str, float]:
    """Best mean seconds per call of each, over 9 rounds that time every one in turn.

    Interleaved so that load from elsewhere on the machine hits baseline and parser alike.
    """
    timers = {name: timeit.Timer(fn) for name, fn in calls.items()}
    numbers = {
        name: max(1, int(repeat_s / max(timer.timeit(number=20) / 20, 1e-9)))
        for name, timer in timers.items()
    }
    best = dict.fromkeys(calls, float("inf"))
    for _ in range(9):
        for name, timer in timers.items():
            best[name] = min(best[name], timer.timeit(number=numbers[name]) / numbers[name])
    return best


def line(label: str, seconds: float, baseline: float | None = None, goal: str = "") -> None:
    ratio = f"  {seconds / baseline:6.2f}x baseline" if baseline else ""
    print(f"{label:<58} {seconds * 1e6:8.1f} us{ratio}  {goal}".rstrip())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument(
        "--seconds", type=float, default=0.04, help="seconds per timing of each call"
    )
    args = parser.parse_args()

    zombie = {"pid": 4242, "used_memory_mib": 3000, "process_name": "python"}
    h100s: list[dict[str, Any]] = [dict(fake_nvidia_smi.DEFAULT_GPU) for _ in range(7)]
    h100s.append({**fake_nvidia_smi.DEFAULT_GPU, "zombies": [zombie]})
    migs = [{**gpu, "mig_mode": "Enabled"} for gpu in h100s]

    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        workspace = tmp / "ws"
        workspace.mkdir()
        system_path = os.environ.get("PATH", "/usr/bin:/bin")
        outputs: dict[str, bytes] = {}
        variants = {
            "8x H100 busy": nvidia_smi_outputs(h100s),
            "8x H100, util/power [N/A]": nvidia_smi_outputs(
                h100s, fake_nvidia_smi.FAULT_NOT_AVAILABLE
            ),
            "8x A100 MIG": nvidia_smi_outputs(migs),
        }
        for number, (name, (gpu_csv, apps_csv)) in enumerate(variants.items()):
            bin_dir = tmp / f"bin{number}"
            replay_shim(bin_dir, gpu_csv, apps_csv)
            outputs[name] = probe_output(workspace, f"{bin_dir}:{system_path}")
        cpu_tools = tmp / "cpu-tools"
        cpu_tools.mkdir()
        for tool in ("bash", "df", "nproc", "timeout", "uname", "getconf", "date", "cat"):
            found = subprocess.run(["sh", "-c", f"command -v {tool}"], capture_output=True)
            if found.returncode == 0:
                (cpu_tools / tool).symlink_to(found.stdout.decode().strip())
        outputs["CPU box (no nvidia-smi)"] = probe_output(workspace, str(cpu_tools))

    main_output = outputs["8x H100 busy"]
    snapshot = parse_probe_output(main_output, time.time())
    assert snapshot.nvidia_smi == "ok" and len(snapshot.gpus) == GPUS_PER_WORKER, snapshot
    assert len(snapshot.gpu_processes) == GPUS_PER_WORKER + 1 and snapshot.disk is not None
    as_json = json.dumps(snapshot_to_status(snapshot))
    lines = main_output.count(b"\n")
    print(
        f"probe output: {len(main_output)} bytes, {lines} lines for "
        f"{GPUS_PER_WORKER} GPUs; the same snapshot as JSON: {len(as_json)} bytes "
        f"(python {sys.version.split()[0]}, {sys.platform})"
    )

    calls: dict[str, Callable[[], object]] = {
        "baseline": lambda: json.loads(as_json),
        "split": lambda: main_output.decode("utf-8", "replace").splitlines(),
    }
    for name, output in outputs.items():
        calls[name] = functools.partial(parse_probe_output, output, 0.0)
    best = best_per_call(calls, args.seconds)
    baseline = best["baseline"]
    line("baseline: json.loads of the snapshot's status JSON", baseline)
    line("decode + splitlines of the probe output", best["split"], baseline)
    for name in outputs:
        budget = f"{100 * best[name] / BUDGET_S:5.1f}% of the 1 ms/worker budget"
        line(f"parse_probe_output: {name}", best[name], baseline, budget)


if __name__ == "__main__":
    main()
