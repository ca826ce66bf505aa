"""The catalogue screenshot: the PancreasRSTN panel after a real run of the default model on a real CT, beside an
axial slice view of that CT with the final mask and one saliency channel.

Everything is the real thing that runs here without the Slicer application: the module's Widget built from its
.ui on PySide6 (offscreen) with the GUI suite's PythonQt layer and stand-ins (Testing/slicer_gui), a slicer-core
MRML scene, the Segment button clicked, and the slice view drawn with VTK from the scene's nodes
(``PancreasRSTNSlicerLib.slice_snapshot``). The CT is NIH Pancreas-CT PANCREAS_0001 (Roth et al., TCIA 2016,
CC BY 4.0), read from its DICOM series as the core reads it. Only the bundled models are looked at (the user's
models folder is set aside), so the default model is the one a fresh install picks.

    QT_QPA_PLATFORM=offscreen python scripts/make_catalogue_screenshot.py [--out Resources/Screenshots/panel.png]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
GUI_TESTS = ROOT / "Testing" / "slicer_gui"
for _path in (ROOT / "PancreasRSTN", GUI_TESTS):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

DEFAULT_CT = ROOT.parent / "shared" / "data" / "nih_pancreas_ct" / "images" / "PANCREAS_0001"
DEFAULT_LABEL = ROOT.parent / "shared" / "data" / "nih_pancreas_ct" / "labels" / "label0001.nii.gz"
CITATION = ("CT: NIH Pancreas-CT, PANCREAS_0001 (Roth HR et al., Data From Pancreas-CT, The Cancer Imaging Archive, "
            "2016; CC BY 4.0).")
EXPERT_COLOUR = (0.2, 0.9, 0.3)


def install_slicer_standins():
    """What the GUI suite's ``module`` fixture does (``slicer_standins.install_module_standins``), then
    PancreasRSTN.py imported."""
    import importlib

    import slicer_standins as s

    s.install_module_standins(ROOT / "PancreasRSTN" / "PancreasRSTN.py")
    return importlib.import_module("PancreasRSTN")


def make_scene():
    """What the suite's ``scene`` fixture does: a slicer-core scene with the application's logics and three
    slice views' composite nodes."""
    import slicer_standins as s

    return s.build_core_scene()


def load_ct(scene, folder: Path, name: str):
    """The DICOM series as a scalar volume node (LPS -> RAS as Slicer's DICOM module loads it), abdomen window."""
    from PancreasRSTNLib.io.volume_io import read_image
    from PancreasRSTNSlicerLib.mrml_geometry import update_volume_node_from_image

    if folder.is_dir() and not any(folder.glob("*.dcm")):  # TCIA's <patient>/<study>/<series>/ layout
        folder = sorted(p.parent for p in folder.rglob("*.dcm"))[0]
    node = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", name)
    update_volume_node_from_image(node, read_image(folder))
    node.CreateDefaultDisplayNodes()
    display = node.GetDisplayNode()
    display.AutoWindowLevelOff()
    display.SetWindowLevel(400.0, 40.0)  # Slicer's "CT abdomen" preset
    return node


def run_panel(module, volume, model, timeout_s: float):
    """Build the real panel, pick the volume and the organ, click Segment and wait for the run to finish."""
    from PySide6 import QtCore, QtTest, QtWidgets

    from pythonqt import unwrap, wrap

    host = QtWidgets.QWidget()
    host.setProperty("isEntered", True)
    widget = module.PancreasRSTNWidget(wrap(host))
    widget.setup()
    host.show()
    widget.ui.inputVolumeSelector.setCurrentNode(volume)
    widget.ui.organComboBox.currentIndex = widget.ui.organComboBox.findData("pancreas")
    # Advanced > views: the panel ticks X, Y and Z whatever the model has, and a run with a view the model lacks
    # fails ("no weights for view(s) X, Y"): tick exactly the default model's views, as its user must
    for view in "XYZ":
        getattr(widget.ui, f"view{view}CheckBox").checked = view in model.views
    QtWidgets.QApplication.processEvents()
    button = unwrap(widget.ui.segmentButton)
    if not button.isEnabled():
        raise RuntimeError(f"Segment is disabled: {button.toolTip()}")
    start = time.perf_counter()
    QtTest.QTest.mouseClick(button, QtCore.Qt.MouseButton.LeftButton)
    while widget.segment.runs.running or widget.segment.timer is not None:
        QtWidgets.QApplication.processEvents()
        time.sleep(0.02)
        if time.perf_counter() - start > timeout_s:
            widget.segment.cancel()
            raise TimeoutError(f"the run took more than {timeout_s:.0f} s")
    seconds = time.perf_counter() - start
    if widget.segment.result is None:
        raise RuntimeError(f"The run failed: {widget.ui.statusLabel.text}")
    return host, widget, seconds


