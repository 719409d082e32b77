"""Synthetic X-ray parcel images rendered from ground truth; the model's reference preprocessing.

A parcel is a scene: a box (or a soft polybag), benign clutter and at most one prohibited item.
Each object is a set of parts; each part has a shape in its own frame (millimetres), a
material and a thickness along the beam. The projection is Beer–Lambert per energy channel,
``I = I0 · exp(-Σ μ_i(E) · t_i)``, with ``μ = (μ/ρ)(E) · ρ``, so overlapping objects attenuate
like the sum of their line integrals. Detector noise is photon-counting noise (the Gaussian
limit of Poisson with variance ``N0 · T``) plus a small per-column gain spread and read noise.

Everything is a pure function of the seed: the same seed gives the same image and labels,
bit for bit, on any machine with the same numpy.

Raw output is what a scanner hands over: ``uint16`` transmission scaled to 0..65535, shape
``(768, 1024)`` for one energy or ``(2, 768, 1024)`` for dual energy (low, high). The
function :func:`preprocess` turns a raw image into the model's input tensor exactly as
``docs/model-card.md`` specifies; training and evaluation both go through it.
"""

from __future__ import annotations

import itertools
import json
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

#: The prohibited-item classes, in the shipped model's output order.
THREAT_CLASSES: tuple[str, ...] = (
    "firearm",
    "blade",
    "lithium_battery",
    "liquid_container",
    "narcotics_organic",
)
#: Benign clutter kinds a parcel may contain.
CLUTTER_KINDS: tuple[str, ...] = (
    "clothes",
    "book",
    "cable",
    "shoe",
    "electronics",
    "keys",
    "coins",
    "spoon",
    "toy",
    "cream_jar",
    "belt_buckle",
)

RAW_HEIGHT = 768
RAW_WIDTH = 1024
#: Detector pixel pitch of the raw image, millimetres.
PIXEL_MM = 0.75
RAW_MAX = 65535
#: Photons per raw pixel at full transmission: sets the noise level (σ/T ≈ 1/√(N0·T)).
PHOTONS_FULL = 2500.0

Energy = Literal["low", "mid", "high"]
FloatArray = npt.NDArray[np.float32]


@dataclass(frozen=True, slots=True)
class Material:
    """A material: density (g/cm³), mass attenuation (cm²/g) per energy, effective Z."""

    name: str
    density: float
    mass_atten: dict[str, float]
    z_eff: float

    def mu(self, energy: str, density: float | None = None) -> float:
        """Linear attenuation coefficient in 1/cm at ``energy``."""
        return self.mass_atten[energy] * (self.density if density is None else density)


# Mass attenuation coefficients (cm²/g) at about 60 keV ("low"), 80 keV ("mid") and 120 keV
# ("high"), rounded from NIST XCOM tables; composite materials are rough mixtures.
MATERIALS: dict[str, Material] = {
    m.name: m
    for m in (
        Material("cellulose", 0.8, {"low": 0.196, "mid": 0.176, "high": 0.154}, 6.9),
        Material("cardboard", 0.15, {"low": 0.196, "mid": 0.176, "high": 0.154}, 6.9),
        Material("plastic", 0.95, {"low": 0.197, "mid": 0.178, "high": 0.155}, 5.5),
        Material("rubber", 1.15, {"low": 0.193, "mid": 0.174, "high": 0.152}, 6.0),
        Material("organic_drug", 1.2, {"low": 0.199, "mid": 0.177, "high": 0.155}, 6.8),
        Material("water", 1.0, {"low": 0.206, "mid": 0.184, "high": 0.162}, 7.4),
        Material("glass", 2.5, {"low": 0.247, "mid": 0.194, "high": 0.153}, 11.6),
        Material("pcb", 1.9, {"low": 0.262, "mid": 0.199, "high": 0.156}, 11.0),
        Material("aluminium", 2.7, {"low": 0.278, "mid": 0.202, "high": 0.153}, 13.0),
        Material("li_ion_cell", 2.6, {"low": 0.60, "mid": 0.36, "high": 0.21}, 17.0),
        Material("steel", 7.87, {"low": 1.205, "mid": 0.596, "high": 0.276}, 26.0),
        Material("copper", 8.96, {"low": 1.593, "mid": 0.763, "high": 0.330}, 29.0),
        Material("zinc", 7.14, {"low": 1.76, "mid": 0.84, "high": 0.36}, 30.0),
    )
}

ShapeKind = Literal["rect", "ellipse", "ring", "polygon", "capsule"]


@dataclass(frozen=True, slots=True)
class Part:
    """One homogeneous piece of an object, in the object's frame (millimetres).

    ``rect``/``ellipse``: ``params = (cx, cy, w, h)``; ``ring``: ``(cx, cy, w, h, wall)``;
    ``capsule`` (a rod from (x0, y0) to (x1, y1) of radius r): ``(x0, y0, x1, y1, r)``;
    ``polygon``: ``points``. ``thickness_mm`` is the extent along the beam; ``rounded`` gives
    the part a cylinder-like profile across its short axis (bottles, cells, rods).
    """

    kind: ShapeKind
    material: str
    thickness_mm: float
    params: tuple[float, ...] = ()
    points: tuple[tuple[float, float], ...] = ()
    density: float | None = None
    rounded: bool = False


