"""The ``fedsynth`` command.

The CLI only parses arguments and calls the library. Each stage registers its
own subcommands from ``fedsynth/<stage>/commands.py`` (a ``register(sub)``
function), so this file stays small. User errors (:class:`FedsynthError`)
become one line on stderr and exit status 2; argparse's own usage errors also
exit 2.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

from fedsynth import __version__
from fedsynth.errors import FedsynthError
from fedsynth.runtime import apply_loopback_env, setup_logging

__all__ = ["build_parser", "main"]

#: Modules that contribute subcommands, in the order they appear in ``--help``.
COMMAND_MODULES: tuple[str, ...] = ("fedsynth.data.commands", "fedsynth.privacy.commands",
                                    "fedsynth.federation.commands", "fedsynth.tasks.commands", "fedsynth.report.commands",
                                    "fedsynth.generative.commands")


def build_parser() -> argparse.ArgumentParser:
    """Build the full argument parser with every registered subcommand."""
    parser = argparse.ArgumentParser(
        prog="fedsynth",
        description="Federated sharing of privacy-certified synthetic medical images.",
    )
    parser.add_argument("--version", action="version", version=f"fedsynth {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.add_argument("-q", "--quiet", action="store_true", help="warnings and errors only")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the process exit status."""
    apply_loopback_env()
    parser = build_parser()
    args = parser.parse_args(argv)
    level = logging.DEBUG if args.verbose else logging.WARNING if args.quiet else logging.INFO
    setup_logging(level)
    try:
        result = args.func(args)
    except FedsynthError as err:
        print(f"fedsynth: error: {err}", file=sys.stderr)
        return err.exit_code
    except KeyboardInterrupt:
        print("fedsynth: interrupted", file=sys.stderr)
        return 130
    return int(result or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
