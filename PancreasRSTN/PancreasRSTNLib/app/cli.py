"""The ``pancreas-rstn`` command. Sub-commands live in ``commands/``; errors the user can fix are printed
as one line with a non-zero exit code, never as a traceback (with ``--json``: a JSON error object on stdout)."""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import sys

from .. import __version__
from ..errors import RSTNError
from .commands import COMMANDS
from .commands.options import apply_threads


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Shows every option's default (except None and False, which say nothing)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if ("%(default)" in text or not action.option_strings or action.default in (None, False, argparse.SUPPRESS)
                or isinstance(action, argparse._HelpAction)):
            return text
        return f"{text} (default: %(default)s)"


class Parser(argparse.ArgumentParser):
    """Every (sub-)command's parser: defaults in --help."""

    def __init__(self, *args, **kwargs) -> None:
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="pancreas-rstn",
        description="RSTN (Recurrent Saliency Transformation Network) segmentation of the pancreas and other "
        "small abdominal organs in CT.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="show debug logging and full tracebacks")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        try:
            module = importlib.import_module(f".commands.{name}", __package__)
        except ModuleNotFoundError as exc:
            if exc.name and exc.name.endswith(f"commands.{name}"):
                continue  # command not built into this install
            raise
        module.register(subparsers)
    return parser


def _fail(args: argparse.Namespace, kind: str, message: str, fix: str = "", code: int = 1) -> int:
    """One line on stderr, or with --json a JSON error object on stdout; the exit code says it failed."""
    if getattr(args, "json", False) is True:
        json.dump({"error": {"kind": kind, "message": message, "fix": fix}}, sys.stdout, indent=2)
        print()
    else:
        print(f"error: {message}", file=sys.stderr)
    return code


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING, format="%(levelname)s: %(message)s")
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        apply_threads(args)
        return int(args.func(args) or 0)
    except RSTNError as exc:
        if args.verbose:
            raise
        return _fail(args, exc.kind, exc.message, exc.fix)
    except KeyboardInterrupt:
        return _fail(args, "cancelled", "interrupted by the user; what this run had written was removed.",
                     "Run the command again.", 130)
    except MemoryError:
        return _fail(args, "out_of_memory", "out of memory.",
                     "Try --device cpu, a smaller --batch-size, fewer views or --coarse-downsample 2.")


if __name__ == "__main__":
    sys.exit(main())
