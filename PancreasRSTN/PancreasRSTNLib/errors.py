"""Exceptions raised on purpose. Each message names the problem and the fix, so that the CLI and the
Slicer GUI can show it to the user as is, without a traceback; ``kind`` and ``fix`` give the same in parts
(the CLI's ``--json`` error object)."""

from __future__ import annotations


class RSTNError(Exception):
    """Base of every error the user should read (shown without a traceback)."""

    kind = "error"

    @property
    def message(self) -> str:
        return str(self)

    @property
    def fix(self) -> str:
        """The advice part of the message: every sentence after the first (messages read 'Problem. Fix.')."""
        text = str(self).strip()
        for separator in (". ", "; "):
            head, sep, tail = text.partition(separator)
            if sep and tail:
                return tail.strip()
        return ""

    def to_dict(self) -> dict:
        return {"kind": self.kind, "message": self.message, "fix": self.fix}


class InputImageError(RSTNError):
    """The input image cannot be segmented (2-D, not CT, NaNs, unreadable, ...)."""

    kind = "input_image"


class ModelPackageError(RSTNError):
    """A model folder or checkpoint is missing, corrupt, incompatible or fails its hash check."""

    kind = "model"


class OutputExistsError(RSTNError):
    """Refused to overwrite something the user already has."""

    kind = "output_exists"


class OutputPathError(RSTNError):
    """An output cannot be written there (format, folder, permission)."""

    kind = "output_path"


class RunCancelled(RSTNError):
    """The user cancelled the run. Nothing was written."""

    kind = "cancelled"

    def __init__(self, message: str = "Cancelled: the run was stopped on request; nothing was written.") -> None:
        super().__init__(message)


class EmptyPredictionError(RSTNError):
    """The model found no organ voxels."""

    kind = "empty_prediction"


class DeviceOutOfMemoryError(RSTNError):
    """The compute device ran out of memory."""

    kind = "out_of_memory"


class DatasetError(RSTNError):
    """A training or evaluation dataset is malformed."""

    kind = "dataset"
