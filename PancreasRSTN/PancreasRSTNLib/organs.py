"""Organs we know how to label: names, SNOMED CT codes (for DICOM SEG / Slicer terminology), colours and the
label value.

**The label value rule** (one for every surface): an organ's voxels carry the organ's own number, its 1-based
position in ``ORGANS`` (pancreas 1, spleen 2, left kidney 3, ...), in every label map we write: ``segment``'s
output, a cohort's outputs, round files, and the Slicer labelmaps, colour table and exports. So one organ has one
value everywhere, and several organs share a label map without clashing. A model's ``model.json`` records the
value the organ had in its training labels (``organ.label_value``), which says where the model came from and
decides nothing about outputs.

Colours follow Slicer's GenericAnatomyColors / the SNOMED-based terminology defaults.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Organ:
    name: str  # our identifier, lower case
    display_name: str
    snomed_code: str  # SNOMED CT concept of the anatomic structure
    snomed_meaning: str
    color: tuple[float, float, float]  # RGB in [0, 1]

    @property
    def label_value(self) -> int:
        """The value of this organ's voxels in every label map we write (see the module's rule)."""
        return list(ORGANS).index(self.name) + 1

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "display_name": self.display_name,
            "snomed_code": self.snomed_code,
            "snomed_meaning": self.snomed_meaning,
            "color": list(self.color),
            "label_value": self.label_value,
        }


ORGANS: dict[str, Organ] = {
    o.name: o
    for o in (
        Organ("pancreas", "Pancreas", "15776009", "Pancreas", (249 / 255, 180 / 255, 111 / 255)),
        Organ("spleen", "Spleen", "78961009", "Spleen", (157 / 255, 108 / 255, 162 / 255)),
        Organ("left_kidney", "Left kidney", "64033007", "Left kidney", (185 / 255, 102 / 255, 83 / 255)),
        Organ("right_kidney", "Right kidney", "9846003", "Right kidney", (185 / 255, 102 / 255, 83 / 255)),
        Organ("gallbladder", "Gallbladder", "28231008", "Gallbladder", (139 / 255, 150 / 255, 98 / 255)),
        Organ("liver", "Liver", "10200004", "Liver", (221 / 255, 130 / 255, 101 / 255)),
        Organ("stomach", "Stomach", "69695003", "Stomach", (216 / 255, 132 / 255, 105 / 255)),
        Organ("duodenum", "Duodenum", "38848004", "Duodenum", (255 / 255, 253 / 255, 229 / 255)),
        Organ("left_adrenal_gland", "Left adrenal gland", "29534000", "Left adrenal gland",
              (244 / 255, 217 / 255, 154 / 255)),
        Organ("right_adrenal_gland", "Right adrenal gland", "281625007", "Right adrenal gland",
              (244 / 255, 217 / 255, 154 / 255)),
        Organ("esophagus", "Esophagus", "32849002", "Esophagus", (211 / 255, 171 / 255, 143 / 255)),
    )
}


def get_organ(name: str) -> Organ:
    """Look an organ up by name (case and spaces ignored), with a message listing the known ones."""
    key = name.strip().lower().replace(" ", "_").replace("-", "_")
    if key not in ORGANS:
        from .errors import RSTNError

        raise RSTNError(f"Unknown organ '{name}'. Known organs: {', '.join(sorted(ORGANS))}.")
    return ORGANS[key]
