"""``equipot`` entry point.

Each subcommand lives in its own module ``equipot.cli.<name>`` that defines
``HELP`` (one line), ``configure(parser)`` and ``run(args) -> int``. Errors the
user can fix (bad files, bad config, unknown elements) are printed as one line
and exit non-zero; ``--debug`` shows the traceback.
"""
from __future__ import annotations

import argparse
import errno
import importlib
import importlib.util
import signal
import sys
import traceback

from ..signals import ignore_stop_signals, stop_signals_handled

SUBCOMMANDS = ("demo", "train", "eval", "plot", "convert", "info", "md", "optimize", "export")

# Errors that describe a problem with the user's input or machine, not a bug in equipot: equipot
# raises ValueError (naming the file, key or atom) for bad input; the OSError subclasses are what
# the operating system says about paths. Anything else (TypeError, KeyError, ...) is a bug and
# keeps its traceback.
USER_ERRORS = (ValueError, FileNotFoundError, FileExistsError, IsADirectoryError, NotADirectoryError,
               PermissionError)
# OSError numbers that mean the machine, not equipot, failed (full disk, quota, read-only mount).
USER_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EIO})


def error_text(exc: BaseException) -> str:
    """The one line shown for a user error (an OSError of ours without its ``[Errno N]`` prefix)."""
    if isinstance(exc, OSError) and exc.strerror and exc.filename is None and exc.errno in USER_ERRNOS:
        return exc.strerror
    return str(exc)


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows a default only where there is one to show (not "(default: None)" or on/off flags)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        if action.default in (None, False, argparse.SUPPRESS) or isinstance(action.default, list) and \
                not action.default or "%(default)" in (action.help or ""):
            return action.help or ""
        return super()._get_help_string(action)


def _command_in(argv: list[str]) -> str | None:
    """The subcommand named on the command line (the first word that is not an option)."""
    for word in argv:
        if not word.startswith("-"):
            return word if word in SUBCOMMANDS else None
    return None


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser; only ``command``'s own arguments are configured (``None``: every command's).

    Configuring a command may be costly (``train`` lists every config key and backbone option,
    which imports the backbones), so ``equipot --help`` and the other commands skip it.
    """
    from .. import __version__

    parser = argparse.ArgumentParser(
        prog="equipot",
        description="Equivariant machine-learning interatomic potentials.",
        formatter_class=HelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"equipot {__version__}")
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
            formatter_class=HelpFormatter,
        )
        p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                       help="show full tracebacks on errors")
        if command is None or name == command:
            module.configure(p)
        p.set_defaults(_run=module.run)
    return parser


class _Stopped(KeyboardInterrupt):
    """SIGINT or SIGTERM, raised where the command is so that its clean-up (temporary files) runs."""

    def __init__(self, signum: int):
        self.signum = signum
        super().__init__(f"interrupted by {signal.Signals(signum).name}; no output was written or replaced")


def _stop(signum: int, frame) -> None:
    """SIGINT and SIGTERM become :class:`_Stopped` once; further ones are ignored during the clean-up.
    (Training installs its own handlers.)"""
    ignore_stop_signals()
    raise _Stopped(signum)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser(_command_in(argv) or "")
    args = parser.parse_args(argv)
    if not getattr(args, "command", None):
        parser.print_help()
        return 2
    with stop_signals_handled(_stop):
        return _run(args)


def _run(args: argparse.Namespace) -> int:
    try:
        return int(args._run(args) or 0)
    except KeyboardInterrupt as exc:  # a training run says what it saved and how to resume
        ignore_stop_signals()  # nothing may interrupt the message
        print(f"equipot {args.command}: {str(exc) or 'interrupted'}", file=sys.stderr)
        return 128 + getattr(exc, "signum", signal.SIGINT)
    except (*USER_ERRORS, OSError) as exc:
        if not isinstance(exc, USER_ERRORS) and getattr(exc, "errno", None) not in USER_ERRNOS:
            raise
        if args.debug:
            traceback.print_exc()
        else:
            print(f"equipot {args.command}: error: {error_text(exc)}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
