"""The ``pancreas-rstn`` command. Sub-commands live in ``commands/``. Every failure, a refused option and an
unexpected exception included, is printed as one line with a non-zero exit code, never as a traceback (with
``--json``: one JSON error object on stdout, exit code 1); ``-v`` shows the traceback. SIGTERM and SIGHUP are
handled like Ctrl-C (``signals.py``)."""

from __future__ import annotations

import argparse
import contextvars
import importlib
import json
import logging
import sys
from typing import NoReturn

from .. import __version__
from ..errors import OptionsError, RSTNError
from .commands import COMMANDS
from .commands.options import apply_threads
from .signals import exit_code, signal_name, signals_as_interrupts


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Shows every option's default (except None and False, which say nothing)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if ("%(default)" in text or not action.option_strings or action.default in (None, False, argparse.SUPPRESS)
                or isinstance(action, argparse._HelpAction)):
            return text
        return f"{text} (default: %(default)s)"


#: True while ``main`` parses a command line that asked for --json: a refused option then becomes an OptionsError
#: (one JSON error object, exit code 1) instead of argparse's usage text and exit code 2.
_JSON_PARSE = contextvars.ContextVar("json_parse", default=False)


class Parser(argparse.ArgumentParser):
    """Every (sub-)command's parser: defaults in --help; under --json a refused option raises OptionsError."""

    def __init__(self, *args, **kwargs) -> None:
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> NoReturn:
        if _JSON_PARSE.get():
            raise OptionsError(f"{self.prog}: {message}.", fix=f"See `{self.prog} --help` for the options.")
        super().error(message)


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


def _fail(args: argparse.Namespace | None, kind: str, message: str, fix: str, code: int = 1,
          json_mode: bool = False) -> int:
    """The one way a command fails: one line on stderr, or with --json one JSON error object on stdout; the exit
    code says it failed."""
    if json_mode or getattr(args, "json", False) is True:
        json.dump({"error": {"kind": kind, "message": message, "fix": fix}}, sys.stdout, indent=2)
        print()
    else:
        print(f"error: {message}" + (f" {fix}" if fix and fix not in message else ""), file=sys.stderr)
    return code


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    json_mode = "--json" in argv
    parser = build_parser()
    token = _JSON_PARSE.set(json_mode)
    try:
        args = parser.parse_args(argv)
    except OptionsError as exc:
        return _fail(None, exc.kind, exc.message, exc.fix, json_mode=True)
    finally:
        _JSON_PARSE.reset(token)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING, format="%(levelname)s: %(message)s")
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        with signals_as_interrupts():
            apply_threads(args)
            return int(args.func(args) or 0)
    except Exception as exc:  # noqa: BLE001 - the one place every failure becomes a message (or a JSON object)
        if args.verbose:
            raise
        return _fail(args, *_describe(exc))
    except KeyboardInterrupt as exc:  # Ctrl-C, SIGTERM, SIGHUP: the commands' cleanup has run on the way here
        note = getattr(args, "interrupt_note", "")
        return _fail(args, "cancelled", f"interrupted ({signal_name(exc)}){'; ' + note if note else ''}.",
                     "Run the command again.", exit_code(exc))


def _describe(exc: Exception) -> tuple[str, str, str]:
    """(kind, message, fix) of any failure: our own errors as they say, the others named."""
    if isinstance(exc, RSTNError):
        return exc.kind, exc.message, exc.fix
    if isinstance(exc, MemoryError):
        return ("out_of_memory", "out of memory.",
                "Try --device cpu, a smaller --batch-size, fewer views or --coarse-downsample 2.")
    if isinstance(exc, OSError):
        where = f" ({exc.filename})" if exc.filename else ""
        return ("file_system", f"{exc.strerror or exc}{where}.",
                "Check that the folders still exist, that you may write there and that the disk has free space; then "
                "run the command again.")
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return ("internal", f"unexpected {type(exc).__name__}" + (f": {text}" if text else "") + ".",
            "This is a bug: run the command again with -v to see the traceback, and report it.")


if __name__ == "__main__":
    sys.exit(main())
