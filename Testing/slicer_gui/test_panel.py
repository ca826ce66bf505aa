"""The real PancreasRSTN panel driven through its real buttons (PySide6 offscreen, slicer-core MRML).

Each test starts from a fresh scene and a fresh panel built from the module's real .ui. Runs use a tiny
real-architecture model; modal file dialogs get their answer from ``FileDialogAnswers`` (a modal dialog cannot be
clicked in an offscreen test); injected errors (out of memory, a failing trainer) are named where used.
"""

from __future__ import annotations

import logging
import shutil
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from PySide6 import QtCore, QtGui

from gui_helpers import tiny_package
from PancreasRSTNSlicerLib.scene_nodes import organ_color_table
from pythonqt import DesktopServices, FileDialogAnswers, unwrap

EN_DASH = "\u2013"


def _ct(context, name="CT", size=(40, 36, 20), seed=3):
    from PancreasRSTNLib.phantom import make_phantom
    from slicer_helpers import add_volume_from_image

    image, _ = make_phantom(size=size, seed=seed)
    return add_volume_from_image(context.scene, image, name)


def _click(qtbot, proxy) -> None:
    """Click a button as a user does: first open the collapsed sections it sits in."""
    from PySide6 import QtWidgets

    widget = unwrap(proxy)
    parent = widget.parentWidget()
    while parent is not None:
        if type(parent).__name__ == "ctkCollapsibleButton" and parent.collapsed:
            parent.collapsed = False
        parent = parent.parentWidget()
    QtWidgets.QApplication.processEvents()
    qtbot.mouseClick(widget, QtCore.Qt.MouseButton.LeftButton)


def _nodes(scene) -> set[str]:
    return {scene.GetNthNode(i).GetID() for i in range(scene.GetNumberOfNodes())}


def _segment(panel, qtbot, volume, rounds: int = 2, wait: bool = True) -> None:
    panel.ui.inputVolumeSelector.setCurrentNode(volume)
    panel.ui.maxRoundsSpinBox.value = rounds
    _click(qtbot, panel.ui.segmentButton)
    if wait:
        qtbot.waitUntil(lambda: not panel.segment.runs.running, timeout=120_000)


def _composite(scene, attribute: str) -> set[str]:
    """The volume IDs shown in one layer of every slice view."""
    getter = {"label": "GetLabelVolumeID", "foreground": "GetForegroundVolumeID", "background": "GetBackgroundVolumeID"}
    ids = set()
    for i in range(scene.GetNumberOfNodesByClass("vtkMRMLSliceCompositeNode")):
        ids.add(getattr(scene.GetNthNodeByClass(i, "vtkMRMLSliceCompositeNode"), getter[attribute])())
    return ids


@pytest.fixture
def always_on(models_root):
    """The user's pancreas model replaced by one that finds organ everywhere: runs are deterministic."""
    shutil.rmtree(models_root / "tiny-pancreas")
    tiny_package(models_root / "tiny-pancreas", always_on=True)
    return models_root


# ---------------------------------------------------------------------------------------------- the panel
def test_the_panel_loads_from_the_real_ui(panel):
    assert panel.ui.organComboBox.count == 1 and panel.ui.organComboBox.currentData == "pancreas"
    assert "tiny-pancreas" in panel.ui.modelInfoLabel.text
    assert panel.ui.modelsTableWidget.rowCount == 1
    assert not panel.ui.segmentButton.enabled and not panel.ui.cancelButton.enabled  # no input yet
    assert panel.ui.deviceLabel.text.startswith("Runs on: CPU")


def test_the_model_label_is_rich_text_with_the_warning_in_bold(panel, models_root, monkeypatch):
    """It showed literal <b> tags: Qt renders rich text only when a tag comes before the first line break."""
    import json

    meta_path = models_root / "tiny-pancreas" / "model.json"
    meta = json.loads(meta_path.read_text())
    meta["warning"] = "Trained on 2 patients: research only."
    meta_path.write_text(json.dumps(meta))
    panel.models.refresh()
    label = unwrap(panel.ui.modelInfoLabel)
    assert QtGui.Qt.mightBeRichText(label.text()) and "\n" not in label.text()
    assert "<b>Trained on 2 patients: research only.</b>" in label.text()
    document_text = label.text().replace("<br>", "\n")
    assert "Model: tiny-pancreas" in document_text


