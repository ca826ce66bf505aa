"""Scene services the Logic needs, found in the running Slicer or built on a bare slicer-core scene.

In the Slicer application the module logics exist already (``slicer.modules.<name>.logic()``). With the
Qt-free slicer-core wheel (CI, scripts) ``create_core_context()`` builds a scene with the same logics.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass
class SceneContext:
    scene: Any  # vtkMRMLScene
    app_logic: Any = None  # vtkSlicerApplicationLogic (kept alive with the context)
    segmentations_logic: Any = None
    sequences_logic: Any = None
    subject_hierarchy_logic: Any = None
    terminologies_logic: Any = None

    @property
    def sh_node(self):
        import slicer

        return slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(self.scene)


def application_context() -> SceneContext:
    """The running Slicer application's scene and module logics."""
    import slicer

    modules = slicer.modules

    def logic(name: str):
        module = getattr(modules, name, None)
        return module.logic() if module is not None else None

    return SceneContext(
        scene=slicer.mrmlScene,
        app_logic=slicer.app.applicationLogic() if hasattr(slicer, "app") else None,
        segmentations_logic=logic("segmentations"),
        sequences_logic=logic("sequences"),
        subject_hierarchy_logic=logic("subjecthierarchy"),
        terminologies_logic=logic("terminologies"),
    )


def create_core_context() -> SceneContext:
    """A new scene with application, colour, subject hierarchy, segmentations and sequences logics
    (slicer-core, no Qt)."""
    import slicer
    from vtkmodules.vtkCommonCore import vtkCollection

    scene = slicer.vtkMRMLScene()
    app_logic = slicer.vtkSlicerApplicationLogic()
    app_logic.SetMRMLScene(scene)
    app_logic.GetColorLogic().SetMRMLScene(scene)
    app_logic.GetColorLogic().AddDefaultColorNodes()
    app_logic.SetSliceLogics(vtkCollection())
    app_logic.SetViewLogics(vtkCollection())

    def setup(logic, name: str):
        logic.SetMRMLApplicationLogic(app_logic)
        logic.SetMRMLScene(scene)
        app_logic.SetModuleLogic(name, logic)
        return logic

    sh_logic = setup(slicer.vtkSlicerSubjectHierarchyModuleLogic(), "SubjectHierarchy")
    seg_logic = setup(slicer.vtkSlicerSegmentationsModuleLogic(), "Segmentations")
    seq_logic = setup(slicer.vtkSlicerSequencesLogic(), "Sequences")
    return SceneContext(scene=scene, app_logic=app_logic, segmentations_logic=seg_logic, sequences_logic=seq_logic,
                        subject_hierarchy_logic=sh_logic)
