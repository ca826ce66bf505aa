"""A person's guidance from MRML nodes: a segment as the prior of a refinement ("Refine from segment") and a
markups ROI as the region of interest ("Limit to ROI"), turned into the core's ``Guidance`` on the CT's grid
(``PancreasRSTNLib.engine.guidance_input`` makes every check). Also places an ROI around a segment.

The person's nodes are only read: a segment is exported to a temporary labelmap that is removed again (with the
display and colour nodes the export makes), so the scene is left as it was whatever happens. MRML only (no Qt).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import SimpleITK as sitk

from PancreasRSTNLib.errors import InputImageError, OptionsError

from .mrml_geometry import node_array_view, volume_node_to_image
from .scene_nodes import ROLE_ATTRIBUTE, remove_node

if TYPE_CHECKING:
    from PancreasRSTNLib.engine.guidance import Guidance
    from PancreasRSTNLib.io.geometry import CanonicalGeometry

#: the margin of "ROI around segment", mm
ROI_MARGIN_MM = 10.0
#: the role of an ROI that "ROI around segment" made (it is moved, not duplicated, by the next click)
ROI_ROLE = "roi-around-segment"


@dataclass
class GuidanceNodes:
    """What the person chose besides the CT: a segment to refine (segmentation node and segment ID) and/or a
    markups ROI (vtkMRMLMarkupsROINode) that limits the result."""

    segmentation: Any = None
    segment_id: str = ""
    roi: Any = None
    refine: bool | None = None  # refine the segment; None: when one is given. Refine with none is refused

    def __post_init__(self) -> None:
        if self.refine is None:
            self.refine = self.segmentation is not None or bool(self.segment_id)

    @property
    def empty(self) -> bool:
        return not self.refine and self.roi is None


def segments(segmentation_node) -> list[tuple[str, str]]:
    """(segment ID, name) of every segment of a segmentation node, in order."""
    if segmentation_node is None:
        return []
    segmentation = segmentation_node.GetSegmentation()
    return [(segmentation.GetNthSegmentID(i), segmentation.GetNthSegment(i).GetName())
            for i in range(segmentation.GetNumberOfSegments())]


def segment_name(segmentation_node, segment_id: str) -> str:
    segment = segmentation_node.GetSegmentation().GetSegment(segment_id) if segmentation_node and segment_id else None
    return segment.GetName() if segment is not None else segment_id


def _chosen_segment(segmentation_node, segment_id: str):
    if segmentation_node is None or not segment_id:
        raise OptionsError("No segment chosen. Pick a segmentation and one of its segments (Refine from segment), "
                           "or use Segment for a run from scratch.")
    segment = segmentation_node.GetSegmentation().GetSegment(segment_id)
    if segment is None:
        raise OptionsError(f"'{segmentation_node.GetName()}' has no segment '{segment_id}' (was it removed?). Pick "
                           "one of its segments.")
    return segment


def segment_to_image(scene, segmentation_node, segment_id: str, reference_node) -> sitk.Image:
    """One segment as a UInt8 0/1 image on the reference volume's grid (Slicer's export, the reference volume as
    geometry). The segmentation is only read; every node the export makes is removed again."""
    import slicer
    import vtk

    segment = _chosen_segment(segmentation_node, segment_id)
    before = {scene.GetNthNode(i).GetID() for i in range(scene.GetNumberOfNodes())}
    labelmap = scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode", "PancreasRSTN temporary segment export")
    try:
        ids = vtk.vtkStringArray()
        ids.InsertNextValue(segment_id)
        exported = slicer.vtkSlicerSegmentationsModuleLogic.ExportSegmentsToLabelmapNode(
            segmentation_node, ids, labelmap, reference_node)
        if not exported or labelmap.GetImageData() is None:
            raise InputImageError(f"Could not export the segment '{segment.GetName()}' of "
                                  f"'{segmentation_node.GetName()}' onto the CT's grid.")
        image = volume_node_to_image(labelmap)
        inside = np.array(node_array_view(labelmap)) != 0
    finally:
        for node_id in {scene.GetNthNode(i).GetID() for i in range(scene.GetNumberOfNodes())} - before:
            remove_node(scene, scene.GetNodeByID(node_id))
    if not inside.any():
        raise InputImageError(f"The segment '{segment.GetName()}' of '{segmentation_node.GetName()}' is empty "
                              "inside the CT: nothing to refine. Draw the organ in it (Segment Editor), or pick "
                              "another segment.")
    binary = sitk.GetImageFromArray(inside.astype(np.uint8))
    binary.CopyInformation(image)
    return binary


def roi_box_lps(roi_node, reference_node=None) -> tuple[float, float, float, float, float, float]:
    """The axis-aligned box (x0, x1, y0, y1, z0, z1, LPS mm) around a markups ROI's corners (a rotated or
    transformed ROI gives the box around it), in the coordinates of the reference volume's grid (the world, less
    the volume's own parent transform)."""
    name = roi_node.GetName()
    if roi_node.GetNumberOfControlPoints() < 1:
        raise OptionsError(f"The ROI '{name}' is not placed yet. Place it (Markups), use ROI around segment, or "
                           "choose None.")
    bounds = [0.0] * 6
    roi_node.GetRASBounds(bounds)  # world coordinates
    bounds = _transform_bounds(bounds, reference_node, to_world=False)  # the CT's own (its grid's) coordinates
    if not all(np.isfinite(bounds)) or bounds[1] <= bounds[0] or bounds[3] <= bounds[2] or bounds[5] <= bounds[4]:
        raise OptionsError(f"The ROI '{name}' is flat (zero size along an axis). Give it a size in every "
                           "direction.")
    # RAS -> LPS: x and y change sign (so their bounds swap), z stays
    return (-bounds[1], -bounds[0], -bounds[3], -bounds[2], bounds[4], bounds[5])