@dataclass(frozen=True, slots=True)
class PlacedObject:
    """An object of the scene: its parts, pose (centre in mm, angle in rad) and what it is."""

    kind: str
    parts: tuple[Part, ...]
    x_mm: float
    y_mm: float
    angle: float
    threat: bool


@dataclass(frozen=True, slots=True)
class Scene:
    """The ground truth of one parcel image."""

    seed: int
    threat: str | None
    objects: tuple[PlacedObject, ...]
    box_mm: tuple[float, float, float, float]  # x0, y0, x1, y1 of the parcel outline


@dataclass(frozen=True, slots=True)
class XraySample:
    """A rendered parcel: raw scanner pixels plus the ground truth they were rendered from."""

    pixels: npt.NDArray[np.uint16]
    scene: Scene
    labels: dict[str, int] = field(default_factory=dict)

    @property
    def threat(self) -> str | None:
        return self.scene.threat


# --------------------------------------------------------------------------------------------
# Object templates. Each takes an rng and returns the parts in the object's own frame.
# --------------------------------------------------------------------------------------------

Rng = np.random.Generator


def _u(rng: Rng, lo: float, hi: float) -> float:
    return float(rng.uniform(lo, hi))


def _firearm(rng: Rng) -> list[Part]:
    s = _u(rng, 0.85, 1.25)
    if rng.random() < 0.7:  # semi-automatic pistol
        slide_l, slide_h = 175 * s * _u(rng, 0.9, 1.1), 32 * s
        grip = (
            (slide_l * 0.18, slide_h / 2),
            (slide_l * 0.48, slide_h / 2),
            (slide_l * 0.40, slide_h / 2 + 105 * s),
            (slide_l * 0.06, slide_h / 2 + 100 * s),
        )
        mag = (
            (slide_l * 0.24, slide_h / 2),
            (slide_l * 0.42, slide_h / 2),
            (slide_l * 0.35, slide_h / 2 + 95 * s),
            (slide_l * 0.13, slide_h / 2 + 92 * s),
        )
        parts = [
            Part("rect", "steel", _u(rng, 7, 10), (slide_l / 2, 0, slide_l, slide_h)),
            Part("capsule", "steel", 0, (8 * s, 0, slide_l - 4 * s, 0, 7 * s), rounded=True),
            Part("polygon", "plastic", 30 * s, points=grip),
            Part("polygon", "steel", _u(rng, 2.5, 4), points=mag),
            Part("ring", "plastic", 12, (slide_l * 0.62, slide_h / 2 + 14 * s, 40 * s, 30 * s, 5)),
            Part("rect", "steel", 6, (slide_l * 0.56, slide_h / 2 + 10 * s, 6 * s, 18 * s)),
        ]
    else:  # revolver
        barrel_l = 110 * s * _u(rng, 0.8, 1.4)
        parts = [
            Part("capsule", "steel", 0, (0, 0, barrel_l, 0, 9 * s), rounded=True),
            Part("ellipse", "steel", 30 * s, (-10 * s, 4 * s, 45 * s, 40 * s), rounded=True),
            Part("rect", "steel", 12, (-45 * s, 0, 40 * s, 26 * s)),
            Part(
                "polygon",
                "plastic",
                28 * s,
                points=((-70 * s, 5 * s), (-40 * s, 8 * s), (-55 * s, 100 * s), (-85 * s, 95 * s)),
            ),
            Part("ring", "steel", 6, (-15 * s, 32 * s, 36 * s, 28 * s, 4)),
        ]
    return parts


def _blade(rng: Rng) -> list[Part]:
    length = _u(rng, 90, 240)
    width = _u(rng, 16, 42)
    thick = _u(rng, 1.5, 3.2)
    tip = _u(rng, 0.15, 0.35) * length
    blade = (
        (0.0, -width / 2),
        (length - tip, -width / 2),
        (length, width * _u(rng, -0.2, 0.45)),
        (length - tip * 0.6, width / 2),
        (0.0, width / 2),
    )
    parts = [Part("polygon", "steel", thick, points=blade)]
    handle_l = _u(rng, 80, 130)
    if rng.random() < 0.35:  # folding knife or all-steel handle
        parts.append(
            Part("rect", "steel", _u(rng, 4, 8), (-handle_l / 2, 0, handle_l, width * 0.9))
        )
    else:
        parts.append(
            Part(
                "rect",
                "plastic",
                _u(rng, 14, 22),
                (-handle_l / 2, 0, handle_l, width * 0.95),
                rounded=True,
            )
        )
        parts.append(
            Part("rect", "steel", thick, (-handle_l * 0.45, 0, handle_l * 0.9, width * 0.3))
        )
    return parts