def show_saliency(widget, view: str, channel: int):
    """Tick Show saliency for the final round, as a user would; returns the saliency node it puts in the views."""
    last = len(widget.segment.rounds) - 1
    widget.ui.roundSlider.value = last
    widget.ui.showSaliencyCheckBox.checked = True
    widget.ui.saliencyViewComboBox.currentIndex = widget.ui.saliencyViewComboBox.findText(view)
    widget.ui.saliencyChannelComboBox.currentIndex = channel
    return widget.segment.rounds[last].saliency[view][channel]


def final_labelmap(scene, segmentation, reference):
    """The final segmentation as a labelmap on the CT's grid (Segmentations' export, as the Data module does)."""
    import slicer

    labelmap = scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode", "RSTN final mask (screenshot)")
    if not slicer.vtkSlicerSegmentationsModuleLogic.ExportVisibleSegmentsToLabelmapNode(segmentation, labelmap,
                                                                                        reference):
        raise RuntimeError("Could not export the segmentation to a labelmap.")
    return labelmap


def grab_panel(host, width: int):
    """``QWidget.grab`` of the panel at its natural height, the sections a user would not have open collapsed."""
    from PySide6 import QtWidgets

    for child in host.findChildren(QtWidgets.QWidget):
        if type(child).__name__ == "ctkCollapsibleButton":
            child.collapsed = child.objectName() in (
                "modelsCollapsibleButton", "trainingCollapsibleButton", "dependenciesCollapsibleButton",
                "advancedCollapsibleButton")
    QtWidgets.QApplication.processEvents()
    host.resize(width, host.heightForWidth(width) if host.hasHeightForWidth() else host.sizeHint().height())
    QtWidgets.QApplication.processEvents()
    return host.grab().toImage()


def to_qimage(rgb):
    from PySide6 import QtGui

    height, width, _ = rgb.shape
    return QtGui.QImage(rgb.tobytes(), width, height, 3 * width, QtGui.QImage.Format.Format_RGB888).copy()


def compose(panel_image, view_image, title: str, caption: str):
    """The panel (or None) on the left, the slice view on the right with its title above, the caption (wrapped)
    below both."""
    from PySide6 import QtCore, QtGui

    margin, gap, title_h = 12, 16, 24
    panel_w, panel_h = (panel_image.width() + gap, panel_image.height()) if panel_image is not None else (0, 0)
    width = margin * 2 + panel_w + view_image.width()
    body_h = max(panel_h, title_h + view_image.height())
    caption_font = QtGui.QFont()
    caption_font.setPixelSize(12)
    wrap = QtCore.Qt.TextFlag.TextWordWrap
    caption_rect = QtGui.QFontMetrics(caption_font).boundingRect(
        QtCore.QRect(0, 0, width - 2 * margin, 1000), int(wrap), caption)
    height = margin * 2 + body_h + 8 + caption_rect.height()
    canvas = QtGui.QImage(width, height, QtGui.QImage.Format.Format_RGB32)
    canvas.fill(QtGui.QColor(240, 240, 240))
    painter = QtGui.QPainter(canvas)
    painter.setRenderHint(QtGui.QPainter.RenderHint.TextAntialiasing)
    if panel_image is not None:
        painter.drawImage(margin, margin, panel_image)
    x_view = margin + panel_w
    title_font = QtGui.QFont(caption_font)
    title_font.setPixelSize(14)
    title_font.setBold(True)
    painter.setFont(title_font)
    painter.setPen(QtGui.QColor(30, 30, 30))
    painter.drawText(QtCore.QRect(x_view, margin, view_image.width(), title_h), QtCore.Qt.AlignmentFlag.AlignLeft,
                     title)
    painter.drawImage(x_view, margin + title_h, view_image)
    painter.setFont(caption_font)
    painter.drawText(QtCore.QRect(margin, margin + body_h + 8, width - 2 * margin, caption_rect.height()),
                     int(wrap), caption)
    painter.end()
    return canvas


def dice_with_expert(labelmap, label_file: Path) -> float | None:
    """DSC of the final mask against the NIH expert label (same grid), or None when the label is absent."""
    import numpy as np
    import SimpleITK as sitk

    from PancreasRSTNSlicerLib.mrml_geometry import volume_node_to_image

    if not label_file.is_file():
        return None
    expert = sitk.ReadImage(str(label_file))
    mask = sitk.Resample(volume_node_to_image(labelmap), expert, sitk.Transform(), sitk.sitkNearestNeighbor, 0)
    a, b = sitk.GetArrayFromImage(mask) > 0, sitk.GetArrayFromImage(expert) > 0
    return float(2.0 * np.logical_and(a, b).sum() / max(a.sum() + b.sum(), 1))


