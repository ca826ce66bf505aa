"""The slice view of the catalogue screenshot (``PancreasRSTNSlicerLib.slice_snapshot``, used by
``scripts/make_catalogue_screenshot.py``), drawn from the nodes a real panel run left in a real MRML scene."""

from __future__ import annotations

import numpy as np
from PySide6 import QtCore

from gui_helpers import tiny_package
from PancreasRSTNSlicerLib.scene_nodes import organ_color_table
from PancreasRSTNSlicerLib.slice_snapshot import SliceLayers, mask_centre_ras, render_axial, volume_ras_bounds
from pythonqt import unwrap


def _run(panel, scene, qtbot, models_root):
    import shutil

    from PancreasRSTNLib.phantom import make_phantom
    from slicer_helpers import add_volume_from_image

    shutil.rmtree(models_root / "tiny-pancreas")
    tiny_package(models_root / "tiny-pancreas", always_on=True)  # finds organ everywhere: a non-empty mask
    panel.models.refresh()
    image, _ = make_phantom(size=(40, 36, 20), seed=3)
    volume = add_volume_from_image(scene.scene, image, "CT")
    panel.ui.inputVolumeSelector.setCurrentNode(volume)
    panel.ui.maxRoundsSpinBox.value = 1
    qtbot.mouseClick(unwrap(panel.ui.segmentButton), QtCore.Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: not panel.segment.runs.running, timeout=120_000)
    return volume


def test_the_slice_view_shows_the_ct_the_mask_and_the_saliency(panel, scene, qtbot, models_root):
    volume = _run(panel, scene, qtbot, models_root)
    final = panel.segment.rounds[-1]
    saliency = final.saliency[sorted(final.saliency)[0]][1]
    centre = mask_centre_ras(final.labelmap)
    z, xy = float(centre[2]), (float(centre[0]), float(centre[1]))
    field = 1.5 * float(np.ptp(volume_ras_bounds(volume)[:2], axis=1).max())  # the mask's edge inside the view
    plain = render_axial(SliceLayers(volume), z, pixels=128)
    shown = render_axial(SliceLayers(volume, foreground=saliency, label=final.labelmap), z, xy, field, 128)
    assert shown.shape == (128, 128, 3) and shown.dtype == np.uint8
    assert plain.std() > 10 and len(np.unique(plain.reshape(-1, 3), axis=0)) > 20  # the CT, not a blank square
    colour = [0.0, 0.0, 0.0, 0.0]
    table, _ = organ_color_table(scene.scene)
    assert table.GetColor(1, colour)
    pancreas = np.round(np.array(colour[:3]) * 255).astype(np.uint8)
    outline = np.all(shown == pancreas, axis=2)
    assert 0 < outline.sum() < outline.size // 2  # the mask's outline, drawn in the pancreas colour
    without_saliency = render_axial(SliceLayers(volume, label=final.labelmap), z, xy, field, 128)
    assert np.abs(shown.astype(int) - without_saliency).mean() > 1  # the saliency overlay tints the view


def test_the_view_is_oriented_as_slicer_shows_an_axial_slice(scene):
    """Anterior at the top and the patient's right on the left, whatever the voxel order (an LPS-stored CT)."""
    import SimpleITK as sitk

    from slicer_helpers import add_volume_from_image

    array = np.full((3, 20, 20), -1000, dtype=np.int16)  # [k, j, i]; LPS: i grows to the left, j to posterior
    array[:, 2:6, 2:6] = 1000  # low i and low j: the patient's right and anterior
    volume = add_volume_from_image(scene.scene, sitk.GetImageFromArray(array), "marker")
    volume.GetDisplayNode().AutoWindowLevelOff()
    volume.GetDisplayNode().SetWindowLevel(400, 40)
    view = render_axial(SliceLayers(volume), 1.0, pixels=40)
    rows, columns = np.nonzero(view[..., 0] > 128)
    assert rows.size and rows.max() < 20 and columns.max() < 20  # the marker in the top-left quarter
