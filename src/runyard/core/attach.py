"""Attaching the operator's terminal to a worker: a shell in the run's folder, or its tmux.

The console suspends itself and runs `interactive_argv(...)` in the foreground; when the
shell or tmux client exits, the console comes back. A run launched in tmux (profile
`detach_primitive: tmux`) is attached with `tmux attach`; any other run gets an interactive
login shell in its run directory, where `log`, `pid` and `exit_code` live. SSH workers go
through the system `ssh -t` (so ~/.ssh/config, agents and ProxyJump work as in a terminal),
trusting the same known_hosts files as runyard's own connections.
"""

from __future__ import annotations

import shlex
import subprocess
from collections.abc import Sequence
from pathlib import Path

from runyard.core import protocol
from runyard.core.models import Run, Worker
from runyard.core.protocol import sh_path


def tmux_session_name(run: Run) -> str:
    """The tmux session a tmux-detached attempt runs in (as `protocol.build_launch` names it)."""
    return protocol.tmux_session_name(run.id, run.attempts)


def attach_script(directory: str, tmux_session: str | None) -> str:
    """Attach to `tmux_session` if it exists, else open a login shell in `directory`."""
    shell = f'cd {sh_path(directory)} 2>/dev/null || cd; exec "${{SHELL:-bash}}" -l'
    if tmux_session is None:
        return shell
    # "=" asks tmux for this exact name: a bare name also matches a prefix (…-1 finds …-10).
    session = shlex.quote(f"={tmux_session}")
    # TMUX is unset so attaching from inside the operator's own tmux pane works (nested).
    return (
        f"if command -v tmux >/dev/null 2>&1 && tmux has-session -t {session} 2>/dev/null; "
        f"then TMUX= exec tmux attach -t {session}; fi; {shell}"
    )


def ssh_argv(worker: Worker, known_hosts: Sequence[Path] = ()) -> list[str]:
    """`ssh -t` to a worker with its workers.yaml host, port, user and key."""
    assert worker.ssh is not None
    argv = ["ssh", "-t"]
    if worker.ssh.port is not None:
        argv += ["-p", str(worker.ssh.port)]
    if worker.ssh.user:
        argv += ["-l", worker.ssh.user]
    if worker.ssh.key:
        argv += ["-i", str(Path(worker.ssh.key).expanduser())]
    files = [str(path) for path in known_hosts if path.exists()]
    if files:
        argv += ["-o", "UserKnownHostsFile=" + " ".join(files)]
    return [*argv, worker.ssh.host]


def interactive_argv(
    worker: Worker,
    directory: str,
    run: Run | None = None,
    *,
    tmux: bool = False,
    known_hosts: Sequence[Path] = (),
) -> list[str]:
    """The command that attaches this terminal to `worker` (in `directory`, or `run`'s tmux)."""
    session = tmux_session_name(run) if run is not None and tmux else None
    script = attach_script(run.run_dir if run and run.run_dir else directory, session)
    if worker.is_local:
        return ["bash", "-c", script]
    return [*ssh_argv(worker, known_hosts), script]


def run_interactive(argv: Sequence[str], cwd: Path | None = None) -> int:
    """Run `argv` in the foreground on this terminal and return its exit status."""
    try:
        return subprocess.call(list(argv), cwd=cwd)
    except OSError as exc:
        print(f"runyard: cannot run {argv[0]}: {exc}")
        return 127
