"""Scene-node helpers shared by the run session and the Logic: removing what a run made (with display,
storage and sequence proxy nodes, folder by folder), terminology, the shared colour
tables, and the subject-hierarchy folders of earlier runs. MRML only (no Qt)."""

from __future__ import annotations

import numpy as np

from PancreasRSTNLib.organs import ORGANS, get_organ

EN_DASH = "\u2013"
RUN_ATTRIBUTE = "PancreasRSTN.Run"
INPUT_ATTRIBUTE = "PancreasRSTN.InputNodeID"
REFINED_FROM_ATTRIBUTE = "PancreasRSTN.RefinedFrom"  # "<segmentation node ID>/<segment ID>" of a refinement
ROLE_ATTRIBUTE = "PancreasRSTN.Role"
ORGAN_COLOR_TABLE_NAME = "PancreasRSTN organs"
VIRIDIS_NAME = "PancreasRSTN viridis"
TERMINOLOGY_CONTEXT = "Segmentation category and type - 3D Slicer General Anatomy list"
ANATOMICAL_STRUCTURE = ("123037004", "SCT", "Anatomical Structure")

# matplotlib's viridis sampled at 17 points (perceptually uniform); interpolated to 256 entries.
_VIRIDIS_ANCHORS = (
    (0.267, 0.0049, 0.3294), (0.2823, 0.095, 0.4173), (0.2788, 0.1755, 0.4834), (0.259, 0.2515, 0.5247),
    (0.2297, 0.3224, 0.5457), (0.1994, 0.3876, 0.5546), (0.1727, 0.4488, 0.5579), (0.149, 0.5081, 0.5573),
    (0.1276, 0.5669, 0.5506), (0.1206, 0.6258, 0.5335), (0.1579, 0.6838, 0.5017), (0.2461, 0.7389, 0.452),
    (0.3692, 0.7889, 0.3829), (0.516, 0.8312, 0.2943), (0.6785, 0.8637, 0.1895), (0.8456, 0.8873, 0.0997),
    (0.9932, 0.9062, 0.1439),
)


def remove_node(scene, node) -> None:
    """Remove a node with its display and storage nodes (the Slicer application does this itself; a bare
    slicer-core scene does not)."""
    if node is None or node.GetScene() is None:
        return
    dependents = []
    for i in range(node.GetNumberOfDisplayNodes() if hasattr(node, "GetNumberOfDisplayNodes") else 0):
        dependents.append(node.GetNthDisplayNode(i))
    if hasattr(node, "GetStorageNode"):
        dependents.append(node.GetStorageNode())
    scene.RemoveNode(node)
    for dependent in dependents:
        if dependent is not None and dependent.GetScene() is not None:
            scene.RemoveNode(dependent)


def remove_browser(scene, browser) -> None:
    """Remove a sequence browser, then its proxy nodes (in this order: the sequences logic re-creates a
    proxy removed while its browser still exists)."""
    import vtk

    if browser is None or browser.GetScene() is None:
        return
    proxies = vtk.vtkCollection()
    browser.GetAllProxyNodes(proxies)
    proxy_nodes = [proxies.GetItemAsObject(i) for i in range(proxies.GetNumberOfItems())]
    remove_node(scene, browser)
    for proxy in proxy_nodes:
        remove_node(scene, proxy)


def remove_folder(scene, sh, folder_item: int) -> None:
    """Remove a subject-hierarchy folder, every node under it (browsers with their proxies) and the folder.

    Done node by node: ``RemoveItem(item, removeDataNode=True, recursive=True)`` hangs on a bare slicer-core
    scene holding sequence browsers."""
    import vtk

    children = vtk.vtkIdList()
    sh.GetItemChildren(folder_item, children, True)
    nodes = [sh.GetItemDataNode(children.GetId(i)) for i in range(children.GetNumberOfIds())]
    for node in nodes:
        if node is not None and node.IsA("vtkMRMLSequenceBrowserNode"):
            remove_browser(scene, node)
    for node in reversed(nodes):
        remove_node(scene, node)
    children = vtk.vtkIdList()
    sh.GetItemChildren(folder_item, children, True)
    for i in reversed(range(children.GetNumberOfIds())):
        sh.RemoveItem(children.GetId(i), False, False)
    sh.RemoveItem(folder_item, False, False)


