"""The demo competition: train, predict and a local submit, run as a user would run them.

Each script runs as a subprocess with the interpreter running the tests and cwd in a tmp dir,
so nothing is written into the repository.
"""

from __future__ import annotations

import csv
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

DEMO = Path(__file__).resolve().parents[2] / "competitions" / "demo"
EPOCH_LINE = re.compile(
    r"^Epoch (\d+)/(\d+) \| train_loss=(\d+\.\d{4}) val_loss=(\d+\.\d{4}) val_acc=(\d\.\d{4})$"
)
N_TEST = 200


def run_script(
    script: str, *args: str, cwd: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run competitions/demo/<script> the way runyard would, without RUNYARD_* from outside."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("RUNYARD_")}
    return subprocess.run(
        [sys.executable, str(DEMO / script), *args],
        cwd=cwd,
        env={**base, "PYTHONDONTWRITEBYTECODE": "1", **(env or {})},
        capture_output=True,
        text=True,
        timeout=60,
    )


def epoch_lines(stdout: str) -> list[re.Match[str]]:
    """The epoch lines of a training log, each checked against the exact format."""
    return [m for line in stdout.splitlines() if (m := EPOCH_LINE.match(line))]


@pytest.fixture
def out(tmp_path: Path) -> Path:
    return tmp_path / "out"


def test_challenge_json_names_existing_scripts() -> None:
    challenge = json.loads((DEMO / "challenge.json").read_text(encoding="utf-8"))
    assert challenge["slug"] == "demo"
    assert challenge["host"] == "local"
    for verb in ("train", "predict", "submit"):
        script = challenge["scripts"][verb].split()[-1]
        assert (DEMO.parents[1] / script).is_file(), script


def test_train_completes_fast_with_exact_epoch_lines(tmp_path: Path, out: Path) -> None:
    started = time.monotonic()
    result = run_script("train.py", "--sleep", "0", "--out", str(out), cwd=tmp_path)
    assert time.monotonic() - started < 10
    assert result.returncode == 0, result.stderr
    lines = epoch_lines(result.stdout)
    assert [(int(m[1]), int(m[2])) for m in lines] == [(e, 8) for e in range(1, 9)]
    train_losses = [float(m[3]) for m in lines]
    assert train_losses[-1] < train_losses[0]
    assert float(lines[-1][4]) < float(lines[0][4])  # validation loss falls too
    checkpoint = json.loads((out / "model.json").read_text(encoding="utf-8"))
    assert checkpoint["epoch"] == 8
    assert len(checkpoint["weights"]) == 4
    metrics = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
    assert metrics["epoch"] == 8
    assert metrics["val_acc"] > 0.7
    assert not list(out.glob(".*.tmp")), "a temp file of an atomic write was left behind"
    assert (out / "train.log").read_text(encoding="utf-8").count("Epoch ") == 8


def test_output_dir_comes_from_runyard_env_then_default(tmp_path: Path) -> None:
    env_out = tmp_path / "run-output"
    result = run_script(
        "train.py",
        "--sleep",
        "0",
        "--epochs",
        "1",
        cwd=tmp_path,
        env={"RUNYARD_OUTPUT_DIR": str(env_out)},
    )
    assert result.returncode == 0, result.stderr
    assert (env_out / "model.json").is_file()
    result = run_script("train.py", "--sleep", "0", "--epochs", "1", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "outputs" / "demo-local" / "model.json").is_file()


def test_resume_continues_and_matches_an_uninterrupted_run(tmp_path: Path, out: Path) -> None:
    first = run_script("train.py", "--sleep", "0", "--epochs", "3", "--out", str(out), cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    second = run_script(
        "train.py", "--sleep", "0", "--epochs", "5", "--out", str(out), cwd=tmp_path
    )
    assert second.returncode == 0, second.stderr
    assert "resuming from epoch 3" in second.stdout
    assert [int(m[1]) for m in epoch_lines(second.stdout)] == [4, 5]

    straight = tmp_path / "straight"
    whole = run_script(
        "train.py", "--sleep", "0", "--epochs", "5", "--out", str(straight), cwd=tmp_path
    )
    assert whole.returncode == 0, whole.stderr
    resumed = json.loads((out / "model.json").read_text(encoding="utf-8"))
    uninterrupted = json.loads((straight / "model.json").read_text(encoding="utf-8"))
    assert resumed["weights"] == uninterrupted["weights"]
    assert [h["epoch"] for h in resumed["history"]] == [1, 2, 3, 4, 5]

    again = run_script("train.py", "--sleep", "0", "--epochs", "5", "--out", str(out), cwd=tmp_path)
    assert again.returncode == 0
    assert epoch_lines(again.stdout) == []  # the same command after completion is a no-op


def test_fail_at_epoch_exits_nonzero_and_keeps_the_last_checkpoint(
    tmp_path: Path, out: Path
) -> None:
    result = run_script(
        "train.py", "--sleep", "0", "--fail-at-epoch", "3", "--out", str(out), cwd=tmp_path
    )
    assert result.returncode != 0
    assert "error:" in result.stderr
    assert [int(m[1]) for m in epoch_lines(result.stdout)] == [1, 2]
    assert json.loads((out / "model.json").read_text(encoding="utf-8"))["epoch"] == 2
    assert not (out / "metrics.json").exists()


def test_a_corrupt_checkpoint_is_reported_not_overwritten(tmp_path: Path, out: Path) -> None:
    out.mkdir()
    (out / "model.json").write_text("{not json", encoding="utf-8")
    result = run_script("train.py", "--sleep", "0", "--out", str(out), cwd=tmp_path)
    assert result.returncode == 2
    assert "model.json" in result.stderr
    assert (out / "model.json").read_text(encoding="utf-8") == "{not json"


def test_predict_writes_a_well_formed_submission(tmp_path: Path, out: Path) -> None:
    missing = run_script("predict.py", "--out", str(out), cwd=tmp_path)
    assert missing.returncode == 1
    assert "run train.py first" in missing.stderr

    assert run_script("train.py", "--sleep", "0", "--out", str(out), cwd=tmp_path).returncode == 0
    result = run_script("predict.py", "--out", str(out), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    with (out / "submission.csv").open(encoding="utf-8", newline="") as fh:
        rows = list(csv.reader(fh))
    assert rows[0] == ["id", "prediction"]
    assert [int(r[0]) for r in rows[1:]] == list(range(N_TEST))
    assert {r[1] for r in rows[1:]} == {"0", "1"}


def test_submit_copies_and_logs_then_rejects_a_bad_file(tmp_path: Path, out: Path) -> None:
    assert run_script("train.py", "--sleep", "0", "--out", str(out), cwd=tmp_path).returncode == 0
    assert run_script("predict.py", "--out", str(out), cwd=tmp_path).returncode == 0
    subs = tmp_path / "submissions"
    result = run_script(
        "submit.py",
        "--out",
        str(out),
        "--submissions-dir",
        str(subs),
        "--message",
        "first",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert "LOCAL DEMO SUBMIT" in result.stdout
    copies = sorted(subs.glob("*.csv"))
    assert len(copies) == 1
    assert copies[0].read_bytes() == (out / "submission.csv").read_bytes()
    entries = [json.loads(line) for line in (subs / "log.jsonl").read_text().splitlines()]
    assert len(entries) == 1
    assert entries[0]["file"] == copies[0].name
    assert entries[0]["rows"] == N_TEST
    assert entries[0]["kind"] == "local-demo"
    assert entries[0]["message"] == "first"
    assert 0.7 < entries[0]["score"] <= 1.0

    second = run_script(
        "submit.py", "--out", str(out), "--submissions-dir", str(subs), cwd=tmp_path
    )
    assert second.returncode == 0, second.stderr
    assert len(list(subs.glob("*.csv"))) == 2  # same second: a suffixed name, not an overwrite

    bad = tmp_path / "bad.csv"
    bad.write_text("id,label\n0,1\n", encoding="utf-8")
    rejected = run_script(
        "submit.py", "--file", str(bad), "--submissions-dir", str(subs), cwd=tmp_path
    )
    assert rejected.returncode == 2
    assert "header" in rejected.stderr
    short = tmp_path / "short.csv"
    short.write_text("id,prediction\n0,1\n", encoding="utf-8")
    rejected = run_script(
        "submit.py", "--file", str(short), "--submissions-dir", str(subs), cwd=tmp_path
    )
    assert rejected.returncode == 2
    assert f"expected {N_TEST}" in rejected.stderr
    assert len(list(subs.glob("*.csv"))) == 2
    assert len((subs / "log.jsonl").read_text().splitlines()) == 2
