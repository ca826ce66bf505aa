"""Exceptions raised on purpose. Each message names the problem and the fix, so that the CLI and the
Slicer GUI can show it to the user as is, without a traceback."""

from __future__ import annotations


class RSTNError(Exception):
    """Base of every error the user should read (shown without a traceback)."""


class InputImageError(RSTNError):
    """The input image cannot be segmented (2-D, not CT, NaNs, unreadable, ...)."""


class ModelPackageError(RSTNError):
    """A model folder or checkpoint is missing, corrupt, incompatible or fails its hash check."""


class OutputExistsError(RSTNError):
    """Refused to overwrite something the user already has."""


class RunCancelled(RSTNError):
    """The user cancelled the run. Nothing was written."""

    def __init__(self, message: str = "Cancelled: the run was stopped on request; nothing was written.") -> None:
        super().__init__(message)


class EmptyPredictionError(RSTNError):
    """The model found no organ voxels."""


class DeviceOutOfMemoryError(RSTNError):
    """The compute device ran out of memory."""


class DatasetError(RSTNError):
    """A training or evaluation dataset is malformed."""
