"""The one interface every worker transport implements: run a bash script, get bytes back.

The run protocol, telemetry probes and pulls are all bash scripts built in core and sent
through an `Executor`, so a local worker and an SSH worker follow the same code path.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Protocol

from runyard.core.errors import WorkerUnreachable


@dataclass(frozen=True)
class CommandResult:
    """What a script printed and how it exited."""

    exit_status: int
    stdout: bytes
    stderr: bytes

    @property
    def ok(self) -> bool:
        return self.exit_status == 0

    def text(self) -> str:
        return self.stdout.decode("utf-8", "replace")


@dataclass(frozen=True)
class ShellFunction:
    """A bash function a script calls; a persistent shell keeps it once defined.

    A script sent every tick (the probe) then travels as one line that calls it, instead of
    kilobytes of text for the worker's bash to read and parse again each time.
    `definition` is the code that defines `name`; nothing else may run in it.
    """

    name: str
    definition: str

    @classmethod
    def from_body(cls, name: str, body: str) -> ShellFunction:
        return cls(name, f"{name}() {{\n{body}\n}}\n")


def standalone_script(script: str, functions: Sequence[ShellFunction]) -> str:
    """`script` preceded by the definitions it calls: for a shell that keeps nothing."""
    return "".join(function.definition for function in functions) + script


async def run_short_script(
    executor: Executor,
    script: str,
    timeout: float | None = None,
    functions: Sequence[ShellFunction] = (),
) -> CommandResult:
    """A short script that is safe to run twice (probes, check, patrol): through the
    worker's persistent shell where its transport keeps one (SSH), else as one script."""
    run_short = getattr(executor, "run_short", None)
    if run_short is not None:
        result: CommandResult = await run_short(script, timeout, functions)
        return result
    return await executor.run(standalone_script(script, functions), timeout=timeout)


class Executor(Protocol):
    """Runs a bash script on one worker. Raises `WorkerUnreachable` when it cannot."""

    name: str

    async def run(
        self, script: str, stdin: bytes = b"", timeout: float | None = None
    ) -> CommandResult: ...


class StreamingExecutor(Executor, Protocol):
    """An executor that can also hand back a script's output as it arrives (log follow)."""

    def stream(self, script: str) -> AsyncIterator[bytes]: ...


class LocalExecutor:
    """Runs scripts on this machine with `bash -c`; the local worker's transport."""

    def __init__(self, name: str = "local", cwd: str | None = None) -> None:
        self.name = name
        self.cwd = cwd

    async def run(
        self, script: str, stdin: bytes = b"", timeout: float | None = None
    ) -> CommandResult:
        try:
            proc = await asyncio.create_subprocess_exec(
                "bash",
                "-c",
                script,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                cwd=self.cwd,
                env=os.environ.copy(),
            )
        except OSError as exc:
            raise WorkerUnreachable(self.name, f"cannot start bash: {exc}") from exc
        try:
            out, err = await asyncio.wait_for(proc.communicate(stdin), timeout)
        except TimeoutError as exc:
            proc.kill()
            await proc.wait()
            raise WorkerUnreachable(self.name, f"script timed out after {timeout:g}s") from exc
        return CommandResult(proc.returncode if proc.returncode is not None else -1, out, err)

    async def stream(self, script: str) -> AsyncIterator[bytes]:
        """Yield stdout chunks until the script exits; closing the generator kills it."""
        proc = await asyncio.create_subprocess_exec(
            "bash",
            "-c",
            script,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.DEVNULL,
            cwd=self.cwd,
            start_new_session=True,
        )
        assert proc.stdout is not None
        try:
            while chunk := await proc.stdout.read(65536):
                yield chunk
            await proc.wait()
        finally:
            if proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, 9)
                await proc.wait()
