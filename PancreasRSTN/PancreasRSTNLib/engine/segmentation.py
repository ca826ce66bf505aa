"""Image-level segmentation: input grid -> canonical layout -> (model spacing) -> engine -> every round back on
the input grid.

This is what the CLI, the Slicer Logic, ``evaluate`` and ``demo`` call. Results keep the exact input geometry
(size, spacing, origin, direction); saliency maps are sub-volumes whose voxels coincide with input voxels.
When the input's spacing differs from the model's by more than 10 % on some axis, the canonical volume is
resampled to the model's spacing first (``resampling.py``) and every result is brought back onto the input grid.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import NamedTuple

import numpy as np
import SimpleITK as sitk

from ..errors import InputImageError, ModelPackageError
from ..io.geometry import (
    CanonicalGeometry,
    canonical_box_to_image,
    canonical_to_array,
    from_canonical,
    to_canonical,
)
from ..io.model_package import ModelPackage
from ..io.volume_io import validate_ct
from ..models.clstm import SliceRefiner
from ..models.intensity import HUWindow
from .cai_inference import CaiEngine, RefinedEngine
from .config import CancelCallback, InferenceConfig, ProgressCallback, RunSettings
from .guidance import DrawnSlices, Guidance
from .inference import RSTNEngine
from .resampling import Resampling, needs_resampling
from .results import RoundResult


@dataclass(frozen=True)
class GridMapping:
    """How the engine's canonical arrays (on the model grid) map onto the input: an optional resampling onto
    the input's canonical grid, then the lossless permutation onto the input image (``geometry`` None: the
    input is a canonical array, as in evaluation)."""

    input_shape: tuple[int, int, int]
    input_spacing: tuple[float, float, float]  # canonical axis order, mm
    geometry: CanonicalGeometry | None = None
    resampling: Resampling | None = None

    @classmethod
    def for_input(cls, shape: Sequence[int], spacing: Sequence[float], model_spacing: Sequence[float] | None,
                  resample: bool = True, geometry: CanonicalGeometry | None = None) -> GridMapping:
        shape = tuple(int(n) for n in shape)
        spacing = tuple(float(s) for s in spacing)
        resampling = None
        if resample and needs_resampling(spacing, model_spacing):
            resampling = Resampling.between(shape, spacing, model_spacing)
        return cls(shape, spacing, geometry, resampling)  # type: ignore[arg-type]

    @property
    def model_spacing(self) -> tuple[float, float, float]:
        return self.resampling.model_spacing if self.resampling else self.input_spacing

    @property
    def voxel_ml(self) -> float:
        """Volume of one input voxel in millilitres."""
        return float(np.prod(self.input_spacing)) / 1000.0

    def to_model(self, hu: np.ndarray) -> np.ndarray:
        """The canonical HU volume the engine sees: the input itself, or its linear resampling (int16)."""
        return hu if self.resampling is None else self.resampling.to_model(hu, dtype=np.int16)

    def truth_to_model(self, truth: np.ndarray) -> np.ndarray:
        return truth if self.resampling is None else self.resampling.mask_to_model(truth)

    def mask(self, probability: np.ndarray, mask: np.ndarray, threshold: float) -> np.ndarray:
        if self.resampling is None:
            return mask
        return self.resampling.mask_to_input(probability, mask, threshold)

    def probability(self, probability: np.ndarray) -> np.ndarray:
        if self.resampling is None:
            return probability
        return self.resampling.probability_to_input(probability)

    def box(self, sub: np.ndarray, offset: Sequence[int]) -> tuple[np.ndarray, tuple[int, int, int]]:
        if self.resampling is None:
            return sub, tuple(int(o) for o in offset)  # type: ignore[return-value]
        values, start = self.resampling.region_to_input(sub, offset)
        return values, tuple(int(s) for s in start)  # type: ignore[return-value]

    def image(self, canonical: np.ndarray, label_value: int | None = None) -> sitk.Image:
        """A canonical input-grid array as an image on the input grid; a bool mask becomes UInt8 with
        ``label_value`` inside."""
        if self.geometry is None:
            raise InputImageError("This run has no input image geometry (it ran on a canonical array).")
        if canonical.dtype == bool:
            array = np.ascontiguousarray(canonical_to_array(canonical, self.geometry), dtype=np.uint8)
            if label_value not in (None, 1):
                array *= np.uint8(label_value)
            return self.geometry.apply_to(sitk.GetImageFromArray(array))
        return from_canonical(canonical, self.geometry)


@dataclass
class GridRound:
    """One round's results on the model grid (``result``), with converters onto the input grid.

    Conversions are computed on first use and kept: the Slicer Logic and the CLI ask for the same mask twice."""

    result: RoundResult
    mapping: GridMapping
    threshold: float = 0.5
    drawn: DrawnSlices | None = None  # a person's contoured slices, kept as drawn

    @cached_property
    def canonical_mask(self) -> np.ndarray:
        """The mask on the canonical input grid (bool)."""
        mask = self.mapping.mask(self.result.probability, self.result.mask, self.threshold)
        return mask if self.drawn is None else self.drawn.apply(mask)

    def canonical_probability(self) -> np.ndarray:
        probability = self.mapping.probability(self.result.probability)
        return probability if self.drawn is None else self.drawn.apply(probability)

    def canonical_saliency(self, view: str) -> tuple[np.ndarray, tuple[int, int, int]] | None:
        """(3, a, b, c) weight channels of ``view`` over a box of the canonical input grid, and its offset."""
        maps = self.result.saliency.get(view)
        if maps is None:
            return None
        channels = [self.mapping.box(maps.channels[c], maps.offset) for c in range(3)]
        return np.stack([c for c, _ in channels]), channels[0][1]

    def mask_image(self, label_value: int = 1) -> sitk.Image:
        """The mask on the input grid as UInt8 (``label_value`` inside). One uint8 copy besides the image."""
        return self.mapping.image(self.canonical_mask, label_value)

    def probability_image(self) -> sitk.Image:
        return self.mapping.image(self.canonical_probability())

    def saliency_images(self, view: str) -> list[sitk.Image]:
        """The three weight channels of ``view``, each on its sub-region of the input grid."""
        found = self.canonical_saliency(view)
        if found is None:
            return []
        if self.mapping.geometry is None:
            raise InputImageError("This run has no input image geometry (it ran on a canonical array).")
        channels, offset = found
        return [canonical_box_to_image(channels[c], offset, self.mapping.geometry) for c in range(3)]

    @property
    def voxel_count(self) -> int:
        """Organ voxels on the input grid."""
        return int(np.count_nonzero(self.canonical_mask))

    @property
    def volume_ml(self) -> float:
        return self.voxel_count * self.mapping.voxel_ml

    # The round's own facts, read through from ``result`` (the arrays there are on the model grid: use the
    # converters above for anything shown or written).
    @property
    def index(self) -> int:
        return self.result.index

    @property
    def stage(self) -> str:
        return self.result.stage

    @property
    def dsc_to_previous(self) -> float | None:
        return self.result.dsc_to_previous

    @property
    def seconds(self) -> dict[str, float]:
        return self.result.seconds

    @property
    def device(self) -> str:
        return self.result.device

    @property
    def converged(self) -> bool:
        return self.result.converged

    @property
    def stop_reason(self) -> str | None:
        return self.result.stop_reason

    @property
    def saliency_views(self) -> list[str]:
        """The views that have saliency maps in this round (fine rounds), sorted."""
        return sorted(self.result.saliency)


def canonical_hu(image: sitk.Image) -> tuple[np.ndarray, CanonicalGeometry]:
    """Canonical HU array, as int16 when that is lossless (half the memory of float32)."""
    array, geometry = to_canonical(image)
    if np.issubdtype(array.dtype, np.integer) and array.min() >= -32768 and array.max() <= 32767:
        return array.astype(np.int16, copy=False), geometry
    return array.astype(np.float32, copy=False), geometry


def check_rstn_package(package: ModelPackage) -> None:
    """Refuse packages that ``segment`` cannot run: the C2F baseline (its saliency module was never trained).
    RSTN and Cai et al.'s packages run, with their refiner when they carry one."""
    method = package.method
    if method == "c2f":
        raise ModelPackageError(
            f"Model '{package.metadata.get('name', '?')}' is a {method.upper()} baseline (trained with --method "
            f"{method}), not an RSTN: its saliency module was never trained, so segmenting with it would give wrong "
            f"masks. Compare it with `pancreas-rstn evaluate --model <dir>`, or pick an RSTN model."
        )


