"""What SimpleITK prints on stderr, caught and said in our words.

Why: ITK reports some problems only as text on the process's stderr (file descriptor 2), out of Python's reach: the
NIfTI writer's "wrote only N of M bytes" on a full disk (the call itself succeeds), the DICOM reader's "non uniform
sampling or missing slices", the NIfTI reader's "unexpected scales in sform". Printed raw they are noise a user
cannot act on; ignored, a broken file passes as written. ``itk_output()`` points descriptor 2 at a temporary file
around SimpleITK calls and gives back each message with what it means (``messages``) and each write failure
(``errors``); any other text caught meanwhile (another thread's progress line) goes on to stderr unchanged.
"""

from __future__ import annotations

import os
import re
import sys
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

_LOCK = threading.RLock()  # descriptor 2 is the process's: one redirection at a time (nested ones are fine)

#: "WARNING: In <source file>, line N\n<Class> (0x...): <message>" (ITK's output window), up to a blank line.
_ITK_BLOCK = re.compile(r"(WARNING|ERROR): In [^\n]*, line \d+\n(\w+) \(0x[0-9a-fA-F]+\): (.*?)(?:\n\s*\n|\n?\Z)",
                        re.DOTALL)
#: "** ERROR: NWAD: wrote only 0 of 4194304 bytes to file" and other lines of the NIfTI library.
_NIFTI_LINE = re.compile(r"^\*\* (ERROR|WARNING)[^:]*: (.*)$", re.MULTILINE)

#: Known messages -> what they mean for the user (the message's own details follow in brackets).
MEANINGS = (
    ("non uniform sampling or missing slices", "the DICOM slices are not evenly spaced: a slice is missing, "
     "unreadable or doubled, so the volume's slice spacing is not what the scanner measured"),
    ("unexpected scales in sform", "the NIfTI header's voxel sizes (pixdim) disagree with its sform matrix, so the "
     "voxel spacing read may not be the intended one; check the header"),
    ("wrote only", "the file was written only in part (is the disk full?)"),
)


@dataclass
class ItkOutput:
    messages: list[str] = field(default_factory=list)  # warnings, explained
    errors: list[str] = field(default_factory=list)  # failures the call itself did not raise (a write cut short)


def explain(text: str) -> str:
    """One ITK message in our words, with ITK's own words after it."""
    text = " ".join(text.split())
    for key, meaning in MEANINGS:
        if key in text.lower():
            return f"{meaning} (SimpleITK: {text})"
    return f"SimpleITK reported: {text}"


def _parse(text: str, out: ItkOutput) -> str:
    """Fill ``out`` from the caught text; returns what was not ITK's."""
    for level, _cls, message in _ITK_BLOCK.findall(text):
        (out.errors if level == "ERROR" else out.messages).append(explain(message))
    rest = _ITK_BLOCK.sub("", text)
    for level, message in _NIFTI_LINE.findall(rest):
        (out.errors if level == "ERROR" else out.messages).append(explain(message))
    return _NIFTI_LINE.sub("", rest).strip("\n")


@contextmanager
def itk_output() -> Iterator[ItkOutput]:
    """Catch what SimpleITK prints within the block; read ``messages`` and ``errors`` after it."""
    out = ItkOutput()
    with _LOCK, tempfile.TemporaryFile() as caught:
        _flush()
        saved = os.dup(2)
        os.dup2(caught.fileno(), 2)
        try:
            yield out
        finally:
            _flush()
            os.dup2(saved, 2)
            os.close(saved)
            caught.seek(0)
            other = _parse(caught.read().decode("utf-8", "replace"), out)
            if other.strip():
                os.write(2, (other + "\n").encode())


def _flush() -> None:
    try:
        sys.stderr.flush()
    except (AttributeError, ValueError, OSError):  # no stderr, or a closed one
        pass