# ---------------------------------------------------------------------------------------------- a run
def test_segment_shows_every_round_as_it_arrives(panel, scene, qtbot, always_on):
    volume = _ct(scene)
    before = np.array(sitk_array(volume))
    maxima: list[int] = []
    unwrap(panel.ui.roundSlider).rangeChanged.connect(lambda lo, hi: maxima.append(hi))
    _segment(panel, qtbot, volume, rounds=3)
    names = [n.labelmap.GetName() for n in panel.segment.rounds]
    assert names == [f"Pancreas {EN_DASH} round {k}" for k in range(len(names))] and len(names) >= 2
    assert maxima == list(range(1, len(names)))  # the slider grew one round at a time
    assert panel.ui.statusLabel.text.startswith("Done in") and panel.ui.progressBar.value == 1000
    seg = panel.segment.result.segmentation
    assert (seg.GetSegmentation().GetNumberOfSegments() == 1
            and "15776009" in seg.GetSegmentation().GetNthSegment(0).GetTerminology())
    assert np.array_equal(sitk_array(volume), before)  # the input is never modified
    assert panel.ui.segmentButton.enabled and not panel.ui.cancelButton.enabled
    assert panel.segment.rounds[-1].summary.startswith(f"Round {len(names) - 1} (fine)")
    assert panel.ui.roundLabel.text == panel.segment.rounds[-1].summary


def test_a_package_with_a_refiner_shows_the_refinement_as_one_more_round(panel, scene, qtbot, always_on):
    """An RSTN package that carries a BiCLSTM refiner (``train --method rstn+biclstm``): the panel shows RSTN's rounds,
    then the refinement as the last round of the slider, and the result is the refined mask."""
    shutil.rmtree(always_on / "tiny-pancreas")
    tiny_package(always_on / "tiny-pancreas", always_on=True, refiner=True)
    volume = _ct(scene)
    _segment(panel, qtbot, volume, rounds=2)
    names = [n.labelmap.GetName() for n in panel.segment.rounds]
    stages = [n.stage for n in panel.segment.rounds]
    assert stages[0] == "coarse" and stages[-1] == "refine" and set(stages[1:-1]) == {"fine"}, stages
    assert panel.ui.roundSlider.maximum == len(names) - 1
    assert panel.segment.rounds[-1].summary.startswith(f"Round {len(names) - 1} (refine)")
    assert panel.ui.statusLabel.text.startswith("Done in")


def sitk_array(volume):
    import slicer

    return slicer.util.arrayFromVolume(volume)


def test_the_round_slider_and_every_saliency_overlay(panel, scene, qtbot, always_on):
    volume = _ct(scene)
    _segment(panel, qtbot, volume, rounds=2)
    for k, nodes in enumerate(panel.segment.rounds):
        panel.ui.roundSlider.value = k
        assert _composite(scene.scene, "label") == {nodes.labelmap.GetID()}
        assert panel.ui.roundLabel.text.startswith(f"Round {k} ")
    panel.ui.roundSlider.value = 1
    panel.ui.showSaliencyCheckBox.checked = True
    shown = set()
    for view in ("X", "Y", "Z"):
        panel.ui.saliencyViewComboBox.currentIndex = "XYZ".index(view)
        for channel in range(3):
            panel.ui.saliencyChannelComboBox.currentIndex = channel
            expected = panel.segment.rounds[1].saliency[view][channel]
            assert _composite(scene.scene, "foreground") == {expected.GetID()}
            shown.add(expected.GetID())
    assert len(shown) == 9
    panel.ui.showSaliencyCheckBox.checked = False
    assert _composite(scene.scene, "foreground") == {None}
    panel.ui.roundSlider.value = 0  # the coarse round has no saliency: nothing in the foreground
    panel.ui.showSaliencyCheckBox.checked = True
    assert _composite(scene.scene, "foreground") == {None}


