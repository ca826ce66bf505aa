"""What the slice views show of a run: a round's mask over the CT, one view's saliency channel as the
foreground overlay, the final segmentation. Uses ``slicer.util.setSliceViewerLayers`` (no Qt)."""

from __future__ import annotations


def _alive(node) -> bool:
    return node is not None and node.GetScene() is not None


def show_round(input_volume, nodes) -> None:
    """The round's labelmap over the CT in every slice view."""
    import slicer

    if _alive(nodes.labelmap):
        slicer.util.setSliceViewerLayers(background=input_volume, label=nodes.labelmap, labelOpacity=0.6)


def show_saliency(nodes, view: str, channel: int, visible: bool) -> None:
    """One weight channel of one view as the foreground (viridis), or none."""
    import slicer

    channels = nodes.saliency.get(view, [])
    if visible and channel < len(channels) and _alive(channels[channel]):
        slicer.util.setSliceViewerLayers(foreground=channels[channel], foregroundOpacity=0.5)
    else:
        slicer.util.setSliceViewerLayers(foreground=None)


def show_final(result, input_volume) -> None:
    """The segmentation in 3-D and the CT alone in the slice views (the segmentation shows itself there)."""
    import slicer

    result.segmentation.CreateClosedSurfaceRepresentation()
    slicer.util.setSliceViewerLayers(background=input_volume, label=None)
