"""`runyard` command line: parse arguments, call core, print. No I/O of its own.

Each verb imports what it needs when it runs, so file-only verbs never load Textual,
asyncssh or a cloud SDK and start in tens of milliseconds.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from runyard.cli import alerts_verbs, shard_verbs, teardown_verbs, vast_verbs, verbs

Handler = Callable[[argparse.Namespace], int]


class _Parser(argparse.ArgumentParser):
    """argparse with runyard's one-line usage errors and exit code 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        sys.stderr.write(f"runyard: {message} (see `{self.prog} --help`)\n")
        raise SystemExit(2)


def line_count(text: str) -> int:
    """`-n`: a whole number of lines, 0 or more (argparse words the error)."""
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of lines (0 or more)")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="runyard", description="One console over every training run on every kind of compute."
    )
    parser.add_argument(
        "--workspace",
        "-W",
        metavar="DIR",
        help="workspace folder (default: $RUNYARD_WORKSPACE or the nearest parent with runyard.yaml)",
    )
    sub = parser.add_subparsers(dest="verb", parser_class=_Parser)

    p = sub.add_parser("console", help="open the console (the default verb)")
    p.set_defaults(handler=verbs.console)

    p = sub.add_parser(
        "demo", help="a SIMULATED loopback GPU fleet, a workspace wired to it, then the console"
    )
    p.add_argument("--dir", default="demo-workspace", help="where to make the demo workspace")
    p.add_argument("--fresh", action="store_true", help="start from an empty demo workspace")
    p.add_argument("--workers", type=int, default=None, help="simulated SSH workers (default 4)")
    p.add_argument(
        "--headless",
        action="store_true",
        help="serve the fleet and print the workspace path (for scripts and benchmarks)",
    )
    p.set_defaults(handler=verbs.demo)

    p = sub.add_parser("init", help="scaffold a workspace")
    p.add_argument("dir", nargs="?", default=".")
    p.set_defaults(handler=verbs.init)

    worker = sub.add_parser("worker", help="register and inspect workers").add_subparsers(
        dest="worker_verb", required=True, parser_class=_Parser
    )
    p = worker.add_parser("add", help="register a worker in workers.yaml")
    p.add_argument("name")
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--host", help="SSH host or ~/.ssh/config alias")
    where.add_argument("--local", action="store_true", help="this machine")
    where.add_argument(
        "--vast-instance",
        type=int,
        metavar="ID",
        help="a live Vast instance: host and port from it",
    )
    p.add_argument("--port", type=int)
    p.add_argument("--user")
    p.add_argument("--key", help="private key file")
    p.add_argument("--pool", default=None, help="worker pool (default: the settings' default_pool)")
    p.add_argument(
        "--workspace", dest="worker_workspace", metavar="DIR", help="runyard's folder on the worker"
    )
    p.add_argument("--gpus", type=int, default=0)
    p.add_argument("--slots", type=int, default=1, help="runs at once (default 1)")
    p.add_argument("--notes", default="")
    p.set_defaults(handler=verbs.worker_add)
    for name, handler, text in (
        ("list", verbs.worker_list, "list workers from workers.yaml"),
        ("status", verbs.worker_status, "probe workers: reachability, GPUs, disk"),
    ):
        p = worker.add_parser(name, help=text)
        p.add_argument("--pool")
        p.add_argument("--json", action="store_true")
        p.set_defaults(handler=handler)
    p = worker.add_parser("remove", help="remove a worker from workers.yaml")
    p.add_argument("name")
    p.add_argument(
        "--force",
        action="store_true",
        help="even if a cancelled run there was never confirmed stopped (the box is gone)",
    )
    p.set_defaults(handler=verbs.worker_remove)
    teardown_verbs.register(worker)
    p = worker.add_parser(
        "trust", help="record a worker's SSH host key (after checking it out of band)"
    )
    p.add_argument("name")
    p.add_argument(
        "--replace",
        action="store_true",
        help="replace a key runyard recorded before (a rebuilt box)",
    )
    p.set_defaults(handler=verbs.worker_trust)
    p = worker.add_parser(
        "setup", help="bootstrap a bare worker: folders, tool check, venv, credentials"
    )
    p.add_argument("name")
    p.add_argument(
        "--venv",
        action="store_true",
        help="make a venv from the workspace's uv.lock or requirements.txt",
    )
    p.add_argument(
        "--env-file",
        type=Path,
        help="KEY=VALUE file streamed to ~/.config/runyard/credentials.env (mode 600)",
    )
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=verbs.worker_setup)

    p = sub.add_parser("sync", help="push the workspace's code to a worker with rsync")
    p.add_argument("name")
    p.add_argument("--exclude", action="append", default=[], metavar="PATTERN")
    p.set_defaults(handler=verbs.sync)

    run = sub.add_parser("run", help="add, list and control runs").add_subparsers(
        dest="run_verb", required=True, parser_class=_Parser
    )
    p = run.add_parser("add", help="queue a run")
    p.add_argument("--command", "-c", required=True)
    p.add_argument("--name")
    p.add_argument("--project")
    p.add_argument("--pool")
    p.add_argument("--worker")
    p.add_argument("--priority", type=int, default=0)
    p.add_argument("--env", action="append", default=[], metavar="K=V")
    p.add_argument("--workdir")
    p.add_argument("--outputs", action="append", default=[], metavar="GLOB")
    p.add_argument("--metrics-regex", help="regex with named groups, e.g. 'loss=(?P<loss>[0-9.]+)'")
    p.add_argument(
        "--verify",
        dest="verify_command",
        metavar="CMD",
        help="command run in results/<id>/ after a pull; exit 0 = verified",
    )
    p.set_defaults(handler=verbs.run_add)
    p = run.add_parser("list", help="list runs")
    p.add_argument("--status")
    p.add_argument("--project")
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=verbs.run_list)
    p = run.add_parser("show", help="one run in full")
    p.add_argument("id")
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=verbs.run_show)
    for name, handler, text in (
        ("cancel", verbs.run_cancel, "cancel a run (kills its process group)"),
        ("retry", verbs.run_retry, "requeue a finished run as a new attempt"),
    ):
        p = run.add_parser(name, help=text)
        p.add_argument("id")
        p.set_defaults(handler=handler)

    p = sub.add_parser("dispatch", help="launch pending runs on free workers")
    p.add_argument("--pool")
    p.add_argument("--dry-run", action="store_true")
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=verbs.dispatch)

    p = sub.add_parser("check", help="poll active runs and update their states")
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=verbs.check)

    p = sub.add_parser("logs", help="print (or follow) a run's log")
    p.add_argument("id")
    p.add_argument("-f", "--follow", action="store_true")
    p.add_argument("-n", "--lines", type=line_count, default=None)
    p.set_defaults(handler=verbs.logs)

    p = sub.add_parser("pull", help="fetch a run's outputs into results/<id>/ and verify them")
    p.add_argument("id", nargs="?")
    p.add_argument("--all", action="store_true", help="every finished run not yet verified")
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=verbs.pull)

    shard_verbs.register(sub)
    alerts_verbs.register(sub)
    vast_verbs.register(sub)
    return parser


def undecodable_argument(argv: Sequence[str]) -> str | None:
    """The first argument that is not UTF-8 (Python keeps its bytes as lone surrogates):
    no workspace file, worker or log can hold it, so it is refused before anything runs."""
    for argument in argv:
        try:
            argument.encode("utf-8")
        except UnicodeEncodeError:
            return argument.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    return None


def main(argv: Sequence[str] | None = None) -> int:
    bad = undecodable_argument(sys.argv[1:] if argv is None else argv)
    if bad is not None:
        sys.stderr.write(f"runyard: argument '{bad}' is not valid UTF-8 text\n")
        return 2
    parser = build_parser()
    args = parser.parse_args(argv)
    handler: Handler = getattr(args, "handler", verbs.console)
    from runyard.core.errors import RunyardError

    try:
        return handler(args)
    except RunyardError as exc:
        sys.stderr.write(f"runyard: {exc}\n")
        return exc.exit_code
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 0


if __name__ == "__main__":
    sys.exit(main())
