"""Metrics from run logs: default key=value parsing and per-run regexes with named groups."""

from __future__ import annotations

import re

import pytest

from runyard.core.metrics import compile_metrics_regex, metric_series, parse_line, parse_metrics


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        (
            "Epoch 3/10 | train_loss=0.48 val_loss=0.51",
            {"epoch": 3.0, "train_loss": 0.48, "val_loss": 0.51},
        ),
        ("step 120/1000 loss=1.25e-1 lr=3e-4", {"step": 120.0, "loss": 0.125, "lr": 0.0003}),
        ("iter 7/9: acc=97 grad_norm=-1.5", {"iter": 7.0, "acc": 97.0, "grad_norm": -1.5}),
        (
            "train_loss=0.48,val_loss=0.51;wd=1E-2",
            {"train_loss": 0.48, "val_loss": 0.51, "wd": 0.01},
        ),
        ("loss = 0.7 | val/acc=0.9 | lr=.5", {"loss": 0.7, "val/acc": 0.9, "lr": 0.5}),
        ("[rank0] (loss=0.2) {acc=0.8}", {"loss": 0.2, "acc": 0.8}),
        ("no metrics here, just words", {}),
        ("version=1.2.3 id=abc duration=5s", {}),  # not numbers: left alone
    ],
)
def test_default_parsing_reads_key_value_training_lines(
    line: str, expected: dict[str, float]
) -> None:
    assert parse_line(line) == expected
    assert parse_metrics(line) == expected


@pytest.mark.parametrize(
    "line",
    [
        "see https://example.com/report?lr=0.1&step=5 for details",
        "wandb: View run at https://wandb.ai/team/proj/runs/abc?loss=0.3",
        "GET http://127.0.0.1:8080/metrics?epoch=2",
        "downloading file:///data/x.bin?size=3",
    ],
)
def test_urls_are_not_mistaken_for_metrics(line: str) -> None:
    assert parse_metrics(line) == {}


def test_a_url_beside_real_metrics_leaves_only_the_real_ones() -> None:
    line = "loss=0.42 ckpt=https://host/x?loss=9&acc=1 acc=0.9"
    assert parse_metrics(line) == {"loss": 0.42, "acc": 0.9}


def test_the_last_value_of_each_metric_wins() -> None:
    log = "\n".join(
        [
            "Epoch 1/3 | train_loss=0.90 val_loss=0.95",
            "checkpoint saved",
            "Epoch 2/3 | train_loss=0.60 val_loss=0.70",
            "Epoch 3/3 | train_loss=0.48",
        ]
    )
    assert parse_metrics(log) == {"epoch": 3.0, "train_loss": 0.48, "val_loss": 0.70}


def test_nan_and_inf_are_ignored_and_do_not_erase_the_last_good_value() -> None:
    log = "loss=0.31 acc=0.5\nloss=nan acc=inf\nloss=NaN grad=-inf\nbest=+inf"
    assert parse_metrics(log) == {"loss": 0.31, "acc": 0.5}


def test_carriage_return_progress_lines_are_read() -> None:
    log = "Epoch 1/2 | loss=0.9\rEpoch 2/2 | loss=0.4\n"
    assert parse_metrics(log)["loss"] == 0.4


def test_metric_series_keeps_every_point_in_order() -> None:
    lines = ["Epoch 1/3 | loss=0.9", "noise", "Epoch 2/3 | loss=nan", "Epoch 3/3 | loss=0.3"]
    assert metric_series(lines) == {"epoch": [1.0, 2.0, 3.0], "loss": [0.9, 0.3]}


# ---------------------------------------------------------------- per-run regex


def test_per_run_regex_named_groups_become_the_metrics() -> None:
    regex = r"\[(?P<step>\d+)\] total (?P<total_loss>[-0-9.e]+) \| top1 (?P<top1>[0-9.]+)%"
    log = "[10] total 2.5 | top1 30.0%\nwarming up loss=99\n[20] total 1.25 | top1 41.5%\n"
    # Only the regex counts: the key=value on the warm-up line is not read.
    assert parse_metrics(log, regex) == {"step": 20.0, "total_loss": 1.25, "top1": 41.5}


def test_per_run_regex_ignores_unmatched_groups_and_non_numbers() -> None:
    regex = r"loss (?P<loss>\S+)(?: acc (?P<acc>\S+))?"
    log = "loss 0.5 acc 0.7\nloss 0.4\nloss oops acc nan\n"
    assert parse_metrics(log, regex) == {"loss": 0.4, "acc": 0.7}


def test_per_run_regex_series() -> None:
    regex = r"it=(?P<it>\d+) l=(?P<l>[0-9.]+)"
    assert metric_series(["it=1 l=0.5", "x", "it=2 l=0.25"], regex) == {
        "it": [1.0, 2.0],
        "l": [0.5, 0.25],
    }


def test_a_regex_without_named_groups_is_refused() -> None:
    with pytest.raises(ValueError, match="named groups"):
        compile_metrics_regex(r"loss=([0-9.]+)")
    with pytest.raises(ValueError, match="named groups"):
        parse_metrics("loss=0.1", r"loss=([0-9.]+)")


def test_an_invalid_regex_is_refused() -> None:
    with pytest.raises(re.error):
        compile_metrics_regex(r"loss=(?P<loss>[0-9.+")
