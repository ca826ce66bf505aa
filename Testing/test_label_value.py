"""The label value rule (organs.py): an organ's voxels carry its own number in every label map we write, whatever
value marked it in the model's training labels. Here on the command line; the Slicer Logic's side is in
slicer_logic/test_slicer_label_value.py."""

from __future__ import annotations

import json

import numpy as np
import pytest
import SimpleITK as sitk

from helpers import demo_model_as
from PancreasRSTNLib.app.cli import main
from PancreasRSTNLib.io.volume_io import write_image
from PancreasRSTNLib.organs import ORGANS, get_organ
from PancreasRSTNLib.phantom import make_phantom


def test_each_organ_has_one_distinct_label_value():
    values = [organ.label_value for organ in ORGANS.values()]
    assert values == list(range(1, len(ORGANS) + 1))
    assert get_organ("pancreas").label_value == 1 and get_organ("spleen").label_value == 2


@pytest.mark.slow
def test_segment_and_its_round_files_write_the_organs_value_not_the_training_labels(tmp_path, capsys):
    image, _ = make_phantom(size=(128, 128, 64), seed=4321)
    ct = write_image(image, tmp_path / "ct.nrrd")
    model = demo_model_as("spleen", tmp_path / "models" / "spleen")
    assert json.loads((model / "model.json").read_text())["organ"]["label_value"] == 1  # the training labels'
    out, rounds = tmp_path / "mask.nii.gz", tmp_path / "rounds"
    assert main(["segment", str(ct), "-o", str(out), "--model", str(model), "--max-iter", "1",
                 "--save-iterations", str(rounds), "--quiet"]) == 0
    capsys.readouterr()
    assert set(np.unique(sitk.GetArrayFromImage(sitk.ReadImage(str(out))))) == {0, 2}
    for mask in rounds.glob("round_*_mask.nii.gz"):
        assert set(np.unique(sitk.GetArrayFromImage(sitk.ReadImage(str(mask))))) <= {0, 2}
