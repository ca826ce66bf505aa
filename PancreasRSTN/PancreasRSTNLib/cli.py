"""Kept for one release: the command line moved to ``PancreasRSTNLib.app.cli`` (run it as ``pancreas-rstn`` or
``python -m PancreasRSTNLib``); ``python -m PancreasRSTNLib.cli`` still works."""

from .app.cli import build_parser, main

__all__ = ["build_parser", "main"]

if __name__ == "__main__":
    raise SystemExit(main())
