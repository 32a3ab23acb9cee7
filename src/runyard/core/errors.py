"""Errors the front ends map to exit codes: bad input (2) and operational failure (1)."""

from __future__ import annotations

from pathlib import Path


class RunyardError(Exception):
    """Base of every error runyard reports to the operator as one line."""

    exit_code = 1


class InputError(RunyardError):
    """Bad input from the operator: usage, validation, a malformed file. Exit code 2."""

    exit_code = 2


class FileFormatError(InputError):
    """A workspace file that cannot be loaded; names the file, line and field."""

    def __init__(
        self, path: Path | str, message: str, *, line: int | None = None, field: str | None = None
    ) -> None:
        self.path = Path(path)
        self.line = line
        self.field = field
        self.message = message
        where = f"{self.path}:{line}" if line is not None else f"{self.path}"
        what = f" field '{field}':" if field else ""
        super().__init__(f"{where}:{what} {message}")


class OperationalError(RunyardError):
    """Something outside the operator's input failed (a worker, a process, the disk). Exit 1."""


class WorkerUnreachable(OperationalError):
    """A worker did not answer: connection refused, timed out, authentication failed."""

    def __init__(self, worker: str, reason: str) -> None:
        self.worker = worker
        self.reason = reason
        super().__init__(f"worker {worker}: {reason}")
