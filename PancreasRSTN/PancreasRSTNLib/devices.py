"""Which device a run uses, chosen in one place for the engine, the trainer, cohorts, evaluation and the panel.

``resolve_device`` turns 'auto', 'cpu' or 'cuda[:n]' into a torch device (an explicit 'cuda' without a GPU is an
error that says the fix); ``pick_device`` adds torchrun's rank (each rank its own GPU); ``describe_device``
answers the panel's Auto/CUDA/CPU choice before any run, and works before torch is installed.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .errors import OptionsError

if TYPE_CHECKING:
    import torch

    from .distributed import DistInfo


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """'auto' takes CUDA when torch sees a GPU, else the CPU; an explicit 'cuda' without one is an error."""
    import torch

    name = str(device)
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise OptionsError(
            "CUDA was requested but this torch build sees no GPU "
            f"(torch {torch.__version__}, CUDA build: {torch.version.cuda or 'none'}). Use --device cpu, or install "
            "a CUDA build of torch."
        )
    return torch.device(name)


def device_description(device: torch.device) -> str:
    """How a run reports its device: the GPU's name, or the CPU's thread count."""
    import torch

    if device.type == "cuda":
        return f"cuda:{device.index or 0} ({torch.cuda.get_device_name(device)})"
    return f"cpu ({torch.get_num_threads()} threads)"


def pick_device(device: str, dist_info: DistInfo) -> torch.device:
    """'auto' or 'cuda': this rank's own GPU (LOCAL_RANK) when torch sees one; 'cpu': the CPU. An explicit
    'cuda' without a GPU is refused with the fix (``resolve_device``)."""
    import torch

    resolved = resolve_device(device)
    if resolved.type == "cuda" and resolved.index is None:
        return torch.device("cuda", dist_info.local_rank % max(torch.cuda.device_count(), 1))
    return resolved


def describe_device(choice: str) -> tuple[str, str]:
    """(device to use, why) for the GUI's Auto/CUDA/CPU choice, without starting a run."""
    choice = (choice or "auto").strip().lower()
    try:
        import torch
    except ImportError:
        return "cpu", "torch is not installed yet (see Dependencies)."
    cuda_build = torch.version.cuda
    has_gpu = torch.cuda.is_available()
    if choice == "cpu":
        return "cpu", f"CPU chosen ({torch.get_num_threads()} threads)."
    if has_gpu:
        name = torch.cuda.get_device_name(0)
        return "cuda", f"CUDA GPU found: {name} (torch {torch.__version__}, CUDA {cuda_build})."
    if not cuda_build:
        why = (f"this torch ({torch.__version__}) is a CPU-only build; reinstall torch with CUDA (PyTorch extension) "
               "to use a GPU")
    else:
        why = f"torch {torch.__version__} was built for CUDA {cuda_build} but sees no GPU (driver missing or too old?)"
    if choice == "cuda":
        return "unavailable", f"CUDA chosen but {why}. Choose Auto or CPU."
    return "cpu", f"CPU: {why}."


