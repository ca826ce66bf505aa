"""Measuring: metrics (DSC, HD95, ASSD ...), evaluation over cases, plots, the engine's speed benchmark and the
cohort throughput benchmark."""


def __getattr__(name: str) -> object:
    """Kept for one release: ``from PancreasRSTNLib.evaluation import evaluate`` (the module that is now
    ``evaluation.cases``). Lazy, so that importing ``evaluation.metrics`` never pulls the engine in."""
    import importlib
    import warnings

    if name.startswith("__") or name == "cases":
        raise AttributeError(name)
    cases = importlib.import_module(f"{__name__}.cases")
    if not hasattr(cases, name):
        raise AttributeError(name)

    warnings.warn(f"PancreasRSTNLib.evaluation.{name} moved to PancreasRSTNLib.evaluation.cases.{name}",
                  DeprecationWarning, stacklevel=2)
    return getattr(cases, name)