def _lithium_battery(rng: Rng) -> list[Part]:
    kind = rng.integers(0, 3)
    if kind == 0:  # power bank of 18650 cells
        n = int(rng.integers(2, 5))
        parts = [Part("rect", "plastic", 24, (0, 0, 70, 20 * n + 8))]
        for i in range(n):
            y = (i - (n - 1) / 2) * 19.5
            parts.append(Part("capsule", "li_ion_cell", 0, (-24, y, 24, y, 9), rounded=True))
            parts.append(Part("rect", "steel", 18, (-33, y, 3, 17)))
        return parts
    if kind == 1:  # pouch cell
        w, h = _u(rng, 50, 110), _u(rng, 35, 80)
        return [
            Part("rect", "li_ion_cell", _u(rng, 5, 10), (0, 0, w, h)),
            Part("rect", "aluminium", 0.5, (0, 0, w + 2, h + 2)),
            Part("rect", "copper", 1.0, (w / 2 - 3, -h / 4, 8, 6)),
            Part("rect", "aluminium", 1.0, (w / 2 - 3, h / 4, 8, 6)),
        ]
    n = int(rng.integers(4, 9))  # loose cylindrical cells
    parts = []
    for i in range(n):
        y = (i - (n - 1) / 2) * 19
        parts.append(Part("capsule", "li_ion_cell", 0, (-30, y, 30, y, 9), rounded=True))
    return parts


def _liquid_container(rng: Rng) -> list[Part]:
    kind = rng.integers(0, 3)
    fill = _u(rng, 0.8, 1.15)
    if kind == 0:  # bottle
        length, diam = _u(rng, 170, 300), _u(rng, 55, 95)
        return [
            Part(
                "capsule", "water", 0, (0, 0, length * 0.7, 0, diam / 2), density=fill, rounded=True
            ),
            Part(
                "rect",
                "water",
                diam * 0.35,
                (length * 0.8, 0, length * 0.2, diam * 0.35),
                density=fill,
                rounded=True,
            ),
            Part("rect", "plastic", 18, (length * 0.92, 0, 14, diam * 0.4)),
        ]
    if kind == 1:  # can or metal flask
        length, diam = _u(rng, 110, 200), _u(rng, 55, 75)
        return [
            Part("capsule", "water", 0, (0, 0, length, 0, diam / 2), density=fill, rounded=True),
            Part("rect", "aluminium", 0.6, (length / 2, 0, length + diam, diam)),
        ]
    w, h = _u(rng, 110, 200), _u(rng, 70, 130)  # jerrycan-like flat container
    return [
        Part("rect", "water", _u(rng, 50, 90), (0, 0, w, h), density=fill, rounded=True),
        Part("rect", "plastic", 3, (0, 0, w + 4, h + 4)),
        Part("rect", "plastic", 25, (w / 2 - 10, -h / 2 - 8, 25, 16)),
    ]


def _narcotics_organic(rng: Rng) -> list[Part]:
    density = _u(rng, 1.0, 1.35)
    if rng.random() < 0.65:  # pressed brick
        w, h = _u(rng, 140, 240), _u(rng, 90, 150)
        return [
            Part("rect", "organic_drug", _u(rng, 35, 60), (0, 0, w, h), density=density),
            Part("rect", "plastic", 2, (0, 0, w + 4, h + 4)),
        ]
    n = int(rng.integers(3, 7))  # a stack of flat bags
    parts = []
    for i in range(n):
        parts.append(
            Part(
                "ellipse",
                "organic_drug",
                _u(rng, 25, 40),
                (_u(rng, -30, 30), (i - n / 2) * 28, _u(rng, 90, 140), _u(rng, 45, 60)),
                density=density,
                rounded=True,
            )
        )
    return parts


def _clothes(rng: Rng) -> list[Part]:
    w, h = _u(rng, 150, 380), _u(rng, 120, 300)
    parts = [
        Part(
            "ellipse" if rng.random() < 0.5 else "rect",
            "cellulose",
            _u(rng, 20, 80),
            (0, 0, w, h),
            density=_u(rng, 0.15, 0.35),
            rounded=True,
        )
    ]
    if rng.random() < 0.5:  # zip or buttons
        parts.append(
            Part("capsule", "zinc", 0, (-w * 0.4, 0, w * 0.4, 0, _u(rng, 1.5, 3)), rounded=True)
        )
    return parts


def _book(rng: Rng) -> list[Part]:
    return [
        Part(
            "rect",
            "cellulose",
            _u(rng, 8, 45),
            (0, 0, _u(rng, 130, 300), _u(rng, 100, 220)),
            density=_u(rng, 0.6, 0.9),
        )
    ]


