"""Bootstrapping a bare worker: folders, a tool check, an optional venv, credentials.

Everything runs as one script over the worker's transport. Credentials travel on stdin
into `~/.config/runyard/credentials.env` (mode 600, in the login user's home, never in the
shared workspace), which runs source at start.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field
from pathlib import Path

from runyard.core.errors import FileFormatError, RunyardError
from runyard.core.fleet.transports import Fleet
from runyard.core.models import Worker
from runyard.core.protocol import sh_path
from runyard.core.secrets import read_dotenv

TOOLS = ("bash", "python3", "git", "tmux", "rsync", "setsid", "nvidia-smi", "uv")
REQUIRED_TOOLS = frozenset({"bash"})
_DASH_V_TOOLS = frozenset({"setsid", "tmux"})  # they know `-V`, not `--version`
CREDENTIALS_PATH = "~/.config/runyard/credentials.env"


@dataclass
class SetupReport:
    worker: str
    workspace: str
    tools: dict[str, str] = field(default_factory=dict)  # tool -> version line, "" if missing
    venv: str | None = None
    credentials: list[str] = field(default_factory=list)  # names only, never values
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def build_setup_script(workspace: str, make_venv: bool, with_credentials: bool) -> str:
    lines = [
        "set -u",
        f"ws={sh_path(workspace)}",
        'mkdir -p "$ws/.runyard/runs" "$ws/outputs" || { echo "problem=cannot create $ws"; exit 1; }',
        'echo "workspace=$(cd "$ws" && pwd)"',
    ]
    for tool in TOOLS:
        q = shlex.quote(tool)
        version = "-V" if tool in _DASH_V_TOOLS else "--version"
        if tool == "nvidia-smi":
            probe = "nvidia-smi -L 2>/dev/null | wc -l | tr -d ' ' | sed 's/$/ GPUs/'"
        else:
            probe = f"{q} {version} 2>&1 | head -n 1"
        lines.append(
            f'if command -v {q} >/dev/null 2>&1; then printf "tool.%s=%s\\n" {q} "$({probe})"; '
            f'else printf "tool.%s=\\n" {q}; fi'
        )
    if with_credentials:
        creds = sh_path(CREDENTIALS_PATH)
        lines += [
            f'mkdir -p "$(dirname {creds})" && chmod 700 "$(dirname {creds})"',
            f"(umask 077; cat > {creds}.tmp) && mv -f {creds}.tmp {creds} && echo credentials=ok",
        ]
    if make_venv:
        lines += [
            'cd "$ws"',
            "if [ -f uv.lock ]; then",
            "  { [ -x .tools/bin/uv ] || { python3 -m venv .tools && .tools/bin/pip install -q uv; }; } "
            "&& .tools/bin/uv sync --locked -q && echo venv=uv.lock || echo 'problem=uv sync failed'",
            "elif [ -f requirements.txt ]; then",
            "  python3 -m venv .venv && .venv/bin/pip install -q -r requirements.txt "
            "&& echo venv=requirements.txt || echo 'problem=pip install failed'",
            "else python3 -m venv .venv && echo venv=empty || echo 'problem=python3 -m venv failed'; fi",
        ]
    return "\n".join(lines) + "\n"


def credentials_payload(env_file: Path | None) -> tuple[bytes, list[str]]:
    if env_file is None:
        return b"", []
    path = env_file.expanduser()
    values = read_dotenv(path, missing_ok=False)
    if not values:  # it would empty the worker's credentials file: surely not meant
        raise FileFormatError(path, "has no KEY=VALUE line; nothing to install")
    text = "".join(f"export {k}={shlex.quote(v)}\n" for k, v in values.items())
    return text.encode(), sorted(values)


async def setup_worker(
    fleet: Fleet, worker: Worker, make_venv: bool = False, env_file: Path | None = None
) -> SetupReport:
    payload, names = credentials_payload(env_file)
    workspace = fleet.workspace_path(worker)
    report = SetupReport(worker.worker_id, workspace)  # credentials: once written
    script = build_setup_script(workspace, make_venv, env_file is not None)
    try:
        result = await fleet.executor(worker).run(
            script, payload, timeout=1800 if make_venv else 120
        )
    except RunyardError as exc:
        report.problems.append(str(exc))
        return report
    for line in result.text().splitlines():
        key, _, value = line.partition("=")
        if key.startswith("tool."):
            report.tools[key[5:]] = value.strip()
        elif key == "workspace":
            report.workspace = value
        elif key == "venv":
            report.venv = value
        elif key == "problem":
            report.problems.append(value)
    for tool in REQUIRED_TOOLS:
        if not report.tools.get(tool):
            report.problems.append(f"{tool} is missing on the worker")
    if env_file is not None:
        if "credentials=ok" in result.text():
            report.credentials = names
        else:
            report.problems.append("credentials could not be written")
    return report
