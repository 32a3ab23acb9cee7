"""Predict the demo test set with the trained checkpoint and write OUT/submission.csv.

The file has the Kaggle shape `id,prediction` (one row per test example, class 0 or 1), so
`submit.py` can check it the way a real leaderboard would.
"""

from __future__ import annotations

import argparse
import csv
import io
import sys
from pathlib import Path

from demo_common import (
    SUBMISSION_HEADER,
    add_out_argument,
    dataset,
    fail,
    load_checkpoint,
    output_dir,
    predict_proba,
    write_text_atomic,
)


def main(argv: list[str] | None = None) -> int:
    """Load OUT/model.json (or --checkpoint) and write the submission next to it (or --out)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_out_argument(parser)
    parser.add_argument("--checkpoint", default=None, help="model file (default: OUT/model.json)")
    args = parser.parse_args(argv)
    out = output_dir(args.out)
    ckpt_path = Path(args.checkpoint) if args.checkpoint else out / "model.json"
    ckpt = load_checkpoint(ckpt_path)
    if ckpt is None:
        fail(f"no checkpoint at {ckpt_path}: run train.py first", 1)
    weights = [float(w) for w in ckpt["weights"]]
    bias = float(ckpt["bias"])
    _train, _val, test = dataset()

    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(SUBMISSION_HEADER)
    for i, (x, _label) in enumerate(test):
        writer.writerow((i, int(predict_proba(weights, bias, x) >= 0.5)))
    target = out / "submission.csv"
    write_text_atomic(target, buf.getvalue())
    print(
        f"wrote {len(test)} predictions to {target} (model from epoch {ckpt['epoch']})", flush=True
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
