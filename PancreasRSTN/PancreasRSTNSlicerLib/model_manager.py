"""The model manager's actions in words the panel shows: the table of installed models, installing with an
explicit "replace?" question, and the verification report. No Qt (the question is asked through a callback)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from PancreasRSTNLib.errors import OutputExistsError

HEADERS = ("Name", "Organ", "Backbone", "Views", "Source", "Provenance")


def table_rows(models) -> list[tuple[str, ...]]:
    return [(m.name + (" (synthetic demo)" if m.synthetic else ""), m.organ, m.backbone, "/".join(m.views),
             m.source, m.provenance) for m in models]


def organ_choices(models) -> list[tuple[str, str]]:
    """(display name, organ) of every organ that has an installed model, in the default order."""
    from PancreasRSTNLib.io.user_models import models_by_organ
    from PancreasRSTNLib.organs import ORGANS

    return [(ORGANS[organ].display_name, organ) for organ in models_by_organ(models) if organ in ORGANS]


def install(source: str | Path, replace: Callable[[str], bool], user_root: str | Path | None = None):
    """Install a folder or zip; when a model of that name is installed, ``replace(question)`` decides. Returns the
    installed model, or None when the user kept the installed one."""
    from PancreasRSTNLib.io.user_models import install_model

    try:
        return install_model(source, user_root=user_root)
    except OutputExistsError as exc:
        if not replace(f"{exc}\n\nReplace the installed model?"):
            return None
        return install_model(source, user_root=user_root, overwrite=True)


def verify_report(models) -> str:
    from PancreasRSTNLib.io.user_models import verify_all

    lines = [f"{'OK' if status == 'OK' else 'FAILED'}: {path.name}" + ("" if status == "OK" else f" \u2014 {status}")
             for path, status in verify_all(models).items()]
    return "\n".join(lines) or "No models installed."
