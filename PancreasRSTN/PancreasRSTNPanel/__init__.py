"""The Qt side of the panel's sections (segment and results, model manager, training): each binds its part of the
.ui to the Qt-free ``PancreasRSTNSlicerLib``. Imported only where Qt exists (Slicer, or the GUI test harness)."""

from .models_section import ModelsSection
from .segment_section import SegmentSection
from .training_section import TrainingSection

__all__ = ["ModelsSection", "SegmentSection", "TrainingSection"]