def save_png(image, path: Path, max_kb: int) -> None:
    """Save in full colour; over ``max_kb``, in 256 colours (dithered); still over, scaled down until under."""
    from PySide6 import QtCore, QtGui

    path.parent.mkdir(parents=True, exist_ok=True)
    scaled = image
    while True:
        for candidate in (scaled, scaled.convertToFormat(QtGui.QImage.Format.Format_Indexed8,
                                                         QtCore.Qt.ImageConversionFlag.DiffuseDither)):
            if not candidate.save(str(path), "PNG", 0):
                raise RuntimeError(f"could not write {path}")
            if path.stat().st_size <= max_kb * 1024:
                return
        if scaled.width() < 600:
            return
        scaled = image.scaledToWidth(int(scaled.width() * 0.9), QtCore.Qt.TransformationMode.SmoothTransformation)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ct", type=Path, default=DEFAULT_CT, help="DICOM folder (default: NIH PANCREAS_0001)")
    parser.add_argument("--label", type=Path, default=DEFAULT_LABEL, help="expert label, for the printed DSC")
    parser.add_argument("--out", type=Path, default=ROOT / "Resources" / "Screenshots" / "panel.png")
    parser.add_argument("--view-out", type=Path, default=ROOT / "Resources" / "Screenshots" / "1.png",
                        help="the slice view alone, larger ('' to skip)")
    parser.add_argument("--channel", type=int, default=1, help="saliency channel shown (0-2)")
    parser.add_argument("--field-mm", type=float, default=200.0, help="side of the square the slice view shows")
    parser.add_argument("--max-kb", type=int, default=400)
    parser.add_argument("--timeout", type=float, default=1800.0, help="seconds to wait for the run")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    t0 = time.perf_counter()
    os.environ["PANCREAS_RSTN_MODELS"] = tempfile.mkdtemp(prefix="pancreas_rstn_no_user_models_")
    from PySide6 import QtWidgets

    app = QtWidgets.QApplication.instance() or QtWidgets.QApplication([])  # noqa: F841 - kept alive
    module = install_slicer_standins()
    context = make_scene()
    from PancreasRSTNSlicerLib.slice_snapshot import SliceLayers, mask_centre_ras, render_axial

    t_load = time.perf_counter()
    volume = load_ct(context.scene, args.ct, args.ct.name)
    dims = volume.GetImageData().GetDimensions()
    print(f"CT {args.ct.name}: {dims[0]}x{dims[1]}x{dims[2]} voxels, read in {time.perf_counter() - t_load:.1f} s")

    from PancreasRSTNLib.io.user_models import find_model, list_models

    model = find_model("pancreas", list_models())
    model_name = model.name
    host, widget, run_s = run_panel(module, volume, model, args.timeout)
    result = widget.segment.result
    rounds = widget.segment.rounds
    print(f"model {model_name}: {len(rounds)} rounds, run {run_s:.1f} s (click to done); "
          f"panel says: {widget.ui.statusLabel.text}")
    for nodes in rounds:
        print("  " + nodes.summary)

    labelmap = final_labelmap(context.scene, result.segmentation, volume)
    from PancreasRSTNSlicerLib.mrml_geometry import node_array_view

    spacing = volume.GetSpacing()
    voxels = int((node_array_view(labelmap) > 0).sum())
    ml = voxels * spacing[0] * spacing[1] * spacing[2] / 1000.0
    dsc = dice_with_expert(labelmap, args.label)
    dsc_text = "n/a" if dsc is None else f"{dsc:.3f}"
    print(f"final mask: {voxels} voxels = {ml:.1f} ml; DSC to the NIH expert label {dsc_text}")

    saliency = show_saliency(widget, "Z", args.channel)
    centre = mask_centre_ras(labelmap)
    layers = SliceLayers(background=volume, foreground=saliency, label=labelmap, foreground_opacity=0.45)
    t_render = time.perf_counter()
    view = render_axial(layers, float(centre[2]), (float(centre[0]), float(centre[1])), args.field_mm, 560)
    print(f"slice view rendered in {time.perf_counter() - t_render:.2f} s (axial z = {centre[2]:.1f} mm RAS)")
    panel_image = grab_panel(host, 520)

    title = f"Final mask (orange) + saliency Z channel {args.channel} (viridis)"
    caption = (f"The PancreasRSTN panel after a run of the default model {model_name} ({len(rounds)} rounds, "
               f"{run_s:.0f} s on 2 CPU cores): final mask {ml:.1f} ml, DSC {dsc_text} to the NIH expert label "
               "(PANCREAS_0001 was in this model's training data: not a held-out result). " + CITATION
               + " Drawn offscreen from the MRML scene by python scripts/make_catalogue_screenshot.py.")
    save_png(compose(panel_image, to_qimage(view), title, caption), args.out, args.max_kb)
    print(f"wrote {args.out} ({args.out.stat().st_size // 1024} KB)")
    if str(args.view_out):
        big = render_axial(layers, float(centre[2]), (float(centre[0]), float(centre[1])), args.field_mm, 800)
        view_path = Path(args.view_out)
        save_png(compose(None, to_qimage(big), title, caption),
                 view_path, args.max_kb)
        print(f"wrote {view_path} ({view_path.stat().st_size // 1024} KB)")
    widget.cleanup()
    host.close()
    print(f"total {time.perf_counter() - t0:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
