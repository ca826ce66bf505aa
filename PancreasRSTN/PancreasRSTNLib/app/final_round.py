"""What a run's last round says, read the same way by ``segment`` and by a cohort: how many fine rounds ran, and
the one empty-prediction policy.

**Empty prediction**: when the last round's mask is empty, the run is an error (``EmptyPredictionError``, kind
``empty_prediction``) and nothing is written for that CT. ``segment`` exits 1; a cohort marks that case failed
(its row says why, its exit code counts it) and goes on with the others. An empty file would look like a result
and say "no pancreas here", which a model that found nothing cannot claim.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..errors import EmptyPredictionError

if TYPE_CHECKING:
    from ..engine.segmentation import GridRound
    from ..io.model_package import ModelPackage


def fine_rounds(last: GridRound) -> int:
    """Fine rounds a run made: the last round's index, less a refiner's round (Cai et al.: round 0 is the CNN)."""
    return last.index - (last.stage == "refine")


def refuse_empty(last: GridRound, package: ModelPackage, source: str) -> None:
    """Raise ``EmptyPredictionError`` (nothing is written) when the last round found no organ voxel."""
    if last.voxel_count:
        return
    advice = ("This model was trained on synthetic phantoms and finds nothing in real CTs: use a real-CT model "
              "(`pancreas-rstn models list`)." if package.metadata.get("synthetic") else
              f"Check that the image is an abdominal CT in HU that covers the {package.organ}, and that the model "
              "suits it (`pancreas-rstn models info`); a lower --prob-threshold rarely helps and adds false "
              "positives.")
    raise EmptyPredictionError(f"The model '{package.metadata['name']}' found no {package.organ} in {source} "
                               f"(empty prediction); nothing was written. {advice}")
