"""`python -m runyard.tui [--workspace DIR] [--simulated]`: the console on its own."""

from __future__ import annotations

import argparse
import sys

from runyard.core.errors import RunyardError
from runyard.core.workspace import find_workspace
from runyard.tui.app import run_console


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m runyard.tui", description=__doc__)
    parser.add_argument("--workspace", "-W", metavar="DIR")
    parser.add_argument("--simulated", action="store_true", help="label the fleet SIMULATED")
    args = parser.parse_args(argv)
    try:
        return run_console(find_workspace(args.workspace), simulated=args.simulated)
    except RunyardError as exc:
        sys.stderr.write(f"runyard: {exc}\n")
        return exc.exit_code


if __name__ == "__main__":
    sys.exit(main())
