"""LOCAL DEMO SUBMIT: the stand-in for `kaggle competitions submit`. Nothing leaves the machine.

Checks submission.csv the way a leaderboard would (header, row count, ids, labels), scores it
against the demo's synthetic labels, copies it to submissions/<timestamp>.csv and appends a
line to submissions/log.jsonl, so submissions are tracked in plain files.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import io
import json
import os
import sys
from datetime import datetime, timezone
from pathlib import Path

from demo_common import (
    N_TEST,
    SUBMISSION_HEADER,
    add_out_argument,
    dataset,
    fail,
    output_dir,
    write_text_atomic,
)

SUBMISSIONS_DIR = Path(__file__).resolve().parent / "submissions"


def validate(path: Path, text: str) -> dict[int, int]:
    """The submission's id -> prediction map; exits 2 naming the line of the first problem."""
    rows = list(csv.reader(io.StringIO(text)))
    if not rows or rows[0] != SUBMISSION_HEADER:
        got = ",".join(rows[0]) if rows else "an empty file"
        fail(f"{path}:1: header must be {','.join(SUBMISSION_HEADER)}, not {got}")
    if len(rows) - 1 != N_TEST:
        fail(f"{path}: expected {N_TEST} prediction rows, found {len(rows) - 1}")
    predictions: dict[int, int] = {}
    for line, row in enumerate(rows[1:], start=2):
        if len(row) != 2 or not row[0].isdigit() or row[1] not in ("0", "1"):
            fail(f"{path}:{line}: expected '<id>,<0 or 1>', found {','.join(row)!r}")
        row_id = int(row[0])
        if row_id >= N_TEST or row_id in predictions:
            fail(f"{path}:{line}: id {row_id} is out of range or repeated")
        predictions[row_id] = int(row[1])
    return predictions


def unique_target(directory: Path, stamp: str) -> Path:
    """submissions/<stamp>.csv, with a -N suffix if two submits land in the same second."""
    target = directory / f"{stamp}.csv"
    n = 1
    while target.exists():
        target = directory / f"{stamp}-{n}.csv"
        n += 1
    return target


def main(argv: list[str] | None = None) -> int:
    """Validate, score, copy and log one submission."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_out_argument(parser)
    parser.add_argument(
        "--file", default=None, help="submission to send (default: OUT/submission.csv)"
    )
    parser.add_argument("--message", default="", help="a note kept in the submissions log")
    parser.add_argument(
        "--submissions-dir",
        default=None,
        help=f"where submissions are kept (default: {SUBMISSIONS_DIR})",
    )
    args = parser.parse_args(argv)
    source = Path(args.file) if args.file else output_dir(args.out) / "submission.csv"
    try:
        text = source.read_text(encoding="utf-8")
    except OSError as exc:
        fail(f"cannot read {source}: {exc.strerror}: run predict.py first", 1)
    predictions = validate(source, text)
    _train, _val, test = dataset()
    score = sum(predictions[i] == label for i, (_x, label) in enumerate(test)) / N_TEST

    directory = Path(args.submissions_dir) if args.submissions_dir else SUBMISSIONS_DIR
    now = datetime.now(timezone.utc)  # noqa: UP017 (datetime.UTC needs 3.11; the demo runs on 3.10)
    target = unique_target(directory, now.strftime("%Y%m%dT%H%M%SZ"))
    write_text_atomic(target, text)
    entry = {
        "submitted_at": now.isoformat(timespec="seconds"),
        "kind": "local-demo",
        "file": target.name,
        "source": str(source),
        "rows": len(predictions),
        "sha256": hashlib.sha256(text.encode("utf-8")).hexdigest(),
        "score": round(score, 4),
        "metric": "accuracy",
        "message": args.message,
    }
    with (directory / "log.jsonl").open("a", encoding="utf-8") as log:
        log.write(json.dumps(entry) + "\n")
        log.flush()
        os.fsync(log.fileno())
    print("LOCAL DEMO SUBMIT: nothing was sent to Kaggle or anywhere else.", flush=True)
    print(f"accepted {len(predictions)} rows; score accuracy={score:.4f} (demo's synthetic labels)")
    print(f"kept as {target}; logged in {directory / 'log.jsonl'}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
