"""CLI sub-commands. Each module here defines ``register(subparsers)`` and sets ``func`` on its parser;
``func(args) -> int`` returns the exit code. ``cli.py`` imports the modules listed in ``COMMANDS``."""

COMMANDS = ("segment", "models", "phantom", "train", "evaluate", "demo", "benchmark")
