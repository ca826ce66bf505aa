"""The module's self-test inside the Slicer application (``Slicer --testing``): the default model on SampleData's
abdominal CTA (CTAAbdomenPanoramix, downloaded at run time), a refinement from its result, and bad inputs
leaving the scene as it was.

``PancreasRSTNTest`` in PancreasRSTN.py is ``SelfTest`` on Slicer's ``ScriptedLoadableModuleTest`` (which gives
``delayDisplay`` and the unittest assertions). It needs the application's ``slicer.mrmlScene`` and SampleData, so
the pytest suites test the same behaviour on slicer-core instead.
"""

from __future__ import annotations

import numpy as np

from PancreasRSTNLib.errors import InputImageError

from .guidance_nodes import GuidanceNodes, segment_to_image
from .logic import RunOptions
from .run_controller import RunController

#: The self-test's runs: the default pancreas model, two fine rounds, on the CPU.
FAST = RunOptions(organs=["pancreas"], max_iter=2, device="cpu")


class SelfTest:
    """The self-test's methods; the module's test class gives ``logic_class`` and Slicer's test base."""

    logic_class: type

    def setUp(self) -> None:
        import slicer

        slicer.mrmlScene.Clear()

    def runTest(self) -> None:
        self.setUp()
        self.test_default_model_on_sample_ct()
        self.setUp()
        self.test_bad_inputs_leave_scene_unchanged()

    def test_default_model_on_sample_ct(self) -> None:
        import SampleData
        import slicer

        logic = self.logic_class()
        self.delayDisplay("Loading the SampleData abdominal CTA (downloads once)")
        volume = SampleData.SampleDataLogic().downloadSample("CTAAbdomenPanoramix")
        before = slicer.util.arrayFromVolume(volume).copy()
        self.assertTrue([m for m in logic.installed_models() if m.organ == "pancreas" and not m.synthetic],
                        "the bundled real-CT pancreas model must be installed with the extension")
        self.delayDisplay("Segmenting with the default pancreas model (2 rounds)")
        rounds = []
        result = RunController(logic).run(volume, FAST, on_round=rounds.append)
        np.testing.assert_array_equal(slicer.util.arrayFromVolume(volume), before)  # input untouched
        self.assertGreaterEqual(len(rounds), 2)
        self.assertEqual(rounds[0].labelmap.GetName(), "Pancreas \u2013 round 0")
        self.assertIn("15776009", result.segmentation.GetSegmentation().GetNthSegment(0).GetTerminology())
        self.assertEqual(rounds[-1].labelmap.GetImageData().GetDimensions(), volume.GetImageData().GetDimensions())
        self.check_refinement(logic, volume, result.segmentation)

    def check_refinement(self, logic, volume, segmentation) -> None:
        """Refine from a run's segment, as the panel's "Refine from segment" does: round 0 is the segment, the
        new run is named "... refined", and the person's segmentation is only read."""
        import SimpleITK as sitk
        import slicer

        segment_id = segmentation.GetSegmentation().GetNthSegmentID(0)
        before = sitk.GetArrayFromImage(segment_to_image(slicer.mrmlScene, segmentation, segment_id, volume))
        self.delayDisplay("Refining from the result's segment")
        rounds = []
        refined = RunController(logic).run(volume, FAST, on_round=rounds.append,
                                           guidance=GuidanceNodes(segmentation, segment_id))
        self.assertEqual([r.stage for r in rounds][:2], ["prior", "fine"])
        self.assertIn("refined", refined.segmentation.GetName())
        after = sitk.GetArrayFromImage(segment_to_image(slicer.mrmlScene, segmentation, segment_id, volume))
        np.testing.assert_array_equal(after, before)  # the segment refined from is unchanged

    def test_bad_inputs_leave_scene_unchanged(self) -> None:
        import slicer

        logic = self.logic_class()
        label = slicer.util.addVolumeFromArray(np.zeros((4, 5, 6), np.uint8), nodeClassName="vtkMRMLLabelMapVolumeNode")
        for node in (None, label):
            n_before = slicer.mrmlScene.GetNumberOfNodes()
            with self.assertRaises(InputImageError):
                RunController(logic).run(node, FAST)
            self.assertEqual(slicer.mrmlScene.GetNumberOfNodes(), n_before)
        self.delayDisplay("Bad inputs OK")
