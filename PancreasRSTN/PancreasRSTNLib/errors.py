"""Exceptions raised on purpose. Each message names the problem and the fix, so that the CLI and the
Slicer GUI can show it to the user as is, without a traceback; ``kind`` and ``fix`` give the same in parts
(the CLI's ``--json`` error object). Every kind has a non-empty fix: a message without an advice part falls back
on its class's ``default_fix``."""

from __future__ import annotations


class RSTNError(Exception):
    """Base of every error the user should read (shown without a traceback)."""

    kind = "error"
    default_fix = "Read the message above; run the command again with -v to see the details."

    def __init__(self, message: str = "", *, fix: str | None = None) -> None:
        super().__init__(message)
        self._fix = fix

    @property
    def message(self) -> str:
        return str(self)

    @property
    def fix(self) -> str:
        """The advice: given explicitly, else every sentence after the first (messages read 'Problem. Fix.'),
        else the class's default."""
        if self._fix:
            return self._fix
        text = str(self).strip()
        for separator in (". ", "; "):
            head, sep, tail = text.partition(separator)
            if sep and tail:
                return tail.strip()
        return self.default_fix

    def to_dict(self) -> dict:
        return {"kind": self.kind, "message": self.message, "fix": self.fix}


class InputImageError(RSTNError):
    """The input image cannot be segmented (2-D, not CT, NaNs, unreadable, ...)."""

    kind = "input_image"
    default_fix = "Give a 3-D CT in Hounsfield units: a NIfTI, NRRD or MHA file, or a folder with one DICOM series."


class OptionsError(RSTNError):
    """An option's value is refused (out of range, wrong type, unknown), before any work."""

    kind = "options"
    default_fix = "See `pancreas-rstn COMMAND --help` for the options and their allowed values."


class ModelPackageError(RSTNError):
    """A model folder or checkpoint is missing, corrupt, incompatible or fails its hash check."""

    kind = "model"
    default_fix = "Check the package with `pancreas-rstn models verify NAME|DIR`, or re-install it."


class OutputExistsError(RSTNError):
    """Refused to overwrite something the user already has."""

    kind = "output_exists"
    default_fix = "Choose another output name, or pass --overwrite to replace it."


class OutputPathError(RSTNError):
    """An output cannot be written there (format, folder, permission, full disk, or it is an input)."""

    kind = "output_path"
    default_fix = "Choose an output path in a folder you can write to, with free space, that is not an input."


class RunCancelled(RSTNError):
    """The user cancelled the run. Nothing was written."""

    kind = "cancelled"
    default_fix = "Run the command again."

    def __init__(self, message: str = "Cancelled: the run was stopped on request; nothing was written.", *,
                 fix: str | None = None) -> None:
        super().__init__(message, fix=fix)


class EmptyPredictionError(RSTNError):
    """The model found no organ voxels."""

    kind = "empty_prediction"
    default_fix = "Check that the image covers the organ and that the model suits it (`pancreas-rstn models info`)."


class DeviceOutOfMemoryError(RSTNError):
    """The compute device ran out of memory."""

    kind = "out_of_memory"
    default_fix = "Try --device cpu, a smaller --batch-size, fewer views or --coarse-downsample 2."


class DatasetError(RSTNError):
    """A training or evaluation dataset is malformed."""

    kind = "dataset"
    default_fix = "Fix or remove the case the message names, or pass --on-bad-case skip to leave it out (listed)."
