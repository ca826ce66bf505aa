"""The three views of the RSTN papers and the canonical array axis each one slices.

X = ``img[j, :, :]``, Y = ``img[:, j, :]``, Z = ``img[:, :, j]`` (axial), as in the reference code. Every module
that turns a view into an axis (the engine, the reference loop, the C2F baseline, training samples, seeds) asks
here, so the mapping exists once.
"""

from __future__ import annotations

from .errors import OptionsError

VIEWS: tuple[str, ...] = ("X", "Y", "Z")
VIEW_AXES: dict[str, int] = {view: axis for axis, view in enumerate(VIEWS)}


class UnknownViewError(OptionsError):
    """A view name other than X, Y or Z."""


def view_axis(view: str) -> int:
    """The canonical axis a view slices (X 0, Y 1, Z 2); an UnknownViewError names the valid views."""
    if view not in VIEW_AXES:
        raise UnknownViewError(f"Unknown view '{view}'. Use X, Y or Z (Z is axial).")
    return VIEW_AXES[view]