def _cable(rng: Rng) -> list[Part]:
    n = int(rng.integers(3, 9))
    pts = np.cumsum(rng.normal(0, 45, size=(n, 2)), axis=0)
    parts = []
    core = _u(rng, 0.4, 1.2)
    for (x0, y0), (x1, y1) in itertools.pairwise(pts):
        parts.append(Part("capsule", "plastic", 0, (x0, y0, x1, y1, core + 2), rounded=True))
        parts.append(Part("capsule", "copper", 0, (x0, y0, x1, y1, core), rounded=True))
    if rng.random() < 0.5:  # charger brick with a transformer
        x, y = pts[-1]
        parts.append(Part("rect", "plastic", 30, (x, y, 50, 40)))
        parts.append(Part("rect", "steel", _u(rng, 8, 16), (x, y, 25, 20)))
    return parts


def _shoe(rng: Rng) -> list[Part]:
    length = _u(rng, 230, 310)
    parts = [
        Part("ellipse", "rubber", _u(rng, 15, 35), (0, 0, length, length * 0.38), rounded=True),
        Part(
            "ellipse",
            "cellulose",
            60,
            (length * 0.1, 0, length * 0.7, length * 0.3),
            density=0.12,
            rounded=True,
        ),
    ]
    for i in range(int(rng.integers(0, 6))):
        parts.append(Part("ellipse", "steel", 2, (length * 0.05 + i * 12, 22, 5, 5)))
    if rng.random() < 0.3:  # steel shank
        parts.append(Part("rect", "steel", 1.5, (-length * 0.1, 0, 90, 12)))
    return parts


def _electronics(rng: Rng) -> list[Part]:
    w, h = _u(rng, 80, 220), _u(rng, 60, 160)
    parts = [
        Part("rect", "plastic", _u(rng, 20, 40), (0, 0, w + 10, h + 10)),
        Part("rect", "pcb", 1.6, (0, 0, w, h)),
    ]
    for _ in range(int(rng.integers(3, 12))):
        parts.append(
            Part(
                "rect",
                "copper" if rng.random() < 0.5 else "aluminium",
                _u(rng, 1, 6),
                (_u(rng, -w / 2, w / 2), _u(rng, -h / 2, h / 2), _u(rng, 4, 30), _u(rng, 4, 30)),
            )
        )
    if rng.random() < 0.4:  # shielding can or heat sink
        parts.append(
            Part("rect", "aluminium", _u(rng, 5, 20), (_u(rng, -w / 4, w / 4), 0, w * 0.4, h * 0.4))
        )
    return parts


def _keys(rng: Rng) -> list[Part]:
    parts = [Part("ring", "steel", 2, (0, 0, 30, 30, 2.5))]
    for _ in range(int(rng.integers(1, 5))):
        a = _u(rng, 0, 2 * math.pi)
        ln = _u(rng, 45, 70)
        x1, y1 = 15 + ln * math.cos(a), ln * math.sin(a)
        parts.append(
            Part(
                "capsule", "copper", 0, (15 * math.cos(a), 15 * math.sin(a), x1, y1, _u(rng, 4, 7))
            )
        )
    return [
        Part(p.kind, p.material, 2.2, p.params, density=p.density) if p.kind == "capsule" else p
        for p in parts
    ]


def _coins(rng: Rng) -> list[Part]:
    return [
        Part(
            "ellipse",
            "copper" if rng.random() < 0.5 else "zinc",
            _u(rng, 1.5, 2.5),
            (_u(rng, -30, 30), _u(rng, -30, 30), d, d),
        )
        for d in (float(x) for x in rng.uniform(16, 30, size=int(rng.integers(2, 9))))
    ]


def _spoon(rng: Rng) -> list[Part]:
    ln = _u(rng, 130, 200)
    return [
        Part("ellipse", "steel", 1.5, (ln * 0.4, 0, ln * 0.3, ln * 0.22)),
        Part("capsule", "steel", 2.5, (-ln * 0.6, 0, ln * 0.25, 0, _u(rng, 3, 6))),
    ]


def _toy(rng: Rng) -> list[Part]:
    parts = []
    for _ in range(int(rng.integers(1, 4))):
        parts.append(
            Part(
                "ellipse" if rng.random() < 0.5 else "rect",
                "plastic",
                _u(rng, 2, 40),
                (_u(rng, -40, 40), _u(rng, -40, 40), _u(rng, 20, 120), _u(rng, 20, 120)),
            )
        )
    if rng.random() < 0.3:  # a small motor
        parts.append(Part("capsule", "steel", 0, (-10, 0, 10, 0, 10), rounded=True))
    return parts


def _cream_jar(rng: Rng) -> list[Part]:
    d = _u(rng, 40, 80)
    return [
        Part("ellipse", "water", _u(rng, 25, 45), (0, 0, d, d), density=_u(rng, 0.8, 1.0)),
        Part("ring", "plastic", 40, (0, 0, d + 6, d + 6, 3)),
    ]