def test_show_plot_puts_the_dsc_chart_in_the_layout(panel, scene, qtbot, always_on):
    volume = _ct(scene)
    _segment(panel, qtbot, volume, rounds=2)
    _click(qtbot, panel.ui.showPlotButton)
    selection = scene.app_logic.GetSelectionNode()
    assert selection.GetActivePlotChartID() == panel.segment.result.chart.GetID()


def test_cancel_leaves_nothing_in_the_scene(panel, scene, qtbot, always_on):
    volume = _ct(scene, size=(96, 96, 48))
    before = _nodes(scene.scene)
    _segment(panel, qtbot, volume, rounds=10, wait=False)
    assert panel.ui.cancelButton.enabled and not panel.ui.segmentButton.enabled
    _click(qtbot, panel.ui.cancelButton)
    qtbot.waitUntil(lambda: not panel.segment.runs.running, timeout=120_000)
    assert panel.ui.statusLabel.text == "Cancelled: nothing was added to the scene."
    assert _nodes(scene.scene) - before <= {organ_color_table(scene.scene)[0].GetID()} or _nodes(scene.scene) == before
    assert panel.segment.result is None and panel.ui.segmentButton.enabled


def test_a_bad_input_shows_the_error_and_changes_nothing(panel, scene, qtbot, caplog):
    from PancreasRSTNLib.phantom import make_phantom
    from slicer_helpers import add_volume_from_image

    image, _ = make_phantom(size=(40, 36, 20), seed=3)
    flat = sitk.GetImageFromArray(np.zeros((1, 36, 40), np.int16))  # one slice: not a 3-D CT
    flat.CopyInformation(image[:, :, 0:1])
    volume = add_volume_from_image(scene.scene, flat, "single slice")
    before = _nodes(scene.scene)
    with caplog.at_level(logging.ERROR):
        _segment(panel, qtbot, volume)
    assert panel.ui.statusLabel.text == "Failed."
    assert any("3-D CT volume" in r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR)
    assert _nodes(scene.scene) == before


def test_the_out_of_memory_fallback_offers_the_cpu_and_runs_again(panel, scene, qtbot, always_on, monkeypatch):
    """Injected: the first run's engine raises torch's out-of-memory error (as a GPU would)."""
    import slicer
    import torch

    import PancreasRSTNLib.engine.segmentation as segmentation

    real = segmentation.segment_image
    calls = []

    def flaky(*args, **kwargs):
        calls.append(args[2].device)  # the run's settings record
        if len(calls) == 1:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real(*args, **kwargs)

    monkeypatch.setattr(segmentation, "segment_image", flaky)
    asked = []
    monkeypatch.setattr(slicer.util, "confirmYesNoDisplay", lambda text, **kw: asked.append(text) or True)
    panel.ui.deviceComboBox.currentIndex = unwrap(panel.ui.deviceComboBox).findText("Auto")
    volume = _ct(scene)
    _segment(panel, qtbot, volume)
    qtbot.waitUntil(lambda: not panel.segment.runs.running and panel.segment.result is not None, timeout=120_000)
    assert asked == ["Switch the device to CPU and try again?"]
    assert calls == ["auto", "cpu"] and panel.ui.deviceComboBox.currentText == "CPU"
    assert panel.segment.result.segmentation is not None


def test_scene_close_stops_the_run_and_resets_the_panel(panel, scene, qtbot, always_on):
    volume = _ct(scene, size=(96, 96, 48))
    _segment(panel, qtbot, volume, rounds=10, wait=False)
    scene.scene.Clear(False)  # File > Close scene: the parameter node (a singleton) is reset, not replaced
    qtbot.waitUntil(lambda: not panel.segment.runs.running, timeout=120_000)
    assert panel._parameterNode is not None and panel._parameterNode.inputVolume is None
    assert panel._parameterNode.maxRounds == 0 and panel.ui.maxRoundsSpinBox.value == 0  # defaults again
    runs = panel.segment.runs
    assert not panel.ui.segmentButton.enabled and runs.session is None or runs.session.closed


