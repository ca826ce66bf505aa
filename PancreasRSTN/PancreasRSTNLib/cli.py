"""The ``pancreas-rstn`` command. Sub-commands live in ``commands/``; errors the user can fix are printed
as one line with a non-zero exit code, never as a traceback."""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from . import __version__
from .commands import COMMANDS
from .errors import RSTNError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
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


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING, format="%(levelname)s: %(message)s")
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except RSTNError as exc:
        if args.verbose:
            raise
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("error: interrupted by the user; nothing more was written.", file=sys.stderr)
        return 130
    except MemoryError:
        print("error: out of memory. Try --device cpu, a smaller --batch-size, or fewer views.", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
