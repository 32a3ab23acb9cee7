"""Shared pieces of the demo competition: the synthetic data, the model and safe file writes.

Standard library only, so a new user's first run needs no installs. The data set is
generated from a fixed seed, so train, predict and submit agree on it without any download.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import sys
import tempfile
from pathlib import Path
from typing import Any, NoReturn

N_FEATURES = 4
N_TRAIN = 256
N_VAL = 64
N_TEST = 200
DATA_SEED = 20240601  # fixed: the data set is part of the competition, not of a run
CHECKPOINT_FORMAT = "runyard-demo-logreg/1"
DEFAULT_OUT = Path("outputs") / "demo-local"
SUBMISSION_HEADER = ["id", "prediction"]

Example = tuple[list[float], int]


def add_out_argument(parser: argparse.ArgumentParser) -> None:
    """The --out flag every demo script shares; resolve it with `output_dir`."""
    parser.add_argument(
        "--out",
        default=None,
        metavar="DIR",
        help=f"output dir (default: $RUNYARD_OUTPUT_DIR, else {DEFAULT_OUT})",
    )


def output_dir(cli_value: str | None) -> Path:
    """The output directory: --out, else $RUNYARD_OUTPUT_DIR (set by runyard), else the default."""
    if cli_value:
        return Path(cli_value)
    from_env = os.environ.get("RUNYARD_OUTPUT_DIR")
    return Path(from_env) if from_env else DEFAULT_OUT


def _examples(rng: random.Random, true_w: list[float], count: int) -> list[Example]:
    """Draw `count` points from a noisy linear rule, so the best accuracy is below 1."""
    out: list[Example] = []
    for _ in range(count):
        x = [rng.gauss(0.0, 1.0) for _ in range(N_FEATURES)]
        margin = sum(w * xi for w, xi in zip(true_w, x, strict=True)) + rng.gauss(0.0, 0.8)
        out.append((x, 1 if margin > 0 else 0))
    return out


def dataset() -> tuple[list[Example], list[Example], list[Example]]:
    """The train, validation and test splits, identical on every machine and every call."""
    rng = random.Random(DATA_SEED)
    true_w = [rng.uniform(-2.0, 2.0) for _ in range(N_FEATURES)]
    return (
        _examples(rng, true_w, N_TRAIN),
        _examples(rng, true_w, N_VAL),
        _examples(rng, true_w, N_TEST),
    )


def predict_proba(weights: list[float], bias: float, x: list[float]) -> float:
    """The logistic model's probability of class 1, computed without overflow."""
    z = bias + sum(w * xi for w, xi in zip(weights, x, strict=True))
    if z >= 0:
        return 1.0 / (1.0 + math.exp(-z))
    ez = math.exp(z)
    return ez / (1.0 + ez)


def write_text_atomic(path: Path, text: str) -> None:
    """Write a file so a crash at any instant leaves either the old file or the new one.

    Temp file in the same directory, fsync, then rename over the target (and fsync the
    directory so the rename itself is durable).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    try:
        dir_fd = os.open(path.parent, os.O_RDONLY)
    except OSError:  # some platforms cannot open a directory; the rename is still atomic
        return
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def write_json_atomic(path: Path, data: Any) -> None:
    """`write_text_atomic` of `data` as indented JSON."""
    write_text_atomic(path, json.dumps(data, indent=2) + "\n")


def fail(message: str, code: int = 2) -> NoReturn:
    """Print one `error:` line on stderr and exit (2: bad input, 1: the run itself failed)."""
    print(f"error: {message}", file=sys.stderr, flush=True)
    raise SystemExit(code)


def load_checkpoint(path: Path) -> dict[str, Any] | None:
    """The checkpoint at `path`, or None when there is none; a malformed one exits with 2."""
    if not path.exists():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        fail(f"cannot read checkpoint {path}: {exc}")
    if not isinstance(data, dict) or data.get("format") != CHECKPOINT_FORMAT:
        fail(f"{path} is not a {CHECKPOINT_FORMAT} checkpoint")
    weights = data.get("weights")
    if (
        not isinstance(weights, list)
        or len(weights) != N_FEATURES
        or not all(isinstance(w, (int, float)) for w in weights)
        or not isinstance(data.get("bias"), (int, float))
        or not isinstance(data.get("epoch"), int)
    ):
        fail(f"{path}: needs 'weights' ({N_FEATURES} numbers), 'bias' and 'epoch'")
    return data