# ---------------------------------------------------------------------------------------------- exports
@pytest.mark.parametrize("button,suffix", [("exportNiftiButton", ".nii.gz"), ("exportNrrdButton", ".seg.nrrd")])
def test_the_exports_write_the_segmentation(panel, scene, qtbot, always_on, tmp_path, button, suffix):
    volume = _ct(scene)
    _segment(panel, qtbot, volume, rounds=1)
    target = tmp_path / f"result{suffix}"
    FileDialogAnswers.answer(str(target))
    _click(qtbot, getattr(panel.ui, button))
    assert target.is_file() and panel.ui.statusLabel.text == f"Exported {target}"
    if suffix == ".nii.gz":
        written = sitk.ReadImage(str(target))
        assert written.GetSize() == tuple(reversed(sitk_array(volume).shape)) and sitk.GetArrayFromImage(written).any()
    FileDialogAnswers.answer("")  # Cancel in the save dialog: nothing happens
    _click(qtbot, getattr(panel.ui, button))
    assert panel.ui.statusLabel.text == f"Exported {target}"


# ---------------------------------------------------------------------------------------------- model manager
def test_install_a_model_from_a_folder_and_from_a_zip_then_replace_it(panel, qtbot, tmp_path, monkeypatch, caplog):
    import slicer

    source = tiny_package(tmp_path / "shared" / "spleen-model", organ="spleen", name="tiny-spleen")
    FileDialogAnswers.answer(str(source))
    with caplog.at_level(logging.INFO):
        _click(qtbot, panel.ui.installFolderButton)
    assert panel.ui.modelsTableWidget.rowCount == 2 and panel.ui.organComboBox.count == 2
    assert any("Installed 'tiny-spleen' for spleen" in r.getMessage() for r in caplog.records)
    archive = tmp_path / "spleen.zip"
    with zipfile.ZipFile(archive, "w") as z:
        for f in source.iterdir():
            z.write(f, f"spleen-model/{f.name}")
    answers = iter([False, True])
    monkeypatch.setattr(slicer.util, "confirmYesNoDisplay", lambda text, **kw: next(answers))
    FileDialogAnswers.answer(str(archive))
    _click(qtbot, panel.ui.installZipButton)  # declined: the installed one stays
    FileDialogAnswers.answer(str(archive))
    _click(qtbot, panel.ui.installZipButton)  # accepted: replaced
    assert panel.ui.modelsTableWidget.rowCount == 2
    panel.ui.organComboBox.currentIndex = unwrap(panel.ui.organComboBox).findData("spleen")
    assert "tiny-spleen" in panel.ui.modelInfoLabel.text


def test_verify_reports_each_model_and_finds_a_corrupt_one(panel, qtbot, models_root, caplog):
    with caplog.at_level(logging.INFO):
        _click(qtbot, panel.ui.verifyModelsButton)
    assert any("OK: tiny-pancreas" in r.getMessage() for r in caplog.records)
    weights = models_root / "tiny-pancreas" / "model_Z.safetensors"
    weights.write_bytes(weights.read_bytes()[:-8] + b"corrupt!")
    caplog.clear()
    with caplog.at_level(logging.INFO):
        _click(qtbot, panel.ui.verifyModelsButton)
    assert any("FAILED: tiny-pancreas" in r.getMessage() and "Hash mismatch" in r.getMessage() for r in caplog.records)


def test_select_a_model_shows_its_folder_and_open_folder(panel, qtbot, models_root):
    table = unwrap(panel.ui.modelsTableWidget)
    table.selectRow(0)
    assert str(models_root / "tiny-pancreas") in panel.ui.modelWarningLabel.text
    _click(qtbot, panel.ui.openModelsFolderButton)
    assert DesktopServices.opened[-1] == str(models_root)


