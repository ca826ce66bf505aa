"""Options every command that computes shares: threads and quietness, and argument types that refuse nonsense
(``--batch-size 0``) at parse time."""

from __future__ import annotations

import argparse
import os


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"'{text}' is not a positive whole number")
    return value


def add_run_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--threads", type=positive_int, default=None,
                   help="CPU threads for torch (default: $OMP_NUM_THREADS when set, else one per core). On a busy "
                   "machine fewer threads can be faster")
    p.add_argument("--quiet", action="store_true", help="no progress output (errors and results still print)")


def apply_threads(args: argparse.Namespace) -> None:
    """--threads wins; else torch already follows OMP_NUM_THREADS (read when torch starts)."""
    threads = getattr(args, "threads", None)
    if threads:
        import torch

        torch.set_num_threads(threads)
        os.environ.setdefault("OMP_NUM_THREADS", str(threads))


def torch_threads() -> int:
    import torch

    return torch.get_num_threads()