def _belt_buckle(rng: Rng) -> list[Part]:
    w = _u(rng, 40, 70)
    return [
        Part("ring", "zinc", _u(rng, 3, 6), (0, 0, w, w * 0.7, _u(rng, 5, 9))),
        Part("rect", "rubber", 4, (_u(rng, 150, 400) / 2 + w / 2, 0, 300, w * 0.5)),
    ]


TEMPLATES: dict[str, Callable[[Rng], list[Part]]] = {
    "firearm": _firearm,
    "blade": _blade,
    "lithium_battery": _lithium_battery,
    "liquid_container": _liquid_container,
    "narcotics_organic": _narcotics_organic,
    "clothes": _clothes,
    "book": _book,
    "cable": _cable,
    "shoe": _shoe,
    "electronics": _electronics,
    "keys": _keys,
    "coins": _coins,
    "spoon": _spoon,
    "toy": _toy,
    "cream_jar": _cream_jar,
    "belt_buckle": _belt_buckle,
}
_CLUTTER_WEIGHTS = np.array([6, 3, 3, 2, 3, 1, 1, 1, 2, 1, 1], dtype=np.float64)


# --------------------------------------------------------------------------------------------
# Scenes
# --------------------------------------------------------------------------------------------


def compose_scene(
    seed: int,
    threat: str | None,
    *,
    clutter: tuple[int, int] = (3, 12),
    clutter_kinds: Sequence[str] = CLUTTER_KINDS,
) -> Scene:
    """The ground truth for ``seed``: a parcel outline, between ``clutter[0]`` and
    ``clutter[1]`` benign objects drawn from ``clutter_kinds``, and optionally ``threat``.

    Raises ValueError naming the value when ``threat`` is not one of :data:`THREAT_CLASSES`
    or a clutter kind is not one of :data:`CLUTTER_KINDS`.
    """
    if threat is not None and threat not in THREAT_CLASSES:
        raise ValueError(f"threat={threat!r}: expected None or one of {list(THREAT_CLASSES)}")
    unknown = [k for k in clutter_kinds if k not in CLUTTER_KINDS]
    if unknown or not clutter_kinds:
        raise ValueError(
            f"clutter_kinds={list(clutter_kinds)!r}: expected a non-empty subset of "
            f"{list(CLUTTER_KINDS)}"
        )
    rng = np.random.default_rng([seed, 0x5CA1])
    field_w, field_h = RAW_WIDTH * PIXEL_MM, RAW_HEIGHT * PIXEL_MM
    bw, bh = _u(rng, 300, field_w * 0.92), _u(rng, 220, field_h * 0.9)
    x0 = _u(rng, 0.02 * field_w, field_w - bw - 0.02 * field_w)
    y0 = _u(rng, 0.03 * field_h, field_h - bh - 0.03 * field_h)
    box = (x0, y0, x0 + bw, y0 + bh)
    objects: list[PlacedObject] = []
    if rng.random() < 0.8:  # a cardboard box; otherwise a polybag
        height = _u(rng, 80, 350)
        wall = _u(rng, 3, 7)
        parts = [
            Part("rect", "cardboard", 2 * wall, (0, 0, bw, bh)),
            Part("rect", "cardboard", height, (-(bw - wall) / 2, 0, wall, bh)),
            Part("rect", "cardboard", height, ((bw - wall) / 2, 0, wall, bh)),
            Part("rect", "cardboard", height, (0, -(bh - wall) / 2, bw, wall)),
            Part("rect", "cardboard", height, (0, (bh - wall) / 2, bw, wall)),
        ]
    else:
        parts = [Part("ellipse", "plastic", 0.3, (0, 0, bw, bh))]
    objects.append(PlacedObject("box", tuple(parts), x0 + bw / 2, y0 + bh / 2, 0.0, False))
    n_clutter = int(rng.integers(clutter[0], clutter[1] + 1))
    weights = np.where([k in clutter_kinds for k in CLUTTER_KINDS], _CLUTTER_WEIGHTS, 0.0)
    kinds = rng.choice(len(CLUTTER_KINDS), size=n_clutter, p=weights / weights.sum())
    placed = [CLUTTER_KINDS[int(k)] for k in kinds]
    threat_at = int(rng.integers(0, n_clutter + 1)) if threat is not None else -1
    if threat is not None:
        placed.insert(threat_at, threat)
    margin = 0.12
    for kind in placed:
        parts_list = TEMPLATES[kind](rng)
        objects.append(
            PlacedObject(
                kind,
                tuple(parts_list),
                _u(rng, x0 + margin * bw, x0 + (1 - margin) * bw),
                _u(rng, y0 + margin * bh, y0 + (1 - margin) * bh),
                _u(rng, 0, 2 * math.pi),
                kind == threat,
            )
        )
    return Scene(seed=seed, threat=threat, objects=tuple(objects), box_mm=box)


