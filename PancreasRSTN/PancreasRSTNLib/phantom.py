"""Synthetic abdominal CT phantoms with a pancreas-like organ, for the demo, the tests and the trainer checks.

Why: no full 3-D CT with expert pancreas labels can be shipped, yet the demo model must be *trained* and
must generalise to unseen cases. Each seed draws a new body size, organ layout, pancreas shape and HU levels.

Anatomy is placed in patient space (LPS, millimetres) and written with a proper geometry, so that after
``geometry.to_canonical`` the spine is posterior (low row index), the liver is on the patient's right (low
column index) and the slice index increases toward the feet.

Label values of the multi-organ map (``multi_label=True``); with ``multi_label=False`` only the pancreas (1):

====  =============  ====  ==============
 1    pancreas         5   left kidney
 2    liver            6   aorta
 3    spleen           7   vertebra (bone)
 4    right kidney     8   duodenum
====  =============  ====  ==============
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk

PHANTOM_LABELS: dict[str, int] = {
    "pancreas": 1,
    "liver": 2,
    "spleen": 3,
    "right_kidney": 4,
    "left_kidney": 5,
    "aorta": 6,
    "vertebra": 7,
    "duodenum": 8,
}

#: Physical field of view (mm) along ITK x (right->left), y (anterior->posterior), z (axial) by default.
DEFAULT_FOV_MM = (340.0, 340.0, 192.0)
DEFAULT_SIZE = (128, 128, 64)


@dataclass
class _Grid:
    """Canonical-layout coordinates in mm: a (toward anterior), lat (toward left), i (toward the feet)."""

    a: np.ndarray  # (R,)
    lat: np.ndarray  # (C,)
    i: np.ndarray  # (S,)

    def index_range(self, axis: np.ndarray, low: float, high: float) -> slice:
        lo = int(np.searchsorted(axis, low, side="left"))
        hi = int(np.searchsorted(axis, high, side="right"))
        return slice(max(lo, 0), min(hi, axis.size))

    def block(self, center: Sequence[float], half: Sequence[float]):
        """The index box of an axis-aligned box in mm, plus its local (broadcastable) coordinates."""
        sa = self.index_range(self.a, center[0] - half[0], center[0] + half[0])
        sl = self.index_range(self.lat, center[1] - half[1], center[1] + half[1])
        si = self.index_range(self.i, center[2] - half[2], center[2] + half[2])
        a = (self.a[sa] - center[0])[:, None, None]
        lat = (self.lat[sl] - center[1])[None, :, None]
        i = (self.i[si] - center[2])[None, None, :]
        return (sa, sl, si), a, lat, i


class _Painter:
    """Paints HU values and labels into canonical arrays, one shape at a time, inside each shape's box only
    (so a 512x512x240 phantom takes seconds, not minutes)."""

    def __init__(self, grid: _Grid, shape: tuple[int, int, int]) -> None:
        self.grid = grid
        self.hu = np.full(shape, -1000.0, dtype=np.float32)
        self.label = np.zeros(shape, dtype=np.uint8)

    def paint(self, index: tuple[slice, slice, slice], mask: np.ndarray, hu: float | np.ndarray,
              label: int | None = None, clear_label: bool = True) -> None:
        if mask.size == 0 or not mask.any():
            return
        view = self.hu[index]
        if np.ndim(hu):
            view[mask] = np.broadcast_to(hu, mask.shape)[mask]
        else:
            view[mask] = hu
        lab = self.label[index]
        if label is not None:
            lab[mask] = label
        elif clear_label:
            lab[mask] = 0

    def ellipsoid(self, center: Sequence[float], radii: Sequence[float], hu: float | np.ndarray,
                  label: int | None = None, angle: float = 0.0, shell: float = 0.0,
                  shell_hu: float | None = None) -> np.ndarray | None:
        """An ellipsoid, optionally rotated by ``angle`` (rad) in the axial (a, lat) plane, with an optional
        shell of another HU (kidney cortex, bone cortex)."""
        rmax = max(radii[0], radii[1])
        index, a, lat, i = self.grid.block(center, (rmax, rmax, radii[2]))
        ca, sa = np.cos(angle), np.sin(angle)
        ar = ca * a + sa * lat
        lr = -sa * a + ca * lat
        d = (ar / radii[0]) ** 2 + (lr / radii[1]) ** 2 + (i / radii[2]) ** 2
        mask = d <= 1.0
        self.paint(index, mask, hu, label)
        if shell > 0 and shell_hu is not None:
            inner = (ar / max(radii[0] - shell, 1e-3)) ** 2 + (lr / max(radii[1] - shell, 1e-3)) ** 2 + (
                i / max(radii[2] - shell, 1e-3)
            ) ** 2
            self.paint(index, mask & (inner > 1.0), shell_hu, label)
        return mask

    def cylinder(self, center_al: Sequence[float], radii_al: Sequence[float], i_range: Sequence[float],
                 hu: float | np.ndarray, label: int | None = None, angle: float = 0.0) -> None:
        """An elliptic cylinder along the body axis (vessels, spine, muscles)."""
        ci = 0.5 * (i_range[0] + i_range[1])
        hi = 0.5 * (i_range[1] - i_range[0])
        rmax = max(radii_al)
        index, a, lat, _ = self.grid.block((center_al[0], center_al[1], ci), (rmax, rmax, hi))
        ca, sa = np.cos(angle), np.sin(angle)
        ar = ca * a + sa * lat
        lr = -sa * a + ca * lat
        mask2d = (ar / radii_al[0]) ** 2 + (lr / radii_al[1]) ** 2 <= 1.0
        n_i = index[2].stop - index[2].start
        mask = np.broadcast_to(mask2d, mask2d.shape[:2] + (n_i,))
        self.paint(index, mask, hu, label)

    def tube(self, points: np.ndarray, radii: np.ndarray, hu: float | np.ndarray, label: int | None = None
             ) -> np.ndarray:
        """A tube of varying radius along a sampled centreline (union of spheres), returned as a
        full-volume boolean mask for later use."""
        lo = (points - radii[:, None]).min(axis=0)
        hi = (points + radii[:, None]).max(axis=0)
        center = 0.5 * (lo + hi)
        index, a, lat, i = self.grid.block(center, 0.5 * (hi - lo))
        a, lat, i = a + center[0], lat + center[1], i + center[2]
        inside = np.zeros((a.shape[0], lat.shape[1], i.shape[2]), dtype=bool)
        for p, r in zip(points, radii, strict=True):  # ~50 centreline points, each a vectorised block operation
            inside |= (a - p[0]) ** 2 + (lat - p[1]) ** 2 + (i - p[2]) ** 2 <= r * r
        self.paint(index, inside, hu, label)
        full = np.zeros(self.hu.shape, dtype=bool)
        full[index] = inside
        return full


def _spline(control: np.ndarray, n: int) -> np.ndarray:
    """Catmull-Rom-like smooth curve through control points (piecewise cubic Hermite), n samples."""
    k = len(control)
    t = np.linspace(0.0, k - 1.0, n)
    seg = np.minimum(t.astype(int), k - 2)
    u = (t - seg)[:, None]
    p0, p1 = control[seg], control[seg + 1]
    m0 = 0.5 * (control[np.minimum(seg + 1, k - 1)] - control[np.maximum(seg - 1, 0)])
    m1 = 0.5 * (control[np.minimum(seg + 2, k - 1)] - control[seg])
    h00, h10, h01, h11 = 2 * u**3 - 3 * u**2 + 1, u**3 - 2 * u**2 + u, -2 * u**3 + 3 * u**2, u**3 - u**2
    return h00 * p0 + h10 * m0 + h01 * p1 + h11 * m1


def _canonical_phantom(size_xyz: tuple[int, int, int], spacing_xyz: tuple[float, float, float], seed: int,
                       multi_label: bool, noise_hu: float | None):
    rng = np.random.default_rng(seed)
    nx, ny, nz = size_xyz
    sx, sy, sz = spacing_xyz
    shape = (ny, nx, nz)  # canonical (R, C, S)
    grid = _Grid(
        a=((np.arange(ny) - (ny - 1) / 2.0) * sy).astype(np.float32),
        lat=((np.arange(nx) - (nx - 1) / 2.0) * sx).astype(np.float32),
        i=((np.arange(nz) - (nz - 1) / 2.0) * sz).astype(np.float32),
    )
    p = _Painter(grid, shape)
    u = rng.uniform
    lab = (lambda name: PHANTOM_LABELS[name]) if multi_label else (lambda name: None)
    z_all = (-1e4, 1e4)

    # Body: subcutaneous fat ellipse, muscle wall, visceral fat inside.
    body_l, body_a = u(140, 160), u(100, 118)
    body_c = u(-6, 6)
    p.cylinder((body_c, 0.0), (body_a, body_l), z_all, u(-115, -95))
    fat_t = u(8, 18)
    p.cylinder((body_c, 0.0), (body_a - fat_t, body_l - fat_t), z_all, u(35, 50))
    wall = u(7, 11)
    p.cylinder((body_c, 0.0), (body_a - fat_t - wall, body_l - fat_t - wall), z_all, u(-105, -85))
    inner_a, inner_l = body_a - fat_t - wall, body_l - fat_t - wall
    post = body_c - inner_a  # posterior inner wall (a coordinate)

    # Paraspinal muscles and psoas.
    for side in (-1, 1):
        p.cylinder((post + 22, side * u(28, 36)), (u(18, 24), u(20, 26)), z_all, u(40, 55))
        p.cylinder((post + 52, side * u(30, 40)), (u(12, 16), u(12, 16)), (u(-20, 10), 1e4), u(40, 55))

    # Bowel loops (anterior, lower abdomen) with gas pockets.
    for _ in range(int(rng.integers(5, 9))):
        c = (u(0, inner_a * 0.8) + body_c, u(-inner_l * 0.7, inner_l * 0.7), u(10, 110))
        r = (u(12, 22), u(12, 22), u(15, 30))
        p.ellipsoid(c, r, u(20, 45), angle=u(0, np.pi))
        if rng.random() < 0.7:
            p.ellipsoid((c[0] + u(-3, 3), c[1] + u(-3, 3), c[2]), (r[0] * 0.5, r[1] * 0.5, r[2] * 0.4),
                        u(-1000, -850))

    # Liver: large, patient's right (negative lat), superior; with hepatic vessels.
    liver_hu = u(52, 70)
    liver_c = (body_c + u(-10, 15), -inner_l + u(55, 70), u(-60, -35))
    p.ellipsoid(liver_c, (inner_a * u(0.75, 0.9), u(55, 68), u(70, 90)), liver_hu, lab("liver"), angle=u(-0.3, 0.3))
    # Stomach: left anterior superior, with an air-fluid level anteriorly.
    st_c = (body_c + u(10, 35), u(35, 60), u(-80, -50))
    p.ellipsoid(st_c, (u(25, 35), u(28, 38), u(35, 50)), u(25, 40), angle=u(-0.5, 0.5))
    p.ellipsoid((st_c[0] + 12, st_c[1], st_c[2] - 5), (12, 18, 20), u(-1000, -900))
    # Spleen: left posterior, superior.
    p.ellipsoid((post + u(40, 55), inner_l - u(30, 40), u(-70, -45)), (u(22, 30), u(18, 24), u(35, 50)),
                u(45, 58), lab("spleen"), angle=u(0.3, 0.8))
    # Kidneys with enhanced cortex.
    for side, name in ((-1, "right_kidney"), (1, "left_kidney")):
        c = (post + u(48, 60), side * u(62, 75), u(0, 30) + (8 if side < 0 else 0))
        p.ellipsoid(c, (u(20, 26), u(24, 30), u(45, 55)), u(25, 35), lab(name), angle=side * u(0.3, 0.6),
                    shell=u(4, 6), shell_hu=u(110, 160))

    # Spine: vertebral body (marrow + cortex), canal, spinous process; posterior midline.
    vb_a = post + u(40, 48)
    vb_r = u(16, 20)
    p.cylinder((vb_a, 0.0), (vb_r, vb_r * 1.1), z_all, u(850, 1000), lab("vertebra"))
    p.cylinder((vb_a, 0.0), (vb_r - 3, vb_r * 1.1 - 3), z_all, u(300, 420), lab("vertebra"))
    p.cylinder((vb_a - vb_r - 8, 0.0), (7, 8), z_all, u(10, 25))  # spinal canal
    p.cylinder((vb_a - vb_r - 22, 0.0), (9, 4), z_all, u(500, 800), lab("vertebra"))  # spinous process
    # Discs: lower HU bands across the vertebral body every ~30 mm.
    for zc in np.arange(u(-100, -70), 110, u(28, 34)):
        p.cylinder((vb_a, 0.0), (vb_r - 0.5, vb_r * 1.1 - 0.5), (zc - 3, zc + 3), u(70, 100))

    # Great vessels, contrast enhanced: aorta anterior-left of the spine, IVC anterior-right.
    ao_a, ao_l, ao_r = vb_a + vb_r + u(8, 12), u(8, 18), u(9, 12)
    p.cylinder((ao_a, ao_l), (ao_r, ao_r), z_all, u(150, 220), lab("aorta"))
    p.cylinder((ao_a + u(-4, 4), -u(18, 28)), (u(8, 11), u(10, 14)), z_all, u(110, 150))

    # Pancreas: head near the duodenum (right), body arching anteriorly over the aorta, tail toward the
    # spleen (left, posterior, a little superior). Slightly lobulated radius.
    front = ao_a + ao_r  # anterior edge of the aorta
    head = np.array([front + u(2, 10), -u(28, 45), u(5, 25)])
    neck = np.array([front + u(14, 24), -u(8, 18), head[2] - u(0, 8)])
    body = np.array([front + u(16, 26), u(15, 35), neck[2] - u(0, 10)])
    tail = np.array([post + u(60, 80), inner_l - u(40, 55), body[2] - u(5, 15)])
    hook = head + np.array([u(-4, 4), u(-4, 4), u(14, 24)])  # uncinate / lower head
    control = np.stack([hook, head, neck, body, tail]).astype(np.float32)
    n_pts = 48
    centre = _spline(control, n_pts)
    t = np.linspace(0.0, 1.0, n_pts)
    r_head, r_body, r_tail = u(11, 15), u(7, 10), u(5.5, 8)
    radii = np.interp(t, [0, 0.3, 0.6, 1.0], [r_head * 0.85, r_head, r_body, r_tail])
    radii = radii * (1 + 0.12 * np.sin(2 * np.pi * (t * u(3, 6) + u(0, 1))))

    # Duodenum C-loop around the head (lateral), and the splenic vein along the back of the body.
    duo = np.stack([head + [u(-8, 0), -r_head - u(8, 12), -u(25, 35)], head + [0, -r_head - u(10, 14), 0],
                    head + [u(0, 6), -r_head - u(6, 10), u(25, 35)], hook + [0, u(2, 10), u(12, 18)]])
    duo_pts, duo_r = _spline(duo.astype(np.float32), 32), np.full(32, u(8, 11))
    p.tube(duo_pts, duo_r, u(30, 45), lab("duodenum"))  # enhancing wall
    p.tube(duo_pts, duo_r - 3.0, u(0, 20), lab("duodenum"))  # fluid-filled lumen
    panc_hu = u(35, 55)
    # lobulated texture: a smooth random field inside the organ (added after painting)
    mask = p.tube(centre, radii, panc_hu, 1)
    sv = centre[n_pts // 3:] + np.array([-radii[n_pts // 3:].mean() * 0.8, 0, 0])
    p.tube(sv.astype(np.float32), np.full(len(sv), u(3, 4.5)), u(140, 190))
    if not multi_label:
        p.label[p.label != 1] = 0

    # Noise and a tiny texture in the pancreas, then integer HU like a scanner.
    sigma = u(10, 20) if noise_hu is None else float(noise_hu)
    hu = p.hu
    if mask.any():
        hu[mask & (p.label == 1)] += rng.normal(0, 6, size=int(np.count_nonzero(mask & (p.label == 1))))
    hu += rng.standard_normal(size=shape, dtype=np.float32) * np.float32(sigma)
    np.clip(hu, -1024, 3071, out=hu)
    return np.rint(hu).astype(np.int16), p.label


def _to_image(canonical: np.ndarray, spacing_xyz: tuple[float, float, float]) -> sitk.Image:
    """Canonical (A, L, I) array -> ITK image with identity direction (index x = L, y = P, z = S)."""
    arr = np.ascontiguousarray(canonical.transpose(2, 0, 1)[::-1, ::-1, :])  # [z, y, x]
    img = sitk.GetImageFromArray(arr)
    img.SetSpacing(tuple(float(s) for s in spacing_xyz))
    nx, ny, nz = img.GetSize()
    img.SetOrigin(tuple(-(n - 1) / 2.0 * s for n, s in zip((nx, ny, nz), spacing_xyz, strict=True)))
    img.SetDirection((1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0))
    return img


def default_spacing(size_xyz: Sequence[int]) -> tuple[float, float, float]:
    """The ITK spacing (x, y, z; mm) of a phantom of this size: the fixed field of view over the voxel counts."""
    return tuple(f / n for f, n in zip(DEFAULT_FOV_MM, size_xyz, strict=True))  # type: ignore[return-value]


def canonical_spacing(size_xyz: Sequence[int]) -> tuple[float, float, float]:
    """The spacing (mm) of ``make_phantom_canonical``'s arrays, in canonical axis order (rows, cols, slices)."""
    sx, sy, sz = default_spacing(size_xyz)
    return (sy, sx, sz)