def build_guidance(scene, ct_geometry: CanonicalGeometry, input_node, nodes: GuidanceNodes | None
                   ) -> Guidance | None:
    """The run's ``Guidance`` on the CT's canonical grid, checked by the core, or None without guidance."""
    from PancreasRSTNLib.engine.guidance_input import guidance_from_images, roi_from_box_reported

    if nodes is None or nodes.empty:
        return None
    prior = None
    if nodes.refine:
        prior = segment_to_image(scene, nodes.segmentation, nodes.segment_id, input_node)
    roi = roi_report = None
    if nodes.roi is not None:
        roi, roi_report = roi_from_box_reported(roi_box_lps(nodes.roi, input_node), ct_geometry)
        roi_report["node"] = nodes.roi.GetName()
    guidance = guidance_from_images(ct_geometry, prior, 1 if prior is not None else None, roi, roi_report)
    if prior is not None:
        guidance.report["prior"].update(segmentation=nodes.segmentation.GetName(),
                                        segment=segment_name(nodes.segmentation, nodes.segment_id))
    return guidance


def _transform_bounds(bounds, node, to_world: bool) -> list[float]:
    """Axis-aligned bounds (x0, x1, y0, y1, z0, z1, RAS) carried between a node's own coordinates and the world
    through its (linear) parent transform: the box around the eight transformed corners."""
    import vtk

    transform_node = node.GetParentTransformNode() if node is not None else None
    if transform_node is None:
        return list(bounds)
    transform = vtk.vtkGeneralTransform()
    (transform_node.GetTransformToWorld if to_world else transform_node.GetTransformFromWorld)(transform)
    corners = np.array([transform.TransformPoint(x, y, z) for x in bounds[0:2] for y in bounds[2:4]
                        for z in bounds[4:6]])
    lo, hi = corners.min(axis=0), corners.max(axis=0)
    return [lo[0], hi[0], lo[1], hi[1], lo[2], hi[2]]


def segment_bounds_ras(scene, segmentation_node, segment_id: str, reference_node) -> np.ndarray:
    """(x0, x1, y0, y1, z0, z1) world RAS of a segment's voxels (their outer faces) on the reference volume's
    grid. Read from Slicer's export: a segment's own bounds are those of the labelmap layer it shares."""
    image = segment_to_image(scene, segmentation_node, segment_id, reference_node)  # refuses an empty segment
    inside = np.argwhere(sitk.GetArrayViewFromImage(image) != 0)[:, ::-1]  # (i, j, k)
    lo, hi = inside.min(axis=0) - 0.5, inside.max(axis=0) + 0.5
    corners = np.array([image.TransformContinuousIndexToPhysicalPoint((float(i), float(j), float(k)))
                        for i in (lo[0], hi[0]) for j in (lo[1], hi[1]) for k in (lo[2], hi[2])])
    corners[:, :2] *= -1  # LPS -> RAS
    low, high = corners.min(axis=0), corners.max(axis=0)
    return np.array(_transform_bounds([low[0], high[0], low[1], high[1], low[2], high[2]], reference_node,
                                      to_world=True))


def place_roi_around_segment(scene, segmentation_node, segment_id: str, reference_node, roi_node=None,
                             margin_mm: float = ROI_MARGIN_MM):
    """An axis-aligned markups ROI around a segment (its voxels on the reference volume's grid) with
    ``margin_mm`` on every side. ``roi_node`` is moved when it is one this function made before; otherwise a new
    ROI node is added (a person's own ROI is never moved). Returns the ROI node."""
    import vtk

    if reference_node is None:
        raise OptionsError("Select the input CT volume first: the ROI is placed around the segment's voxels on it.")
    bounds = segment_bounds_ras(scene, segmentation_node, segment_id, reference_node)
    lo, hi = bounds[0::2] - margin_mm, bounds[1::2] + margin_mm
    if roi_node is None or roi_node.GetAttribute(ROLE_ATTRIBUTE) != ROI_ROLE:
        name = f"{segment_name(segmentation_node, segment_id)} ROI"
        roi_node = scene.AddNewNodeByClass("vtkMRMLMarkupsROINode", scene.GenerateUniqueName(name))
        roi_node.SetAttribute(ROLE_ATTRIBUTE, ROI_ROLE)
        roi_node.CreateDefaultDisplayNodes()
    else:
        roi_node.SetAndObserveTransformNodeID(None)
    roi_node.SetAndObserveObjectToNodeMatrix(vtk.vtkMatrix4x4())  # axis-aligned
    roi_node.SetCenter(*((lo + hi) / 2.0))
    roi_node.SetSize(*(hi - lo))
    return roi_node