def threat_for_seed(seed: int, p_threat: float = 0.5) -> str | None:
    """The class a dataset assigns to ``seed``: None with probability ``1 - p_threat``, else
    one of :data:`THREAT_CLASSES` uniformly. Deterministic by seed."""
    rng = np.random.default_rng([seed, 0x7A6])
    if rng.random() >= p_threat:
        return None
    return THREAT_CLASSES[int(rng.integers(0, len(THREAT_CLASSES)))]


# --------------------------------------------------------------------------------------------
# Rendering
# --------------------------------------------------------------------------------------------


def _part_thickness_cm(part: Part, u: FloatArray, v: FloatArray) -> FloatArray:
    """Thickness (cm) along the beam at object-frame points (u, v) in mm."""
    p = part.params
    t = np.float32(part.thickness_mm / 10.0)
    if part.kind in ("rect", "ellipse", "ring"):
        cx, cy, w, h = p[0], p[1], p[2], p[3]
        du, dv = (u - cx) / (w / 2), (v - cy) / (h / 2)
        if part.kind == "rect":
            inside = (np.abs(du) <= 1) & (np.abs(dv) <= 1)
            if part.rounded:  # cylinder profile across the short axis
                d = dv if h <= w else du
                prof = np.sqrt(np.clip(1 - d * d, 0, 1))
                return np.where(inside, t * prof, 0).astype(np.float32)
            return np.where(inside, t, 0).astype(np.float32)
        r2 = du * du + dv * dv
        if part.kind == "ellipse":
            if part.rounded:
                rounded: FloatArray = (t * np.sqrt(np.clip(1 - r2, 0, 1))).astype(np.float32)
                return rounded
            return np.where(r2 <= 1, t, 0).astype(np.float32)
        wall = p[4]
        du2, dv2 = (u - cx) / (w / 2 - wall), (v - cy) / (h / 2 - wall)
        return np.where((r2 <= 1) & (du2 * du2 + dv2 * dv2 > 1), t, 0).astype(np.float32)
    if part.kind == "capsule":
        x0, y0, x1, y1, r = p
        dx, dy = x1 - x0, y1 - y0
        seg2 = dx * dx + dy * dy
        s = np.clip(((u - x0) * dx + (v - y0) * dy) / seg2, 0, 1) if seg2 > 0 else 0 * u
        ex, ey = u - (x0 + s * dx), v - (y0 + s * dy)
        q = (ex * ex + ey * ey) / (r * r)
        # A rod: the chord through a cylinder of radius r (cm); thickness_mm adds a flat part.
        if part.rounded:  # a rod: the chord through a cylinder of radius r
            return (np.float32(2 * r / 10.0) * np.sqrt(np.clip(1 - q, 0, 1))).astype(np.float32)
        return np.where(q <= 1, t, 0).astype(np.float32)
    # polygon: even-odd rule over the edges
    pts = part.points
    inside = np.zeros(u.shape, dtype=bool)
    for (xa, ya), (xb, yb) in zip(pts, pts[1:] + pts[:1], strict=True):
        if ya == yb:
            continue
        cross = (v >= min(ya, yb)) & (v < max(ya, yb))
        x_at = xa + (v - ya) * (xb - xa) / (yb - ya)
        inside ^= cross & (u < x_at)
    return np.where(inside, t, 0).astype(np.float32)


def _part_extent_mm(part: Part) -> tuple[float, float, float, float]:
    p = part.params
    if part.kind in ("rect", "ellipse", "ring"):
        return p[0] - p[2] / 2, p[1] - p[3] / 2, p[0] + p[2] / 2, p[1] + p[3] / 2
    if part.kind == "capsule":
        r = p[4]
        return min(p[0], p[2]) - r, min(p[1], p[3]) - r, max(p[0], p[2]) + r, max(p[1], p[3]) + r
    xs = [q[0] for q in part.points]
    ys = [q[1] for q in part.points]
    return min(xs), min(ys), max(xs), max(ys)


def line_integrals(
    scene: Scene,
    energies: Sequence[Energy],
    *,
    pixel_mm: float = PIXEL_MM,
    shape: tuple[int, int] = (RAW_HEIGHT, RAW_WIDTH),
) -> FloatArray:
    """Σ μ_i(E)·t_i per pixel and energy, shape ``(len(energies), H, W)``, noise-free.

    Pixel (r, c) samples the scene at its centre ((c + 0.5)·pixel_mm, (r + 0.5)·pixel_mm).
    """
    h, w = shape
    out = np.zeros((len(energies), h, w), dtype=np.float32)
    for obj in scene.objects:
        ca, sa = math.cos(obj.angle), math.sin(obj.angle)
        for part in obj.parts:
            ex0, ey0, ex1, ey1 = _part_extent_mm(part)
            corners = [(ex0, ey0), (ex1, ey0), (ex0, ey1), (ex1, ey1)]
            xs = [obj.x_mm + ca * cu - sa * cv for cu, cv in corners]
            ys = [obj.y_mm + sa * cu + ca * cv for cu, cv in corners]
            c0 = max(math.floor(min(xs) / pixel_mm), 0)
            c1 = min(math.ceil(max(xs) / pixel_mm) + 1, w)
            r0 = max(math.floor(min(ys) / pixel_mm), 0)
            r1 = min(math.ceil(max(ys) / pixel_mm) + 1, h)
            if c0 >= c1 or r0 >= r1:
                continue
            gx = ((np.arange(c0, c1, dtype=np.float32) + 0.5) * pixel_mm - obj.x_mm)[None, :]
            gy = ((np.arange(r0, r1, dtype=np.float32) + 0.5) * pixel_mm - obj.y_mm)[:, None]
            u = (ca * gx + sa * gy).astype(np.float32)
            v = (-sa * gx + ca * gy).astype(np.float32)
            thick = _part_thickness_cm(part, u, v)
            material = MATERIALS[part.material]
            for i, energy in enumerate(energies):
                out[i, r0:r1, c0:c1] += np.float32(material.mu(energy, part.density)) * thick
    return out


