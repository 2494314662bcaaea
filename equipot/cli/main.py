"""``equipot`` entry point.

Each subcommand lives in its own module ``equipot.cli.<name>`` that defines
``HELP`` (one line), ``configure(parser)`` and ``run(args) -> int``. Errors the
user can fix (bad files, bad config, unknown elements) are printed as one line
and exit non-zero; ``--debug`` shows the traceback.
"""
from __future__ import annotations

import argparse
import importlib
import importlib.util
import sys
import traceback

SUBCOMMANDS = ("train", "eval", "plot", "convert", "info", "md", "optimize", "export")

# Errors that describe a problem with the user's input, not a bug in equipot.
USER_ERRORS = (ValueError, FileNotFoundError, FileExistsError, KeyError, OSError, TypeError)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="equipot",
        description="Equivariant machine-learning interatomic potentials.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in SUBCOMMANDS:
        if importlib.util.find_spec(f"equipot.cli.{name}") is None:
            continue
        module = importlib.import_module(f"equipot.cli.{name}")
        p = sub.add_parser(
            name,
            help=module.HELP,
            description=module.HELP,
            formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        )
        p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                       help="show full tracebacks on errors")
        module.configure(p)
        p.set_defaults(_run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "command", None):
        parser.print_help()
        return 2
    try:
        return int(args._run(args) or 0)
    except KeyboardInterrupt:
        print("equipot: interrupted", file=sys.stderr)
        return 130
    except USER_ERRORS as exc:
        if args.debug:
            traceback.print_exc()
        else:
            msg = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
            print(f"equipot {args.command}: error: {msg}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
