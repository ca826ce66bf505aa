"""Image-level segmentation: input grid -> canonical layout -> engine -> every round back on the input grid.

This is what the CLI and the Slicer Logic call. Results keep the exact input geometry (size, spacing, origin,
direction); saliency maps are sub-volumes whose voxels coincide with input voxels.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk

from .errors import InputImageError, ModelPackageError
from .geometry import CanonicalGeometry, canonical_box_to_image, from_canonical, to_canonical
from .inference import CancelCallback, InferenceConfig, ProgressCallback, RoundResult, RSTNEngine
from .intensity import HUWindow
from .model_package import ModelPackage
from .volume_io import validate_ct


@dataclass
class GridRound:
    """One round's results, with converters to images on the input grid."""

    result: RoundResult
    geometry: CanonicalGeometry

    def mask_image(self, label_value: int = 1) -> sitk.Image:
        return from_canonical(self.result.mask.astype(np.uint8) * np.uint8(label_value), self.geometry)

    def probability_image(self) -> sitk.Image:
        return from_canonical(self.result.probability, self.geometry)

    def saliency_images(self, view: str) -> list[sitk.Image]:
        """The three weight channels of ``view``, each on its sub-region of the input grid."""
        maps = self.result.saliency.get(view)
        if maps is None:
            return []
        return [canonical_box_to_image(maps.channels[c], maps.offset, self.geometry) for c in range(3)]

    def __getattr__(self, name: str):
        return getattr(self.result, name)


def canonical_hu(image: sitk.Image) -> tuple[np.ndarray, CanonicalGeometry]:
    """Canonical HU array, as int16 when that is lossless (half the memory of float32)."""
    array, geometry = to_canonical(image)
    if np.issubdtype(array.dtype, np.integer) and array.min() >= -32768 and array.max() <= 32767:
        return array.astype(np.int16, copy=False), geometry
    return array.astype(np.float32, copy=False), geometry


def segment_image(
    image: sitk.Image,
    package: ModelPackage,
    config: InferenceConfig | None = None,
    device: str = "auto",
    progress: ProgressCallback | None = None,
    cancel: CancelCallback | None = None,
    allow_non_ct: bool = False,
) -> Iterator[GridRound]:
    """Validate the CT and stream every round of the RSTN run, mapped back onto the input grid."""
    method = package.metadata.get("method", "rstn")
    if method != "rstn":
        raise ModelPackageError(
            f"Model '{package.metadata.get('name', '?')}' is a {method.upper()} baseline (trained with --method "
            f"{method}), not an RSTN: its saliency module was never trained, so segmenting with it would give wrong "
            f"masks. Compare it with `pancreas-rstn evaluate --model <dir>`, or pick an RSTN model."
        )
    if image.GetDimension() != 3:
        raise InputImageError(
            f"The image is {image.GetDimension()}-D (size {'x'.join(map(str, image.GetSize()))}). RSTN needs a "
            "3-D CT volume: load the whole series, not a single slice."
        )
    validate_ct(image, allow_non_ct=allow_non_ct)
    hu, geometry = canonical_hu(image)
    window = HUWindow(**package.metadata.get("hu_window", {}))
    config = config or InferenceConfig()
    engine = RSTNEngine(package.models, config, device=device, window=window)
    for result in engine.run(hu, progress=progress, cancel=cancel):
        yield GridRound(result, geometry)