#: Belt and housing attenuation every pixel sees, per energy (a thin rubber belt).
_BELT_MU_T = {"low": 0.060, "mid": 0.054, "high": 0.048}


def expose(
    integrals: FloatArray,
    rng: Rng,
    *,
    photons: float = PHOTONS_FULL,
    gain_spread: float = 0.004,
    read_noise: float = 3.0,
) -> npt.NDArray[np.uint16]:
    """Detector model: transmission → photon counts with noise → uint16 (0..65535).

    Counts ~ Normal(N0·T, N0·T) (the Gaussian limit of Poisson), times a per-column gain,
    plus read noise of ``read_noise`` photons; full scale is N0 photons.
    """
    counts = np.exp(-integrals)
    counts *= np.float32(photons)
    sigma = counts + np.float32(read_noise**2)
    np.sqrt(sigma, out=sigma)
    sigma *= rng.standard_normal(counts.shape, dtype=np.float32)
    counts += sigma
    gain = 1 + gain_spread * rng.standard_normal(
        (counts.shape[0], 1, counts.shape[-1]), dtype=np.float32
    )
    counts *= gain * np.float32(RAW_MAX / photons)
    np.clip(counts, 0, RAW_MAX, out=counts)
    counts += np.float32(0.5)
    return counts.astype(np.uint16)


def render_scene(scene: Scene, *, dual_energy: bool = False) -> npt.NDArray[np.uint16]:
    """Raw scanner pixels of ``scene``: (768, 1024) uint16, or (2, 768, 1024) as (low, high)."""
    energies: tuple[Energy, ...] = ("low", "high") if dual_energy else ("mid",)
    integrals = line_integrals(scene, energies)
    for i, energy in enumerate(energies):
        integrals[i] += _BELT_MU_T[energy]
    raw = expose(integrals, np.random.default_rng([scene.seed, 0xD37]))
    return raw if dual_energy else raw[0]


def render_parcel(
    seed: int,
    threat: str | None = None,
    *,
    dual_energy: bool = False,
    clutter: tuple[int, int] = (3, 12),
    clutter_kinds: Sequence[str] = CLUTTER_KINDS,
) -> XraySample:
    """Render the parcel of ``seed`` with ``threat`` (None: benign) and its clutter (see
    :func:`compose_scene`). Deterministic by seed and arguments."""
    scene = compose_scene(seed, threat, clutter=clutter, clutter_kinds=clutter_kinds)
    labels = {name: int(name == threat) for name in THREAT_CLASSES}
    return XraySample(render_scene(scene, dual_energy=dual_energy), scene, labels)


def dataset_sample(seed: int, *, p_threat: float = 0.5, dual_energy: bool = False) -> XraySample:
    """The parcel a dataset holds at ``seed`` (its class drawn by :func:`threat_for_seed`)."""
    return render_parcel(seed, threat_for_seed(seed, p_threat), dual_energy=dual_energy)


# --------------------------------------------------------------------------------------------
# The model's reference preprocessing (see docs/model-card.md, "Input contract")
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PreprocessSpec:
    """How a raw image becomes the model input; mirrors ``cargogate.input``/``.preprocess``."""

    channels: int
    height: int
    width: int
    log_transmission: bool
    mean: tuple[float, ...]
    std: tuple[float, ...]
    eps: float = 1e-4


