"""The label value rule on the Slicer side: the Logic's labelmaps and exports carry the organ's own number, the
same value and the same voxels as ``pancreas-rstn segment`` writes for that CT and model."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk

from helpers import demo_model_as
from PancreasRSTNLib.app.cli import main
from PancreasRSTNLib.io.volume_io import write_image
from PancreasRSTNLib.phantom import make_phantom
from PancreasRSTNSlicerLib.logic import RunOptions, SceneLogic
from PancreasRSTNSlicerLib.mrml_geometry import volume_node_to_image
from PancreasRSTNSlicerLib.run_controller import RunController
from slicer_helpers import add_volume_from_image


@pytest.mark.slow
def test_logic_labelmaps_and_export_match_the_command_line(ctx, tmp_path, capsys):
    image, _ = make_phantom(size=(128, 128, 64), seed=4321)
    models = tmp_path / "models"
    demo_model_as("spleen", models / "spleen")
    ct = write_image(image, tmp_path / "ct.nrrd")
    cli_mask = tmp_path / "cli.nii.gz"
    assert main(["segment", str(ct), "-o", str(cli_mask), "--model", str(models / "spleen"), "--max-iter", "1",
                 "--device", "cpu", "--quiet"]) == 0
    capsys.readouterr()
    expected = sitk.GetArrayFromImage(sitk.ReadImage(str(cli_mask)))
    assert set(np.unique(expected)) == {0, 2}

    node = add_volume_from_image(ctx.scene, image)
    logic = SceneLogic(ctx, models)
    result = RunController(logic).run(node, RunOptions(organs=["spleen"], max_iter=1, device="cpu"))
    final = sitk.GetArrayFromImage(volume_node_to_image(result.rounds["spleen"][-1].labelmap))
    np.testing.assert_array_equal(final, expected)
    exported = logic.export_segmentation(result.segmentation, tmp_path / "export.nii.gz", node)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(sitk.ReadImage(str(exported))), expected)
