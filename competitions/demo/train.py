"""Train the demo model: logistic regression by SGD on a seeded synthetic 2-class data set.

The local-first baseline every runyard user runs first: standard library only, CPU, a few
seconds. One log line per epoch in the format runyard parses into live loss curves:

    Epoch 3/8 | train_loss=0.4821 val_loss=0.5103 val_acc=0.8125

The lines also go to OUT/train.log (the `log` of challenge.json), for runs started by hand.
The checkpoint (OUT/model.json) is rewritten atomically after every epoch and loaded on
start, so re-running the identical command resumes where a killed run stopped.
"""

from __future__ import annotations

import argparse
import math
import random
import sys
import time
from pathlib import Path
from typing import IO, Any

from demo_common import (
    CHECKPOINT_FORMAT,
    N_FEATURES,
    Example,
    add_out_argument,
    fail,
    load_checkpoint,
    output_dir,
    predict_proba,
    write_json_atomic,
)
from demo_common import dataset as load_dataset

EPS = 1e-12


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The command line; every flag has a default so `python3 train.py` just works."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=8, help="total epochs (default 8)")
    parser.add_argument("--lr", type=float, default=0.005, help="SGD learning rate (default 0.005)")
    parser.add_argument("--seed", type=int, default=0, help="shuffling seed (default 0)")
    parser.add_argument(
        "--sleep", type=float, default=0.3, help="seconds to pause per epoch, to watch it live"
    )
    parser.add_argument(
        "--fail-at-epoch", type=int, default=None, metavar="K", help="exit 1 at epoch K (demo)"
    )
    add_out_argument(parser)
    args = parser.parse_args(argv)
    if args.epochs < 1:
        parser.error("--epochs must be at least 1")
    if args.lr <= 0 or not math.isfinite(args.lr):
        parser.error("--lr must be a positive number")
    if args.sleep < 0:
        parser.error("--sleep must be >= 0")
    return args


def mean_loss_and_acc(
    weights: list[float], bias: float, data: list[Example]
) -> tuple[float, float]:
    """Mean binary cross-entropy and accuracy of the model on `data`."""
    loss = 0.0
    correct = 0
    for x, y in data:
        p = predict_proba(weights, bias, x)
        loss -= math.log(max(p, EPS)) if y == 1 else math.log(max(1.0 - p, EPS))
        correct += int((p >= 0.5) == (y == 1))
    return loss / len(data), correct / len(data)


def sgd_epoch(
    weights: list[float], bias: float, data: list[Example], lr: float, rng: random.Random
) -> float:
    """One shuffled pass of per-example SGD; updates `weights` in place, returns the new bias."""
    order = list(range(len(data)))
    rng.shuffle(order)
    for i in order:
        x, y = data[i]
        grad = predict_proba(weights, bias, x) - y
        for j in range(N_FEATURES):
            weights[j] -= lr * grad * x[j]
        bias -= lr * grad
    return bias


def say(log: IO[str], line: str) -> None:
    """Print one line on stdout and append it to OUT/train.log, both flushed at once."""
    print(line, flush=True)
    log.write(line + "\n")
    log.flush()


def main(argv: list[str] | None = None) -> int:
    """Parse the flags and train, with OUT/train.log open for the whole run."""
    args = parse_args(argv)
    out = output_dir(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with (out / "train.log").open("a", encoding="utf-8") as log:
        return run_training(args, out, log)


def run_training(args: argparse.Namespace, out: Path, log: IO[str]) -> int:
    """Train to --epochs, resuming from OUT/model.json when it exists."""
    ckpt_path = out / "model.json"
    train_set, val_set, _test = load_dataset()

    ckpt = load_checkpoint(ckpt_path)
    weights: list[float] = [float(w) for w in ckpt["weights"]] if ckpt else [0.0] * N_FEATURES
    bias = float(ckpt["bias"]) if ckpt else 0.0
    start: int = ckpt["epoch"] if ckpt else 0
    history: list[dict[str, Any]] = list(ckpt.get("history", [])) if ckpt else []
    if ckpt:
        say(log, f"resuming from epoch {start} ({ckpt_path})")
    if start >= args.epochs:
        say(log, f"already trained to epoch {start}/{args.epochs}; nothing to do")

    for epoch in range(start + 1, args.epochs + 1):
        if args.fail_at_epoch is not None and epoch == args.fail_at_epoch:
            say(log, f"simulated failure at epoch {epoch} (--fail-at-epoch {args.fail_at_epoch})")
            fail("training failed on purpose (demo of a failed run)", 1)
        # Seeding per epoch makes a resumed run shuffle exactly as an uninterrupted one.
        bias = sgd_epoch(
            weights, bias, train_set, args.lr, random.Random(args.seed * 1_000_003 + epoch)
        )
        train_loss, _ = mean_loss_and_acc(weights, bias, train_set)
        val_loss, val_acc = mean_loss_and_acc(weights, bias, val_set)
        history.append(
            {"epoch": epoch, "train_loss": train_loss, "val_loss": val_loss, "val_acc": val_acc}
        )
        write_json_atomic(
            ckpt_path,
            {
                "format": CHECKPOINT_FORMAT,
                "epoch": epoch,
                "weights": weights,
                "bias": bias,
                "lr": args.lr,
                "seed": args.seed,
                "history": history,
            },
        )
        say(
            log,
            f"Epoch {epoch}/{args.epochs} | train_loss={train_loss:.4f} "
            f"val_loss={val_loss:.4f} val_acc={val_acc:.4f}",
        )
        if args.sleep:
            time.sleep(args.sleep)

    write_json_atomic(out / "metrics.json", history[-1] if history else {})
    say(log, f"done: checkpoint {ckpt_path}, metrics {out / 'metrics.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