def spec_from_metadata(props: Mapping[str, str]) -> PreprocessSpec:
    """The preprocessing an ONNX model asks for, from its ``metadata_props`` (JSON strings).

    Raises ValueError naming the key, the value and what was expected when a key is missing
    or malformed, so a dropped-in model with bad metadata is refused with a clear message.
    """

    def load(key: str) -> dict[str, Any]:
        if key not in props:
            raise ValueError(f"model metadata: {key} is missing; expected a JSON object")
        try:
            value = json.loads(props[key])
        except json.JSONDecodeError as exc:
            raise ValueError(f"model metadata: {key}={props[key]!r} is not JSON ({exc})") from exc
        if not isinstance(value, dict):
            raise ValueError(f"model metadata: {key}={props[key]!r}; expected a JSON object")
        return value

    geometry = load("cargogate.input")
    pre = load("cargogate.preprocess")
    try:
        channels, height, width = (int(geometry[k]) for k in ("channels", "height", "width"))
        layout = geometry.get("layout", "NCHW")
        mean = tuple(float(m) for m in pre["mean"])
        std = tuple(float(s) for s in pre["std"])
        log_t = bool(pre["log_transmission"])
        eps = float(pre.get("eps", 1e-4))
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(
            f"model metadata: cargogate.input={geometry!r} / cargogate.preprocess={pre!r}: "
            f"expected channels/height/width integers, log_transmission, mean and std ({exc})"
        ) from exc
    if layout != "NCHW":
        raise ValueError(f"model metadata: cargogate.input.layout={layout!r}; expected 'NCHW'")
    if len(mean) != channels or len(std) != channels or min(std) <= 0:
        raise ValueError(
            f"model metadata: mean={list(mean)}, std={list(std)}: expected {channels} values "
            "each, std > 0"
        )
    return PreprocessSpec(channels, height, width, log_t, mean, std, eps)


def source_max(pixels: npt.NDArray[np.generic]) -> float:
    """Full-scale value of the raw dtype: 65535 (uint16), 255 (uint8), 1.0 (floats in [0, 1])."""
    if pixels.dtype == np.uint16:
        return 65535.0
    if pixels.dtype == np.uint8:
        return 255.0
    if pixels.dtype in (np.float32, np.float64):
        return 1.0
    raise ValueError(f"pixels.dtype={pixels.dtype}: expected uint8, uint16, float32 or float64")


def _area_matrix(n_in: int, n_out: int) -> FloatArray:
    """Rows average the input over each output cell's footprint, fractional edges weighted."""
    scale = n_in / n_out
    m = np.zeros((n_out, n_in), dtype=np.float64)
    for i in range(n_out):
        a, b = i * scale, (i + 1) * scale
        for j in range(math.floor(a), min(math.ceil(b), n_in)):
            m[i, j] = min(b, j + 1) - max(a, j)
        m[i] /= scale
    return m.astype(np.float32)


def area_resize(image: npt.NDArray[np.generic], height: int, width: int) -> FloatArray:
    """Area (box) resize of ``(C, h, w)`` to ``(C, height, width)``: each output pixel is the
    mean of the input over its footprint, partial pixels weighted by their overlap (as
    OpenCV's INTER_AREA; Pillow's BOX filter differs at fractional edges). Whole-number
    factors take a block mean."""
    c, h, w = image.shape
    if h % height == 0 and w % width == 0:
        fh, fw = h // height, w // width
        blocks = image.reshape(c, height, fh, width, fw)
        mean: FloatArray = blocks.mean(axis=(2, 4), dtype=np.float32).astype(np.float32)
        return mean
    rows, cols = _area_matrix(h, height), _area_matrix(w, width)
    out: FloatArray = np.einsum("ih,chw,jw->cij", rows, image.astype(np.float32), cols)
    return out.astype(np.float32)


def preprocess(pixels: npt.NDArray[np.generic], spec: PreprocessSpec) -> FloatArray:
    """Raw image → model input ``(C, H, W)`` float32, per the model card's input contract.

    1. ``t = pixels / source_max(dtype)`` (transmission in [0, 1]); a 2-D image is one channel.
    2. area-resize t to H×W (mean transmission over each output pixel's footprint);
    3. if ``log_transmission``: ``x = -ln(max(t, eps))``;
    4. ``x = (x - mean[c]) / std[c]`` per channel.
    """
    img = pixels[None] if pixels.ndim == 2 else pixels
    if img.ndim != 3 or img.shape[0] != spec.channels:
        raise ValueError(f"pixels.shape={pixels.shape}: expected (H, W) or ({spec.channels}, H, W)")
    if img.shape[1] < spec.height or img.shape[2] < spec.width:
        raise ValueError(
            f"pixels.shape={pixels.shape}: expected at least {spec.height}×{spec.width} pixels"
        )
    scale = np.float32(1.0 / source_max(pixels))
    t = area_resize(img, spec.height, spec.width) * scale
    x = -np.log(np.maximum(t, np.float32(spec.eps))) if spec.log_transmission else t
    mean = np.asarray(spec.mean, dtype=np.float32)[:, None, None]
    std = np.asarray(spec.std, dtype=np.float32)[:, None, None]
    return ((x - mean) / std).astype(np.float32)


def preprocess_batch(images: Iterable[npt.NDArray[np.generic]], spec: PreprocessSpec) -> FloatArray:
    """:func:`preprocess` each image and stack them as ``(N, C, H, W)``."""
    return np.stack([preprocess(image, spec) for image in images])
