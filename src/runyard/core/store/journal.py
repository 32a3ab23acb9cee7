"""The console's bug journal: tracebacks of unexpected errors, appended, bounded."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

JOURNAL_NAME = "console.log"
JOURNAL_MAX_BYTES = 1 << 20  # then console.log becomes console.log.1 (one old generation)


def append_journal(path: Path, text: str, max_bytes: int = JOURNAL_MAX_BYTES) -> None:
    """Append `text` to the console's journal, rotating it to `<name>.1` past `max_bytes`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(FileNotFoundError):
        if path.stat().st_size >= max_bytes:
            os.replace(path, path.with_name(path.name + ".1"))
    with path.open("a", encoding="utf-8") as handle:
        handle.write(text)
