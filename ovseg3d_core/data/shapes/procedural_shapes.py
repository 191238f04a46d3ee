"""Procedural chairs and tables built from parametric parts, standing in for the Text2Shape corpus.

A :class:`ProceduralShape` is a discrete description (``style``: back type, leg type, top shape,
...; ``finishes``: material and named colour per part) plus the geometry built from it as a union
of boxes and cylinders. Captions are written from the same description by
:mod:`ovseg3d_core.data.shapes.procedural_captions`, so every colour or part a caption names is true of
the shape. Frame: y up, metres, chairs face -z like ShapeNet models.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ovseg3d_core.data.shapes.mesh import ColoredMesh

COLORS: dict[str, tuple[float, float, float]] = {
    "white": (0.93, 0.93, 0.91),
    "black": (0.09, 0.09, 0.09),
    "gray": (0.50, 0.50, 0.52),
    "silver": (0.76, 0.77, 0.80),
    "red": (0.75, 0.10, 0.10),
    "blue": (0.15, 0.30, 0.75),
    "green": (0.20, 0.55, 0.25),
    "yellow": (0.93, 0.80, 0.15),
    "orange": (0.93, 0.50, 0.10),
    "purple": (0.45, 0.20, 0.60),
    "pink": (0.93, 0.55, 0.70),
    "beige": (0.87, 0.80, 0.65),
    "light brown": (0.78, 0.58, 0.36),
    "brown": (0.50, 0.30, 0.15),
    "dark brown": (0.28, 0.16, 0.08),
    "gold": (0.83, 0.68, 0.22),
    "clear": (0.74, 0.86, 0.90),
}

MATERIAL_COLORS: dict[str, tuple[str, ...]] = {
    "wood": ("light brown", "brown", "dark brown", "white", "black"),
    "metal": ("silver", "gray", "black", "gold"),
    "fabric": ("red", "blue", "green", "yellow", "orange", "purple", "pink", "gray", "beige", "black", "white"),
    "leather": ("black", "brown", "dark brown", "white", "beige"),
    "plastic": ("white", "black", "red", "blue", "green", "yellow", "orange", "gray"),
    "glass": ("clear",),
    "marble": ("white", "black"),
}

CATEGORIES = ("chair", "table")


@dataclass(frozen=True)
class Finish:
    """Material and named colour of one part; ``rgb`` is the named colour with a small jitter."""

    material: str
    color: str
    rgb: tuple[float, float, float]


@dataclass
class ProceduralShape:
    """Discrete description of one generated shape and its geometry."""

    category: str
    style: dict[str, str]
    finishes: dict[str, Finish]
    mesh: ColoredMesh = field(repr=False)

    @property
    def attributes(self) -> dict[str, str]:
        """Flat string facts (``legs: four``, ``seat_color: red``) kept with the sample for analysis."""
        facts = {"category": self.category, **self.style}
        for part, finish in self.finishes.items():
            facts[f"{part}_material"] = finish.material
            facts[f"{part}_color"] = finish.color
        return facts


def _finish(rng: np.random.Generator, materials: tuple[str, ...], p: tuple[float, ...] | None = None) -> Finish:
    material = materials[rng.choice(len(materials), p=p)]
    color = MATERIAL_COLORS[material][rng.integers(len(MATERIAL_COLORS[material]))]
    rgb = np.clip(np.asarray(COLORS[color]) + rng.uniform(-0.03, 0.03, 3), 0.0, 1.0)
    return Finish(material, color, tuple(float(c) for c in rgb))


def _pick(rng: np.random.Generator, options: tuple[str, ...], p: tuple[float, ...] | None = None) -> str:
    return options[rng.choice(len(options), p=p)]


def _sheared(mesh: ColoredMesh, y0: float, tilt: float) -> ColoredMesh:
    """Lean a part backwards (+z) by ``tilt`` radians above height ``y0`` (reclined chair backs)."""
    vertices = mesh.vertices.copy()
    vertices[:, 2] += (vertices[:, 1] - y0) * np.tan(tilt)
    return ColoredMesh(vertices, mesh.triangles, mesh.face_colors)


def _disc(y0: float, y1: float, rx: float, rz: float, color, segments: int = 32) -> ColoredMesh:
    """Round (rx == rz) or oval slab between heights ``y0`` and ``y1``, centred on the y axis."""
    disc = ColoredMesh.cylinder([0, y0, 0], [0, y1, 0], 1.0, color, segments)
    return ColoredMesh(disc.vertices * [rx, 1.0, rz], disc.triangles, disc.face_colors)


def _leg(x: float, z: float, y0: float, y1: float, thickness: float, profile: str, color) -> ColoredMesh:
    if profile == "round":
        return ColoredMesh.cylinder([x, y0, z], [x, y1, z], thickness / 2, color, 12)
    return ColoredMesh.box([x, (y0 + y1) / 2, z], [thickness, y1 - y0, thickness], color)


def _leg_positions(shape: str, width: float, depth: float, inset: float, count: int = 4) -> list[tuple[float, float]]:
    """Leg (x, z) positions: at the corners of a rectangular top, on an ellipse under a round/oval one."""
    if shape in ("round", "oval"):
        angles = (np.pi / 4 if count == 4 else np.pi / 2) + np.arange(count) * 2 * np.pi / count
        return [(np.cos(a) * (width / 2 - inset), np.sin(a) * (depth / 2 - inset)) for a in angles]
    return [(sx * (width / 2 - inset), sz * (depth / 2 - inset)) for sx in (-1, 1) for sz in (-1, 1)]


def _stretchers(positions: list[tuple[float, float]], height: float, thickness: float, color) -> list[ColoredMesh]:
    """Rails joining consecutive legs (in angular order) at one height."""
    order = sorted(positions, key=lambda p: np.arctan2(p[1], p[0]))
    rails = []
    for (x0, z0), (x1, z1) in zip(order, order[1:] + order[:1], strict=True):
        rails.append(ColoredMesh.cylinder([x0, height, z0], [x1, height, z1], thickness / 2, color, 8))
    return rails


def make_chair(rng: np.random.Generator) -> ProceduralShape:
    """A random chair or stool: seat, back (solid/slatted/ladder/none), legs (four/pedestal/sled), arms."""
    back = _pick(rng, ("solid", "slatted", "ladder", "none"), (0.45, 0.22, 0.2, 0.13))
    legs = _pick(rng, ("four", "pedestal", "sled"), (0.62, 0.22, 0.16))
    style = {
        "seat_shape": _pick(rng, ("square", "rectangular", "round"), (0.5, 0.25, 0.25)),
        "seat_padding": _pick(rng, ("thin", "padded")),
        "back": back,
        "back_height": _pick(rng, ("low", "tall")) if back != "none" else "none",
        "legs": legs,
        "leg_profile": _pick(rng, ("square", "round")) if legs == "four" else "round",
        "leg_thickness": _pick(rng, ("thin", "thick")) if legs == "four" else "thin",
        "arms": _pick(rng, ("yes", "no"), (0.35, 0.65)) if back != "none" else "no",
        "stretchers": _pick(rng, ("yes", "no"), (0.4, 0.6)) if legs == "four" else "no",
        "wheels": _pick(rng, ("yes", "no"), (0.7, 0.3)) if legs == "pedestal" else "no",
    }
    if style["seat_shape"] == "round" and back != "none":
        style["seat_shape"] = "square" if rng.random() < 0.6 else "round"
    seat = _finish(rng, ("wood", "fabric", "leather", "plastic"), (0.35, 0.3, 0.15, 0.2))
    finishes = {"seat": seat}
    if back != "none":
        same = rng.random() < 0.7
        finishes["back"] = seat if same else _finish(rng, ("wood", "fabric", "leather", "plastic"))
    if legs == "four":
        finishes["legs"] = seat if seat.material == "wood" and rng.random() < 0.6 else _finish(rng, ("wood", "metal"))
    elif legs == "pedestal":
        finishes["legs"] = _finish(rng, ("metal", "plastic"), (0.7, 0.3))
    else:
        finishes["legs"] = _finish(rng, ("metal",))
    if style["arms"] == "yes":
        finishes["arms"] = finishes["legs"] if rng.random() < 0.5 else seat

    parts: list[ColoredMesh] = []
    width = rng.uniform(0.42, 0.56)
    depth = width if style["seat_shape"] != "rectangular" else width / rng.uniform(1.2, 1.35)
    if style["seat_shape"] == "square":
        depth = width * rng.uniform(0.92, 1.0)
    seat_top = rng.uniform(0.42, 0.5) if back != "none" else rng.uniform(0.45, 0.75)
    thickness = rng.uniform(0.025, 0.045) if style["seat_padding"] == "thin" else rng.uniform(0.08, 0.12)
    seat_bottom = seat_top - thickness
    if style["seat_shape"] == "round":
        parts.append(_disc(seat_bottom, seat_top, width / 2, depth / 2, seat.rgb))
    else:
        parts.append(ColoredMesh.box([0, seat_top - thickness / 2, 0], [width, thickness, depth], seat.rgb))

    leg_rgb = finishes["legs"].rgb
    if legs == "four":
        leg_t = rng.uniform(0.022, 0.032) if style["leg_thickness"] == "thin" else rng.uniform(0.045, 0.06)
        positions = _leg_positions(style["seat_shape"], width, depth, leg_t / 2 + rng.uniform(0.0, 0.03))
        parts += [_leg(x, z, 0.0, seat_bottom, leg_t, style["leg_profile"], leg_rgb) for x, z in positions]
        if style["stretchers"] == "yes":
            parts += _stretchers(positions, rng.uniform(0.1, 0.2), leg_t * 0.6, leg_rgb)
    elif legs == "pedestal":
        base_top = 0.09
        parts.append(ColoredMesh.cylinder([0, base_top, 0], [0, seat_bottom, 0], rng.uniform(0.022, 0.035), leg_rgb))
        reach = rng.uniform(0.25, 0.32)
        for k in range(5):
            a = 2 * np.pi * k / 5
            end = [reach * np.cos(a), 0.05, reach * np.sin(a)]
            parts.append(ColoredMesh.cylinder([0, base_top, 0], end, 0.018, leg_rgb, 8))
            if style["wheels"] == "yes":
                parts.append(
                    ColoredMesh.cylinder([end[0], 0.0, end[2]], [end[0], 0.045, end[2]], 0.025, COLORS["black"], 10)
                )
            else:
                parts.append(ColoredMesh.cylinder([end[0], 0.0, end[2]], [end[0], 0.05, end[2]], 0.015, leg_rgb, 8))
    else:
        tube = rng.uniform(0.01, 0.016)
        for sx in (-1, 1):
            x = sx * (width / 2 - tube)
            front, rear = -depth / 2 - rng.uniform(0.0, 0.05), depth / 2
            parts.append(ColoredMesh.cylinder([x, tube, front], [x, tube, rear], tube, leg_rgb, 10))
            parts.append(ColoredMesh.cylinder([x, tube, front], [x, seat_bottom, -depth / 2 + 0.04], tube, leg_rgb, 10))
            parts.append(ColoredMesh.cylinder([x, tube, rear], [x, seat_bottom, depth / 2 - 0.04], tube, leg_rgb, 10))

    if back != "none":
        back_rgb = finishes["back"].rgb
        back_h = rng.uniform(0.2, 0.3) if style["back_height"] == "low" else rng.uniform(0.45, 0.62)
        back_t = rng.uniform(0.025, 0.05)
        back_w = width * (rng.uniform(0.9, 1.0) if style["seat_shape"] != "round" else 0.75)
        z = depth / 2 - back_t / 2
        y0, y1 = seat_top, seat_top + back_h
        pieces: list[ColoredMesh] = []
        if back == "solid":
            pieces.append(ColoredMesh.box([0, (y0 + y1) / 2, z], [back_w, back_h, back_t], back_rgb))
        else:
            post = rng.uniform(0.03, 0.045)
            for sx in (-1, 1):
                pieces.append(
                    ColoredMesh.box([sx * (back_w - post) / 2, (y0 + y1) / 2, z], [post, back_h, back_t], back_rgb)
                )
            if back == "slatted":
                rail_h = rng.uniform(0.05, 0.09)
                pieces.append(ColoredMesh.box([0, y1 - rail_h / 2, z], [back_w, rail_h, back_t], back_rgb))
                n_slats = int(rng.integers(3, 7))
                slat_w = rng.uniform(0.02, 0.04)
                inner = back_w - 2 * post
                for k in range(n_slats):
                    x = -inner / 2 + inner * (k + 0.5) / n_slats
                    slat_top = y1 - rail_h
                    pieces.append(
                        ColoredMesh.box([x, (y0 + slat_top) / 2, z], [slat_w, slat_top - y0, back_t * 0.7], back_rgb)
                    )
            else:
                n_rails = int(rng.integers(3, 6))
                rail_h = rng.uniform(0.03, 0.05)
                for k in range(n_rails):
                    y = y0 + back_h * (0.3 + 0.7 * (k + 1) / n_rails) - rail_h / 2
                    pieces.append(ColoredMesh.box([0, y, z], [back_w, rail_h, back_t * 0.8], back_rgb))
        tilt = np.radians(rng.uniform(0.0, 14.0))
        parts += [_sheared(p, y0, tilt) for p in pieces]

    if style["arms"] == "yes":
        arm_rgb = finishes["arms"].rgb
        arm_y = seat_top + rng.uniform(0.17, 0.25)
        arm_w, arm_h = rng.uniform(0.04, 0.07), rng.uniform(0.025, 0.04)
        for sx in (-1, 1):
            x = sx * (width / 2 + arm_w / 2)
            parts.append(ColoredMesh.box([x, arm_y, 0.02], [arm_w, arm_h, depth * 0.95], arm_rgb))
            parts.append(
                ColoredMesh.box(
                    [x, (seat_bottom + arm_y) / 2, -depth / 2 + 0.05], [arm_w * 0.6, arm_y - seat_bottom, 0.03], arm_rgb
                )
            )
    return ProceduralShape("chair", style, finishes, ColoredMesh.merge(parts))


def make_table(rng: np.random.Generator) -> ProceduralShape:
    """A random table: round/rectangular/square/oval top; four/three legs, pedestal or trestle; shelf."""
    height_kind = _pick(rng, ("coffee", "dining", "bar"), (0.3, 0.55, 0.15))
    top_shape = _pick(rng, ("round", "rectangular", "square", "oval"), (0.3, 0.35, 0.2, 0.15))
    if height_kind == "bar" and top_shape in ("rectangular", "oval"):
        top_shape = _pick(rng, ("round", "square"))
    if top_shape == "round":
        legs = _pick(rng, ("four", "pedestal", "three"), (0.35, 0.4, 0.25))
    elif top_shape in ("rectangular", "oval"):
        legs = _pick(rng, ("four", "pedestal", "trestle"), (0.6, 0.15, 0.25))
    else:
        legs = _pick(rng, ("four", "pedestal"), (0.75, 0.25))
    style = {
        "top_shape": top_shape,
        "height": height_kind,
        "top_thickness": _pick(rng, ("thin", "thick")),
        "legs": legs,
        "leg_profile": _pick(rng, ("square", "round")) if legs in ("four", "three") else "none",
        "pedestal_base": _pick(rng, ("disk", "cross")) if legs == "pedestal" else "none",
        "shelf": _pick(rng, ("yes", "no"), (0.3, 0.7)) if legs == "four" and height_kind != "bar" else "no",
        "stretchers": "no",
    }
    if legs == "four" and style["shelf"] == "no":
        style["stretchers"] = _pick(rng, ("yes", "no"), (0.3, 0.7))
    top = _finish(rng, ("wood", "glass", "marble", "plastic", "metal"), (0.5, 0.17, 0.11, 0.11, 0.11))
    finishes = {"top": top}
    if top.material == "wood" and rng.random() < 0.6:
        finishes["legs"] = top
    else:
        finishes["legs"] = _finish(rng, ("wood", "metal"), (0.4, 0.6))
    if style["shelf"] == "yes":
        finishes["shelf"] = top if top.material != "glass" or rng.random() < 0.5 else finishes["legs"]
    if style["top_thickness"] == "thick" and top.material == "glass":
        style["top_thickness"] = "thin"

    height = {"coffee": rng.uniform(0.38, 0.48), "dining": rng.uniform(0.7, 0.78), "bar": rng.uniform(0.98, 1.08)}[
        height_kind
    ]
    if top_shape == "round":
        width = depth = (
            2
            * {"coffee": rng.uniform(0.35, 0.5), "dining": rng.uniform(0.45, 0.65), "bar": rng.uniform(0.3, 0.4)}[
                height_kind
            ]
        )
    elif top_shape == "square":
        width = {"coffee": rng.uniform(0.6, 0.9), "dining": rng.uniform(0.75, 1.0), "bar": rng.uniform(0.6, 0.72)}[
            height_kind
        ]
        depth = width
    else:
        width = rng.uniform(0.9, 1.3) if height_kind == "coffee" else rng.uniform(1.1, 1.8)
        depth = width * rng.uniform(0.45, 0.62)
    thickness = rng.uniform(0.02, 0.035) if style["top_thickness"] == "thin" else rng.uniform(0.05, 0.08)
    if top.material == "glass":
        thickness = rng.uniform(0.012, 0.02)
    top_bottom = height - thickness

    parts: list[ColoredMesh] = []
    if top_shape in ("round", "oval"):
        parts.append(_disc(top_bottom, height, width / 2, depth / 2, top.rgb, 40))
    else:
        parts.append(ColoredMesh.box([0, height - thickness / 2, 0], [width, thickness, depth], top.rgb))

    leg_rgb = finishes["legs"].rgb
    if legs in ("four", "three"):
        leg_t = rng.uniform(0.03, 0.05) if rng.random() < 0.6 else rng.uniform(0.06, 0.09)
        inset = leg_t / 2 + (
            rng.uniform(0.02, 0.12) if top_shape not in ("round", "oval") else width * rng.uniform(0.1, 0.2)
        )
        positions = _leg_positions(top_shape, width, depth, inset, 4 if legs == "four" else 3)
        parts += [_leg(x, z, 0.0, top_bottom, leg_t, style["leg_profile"], leg_rgb) for x, z in positions]
        if style["shelf"] == "yes":
            shelf_y = height * rng.uniform(0.15, 0.3)
            shelf_rgb = finishes["shelf"].rgb
            xs, zs = [abs(p[0]) for p in positions], [abs(p[1]) for p in positions]
            if top_shape in ("round", "oval"):
                parts.append(_disc(shelf_y, shelf_y + 0.02, max(xs) + leg_t / 2, max(zs) + leg_t / 2, shelf_rgb))
            else:
                parts.append(
                    ColoredMesh.box([0, shelf_y, 0], [2 * max(xs) + leg_t, 0.02, 2 * max(zs) + leg_t], shelf_rgb)
                )
        if style["stretchers"] == "yes":
            parts += _stretchers(positions, height * rng.uniform(0.12, 0.3), leg_t * 0.5, leg_rgb)
    elif legs == "pedestal":
        column_r = rng.uniform(0.035, 0.08)
        base_h = rng.uniform(0.025, 0.05)
        parts.append(ColoredMesh.cylinder([0, base_h, 0], [0, top_bottom, 0], column_r, leg_rgb, 20))
        reach = min(width, depth) * rng.uniform(0.3, 0.42)
        if style["pedestal_base"] == "disk":
            parts.append(_disc(0.0, base_h, reach, reach, leg_rgb))
        else:
            parts.append(ColoredMesh.box([0, base_h / 2, 0], [2 * reach, base_h, 0.06], leg_rgb))
            parts.append(ColoredMesh.box([0, base_h / 2, 0], [0.06, base_h, 2 * reach], leg_rgb))
    else:
        panel_t = rng.uniform(0.04, 0.07)
        x = width / 2 - panel_t / 2 - rng.uniform(0.0, 0.15)
        for sx in (-1, 1):
            parts.append(
                ColoredMesh.box(
                    [sx * x, top_bottom / 2, 0], [panel_t, top_bottom, depth * rng.uniform(0.7, 0.95)], leg_rgb
                )
            )
        if rng.random() < 0.5:
            parts.append(ColoredMesh.box([0, top_bottom * 0.3, 0], [2 * x, 0.05, 0.04], leg_rgb))
    return ProceduralShape("table", style, finishes, ColoredMesh.merge(parts))


def make_shape(category: str, rng: np.random.Generator) -> ProceduralShape:
    if category == "chair":
        return make_chair(rng)
    if category == "table":
        return make_table(rng)
    raise ValueError(f"unknown procedural category {category!r}; choose from {CATEGORIES}")
