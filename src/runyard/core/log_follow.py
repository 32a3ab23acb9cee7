"""Following a run's log for a live view: bounded reads, whole lines, sampled metrics.

`control.follow_log` streams every byte, which is right for `runyard logs -f`. A console
following several runs that each print 10,000 lines a second needs the opposite trade:
each `read()` returns at most `max_bytes` of the newest output (older bytes are skipped
and counted, never buffered), only whole lines, and the metrics of at most
`metric_samples` of those lines, spread evenly, so the loss curve keeps its shape while
the cost per read stays flat however fast the run writes.

A local worker's log is read straight from the file in a thread (no process per read);
a remote one costs one round trip per read through the worker's executor. The run has
ended when its `exit_code` file exists; that is looked at before the log's size, so the
read that reports `ended` holds the log's last bytes.
"""

from __future__ import annotations

import asyncio
import os
from dataclasses import dataclass, field

from runyard.core.errors import InputError
from runyard.core.fleet.transports import Fleet
from runyard.core.metrics import compile_metrics_regex, parse_line
from runyard.core.models import Run, Worker
from runyard.core.protocol import sh_path

DEFAULT_MAX_BYTES = 1 << 20
DEFAULT_METRIC_SAMPLES = 200
DEFAULT_START_LINES = 200
# Bytes read back to find the last `start_lines` lines when a follow starts.
START_WINDOW_BYTES = 256 * 1024


@dataclass
class LogChunk:
    """What one read found: new whole lines, sampled metrics, and what was skipped."""

    lines: list[str]
    first_line_number: int  # the number (0-based, in the whole log) of lines[0]
    metrics: list[tuple[int, dict[str, float]]] = field(default_factory=list)
    skipped_bytes: int = 0
    size: int = 0
    ended: bool = False


def clean_line(raw: str) -> str:
    """What a terminal would show of a line: the text after its last carriage return."""
    if "\r" in raw:
        raw = raw.rstrip("\r").rsplit("\r", 1)[-1]
    return raw


def sample_indices(count: int, samples: int) -> range | list[int]:
    """At most `samples` indices spread evenly over `count`, always including the last."""
    if count <= samples:
        return range(count)
    step = count / samples
    picked = [int(i * step) for i in range(samples - 1)]
    picked.append(count - 1)
    return picked


class LogFollower:
    """Reads one run attempt's log from where the last read stopped."""

    def __init__(
        self,
        fleet: Fleet,
        worker: Worker,
        run: Run,
        *,
        start_lines: int = DEFAULT_START_LINES,
        max_bytes: int = DEFAULT_MAX_BYTES,
        metric_samples: int = DEFAULT_METRIC_SAMPLES,
        timeout: float | None = None,
    ) -> None:
        if run.run_dir is None:
            raise InputError(f"run {run.id} is {run.status.value} and has no log yet")
        self.fleet = fleet
        self.worker = worker
        self.run_dir = run.run_dir
        self.start_lines = start_lines
        self.max_bytes = max_bytes
        self.metric_samples = metric_samples
        self.timeout = timeout
        self.offset: int | None = None  # None until the first read
        self.lines_read = 0
        self._partial = b""
        self._regex = compile_metrics_regex(run.metrics_regex) if run.metrics_regex else None

    async def read(self) -> LogChunk:
        """The log's new whole lines since the last read (the last lines, the first time)."""
        if self.worker.is_local:
            ended, size, data, start = await asyncio.to_thread(self._read_local)
        else:
            ended, size, data, start = await self._read_remote()
        return await asyncio.to_thread(self._digest, ended, size, data, start)

    # ------------------------------------------------------------ reading

    def _window(self, size: int) -> int:
        """Where this read starts: the last offset, unless more than `max_bytes` is new."""
        if self.offset is None:
            return max(0, size - START_WINDOW_BYTES)
        if size < self.offset:  # truncated or replaced: start over
            self._partial = b""
            return 0
        return max(self.offset, size - self.max_bytes)

    def _read_local(self) -> tuple[bool, int, bytes, int]:
        ended = os.path.exists(os.path.join(self.run_dir, "exit_code"))
        path = os.path.join(self.run_dir, "log")
        try:
            with open(path, "rb") as handle:
                size = os.fstat(handle.fileno()).st_size
                start = self._window(size)
                handle.seek(start)
                data = handle.read(size - start)
        except FileNotFoundError:
            return ended, 0, b"", 0
        return ended, start + len(data), data, start

    async def _read_remote(self) -> tuple[bool, int, bytes, int]:
        d = sh_path(self.run_dir)
        known = -1 if self.offset is None else self.offset
        window = START_WINDOW_BYTES if self.offset is None else self.max_bytes
        script = (
            f'd={d}; ended=0; [ -f "$d/exit_code" ] && ended=1\n'
            'size=$(wc -c < "$d/log" 2>/dev/null | tr -d " "); size=${size:-0}\n'
            f"start={known}; [ $start -lt 0 ] || [ $size -lt $start ] && start=0\n"
            f"[ $((size - start)) -gt {window} ] && start=$((size - {window}))\n"
            'printf "%s %s %s\\n" "$ended" "$size" "$start"\n'
            '[ "$size" -gt "$start" ] && tail -c +$((start + 1)) "$d/log" | head -c $((size - start))\n'
            "true\n"
        )
        result = await self.fleet.executor(self.worker).run(script, timeout=self.timeout)
        header, _, data = result.stdout.partition(b"\n")
        fields = header.split()
        if len(fields) != 3 or not all(f.isdigit() for f in fields):
            return False, self.offset or 0, b"", self.offset or 0
        ended, _size, start = (int(f) for f in fields)
        if self.offset is not None and start < self.offset:
            self._partial = b""  # truncated: start over
        return bool(ended), start + len(data), data, start

    # ------------------------------------------------------------ lines and metrics

    def _digest(self, ended: bool, size: int, data: bytes, start: int) -> LogChunk:
        first_read = self.offset is None
        skipped = 0 if first_read or self.offset is None else max(0, start - self.offset)
        if skipped:
            # The reader fell behind: drop the stale partial line and the bytes up to the
            # next line break, so every line shown is whole.
            self._partial = b""
            newline = data.find(b"\n")
            data = data[newline + 1 :] if newline >= 0 else b""
        elif first_read and start > 0:
            newline = data.find(b"\n")
            data = data[newline + 1 :] if newline >= 0 else b""
        self.offset = size
        buffer = self._partial + data
        pieces = buffer.split(b"\n")
        self._partial = pieces.pop()
        if ended and self._partial:
            pieces.append(self._partial)
            self._partial = b""
        lines = [clean_line(p.decode("utf-8", "replace")) for p in pieces]
        if first_read and len(lines) > self.start_lines:
            lines = lines[-self.start_lines :]
        first_number = self.lines_read
        self.lines_read += len(lines)
        return LogChunk(
            lines=lines,
            first_line_number=first_number,
            metrics=self._sample_metrics(lines, first_number),
            skipped_bytes=skipped,
            size=size,
            ended=ended,
        )

    def _sample_metrics(self, lines: list[str], first: int) -> list[tuple[int, dict[str, float]]]:
        regex = self._regex
        candidates = (
            list(range(len(lines)))
            if regex is not None
            else [i for i, line in enumerate(lines) if "=" in line]
        )
        points: list[tuple[int, dict[str, float]]] = []
        for position in sample_indices(len(candidates), self.metric_samples):
            index = candidates[position]
            found = parse_line(lines[index], regex)
            if found:
                points.append((first + index, found))
        return points
