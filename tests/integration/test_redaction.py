"""A secret a run prints is shown as *** by `logs` and `check`; the run itself sees the value."""

from __future__ import annotations

import json
import os
import time
from typing import Any

CLI = Any


def _wait_finished(cli: CLI, run_id: str, deadline_s: float = 30) -> dict[str, object]:
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        cli("check", check=False)
        runs = {r["id"]: r for r in json.loads(cli("run", "list", "--json").stdout)}
        if runs[run_id]["status"] in ("done", "failed", "lost"):
            return runs[run_id]
        time.sleep(0.1)
    raise AssertionError(f"run {run_id} did not finish")


def test_printed_secret_is_redacted_in_logs_and_check(cli: CLI) -> None:
    secret = "tok-" + os.urandom(8).hex()
    os.environ["RUNYARD_TEST_TOKEN"] = secret
    try:
        added = cli(
            "run",
            "add",
            "--name",
            "leaky",
            "--env",
            "T=${secret:RUNYARD_TEST_TOKEN}",
            "--command",
            f'echo "token is $T"; test "${{#T}}" -eq {len(secret)}',
        )
        run_id = added.stdout.split()[-1]
        cli("dispatch")
        run = _wait_finished(cli, run_id)
        assert run["status"] == "done"  # the run saw the real value
        logs = cli("logs", run_id).stdout
        assert "token is ***" in logs
        assert secret not in logs
        check_out = cli("check", "--json").stdout
        assert secret not in check_out
    finally:
        del os.environ["RUNYARD_TEST_TOKEN"]
