"""The check script's log tail starts at a line: a cut first line would read as a metric."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from runyard.core.protocol import ProbeTarget, build_check, parse_check


def tail_of(tmp_path: Path, log: bytes, window: int) -> bytes:
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "log").write_bytes(log)
    (run_dir / "exit_code").write_text("0\n")
    script = build_check([ProbeTarget("r1", str(run_dir), tail_bytes=window)])
    out = subprocess.run(["bash", "-c", script], capture_output=True, check=True).stdout
    return parse_check(out).runs["r1"].log_tail


@pytest.mark.parametrize(
    ("log", "window", "tail"),
    [
        (b"epoch=1 loss=0.5\nepoch=2 loss=0.4\n", 4096, b"epoch=1 loss=0.5\nepoch=2 loss=0.4"),
        # The window starts inside `val_loss=0.28`: that piece is dropped, not read as ss=0.28.
        (b"epoch=1 val_loss=0.28\nepoch=2 val_loss=0.27\n", 27, b"epoch=2 val_loss=0.27"),
        # The window starts right after a newline: its first line is whole and kept.
        (b"epoch=1 x=1\nepoch=2 x=2\n", 12, b"epoch=2 x=2"),
        (b"epoch=1 x=1\nepoch=2 x=2\n\n\n", 14, b"epoch=2 x=2"),
        # One long progress line without a newline: its last bytes are all there is.
        (b"\r 10%|#  |\r 20%|## |", 10, b"\r 20%|## |"),
    ],
)
def test_check_tail_drops_the_cut_first_line(
    tmp_path: Path, log: bytes, window: int, tail: bytes
) -> None:
    assert tail_of(tmp_path, log, window) == tail
