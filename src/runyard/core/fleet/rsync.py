"""File transfer with SSH workers: rsync over OpenSSH, with the pool's host-key rules.

rsync runs `ssh` with BatchMode and StrictHostKeyChecking=yes against the same known_hosts
files the session pool trusts (the operator's and the workspace's own), so a transfer can
never trust a key the pool would refuse. Pulls group files by their folder on the worker:
one rsync per folder, each resumable (`--partial`).
"""

from __future__ import annotations

import asyncio
import shlex
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from runyard.core.errors import InputError, OperationalError
from runyard.core.models import Worker
from runyard.core.protocol import RemoteFile

# What `runyard sync` never pushes (rsync patterns; the transfer root is the workspace).
# A pattern without a `/` matches that name at any depth; a leading `/` anchors it to the
# workspace root. Names that are only ever generated (VCS metadata, caches, virtualenvs,
# run outputs, checkpoint folders) and files that hold secrets are skipped at any depth.
# Names that are also ordinary names for code (`data`, `datasets`, `results`, `wandb`) are
# skipped only at the top level and where the seeds keep them (`competitions/*/data`), so a
# `src/pkg/data/` package still goes.
SYNC_EXCLUDES = (
    # version control, caches, environments
    ".git",
    ".hg",
    ".svn",
    "__pycache__",
    ".mypy_cache",
    ".pytest_cache",
    ".ruff_cache",
    ".ipynb_checkpoints",
    ".tox",
    ".nox",
    "node_modules",
    ".venv",
    ".venv-*",
    ".tools",
    # secrets: dotenv files (`.env.local`, `.env.example`, ...), direnv, netrc, API keys
    ".env",
    ".env.*",
    ".envrc",
    ".netrc",
    "kaggle.json",
    "*.pem",
    # runyard's own state: the worker keeps its own `.runyard/` and `outputs/`
    ".runyard",
    "/results",
    "/demo-workspace",
    # run outputs and checkpoints, wherever a run wrote them
    "outputs",
    "checkpoints",
    "ckpt",
    "ckpts",
    "lightning_logs",
    "mlruns",
    "/wandb",
    # data: fetched on the worker, never over the operator's uplink
    "/data",
    "/datasets",
    "/competitions/*/data",
    "/competitions/*/submissions",
)

# Read before the defaults, so a workspace's own rules win (rsync's `-F` convention): a
# `.rsync-filter` at the root holding `+ /data/` pushes a top-level data folder after all.
SYNC_FILTER_FILE = "dir-merge /.rsync-filter"


def environment_excludes(source: Path) -> list[str]:
    """Top-level folders that are Python or conda environments, whatever they are called
    (`venv/`, `env/`): anchored patterns, so an `env/` package of code still goes."""
    try:
        children = sorted(source.iterdir())
    except OSError:
        return []
    return [
        "/" + _literal(child.name)
        for child in children
        if child.is_dir()
        and not child.is_symlink()
        and ((child / "pyvenv.cfg").is_file() or (child / "conda-meta").is_dir())
    ]


def _literal(name: str) -> str:
    """`name` as an rsync pattern that matches only itself."""
    if not any(char in name for char in "*?["):
        return name  # rsync reads `\` as an escape only in a pattern with a wildcard
    return "".join("\\" + char if char in "*?[\\" else char for char in name)


def sync_filter_args(source: Path, extra_excludes: Sequence[str] = ()) -> list[str]:
    """rsync's filter arguments for pushing `source`: its own `.rsync-filter` rules, the
    defaults, its environments, then the caller's `--exclude` patterns."""
    patterns = [*SYNC_EXCLUDES, *environment_excludes(source), *extra_excludes]
    return ["--filter", SYNC_FILTER_FILE] + [
        arg for pattern in patterns for arg in ("--exclude", pattern)
    ]


