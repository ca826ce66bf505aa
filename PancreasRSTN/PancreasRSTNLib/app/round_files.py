"""The files of every round on disk (``segment --save-iterations`` and ``demo``): one writer, one format.

Per round ``round_NN_mask.nii.gz`` (the mask on the input grid, the organ's label value inside) and, for fine rounds,
``round_NN_saliency_<view>_ch<c>.nii.gz`` for each view's three saliency channels over the region the fine
stage saw; their voxels coincide with input voxels, so any viewer overlays them on the CT.
"""

from __future__ import annotations

from pathlib import Path

from ..engine.segmentation import GridRound
from ..io.volume_io import write_image

#: The names this writer uses (a glob): another output may lie in the same folder under any other name.
ROUND_FILES = "round_*"


def mask_file_name(index: int) -> str:
    return f"round_{index:02d}_mask.nii.gz"


def saliency_file_name(index: int, view: str, channel: int) -> str:
    return f"round_{index:02d}_saliency_{view}_ch{channel}.nii.gz"


def save_round(r: GridRound, directory: Path, label_value: int, overwrite: bool = False) -> list[Path]:
    """Write a round's mask and (fine rounds) each view's three saliency channels; returns the files."""
    written = [write_image(r.mask_image(label_value), directory / mask_file_name(r.index), overwrite)]
    for view in r.saliency_views:
        for c, img in enumerate(r.saliency_images(view)):
            written.append(write_image(img, directory / saliency_file_name(r.index, view, c), overwrite))
    return written
