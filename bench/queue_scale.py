"""Queue scale: `run list --json`, dispatch planning and check on a 10,000-run queue.

Baseline (same run, same file): a bare `python -c` that loads the queue JSON and dumps it.
Goal: `runyard run list --json` within 3x of that baseline.
"""

from __future__ import annotations

import random
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import report, runyard_argv, time_call, time_command

from runyard.core.dispatch import plan_dispatch
from runyard.core.models import Run, RunStatus, Worker
from runyard.core.protocol import run_dir_path
from runyard.core.store.queue_file import load_queue, save_queue
from runyard.core.store.workspace_store import WorkspaceStore
from runyard.core.workspace import init_workspace

RUNS = 10_000
ACTIVE = 200
WORKERS = 100


def make_queue(ws_root: Path) -> None:
    """10,000 runs: mostly finished, some pending, ACTIVE running ones with real run dirs."""
    rng = random.Random(7)
    runs: list[Run] = []
    finished = [RunStatus.DONE, RunStatus.FAILED, RunStatus.LOST, RunStatus.CANCELLED]
    for i in range(RUNS):
        run = Run(
            id=f"r{i:07x}",
            name=f"sweep-{i}",
            project=f"p{i % 7}",
            command=f"python train.py --lr {rng.choice(['1e-3', '3e-4'])} --seed {i}",
            env={"WANDB_PROJECT": "bench"},
            outputs=["checkpoints/*.pt"],
            priority=rng.randint(0, 9),
            created_at=f"2026-11-{1 + i % 28:02d}T00:00:00Z",
        )
        if i < ACTIVE:
            run.status = RunStatus.RUNNING
            run.worker = "local"
            run.attempts = 1
            run.run_dir = run_dir_path(str(ws_root), run.id, 1)
            directory = Path(run.run_dir)
            directory.mkdir(parents=True)
            (directory / "log").write_text("Epoch 10/10 | train_loss=0.1 val_loss=0.2\n")
            (directory / "exit_code").write_text("0\n")
        elif i < RUNS // 2:
            run.status = rng.choice(finished)
            run.worker = f"w{i % WORKERS}"
            run.attempts = 1
            run.exit_code = 0 if run.status == RunStatus.DONE else 1
            run.metrics = {"epoch": 10.0, "train_loss": rng.random(), "val_loss": rng.random()}
        runs.append(run)
    save_queue(ws_root / "queues" / "run_queue.json", runs)


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        ws, _ = init_workspace(Path(tmp) / "ws")
        make_queue(ws.root)
        queue = ws.queue_path
        env = {"RUNYARD_WORKSPACE": str(ws.root)}
        print(
            f"queue: {RUNS} runs, {queue.stat().st_size / 1e6:.1f} MB ({sys.platform}, python {sys.version.split()[0]})"
        )

        baseline = time_command(
            [
                sys.executable,
                "-c",
                "import json,sys; sys.stdout.write(json.dumps(json.load(open(sys.argv[1]))))",
                str(queue),
            ]
        )
        report("baseline: python -c json.load + json.dumps", baseline, None)
        list_json = time_command(runyard_argv("run", "list", "--json"), env=env)
        report("runyard run list --json (whole process)", list_json, baseline, "goal <= 3x")
        list_table = time_command(runyard_argv("run", "list", "--status", "running"), env=env)
        report("runyard run list --status running (table)", list_table, baseline)

        runs = load_queue(queue)
        workers = [Worker(worker_id=f"w{i}", kind="local", slots=2) for i in range(WORKERS)]
        plan_time = time_call(lambda: plan_dispatch(runs, workers, "default"))
        report(f"dispatch planning in process ({WORKERS} workers)", plan_time, baseline)
        dry = time_command(runyard_argv("dispatch", "--dry-run"), env=env)
        report("runyard dispatch --dry-run (whole process)", dry, baseline)
        load_time = time_call(lambda: load_queue(queue))
        report("load + validate the queue in process", load_time, baseline)

        # check: ACTIVE runs whose exit codes are already there; copy the queue back each
        # time so every repetition does the full work of finishing them.
        original = queue.read_bytes()

        def one_check() -> None:
            queue.write_bytes(original)
            subprocess.run(
                runyard_argv("check"),
                env={**__import__("os").environ, **env},
                stdout=subprocess.DEVNULL,
                check=True,
            )

        check_time = time_call(one_check, repeat=3)
        report(f"runyard check: {ACTIVE} active of {RUNS} (whole process)", check_time, baseline)
        store = WorkspaceStore(ws)
        assert sum(1 for r in store.runs() if r.status == RunStatus.DONE) >= ACTIVE

        naive_script = "; ".join(
            f"kill -0 $(cat {r.run_dir}/pid 2>/dev/null || echo 999999) 2>/dev/null; cat {r.run_dir}/exit_code"
            for r in runs[:ACTIVE]
        )

        def naive_check() -> None:
            for run in runs[:ACTIVE]:
                subprocess.run(
                    ["bash", "-c", f"cat {run.run_dir}/exit_code; tail -n 1 {run.run_dir}/log"],
                    stdout=subprocess.DEVNULL,
                    check=True,
                )

        naive = time_call(naive_check, repeat=1)
        report(f"baseline: one process per run check ({ACTIVE} runs)", naive, None)
        print(f"check speedup over one-process-per-run: {naive / check_time:.1f}x")
        del naive_script


if __name__ == "__main__":
    main()