def build_engine(package: ModelPackage, config: InferenceConfig | None, device: str, *, refining: bool = False
                 ) -> RSTNEngine | CaiEngine | RefinedEngine:
    """The engine a package runs with (``choose_engine`` on the package's method, models and refiner); an unset
    ``max_iter`` becomes the package's validated round count (``refining`` from a person's prior: its validated
    count for refinements, when it has one)."""
    rounds = package.prior_max_iter if refining and package.prior_max_iter is not None else package.max_iter
    config = (config or InferenceConfig()).with_package_defaults(package, rounds)
    return choose_engine(package.method, package.models, package.refiner, config, device, package.window)


def choose_engine(method: str, models: dict, refiner: SliceRefiner | None, config: InferenceConfig | None,
                  device: str, window: HUWindow, *, refine_last: bool = True
                  ) -> RSTNEngine | CaiEngine | RefinedEngine:
    """The one choice of engine by method: Cai et al.'s (CNN round, then its refinement round) or RSTN's, followed
    by the refiner's round when there is a refiner and ``refine_last`` (evaluation refines the stop round
    itself)."""
    if method == "cai":
        return CaiEngine(models, refiner, config, device=device, window=window)
    engine = RSTNEngine(models, config, device=device, window=window)
    return engine if refiner is None or not refine_last else RefinedEngine(engine, refiner)