def terminology_entry(organ: str) -> str:
    """Serialized Slicer terminology entry (SNOMED CT category and type) for an organ."""
    import slicer

    o = get_organ(organ)
    code, scheme, meaning = ANATOMICAL_STRUCTURE
    return slicer.vtkSlicerTerminologiesModuleLogic.SerializeTerminologyEntry(
        TERMINOLOGY_CONTEXT, code, scheme, meaning, o.snomed_code, "SCT", o.snomed_meaning,
        "", "", "", "", "", "", "", "", "", "")


def organ_color_table(scene) -> tuple[object, bool]:
    """The labelmaps' colour table (one entry per organ, standard colours), created once per scene:
    (node, whether it was created now)."""
    node = scene.GetFirstNodeByName(ORGAN_COLOR_TABLE_NAME)
    if node is not None and node.IsA("vtkMRMLColorTableNode"):
        return node, False
    node = scene.AddNewNodeByClass("vtkMRMLColorTableNode", ORGAN_COLOR_TABLE_NAME)
    node.SetTypeToUser()
    node.SetNumberOfColors(len(ORGANS) + 1)
    node.SetColor(0, "Background", 0.0, 0.0, 0.0, 0.0)
    for organ in ORGANS.values():
        node.SetColor(organ.label_value, organ.display_name, *organ.color, 1.0)
    return node, True


def viridis_color_node(scene) -> tuple[object, bool]:
    """A perceptual colour map for saliency: Slicer's Viridis when present, else our own copy:
    (node, whether it was created now)."""
    for name in ("Viridis", VIRIDIS_NAME):
        nodes = scene.GetNodesByName(name)
        for i in range(nodes.GetNumberOfItems()):
            node = nodes.GetItemAsObject(i)
            if node.IsA("vtkMRMLColorNode"):
                return node, False
    node = scene.AddNewNodeByClass("vtkMRMLColorTableNode", VIRIDIS_NAME)
    node.SetTypeToUser()
    anchors = np.array(_VIRIDIS_ANCHORS)
    x = np.linspace(0, 1, len(anchors))
    t = np.linspace(0, 1, 256)
    rgb = np.stack([np.interp(t, x, anchors[:, c]) for c in range(3)], axis=1)
    node.SetNumberOfColors(256)
    for i, (r, g, b) in enumerate(rgb):
        node.SetColor(i, f"{i}", float(r), float(g), float(b), 1.0)
    return node, True


def run_folders(sh, input_node) -> list[int]:
    """Subject-hierarchy folders of earlier runs on this input."""
    import vtk

    ids = vtk.vtkIdList()
    sh.GetItemChildren(sh.GetSceneItemID(), ids, True)
    out = []
    for i in range(ids.GetNumberOfIds()):
        item = ids.GetId(i)
        same_input = sh.GetItemAttribute(item, INPUT_ATTRIBUTE) == input_node.GetID()
        if same_input and sh.GetItemAttribute(item, RUN_ATTRIBUTE):
            out.append(item)
    return out


def next_run_number(sh, input_node) -> int:
    numbers = [int(sh.GetItemAttribute(item, RUN_ATTRIBUTE)) for item in run_folders(sh, input_node)]
    return max(numbers, default=0) + 1


def _holds(sh, folder_item: int, node) -> bool:
    """Does the folder hold ``node`` (at any depth)?"""
    item = sh.GetItemByDataNode(node)
    while item:
        if item == folder_item:
            return True
        item = sh.GetItemParent(item)
    return False


def remove_previous_runs(scene, sh, input_node, keep_folder: int = 0, keep_nodes=()) -> int:
    """Remove earlier runs' folders and nodes (only when the user asked to replace them); a folder that holds one
    of ``keep_nodes`` (a person's segmentation a refinement read) is kept."""
    removed = 0
    for item in run_folders(sh, input_node):
        if item != keep_folder and not any(_holds(sh, item, node) for node in keep_nodes):
            remove_folder(scene, sh, item)
            removed += 1
    return removed
