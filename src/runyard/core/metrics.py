"""Metrics parsed from run logs.

By default the last numeric `key=value` pair of each key wins, which reads training lines
such as `Epoch 3/10 | train_loss=0.48 val_loss=0.51`; a run may name its own regex, whose
named groups become the metrics. `metric_series` gives every point, for loss curves.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable

_NUMBER = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?|[-+]?(?:nan|inf)"
KEY_VALUE = re.compile(
    rf"(?:^|(?<=[\s|,;(\[{{]))([A-Za-z_][\w./-]*)\s*[=]\s*({_NUMBER})(?![\w.])", re.IGNORECASE
)
EPOCH = re.compile(r"\b(epoch|step|iter(?:ation)?)\s+(\d+)\s*/\s*(\d+)", re.IGNORECASE)


def _to_float(text: str) -> float | None:
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def compile_metrics_regex(pattern: str) -> re.Pattern[str]:
    """Compile a per-run regex; it must have at least one named group."""
    compiled = re.compile(pattern)
    if not compiled.groupindex:
        raise ValueError("a metrics regex needs named groups, e.g. 'loss=(?P<loss>[0-9.]+)'")
    return compiled


def parse_line(line: str, regex: re.Pattern[str] | None = None) -> dict[str, float]:
    """The metrics on one log line."""
    found: dict[str, float] = {}
    if regex is not None:
        for match in regex.finditer(line):
            for key, text in match.groupdict().items():
                if text is not None and (value := _to_float(text)) is not None:
                    found[key] = value
        return found
    for match in EPOCH.finditer(line):
        found[match.group(1).lower()] = float(match.group(2))
    for match in KEY_VALUE.finditer(line):
        if (value := _to_float(match.group(2))) is not None:
            found[match.group(1)] = value
    return found


def parse_metrics(text: str, regex: str | None = None) -> dict[str, float]:
    """The last value of every metric in `text`."""
    compiled = compile_metrics_regex(regex) if regex else None
    metrics: dict[str, float] = {}
    for line in text.splitlines():
        metrics.update(parse_line(line, compiled))
    return metrics


def metric_series(lines: Iterable[str], regex: str | None = None) -> dict[str, list[float]]:
    """Every value of every metric, in log order (the console's live loss curves)."""
    compiled = compile_metrics_regex(regex) if regex else None
    series: dict[str, list[float]] = {}
    for line in lines:
        for key, value in parse_line(line, compiled).items():
            series.setdefault(key, []).append(value)
    return series