def run_on_grid(
    engine: RSTNEngine | CaiEngine | RefinedEngine,
    hu: np.ndarray,
    mapping: GridMapping,
    *,
    progress: ProgressCallback | None = None,
    cancel: CancelCallback | None = None,
    oracle_mask: np.ndarray | None = None,
    guidance: Guidance | None = None,
) -> Iterator[GridRound]:
    """Stream every round of ``engine`` on a canonical input-grid HU volume, brought to the model grid and back
    as ``mapping`` says. ``oracle_mask`` (evaluation) and ``guidance`` (a person's prior and region) are given on
    the input grid and resampled with the volume."""
    if guidance is not None:
        guidance.check(hu.shape, engine.config.prob_threshold)  # on the input grid, before any work
    model_hu = mapping.to_model(hu)
    oracle = None if oracle_mask is None else mapping.truth_to_model(oracle_mask)
    model_guidance = None if guidance is None else guidance.to_model(mapping.resampling)
    drawn = None if guidance is None else guidance.drawn
    del hu, oracle_mask, guidance  # with resampling, the caller's input-grid copies can go as soon as it lets them
    for result in engine.run(model_hu, progress=progress, cancel=cancel, oracle_mask=oracle, guidance=model_guidance):
        yield GridRound(result, mapping, engine.config.prob_threshold, drawn)


def segment_canonical(
    hu: np.ndarray,
    spacing: Sequence[float],
    package: ModelPackage,
    settings: RunSettings | None = None,
    *,
    progress: ProgressCallback | None = None,
    geometry: CanonicalGeometry | None = None,
    guidance: Guidance | None = None,
) -> Iterator[GridRound]:
    """Every round of an RSTN package on a canonical HU volume of the given (canonical) spacing, resampled to
    the model's spacing when they differ by more than 10 % on some axis (unless ``settings.resample`` is False).

    For callers that already hold the canonical array (the cohort reads the next case ahead); a checked image
    goes through ``segment_image``. A plain function that returns the generator, so that the package is checked
    at once and no frame but the generator's holds ``hu``. ``guidance``: as in ``segment_image``."""
    settings = settings or RunSettings()
    check_rstn_package(package)
    return _run_package(hu, GridMapping.for_input(hu.shape, spacing, package.spacing, resample=settings.resample,
                                                  geometry=geometry), package, settings, progress, guidance=guidance)


def _run_package(hu: np.ndarray, mapping: GridMapping, package: ModelPackage, settings: RunSettings,
                 progress: ProgressCallback | None, cancel: CancelCallback | None = None,
                 guidance: Guidance | None = None) -> Iterator[GridRound]:
    if guidance is not None:  # refused now (this is no generator), not when the caller first asks for a round
        guidance.check(hu.shape, (settings.config or InferenceConfig()).prob_threshold)
    refining = guidance is not None and guidance.prior is not None
    engine = build_engine(package, settings.config, settings.device, refining=refining)
    return run_on_grid(engine, hu, mapping, progress=progress, cancel=cancel, guidance=guidance)


class CheckedCT(NamedTuple):
    """A CT that passed the checks of ``prepare_ct``, as its canonical HU array and the geometry back to the
    image. A run checks its input once: every organ of a multi-organ run starts from the same ``CheckedCT``."""

    hu: np.ndarray
    geometry: CanonicalGeometry


def prepare_ct(image: sitk.Image, allow_non_ct: bool = False) -> CheckedCT:
    """Check that ``image`` is a 3-D CT in HU (before any work) and return it canonical, with its geometry: the
    one place a run's input is validated (``validate_ct``: 3-D, HU, finite)."""
    validate_ct(image, allow_non_ct=allow_non_ct)
    return CheckedCT(*canonical_hu(image))


def segment_image(
    image: sitk.Image | CheckedCT,
    package: ModelPackage,
    settings: RunSettings | None = None,
    *,
    progress: ProgressCallback | None = None,
    cancel: CancelCallback | None = None,
    guidance: Guidance | None = None,
) -> Iterator[GridRound]:
    """The stream of every round of the RSTN run on ``image``, mapped back onto the input grid, as ``settings``
    (the one record of a run's settings) ask.

    ``image`` is a ``CheckedCT`` (``prepare_ct``, already checked), or an image checked here as a CT in HU
    (unless ``settings.allow_non_ct``), at once, before any work. ``guidance`` (``guidance_input.py``, on the
    CT's canonical grid): a person's prior in place of the coarse round, and a region of interest."""
    settings = settings or RunSettings()
    check_rstn_package(package)
    hu, geometry = image if isinstance(image, CheckedCT) else prepare_ct(image, settings.allow_non_ct)
    mapping = GridMapping.for_input(hu.shape, geometry.canonical_spacing, package.spacing,
                                    resample=settings.resample, geometry=geometry)
    return _run_package(hu, mapping, package, settings, progress, cancel, guidance)