def openssh_command(worker: Worker, known_hosts: Sequence[Path]) -> list[str]:
    """The `ssh` argv rsync uses for this worker (aliases in ~/.ssh/config still apply)."""
    if worker.ssh is None:
        raise InputError(f"worker {worker.worker_id} is not an SSH worker")
    argv = [
        "ssh",
        "-o",
        "BatchMode=yes",
        "-o",
        "StrictHostKeyChecking=yes",
        "-o",
        "ConnectTimeout=15",
        "-o",
        "ServerAliveInterval=15",
    ]
    files = [str(p) for p in known_hosts]
    if files:
        argv += ["-o", "UserKnownHostsFile=" + " ".join(shlex.quote(f) for f in files)]
    if worker.ssh.port is not None:
        argv += ["-p", str(worker.ssh.port)]
    if worker.ssh.user:
        argv += ["-l", worker.ssh.user]
    if worker.ssh.key:
        argv += ["-i", str(Path(worker.ssh.key).expanduser()), "-o", "IdentitiesOnly=yes"]
    return argv


def remote_spec(worker: Worker, path: str) -> str:
    """`host:path` for rsync; `~/x` becomes `x`, which the remote side reads from $HOME."""
    assert worker.ssh is not None
    if path == "~":
        path = "."
    elif path.startswith("~/"):
        path = path[2:]
    return f"{worker.ssh.host}:{path}"


async def run_rsync(argv: Sequence[str], stdin: bytes = b"") -> None:
    try:
        proc = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
    except FileNotFoundError:
        raise OperationalError(
            "rsync is not installed on this machine (apt-get install rsync)"
        ) from None
    _, err = await proc.communicate(stdin)
    if proc.returncode != 0:
        lines = err.decode("utf-8", "replace").strip().splitlines()
        raise OperationalError(
            f"rsync exited {proc.returncode}: {lines[-1] if lines else 'no message'}"
        )


@dataclass(frozen=True)
class TransferGroup:
    """Files that share a folder on the worker and a folder in the result."""

    remote_root: str
    local_subdir: str
    relatives: tuple[str, ...]


def group_for_transfer(files: Sequence[RemoteFile]) -> list[TransferGroup]:
    """Split `results/<id>/<first>/<rest>` paths into (remote root, `<first>`, `<rest>`)."""
    groups: dict[tuple[str, str], list[str]] = {}
    for remote in files:
        first, sep, rest = remote.relative.partition("/")
        if not sep:
            root, sub, rel = remote.path.rsplit("/", 1)[0] or "/", "", first
        else:
            root, sub, rel = (
                remote.path[: len(remote.path) - len(rest)].rstrip("/") or "/",
                first,
                rest,
            )
        groups.setdefault((root, sub), []).append(rel)
    return [TransferGroup(root, sub, tuple(rels)) for (root, sub), rels in groups.items()]


def known_hosts_paths(fleet: Any) -> list[Path]:
    from runyard.core.fleet.ssh_options import KnownHostsFiles

    return KnownHostsFiles.for_workspace(fleet.root).paths


async def fetch_with_rsync(
    fleet: Any, worker: Worker, files: list[RemoteFile], destination: Path
) -> None:
    """Copy `files` from the worker into `destination`, keeping their result-relative paths."""
    ssh = shlex.join(openssh_command(worker, known_hosts_paths(fleet)))
    for group in group_for_transfer(files):
        target = destination / group.local_subdir if group.local_subdir else destination
        target.mkdir(parents=True, exist_ok=True)
        listing = b"".join(
            rel.encode("utf-8", "surrogateescape") + b"\0" for rel in group.relatives
        )
        await run_rsync(
            [
                "rsync",
                "-a",
                "--partial",
                "--from0",
                "--files-from=-",
                "-e",
                ssh,
                remote_spec(worker, group.remote_root + "/"),
                str(target) + "/",
            ],
            listing,
        )


async def push_workspace(
    fleet: Any, worker: Worker, source: Path, extra_excludes: Sequence[str] = ()
) -> str:
    """`runyard sync`: push the workspace's code to the worker's workspace folder."""
    ssh = shlex.join(openssh_command(worker, known_hosts_paths(fleet)))
    excludes = sync_filter_args(source, extra_excludes)
    workspace = worker.workspace.rstrip("/") or "/"
    await fleet.executor(worker).run(f"mkdir -p {_shell_path(workspace)}")
    await run_rsync(
        [
            "rsync",
            "-az",
            "--partial",
            *excludes,
            "-e",
            ssh,
            str(source) + "/",
            remote_spec(worker, workspace + "/"),
        ]
    )
    return workspace


def _shell_path(path: str) -> str:
    from runyard.core.protocol import sh_path

    return sh_path(path)