def phantom_name(seed: int) -> str:
    """A phantom case's name, the same in training, evaluation and model.json."""
    return f"phantom_{seed:05d}"


def phantom_series(size_xyz: Sequence[int], first_seed: int, count: int
                   ) -> Iterator[tuple[str, np.ndarray, np.ndarray]]:
    """(name, HU, pancreas label) of the canonical phantoms with seeds first_seed .. first_seed+count-1, made one
    at a time: the trainer's cases and the evaluation's are the same phantoms of the same seeds."""
    for seed in range(first_seed, first_seed + count):
        hu, label = make_phantom_canonical(size_xyz, seed=seed)
        yield phantom_name(seed), hu, label


def make_phantom(size: Sequence[int] = DEFAULT_SIZE, spacing: Sequence[float] | None = None, seed: int = 0,
                 multi_label: bool = False, noise_hu: float | None = None) -> tuple[sitk.Image, sitk.Image]:
    """Make one phantom case: (CT image int16 HU, label image uint8) on the same grid.

    ``size`` is the ITK size (x: right->left, y: anterior->posterior, z: axial slices). ``spacing`` (mm, ITK
    order) defaults to a fixed field of view of 340 x 340 x 192 mm, so anatomy keeps its physical size at any
    resolution. The label is 1 for the pancreas (plus the other organs of ``PHANTOM_LABELS`` when
    ``multi_label``).
    """
    size_xyz = tuple(int(s) for s in size)
    if len(size_xyz) != 3 or min(size_xyz) < 8:
        raise ValueError(f"Phantom size {size_xyz} is invalid: give three sizes of at least 8 voxels, e.g. 128x128x64.")
    if spacing is None:
        spacing_xyz = default_spacing(size_xyz)
    else:
        spacing_xyz = tuple(float(s) for s in spacing)
        if len(spacing_xyz) != 3 or min(spacing_xyz) <= 0:
            raise ValueError(f"Phantom spacing {spacing_xyz} is invalid: give three positive values in mm.")
    hu, label = _canonical_phantom(size_xyz, spacing_xyz, int(seed), multi_label, noise_hu)
    return _to_image(hu, spacing_xyz), _to_image(label, spacing_xyz)


def make_phantom_canonical(size: Sequence[int] = DEFAULT_SIZE, spacing: Sequence[float] | None = None,
                           seed: int = 0, multi_label: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """The phantom directly in the canonical layout (R, C, S) = (y, x, z sizes): (HU int16, label uint8).
    Same arrays as ``geometry.to_canonical`` of ``make_phantom``'s images, without the round trip."""
    size_xyz = tuple(int(s) for s in size)
    spacing_xyz = default_spacing(size_xyz) if spacing is None else tuple(spacing)
    return _canonical_phantom(size_xyz, spacing_xyz, int(seed), multi_label, None)


def parse_triple(text: str, kind: Callable[[str], float] = float) -> tuple:
    """'128x128x64' or '2.5,2.5,3' -> a 3-tuple."""
    parts = text.replace(",", "x").lower().split("x")
    if len(parts) != 3:
        raise ValueError(f"Expected three values like 128x128x64, got '{text}'.")
    return tuple(kind(p) for p in parts)