def test_only_a_synthetic_model_gives_a_clear_message(panel, models_root, scene, qtbot):
    import json

    meta_path = models_root / "tiny-pancreas" / "model.json"
    meta = json.loads(meta_path.read_text())
    meta["synthetic"] = True
    meta_path.write_text(json.dumps(meta))
    _click(qtbot, panel.ui.refreshModelsButton)
    assert "Only synthetic demo models" in panel.ui.modelInfoLabel.text
    assert "Synthetic demo model" in panel.ui.modelWarningLabel.text


# ---------------------------------------------------------------------------------------------- dependencies
def test_dependencies_are_reported_and_installed_through_pytorchutils(panel, qtbot, monkeypatch, caplog):
    import types

    from PancreasRSTNSlicerLib import dependencies

    assert panel.ui.dependenciesLabel.text.startswith("All dependencies present (torch ")
    monkeypatch.delitem(sys.modules, "PyTorchUtils", raising=False)
    monkeypatch.setattr(dependencies, "missing_packages", lambda: ["torch"])
    panel.models.refresh_dependencies()
    assert panel.ui.dependenciesLabel.text == "Missing: torch. Click Install (needs network)."
    with caplog.at_level(logging.ERROR):
        _click(qtbot, panel.ui.installDependenciesButton)  # no PyTorch extension: a plain message
    assert any("The PyTorch extension is not installed" in r.getMessage() for r in caplog.records)
    requests = []

    class TorchLogic:  # the PyTorch extension's logic (an extension of its own, not part of slicer-core)
        def torchInstalled(self):  # noqa: N802
            return False

        def installTorch(self, **kwargs):  # noqa: N802
            requests.append(kwargs)
            return object()

    monkeypatch.setitem(sys.modules, "PyTorchUtils", types.SimpleNamespace(PyTorchUtilsLogic=TorchLogic))
    _click(qtbot, panel.ui.installDependenciesButton)
    assert requests == [{"askConfirmation": True, "torchVersionRequirement": f">={dependencies.MIN_TORCH_VERSION}"}]


# ---------------------------------------------------------------------------------------------- training
@pytest.fixture
def tiny_dataset(tmp_path):
    from PancreasRSTNLib.phantom import make_phantom

    root = tmp_path / "dataset"
    for i in range(2):
        image, label = make_phantom((40, 40, 12), seed=60 + i)
        (root / "images").mkdir(parents=True, exist_ok=True)
        (root / "labels").mkdir(exist_ok=True)
        sitk.WriteImage(image, str(root / "images" / f"c{i}.nii.gz"))
        sitk.WriteImage(label, str(root / "labels" / f"c{i}.nii.gz"))
    return root


def _train(panel, qtbot, dataset, output, steps: str, monkeypatch, wait: bool = True) -> None:
    from PancreasRSTNSlicerLib import training

    preset = f"test ({steps})"
    monkeypatch.setitem(training.PRESETS, preset, ["--backbone", "light", "--widths", "4,8", "--steps", steps,
                                                   "--checkpoint-every", "0"])
    unwrap(panel.ui.trainPresetComboBox).addItem(preset)
    panel.ui.trainPresetComboBox.currentIndex = panel.ui.trainPresetComboBox.count - 1
    panel.ui.trainDatasetPathLineEdit.currentPath = str(dataset)
    panel.ui.trainOutputPathLineEdit.currentPath = str(output)
    panel.ui.trainViewXCheckBox.checked = False
    panel.ui.trainViewYCheckBox.checked = False
    _click(qtbot, panel.ui.trainButton)
    if wait:
        qtbot.waitUntil(lambda: panel.ui.trainButton.enabled, timeout=180_000)


def test_training_runs_in_a_separate_process_and_installs_the_model(panel, qtbot, tiny_dataset, tmp_path,
                                                                   monkeypatch, models_root):
    import slicer

    monkeypatch.setattr(slicer.util, "confirmYesNoDisplay", lambda text, **kw: True)
    _train(panel, qtbot, tiny_dataset, tmp_path / "run", "S:3,I:3,J:3", monkeypatch)
    assert (tmp_path / "run" / "model" / "model.json").is_file()
    assert panel.ui.trainProgressBar.value == 1000
    installed = [p.name for p in models_root.iterdir() if (p / "model.json").is_file()]
    assert "run" in installed and panel.ui.modelsTableWidget.rowCount == 2
    table, chart = panel.training.nodes
    assert table is not None and chart is not None and table.GetNumberOfRows() >= 1


