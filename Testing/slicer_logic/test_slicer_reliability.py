"""Issue 21 in the Slicer Logic (real MRML of slicer-core): the export never writes over an input and publishes
only a whole file (classes 1 and 2), and a model installed from the panel is validated like the CLI's (class 4)."""

from __future__ import annotations

import json
import shutil

import pytest
import SimpleITK as sitk

from helpers import demo_model_dir
from PancreasRSTNLib.errors import ModelPackageError, OutputPathError
from PancreasRSTNSlicerLib import model_manager
from PancreasRSTNSlicerLib.logic import RunOptions, SceneLogic
from PancreasRSTNSlicerLib.run_controller import RunController
from slicer_helpers import add_volume_from_image

FAST = {"max_iter": 1, "device": "cpu", "postprocess": False}


@pytest.fixture
def run(ctx, models_root, phantom_image, tmp_path):
    """A finished run on a CT node whose storage node points at the CT's file on disk."""
    ct_file = tmp_path / "ct.nii.gz"
    sitk.WriteImage(phantom_image, str(ct_file))
    node = add_volume_from_image(ctx.scene, phantom_image)
    storage = ctx.scene.AddNewNodeByClass("vtkMRMLVolumeArchetypeStorageNode")
    storage.SetFileName(str(ct_file))
    node.SetAndObserveStorageNodeID(storage.GetID())
    logic = SceneLogic(ctx, models_root)
    return logic, RunController(logic).run(node, RunOptions(**FAST)), node, ct_file


def test_class1_the_export_never_writes_over_the_ct_it_was_made_from(run, tmp_path):
    logic, result, node, ct_file = run
    before = ct_file.read_bytes()
    for target in (ct_file, tmp_path / "sub" / ".." / "ct.nii.gz"):
        with pytest.raises(OutputPathError, match="is the reference volume's file"):
            logic.export_segmentation(result.segmentation, target, node, overwrite=True)
    assert ct_file.read_bytes() == before


def _write_nothing(image, path, *args, **kwargs):
    open(path, "wb").close()


def test_class2_an_export_that_failed_to_write_leaves_nothing(run, tmp_path, monkeypatch):
    logic, result, node, _ = run
    monkeypatch.setattr(sitk, "WriteImage", _write_nothing)  # a full disk, as the NIfTI writer hides it
    target = tmp_path / "export" / "pancreas.nii.gz"
    target.parent.mkdir()
    with pytest.raises(OutputPathError, match="empty"):
        logic.export_segmentation(result.segmentation, target, node)
    assert list(target.parent.iterdir()) == []


def test_class4_a_lying_package_installed_from_the_panel_is_refused(tmp_path):
    source = tmp_path / "liar"
    shutil.copytree(demo_model_dir(), source)
    meta = json.loads((source / "model.json").read_text())
    meta["files"]["X"]["path"] = "../../elsewhere/model_X.safetensors"
    (source / "model.json").write_text(json.dumps(meta))
    user = tmp_path / "user_models"
    with pytest.raises(ModelPackageError, match="a file name inside the package"):
        model_manager.install(source, replace=lambda question: True, user_root=user)
    assert not [p for p in user.iterdir() if not p.name.startswith(".")]
