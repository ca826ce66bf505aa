"""A picture of an axial slice view drawn from MRML volume nodes with plain VTK (no Slicer application, no Qt).

What Slicer's Red view shows, layer by layer: the background volume with its display node's window/level, a
foreground volume through its display node's colour node and window/level at an opacity, and a label volume filled
at an opacity with its outline drawn. Each layer is resampled onto one axial plane in RAS with ``vtkImageReslice``
from the node's voxels and its RAS-to-IJK matrix (a parent transform is not applied), and shown as Slicer's axial
view shows it: anterior at the top, the patient's right on the left. Used by ``scripts/make_catalogue_screenshot.py``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import vtk
from vtk.util import numpy_support


@dataclass
class SliceLayers:
    """What to draw: ``background`` (a scalar volume node), optional ``foreground`` (scalar volume) and ``label``
    (labelmap volume, values > 0 are drawn in its colour node's colours, else ``label_color``)."""

    background: object
    foreground: object = None
    label: object = None
    foreground_opacity: float = 0.5
    label_opacity: float = 0.35
    label_color: tuple[float, float, float] = (0.85, 0.6, 0.4)


def _ras_to_ijk(node) -> vtk.vtkMatrix4x4:
    m = vtk.vtkMatrix4x4()
    node.GetRASToIJKMatrix(m)
    return m


def _ijk_to_ras(node) -> np.ndarray:
    m = vtk.vtkMatrix4x4()
    node.GetIJKToRASMatrix(m)
    return np.array([[m.GetElement(r, c) for c in range(4)] for r in range(4)])


def volume_ras_bounds(node) -> np.ndarray:
    """(3, 2) array: the RAS min and max of the node's voxel centres."""
    extent = node.GetImageData().GetExtent()
    corners = np.array([[i, j, k, 1.0] for i in extent[0:2] for j in extent[2:4] for k in extent[4:6]])
    ras = (_ijk_to_ras(node) @ corners.T)[:3].T
    return np.stack([ras.min(axis=0), ras.max(axis=0)], axis=1)


def reslice_axial(node, z: float, origin_xy: tuple[float, float], spacing: float, size: tuple[int, int],
                  nearest: bool = False) -> np.ndarray:
    """The node's voxels on the axial plane RAS z=``z``: a (rows, columns) float array, row r at RAS
    y = origin_y + r * spacing and column c at x = origin_x + c * spacing (not yet flipped for display); points
    outside the volume are NaN."""
    source = vtk.vtkImageData()
    source.ShallowCopy(node.GetImageData())
    source.SetOrigin(0.0, 0.0, 0.0)  # the node's geometry is its IJK-to-RAS matrix, not the image data's
    source.SetSpacing(1.0, 1.0, 1.0)
    transform = vtk.vtkTransform()
    transform.SetMatrix(_ras_to_ijk(node))
    reslice = vtk.vtkImageReslice()
    reslice.SetInputData(source)
    reslice.SetResliceTransform(transform)
    reslice.SetOutputOrigin(float(origin_xy[0]), float(origin_xy[1]), float(z))
    reslice.SetOutputSpacing(spacing, spacing, 1.0)
    reslice.SetOutputExtent(0, size[0] - 1, 0, size[1] - 1, 0, 0)
    if nearest:
        reslice.SetInterpolationModeToNearestNeighbor()
    else:
        reslice.SetInterpolationModeToLinear()
    reslice.SetOutputScalarType(vtk.VTK_FLOAT)
    reslice.SetBackgroundLevel(float("nan"))
    reslice.Update()
    values = numpy_support.vtk_to_numpy(reslice.GetOutput().GetPointData().GetScalars())
    return values.reshape(size[1], size[0]).astype(np.float32)


def _window(node) -> tuple[float, float]:
    display = node.GetDisplayNode()
    if display is None or not hasattr(display, "GetWindow"):
        return 400.0, 40.0
    return float(display.GetWindow()), float(display.GetLevel())


def _grey(values: np.ndarray, window: float, level: float) -> np.ndarray:
    grey = np.clip((values - (level - window / 2.0)) / max(window, 1e-6), 0.0, 1.0)
    return np.nan_to_num(grey, nan=0.0)


def _foreground_rgb(node, values: np.ndarray) -> np.ndarray:
    """The foreground through its colour node's lookup table (``vtkImageMapToColors``) at its window/level."""
    window, level = _window(node)
    display = node.GetDisplayNode()
    color_node = display.GetColorNode() if display is not None else None
    table = vtk.vtkLookupTable()
    if color_node is not None and color_node.GetLookupTable() is not None:
        table.DeepCopy(color_node.GetLookupTable())
    else:
        table.SetHueRange(0.0, 0.0)
        table.SetSaturationRange(0.0, 0.0)
        table.Build()
    table.SetTableRange(level - window / 2.0, level + window / 2.0)
    image = vtk.vtkImageData()
    image.SetDimensions(values.shape[1], values.shape[0], 1)
    image.GetPointData().SetScalars(numpy_support.numpy_to_vtk(
        np.nan_to_num(values, nan=level - window / 2.0).ravel(), deep=True, array_type=vtk.VTK_FLOAT))
    mapper = vtk.vtkImageMapToColors()
    mapper.SetInputData(image)
    mapper.SetLookupTable(table)
    mapper.SetOutputFormatToRGB()
    mapper.Update()
    rgb = numpy_support.vtk_to_numpy(mapper.GetOutput().GetPointData().GetScalars())
    return rgb.reshape(values.shape[0], values.shape[1], 3).astype(np.float32) / 255.0


def _label_colors(node, values: np.ndarray, fallback: tuple[float, float, float]) -> np.ndarray:
    display = node.GetDisplayNode()
    color_node = display.GetColorNode() if display is not None else None
    rgb = np.zeros(values.shape + (3,), dtype=np.float32)
    for value in np.unique(values[values > 0]).astype(int):
        colour = [0.0, 0.0, 0.0, 0.0]
        found = color_node is not None and value < color_node.GetNumberOfColors() and color_node.GetColor(value, colour)
        rgb[values == value] = colour[:3] if found and any(colour[:3]) else fallback
    return rgb


def _outline(mask: np.ndarray, width: int) -> np.ndarray:
    inner = mask.copy()
    for _ in range(width):
        shrunk = inner.copy()
        shrunk[1:, :] &= inner[:-1, :]
        shrunk[:-1, :] &= inner[1:, :]
        shrunk[:, 1:] &= inner[:, :-1]
        shrunk[:, :-1] &= inner[:, 1:]
        inner = shrunk
    return mask & ~inner


def mask_centre_ras(label) -> np.ndarray:
    """The RAS point at the centre of the label's non-zero voxels (the view's centre in the screenshot)."""
    image = label.GetImageData()
    dims = image.GetDimensions()
    array = numpy_support.vtk_to_numpy(image.GetPointData().GetScalars()).reshape(dims[2], dims[1], dims[0])
    k, j, i = np.nonzero(array)
    if k.size == 0:
        raise ValueError(f"'{label.GetName()}' holds no label voxels.")
    extent = image.GetExtent()
    centre = np.array([i.mean() + extent[0], j.mean() + extent[2], k.mean() + extent[4], 1.0])
    return (_ijk_to_ras(label) @ centre)[:3]


def render_axial(layers: SliceLayers, z: float, centre_xy: tuple[float, float] | None = None,
                 field_mm: float | None = None, pixels: int = 512) -> np.ndarray:
    """An axial slice view at RAS z=``z``: a (pixels, pixels, 3) uint8 RGB image, anterior up, patient right on
    the left. ``field_mm`` is the side of the square shown (default: the background's larger in-plane extent),
    centred on ``centre_xy`` (default: the background's centre)."""
    bounds = volume_ras_bounds(layers.background)
    if centre_xy is None:
        centre_xy = (float(bounds[0].mean()), float(bounds[1].mean()))
    if field_mm is None:
        field_mm = float(max(bounds[0, 1] - bounds[0, 0], bounds[1, 1] - bounds[1, 0]))
    spacing = field_mm / pixels
    origin = (centre_xy[0] - field_mm / 2.0 + spacing / 2.0, centre_xy[1] - field_mm / 2.0 + spacing / 2.0)
    size = (pixels, pixels)
    rgb = np.repeat(_grey(reslice_axial(layers.background, z, origin, spacing, size), *_window(layers.background))
                    [..., None], 3, axis=2)
    if layers.foreground is not None:
        values = reslice_axial(layers.foreground, z, origin, spacing, size)
        alpha = np.where(np.isnan(values), 0.0, layers.foreground_opacity)[..., None]
        rgb = rgb * (1.0 - alpha) + _foreground_rgb(layers.foreground, values) * alpha
    if layers.label is not None:
        values = np.nan_to_num(reslice_axial(layers.label, z, origin, spacing, size, nearest=True), nan=0.0)
        colours = _label_colors(layers.label, values, layers.label_color)
        mask = values > 0
        fill = mask[..., None] * layers.label_opacity
        rgb = rgb * (1.0 - fill) + colours * fill
        edge = _outline(mask, max(1, pixels // 256))
        rgb[edge] = colours[edge]
    # rows run posterior to anterior (RAS y) and columns towards the patient's right (RAS x): flip both for display
    return (np.clip(rgb[::-1, ::-1], 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