def test_a_failing_training_shows_its_output(panel, qtbot, tmp_path, monkeypatch, caplog):
    empty = tmp_path / "not_a_dataset"
    empty.mkdir()
    with caplog.at_level(logging.ERROR):
        _train(panel, qtbot, empty, tmp_path / "run", "S:3", monkeypatch)
    messages = " ".join(r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR)
    assert "Training stopped (exit code 1)" in messages and "not a dataset folder" in messages


def test_training_can_be_cancelled(panel, qtbot, tiny_dataset, tmp_path, monkeypatch):
    _train(panel, qtbot, tiny_dataset, tmp_path / "run", "S:100000", monkeypatch, wait=False)
    assert panel.ui.trainCancelButton.enabled and not panel.ui.trainButton.enabled
    _click(qtbot, panel.ui.trainCancelButton)
    qtbot.waitUntil(lambda: panel.ui.trainButton.enabled, timeout=60_000)
    assert panel.ui.trainStatusLabel.text.startswith("Training cancelled")
    assert not (tmp_path / "run" / "model").exists()


def test_training_asks_for_its_folders_first(panel, qtbot, caplog):
    with caplog.at_level(logging.ERROR):
        _click(qtbot, panel.ui.trainButton)
    assert any("Choose the dataset folder first." in r.getMessage() for r in caplog.records)


# ---------------------------------------------------------------------------------------------- the harness
def test_a_slot_that_raises_fails_the_test(panel, qtbot):
    """pytest-qt captures exceptions raised in slots (Qt would only print them), so a broken slot fails."""

    def broken() -> None:
        raise RuntimeError("a broken slot")

    unwrap(panel.ui.refreshModelsButton).clicked.connect(broken)
    with qtbot.captureExceptions() as exceptions:
        _click(qtbot, panel.ui.refreshModelsButton)
    assert len(exceptions) == 1 and "a broken slot" in str(exceptions[0][1])


# ---------------------------------------------------------------------------------------------- the rest of the module
def test_the_module_describes_itself(module):
    from slicer_standins import _ModuleParent

    parent = _ModuleParent()
    module.PancreasRSTN(parent)
    assert parent.title == "PancreasRSTN" and parent.categories == ["Segmentation"]
    assert "not a medical device" in parent.helpText and "CVPR 2018" in parent.acknowledgementText


def test_reload_also_reimports_the_library_folders(panel):
    packages = ("PancreasRSTNLib", "PancreasRSTNSlicerLib", "PancreasRSTNPanel")
    saved = {n: m for n, m in sys.modules.items() if n.split(".")[0] in packages}
    try:
        panel.onReload()
        assert not [n for n in sys.modules if n.split(".")[0] in packages]
        assert panel.reloaded == 1
    finally:
        sys.modules.update(saved)


def test_leaving_and_entering_the_module_unbinds_and_rebinds_the_gui(panel, scene):
    volume = _ct(scene)
    panel.exit()
    panel.ui.maxRoundsSpinBox.value = 7  # not bound while the module is not shown
    parameters = panel.logic.getParameterNode()
    assert parameters.maxRounds == 0
    parameters.inputVolume = None
    panel.enter()  # bound again, and the first CT of the scene becomes the input
    assert panel._parameterNode.inputVolume.GetID() == volume.GetID()
    panel.ui.maxRoundsSpinBox.value = 7
    assert panel._parameterNode.maxRounds == 7


def test_an_export_that_cannot_be_written_is_reported(panel, scene, qtbot, always_on, caplog):
    volume = _ct(scene)
    _segment(panel, qtbot, volume, rounds=1)
    FileDialogAnswers.answer("/sys/fs/no_permission/result.seg.nrrd")  # a folder nobody can create
    with caplog.at_level(logging.ERROR):
        _click(qtbot, panel.ui.exportNrrdButton)
    assert panel.ui.statusLabel.text == "Failed." and any(r.levelno >= logging.ERROR for r in caplog.records)


def test_installing_something_that_is_not_a_model_is_reported(panel, qtbot, tmp_path, caplog):
    (tmp_path / "not_a_model").mkdir()
    FileDialogAnswers.answer(str(tmp_path / "not_a_model"))
    with caplog.at_level(logging.ERROR):
        _click(qtbot, panel.ui.installFolderButton)
    assert any("No model.json found" in r.getMessage() for r in caplog.records)
    assert panel.ui.modelsTableWidget.rowCount == 1


def test_importing_a_reference_checkpoint_that_holds_code_is_refused(panel, qtbot, tmp_path, caplog):
    """The reference's .pkl files are read with torch.load(weights_only=True): a pickle with code is refused."""
    import pickle

    class Code:
        def __reduce__(self):
            return (print, ("this would run",))

    bad = tmp_path / "FD0:Z3_1.pkl"
    bad.write_bytes(pickle.dumps({"coarse_model.conv1_1.weight": Code()}))
    FileDialogAnswers.answer("", "", str(bad))  # Cancel for X and Y, the file for Z
    with caplog.at_level(logging.ERROR):
        _click(qtbot, panel.ui.importReferenceButton)
    assert [kind for kind, _ in FileDialogAnswers.asked] == ["open", "open", "open"]
    assert any("weights_only" in r.getMessage() for r in caplog.records)
    assert panel.ui.modelsTableWidget.rowCount == 1


def test_the_training_organ_is_kept_in_the_parameter_node(panel):
    panel.ui.trainOrganComboBox.currentIndex = unwrap(panel.ui.trainOrganComboBox).findData("spleen")
    assert panel._parameterNode.trainOrgan == "spleen"


def test_the_self_test_of_bad_inputs_runs_here(module, scene, models_root):
    case = module.PancreasRSTNTest("test_bad_inputs_leave_scene_unchanged")
    case.setUp()
    case.test_bad_inputs_leave_scene_unchanged()
    assert case.displayed == ["Bad inputs OK"]


def test_the_self_test_of_a_refinement_runs_here(module, scene, models_root):
    """The in-Slicer self-test's refinement step, on the phantom and the test model (its first step needs
    SampleData's download)."""
    from PancreasRSTNSlicerLib.run_controller import RunController
    from PancreasRSTNSlicerLib.self_test import FAST

    case = module.PancreasRSTNTest("test_default_model_on_sample_ct")
    case.setUp()
    logic = case.logic_class()
    volume = _ct(scene)
    first = RunController(logic).run(volume, FAST)
    case.check_refinement(logic, volume, first.segmentation)
    assert case.displayed == ["Refining from the result's segment"]


def test_a_screenshot_of_the_panel_after_a_run(panel, scene, qtbot, always_on, tmp_path):
    """widget.grab() of the real panel; PANCREAS_RSTN_SCREENSHOT=path keeps it (the catalogue screenshot)."""
    import os

    from PySide6 import QtWidgets

    volume = _ct(scene)
    _segment(panel, qtbot, volume, rounds=2)
    host = unwrap(panel.parent)
    host.resize(520, 1100)
    for button in unwrap(panel.parent).findChildren(QtWidgets.QWidget):
        if type(button).__name__ == "ctkCollapsibleButton" and button.objectName() in (
                "modelsCollapsibleButton", "trainingCollapsibleButton", "dependenciesCollapsibleButton"):
            button.collapsed = True
    QtWidgets.QApplication.processEvents()
    image = host.grab().toImage()
    target = Path(os.environ.get("PANCREAS_RSTN_SCREENSHOT") or tmp_path / "panel.png")
    assert image.save(str(target))
    colours = {image.pixel(x, y) for x in range(0, image.width(), 7) for y in range(0, image.height(), 7)}
    assert image.width() >= 400 and len(colours) > 20  # a drawn panel, not a blank rectangle
