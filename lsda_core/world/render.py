"""Drawing: category instances, their parts and textures, distractors, occluders and
cluttered backgrounds, rasterised with cv2 at SS x the output resolution (then averaged
down, which anti-aliases edges and gives exact sub-pixel coverage for masks).

Model units: body height 1, y pointing down, side views built facing left (head at -x).
"""
from __future__ import annotations

import colorsys
from dataclasses import dataclass

import cv2
import numpy as np

from lsda_core.world.categories import PARTS, TEXTURES, Category, Superclass

SS = 2                      # supersampling factor of every drawing
_SHIFT = 4                  # cv2 fixed-point bits for sub-pixel polygon vertices
_PAINTS = ("tex", "leg", "face", "beak", "eye")  # how a polygon is coloured

Poly = np.ndarray           # (N, 2) float vertices
Elem = tuple[int, str, list[Poly]]  # (part index, paint, polygons)


@dataclass
class Layer:
    """One drawn thing in the supersampled scene: window origin, part map and colours."""

    x0: int
    y0: int
    parts: np.ndarray       # int8 (h, w): index into PARTS, -1 outside the silhouette
    rgb: np.ndarray         # float32 (h, w, 3)

    @property
    def sil(self) -> np.ndarray:
        """The silhouette (bool, window-sized)."""
        return self.parts >= 0


@dataclass
class Paint:
    """The colours and texture of one drawn instance."""

    rgb1: np.ndarray
    rgb2: np.ndarray
    texture: str
    period: float
    angle: float
    phase: float
    leg: np.ndarray
    face: np.ndarray
    eye: np.ndarray
    beak: np.ndarray


@dataclass
class Artic:
    """Articulation and in-plane rotation of one instance."""

    legs: tuple[float, ...]
    tilt: float
    tail: float
    rot: float


def hsv(h: float, s: float, v: float) -> np.ndarray:
    """An RGB colour (float32, 0..255) from HSV in [0, 1]."""
    return np.array(colorsys.hsv_to_rgb(h % 1.0, min(max(s, 0.0), 1.0), min(max(v, 0.0), 1.0)),
                    np.float32) * 255


def sample_paint(rng: np.random.Generator | None, cat: Category) -> Paint:
    """Colours of one instance: the category's prior with spread, ignored by a share of
    instances that depends on the category (rng None: the prior's centre, for exemplars)."""
    def jit(sd: float) -> float:
        return float(rng.normal(0, sd)) if rng is not None else 0.0
    outlier = rng is not None and rng.random() > cat.colour_p
    hue = rng.random() if outlier else cat.hue + jit(cat.hue_sd)
    s, v = (rng.uniform(0.25, 0.95), rng.uniform(0.3, 0.95)) if outlier else (cat.sat + jit(0.08), cat.val + jit(0.1))
    return Paint(
        rgb1=hsv(hue, s, v), rgb2=hsv(cat.hue2 + jit(0.04), s, cat.val2 + jit(0.08)),
        texture=cat.texture, period=cat.tex_period * (1 + jit(0.08)), angle=cat.tex_angle + jit(0.15),
        phase=float(rng.uniform(0, 2 * np.pi)) if rng is not None else 0.0,
        leg=hsv(hue, s, v * 0.6), face=hsv(cat.face_hue + jit(0.015), 0.65, cat.face_val),
        eye=hsv(0, 0.1, 0.95) if cat.eye_light else hsv(0, 0.2, 0.08), beak=hsv(cat.beak_hue, 0.75, 0.7),
    )


def random_paint(rng: np.random.Generator) -> Paint:
    """Colours and texture of a distractor: drawn from the same families as categories'."""
    h, s, v = rng.random(), rng.uniform(0.2, 0.9), rng.uniform(0.3, 0.95)
    return Paint(
        rgb1=hsv(h, s, v), rgb2=hsv(h + rng.uniform(0.2, 0.8), s, rng.uniform(0.15, 0.95)),
        texture=str(rng.choice(TEXTURES)), period=float(rng.uniform(0.18, 0.5)),
        angle=float(rng.uniform(0, np.pi)), phase=float(rng.uniform(0, 2 * np.pi)),
        leg=hsv(h, s, v * 0.6), face=hsv(rng.random(), 0.65, rng.uniform(0.55, 0.95)),
        eye=hsv(0, 0.2, 0.08), beak=hsv(rng.random(), 0.75, 0.7),
    )


def sample_artic(rng: np.random.Generator, sc: Superclass) -> Artic:
    """Leg swing, head tilt, tail swing and a small in-plane rotation."""
    return Artic(legs=tuple(float(a) for a in rng.normal(0, 0.3, size=max(sc.n_legs, 1)).clip(-0.7, 0.7)),
                 tilt=float(rng.normal(0, 0.2)), tail=float(rng.normal(0, 0.35)), rot=float(rng.normal(0, 0.07)))


# ---------------------------------------------------------------------------------------
# geometry in model units

def superellipse(a: float, b: float, n: float, taper: float = 0.0, k: int = 40) -> Poly:
    """Closed superellipse outline, its height scaled by (1 + taper x / a)."""
    t = np.linspace(0, 2 * np.pi, k, endpoint=False)
    c, s = np.cos(t), np.sin(t)
    x = a * np.sign(c) * np.abs(c) ** (2 / n)
    y = b * np.sign(s) * np.abs(s) ** (2 / n) * (1 + taper * x / a)
    return np.stack([x, y], 1)


def _top(sc: Superclass, a: float, x: float) -> float:
    """The body's upper edge at abscissa x (side view)."""
    r = max(1 - abs(x / a) ** sc.body_n, 0.0) ** (1 / sc.body_n)
    return -0.5 * r * (1 + sc.taper * x / a)


def regular(kind: str, r: float, k: int = 20) -> Poly:
    """Head outlines (facing left where they have a direction)."""
    if kind == "circle":
        t = np.linspace(0, 2 * np.pi, k, endpoint=False)
    elif kind == "square":
        t = np.pi / 4 + np.arange(4) * np.pi / 2
    elif kind == "triangle":
        t = np.pi + np.arange(3) * 2 * np.pi / 3
        r = r * 1.25
    elif kind == "hexagon":
        t = np.arange(6) * np.pi / 3
    else:  # diamond
        t = np.arange(4) * np.pi / 2
        r = r * 1.2
    return np.stack([r * np.cos(t), r * np.sin(t)], 1)


def circle(cx: float, cy: float, r: float, k: int = 12) -> Poly:
    """A polygonal disc."""
    t = np.linspace(0, 2 * np.pi, k, endpoint=False)
    return np.stack([cx + r * np.cos(t), cy + r * np.sin(t)], 1)


def limb(p: np.ndarray, q: np.ndarray, w0: float, w1: float) -> list[Poly]:
    """A tapered segment from p to q with a rounded end at q."""
    d = q - p
    n = np.array([-d[1], d[0]]) / (np.hypot(*d) + 1e-9)
    quad = np.stack([p + n * w0 / 2, q + n * w1 / 2, q - n * w1 / 2, p - n * w0 / 2])
    return [quad, circle(q[0], q[1], w1 / 2, 8)]


def _rot(pts: Poly, ang: float) -> Poly:
    """Points rotated by `ang` radians about the origin."""
    c, s = np.cos(ang), np.sin(ang)
    return pts @ np.array([[c, s], [-s, c]])


_FRONT_EYES = {1: ((0.0, -0.15),), 2: ((-0.38, -0.2), (0.38, -0.2)), 3: ((-0.4, -0.25), (0.4, -0.25), (0.0, 0.3))}


def head_model(sc: Superclass, cat: Category, view: str, centre: np.ndarray, tilt: float) -> list[Elem]:
    """The head with the category's face mark (eyes, beak or horns): the discriminative part."""
    r = sc.head_r * cat.head_mul
    h = PARTS.index("head")
    side = view in ("left", "right")
    out: list[Elem] = []
    beak = {"beak": [(-0.8, -0.2), (-1.7, 0.15), (-0.75, 0.4)] if side else [(-0.3, 0.2), (0.0, 0.75), (0.3, 0.2)],
            "horn": [(-0.35, -0.7), (-0.2, -1.8), (0.15, -0.8)] if side else [(-0.2, -0.8), (0.0, -1.8), (0.2, -0.8)],
            "ears": [(-0.7, -0.5), (-0.55, -1.4), (-0.2, -0.75), (0.1, -0.8), (0.35, -1.45), (0.55, -0.5)],
            "chin": [(-0.6, 0.6), (-0.35, 1.5), (0.05, 0.75)] if side else [(-0.35, 0.7), (0.0, 1.5), (0.35, 0.7)]}
    if cat.beak in beak:
        pts = np.array(beak[cat.beak]) * r
        polys = [pts[:3], pts[3:]] if cat.beak == "ears" else [pts]
        out.append((h, "beak", [centre + _rot(p, tilt) for p in polys]))
    out.append((h, "face", [centre + _rot(regular(sc.head_shape, r), tilt)]))
    eyes = [(x, y, e) for x, y, e in cat.eyes] if side else \
        [(x, y, e) for (x, y), (_, _, e) in zip(_FRONT_EYES[len(cat.eyes)], cat.eyes)]
    out.append((h, "eye", [centre + _rot(circle(x * r, y * r, e * r, 10), tilt) for x, y, e in eyes]))
    return out


def object_model(sc: Superclass, cat: Category, view: str, art: Artic) -> list[Elem]:
    """Every part polygon of one instance, in drawing order (later ones cover earlier)."""
    part = PARTS.index
    side = view in ("left", "right")
    a = (sc.aspect * cat.aspect_mul if side else sc.front_w * cat.aspect_mul ** 0.5) / 2
    elems: list[Elem] = []
    leg_len, lw = sc.leg_len * cat.leg_mul, sc.leg_w
    if sc.tail_len and view in ("left", "right"):
        p = np.array([0.85 * a, -0.1])
        ang = sc.tail_angle + art.tail
        elems.append((part("tail"), "tex", limb(p, p + sc.tail_len * np.array([np.cos(ang), np.sin(ang)]),
                                                sc.tail_w * 1.6, sc.tail_w * 0.6)))
    if sc.n_legs:
        xs = np.linspace(-0.6 * a, 0.6 * a, sc.n_legs) if side else \
            np.array([0.0]) if sc.n_legs == 1 else np.linspace(-0.55 * a, 0.55 * a, 3 if sc.n_legs == 3 else 2)
        polys = []
        for i, x in enumerate(xs):
            ang = art.legs[i % len(art.legs)] * (1.0 if side else 0.3) + (0.0 if side else 0.12 * np.sign(x))
            hip = np.array([x, 0.3])
            polys += limb(hip, hip + leg_len * np.array([np.sin(ang), np.cos(ang)]), lw, lw * 0.75)
        elems.append((part("legs"), "leg", polys))
    if sc.n_spikes:
        h = sc.crest_h * cat.crest_mul
        xs = np.linspace(-0.45 * a, 0.45 * a, sc.n_spikes) if side else np.array([0.0])
        polys = []
        for x in xs:
            t = _top(sc, a, x) if side else -0.5
            polys.append(np.array([[x - 0.12, t + 0.15], [x + 0.03, t - h], [x + 0.12, t + 0.15]]))
        elems.append((part("crest"), "tex", polys))
    elems.append((part("body"), "tex", [superellipse(a, 0.5, sc.body_n, sc.taper if side else 0.0)]))
    if view == "rear" and sc.tail_len:
        ang = np.pi / 2 - 0.35 - art.tail
        p = np.array([0.0, 0.05])
        elems.append((part("tail"), "tex", limb(p, p + sc.tail_len * np.array([np.cos(ang), np.sin(ang)]),
                                                sc.tail_w * 1.6, sc.tail_w * 0.6)))
    if view != "rear":
        r = sc.head_r * cat.head_mul
        if side:
            anchor = np.array([-0.75 * a, -0.2])
            ang = sc.neck_angle + art.tilt
            centre = anchor + (sc.neck_len + 0.6 * r) * np.array([-np.cos(ang), -np.sin(ang)])
        else:
            anchor = np.array([0.0, -0.25])
            centre = anchor + np.array([0.0, -(0.3 + 0.6 * sc.neck_len + 0.3 * r)])
        if sc.neck_len:
            elems.append((part("body"), "tex", limb(anchor, centre, 0.4, 0.3)[:1]))
        elems += head_model(sc, cat, view, centre, art.tilt if side else art.tilt * 0.3)
    if view == "right":
        elems = [(p, k, [q * np.array([-1.0, 1.0]) for q in polys]) for p, k, polys in elems]
    return [(p, k, [_rot(q, art.rot) for q in polys]) for p, k, polys in elems]


def blob_model(rng: np.random.Generator) -> list[Elem]:
    """A headless body (sometimes with legs or spikes): shares parts with categories."""
    a, n = rng.uniform(0.4, 1.4), rng.choice([1.5, 2.0, 3.0, 5.0])
    elems: list[Elem] = []
    if rng.random() < 0.5:
        xs = np.linspace(-0.6 * a, 0.6 * a, int(rng.integers(2, 5)))
        polys = []
        for x in xs:
            hip, ang = np.array([x, 0.3]), rng.normal(0, 0.3)
            polys += limb(hip, hip + rng.uniform(0.3, 0.9) * np.array([np.sin(ang), np.cos(ang)]), 0.14, 0.1)
        elems.append((0, "leg", polys))
    if rng.random() < 0.3:
        elems.append((0, "tex", [np.array([[x - 0.12, -0.3], [x, -0.5 - rng.uniform(0.15, 0.4)], [x + 0.12, -0.3]])
                                 for x in np.linspace(-0.4 * a, 0.4 * a, int(rng.integers(1, 4)))]))
    elems.append((0, "tex", [superellipse(a, 0.5, n, rng.uniform(-0.3, 0.3))]))
    return elems


def shape_model(rng: np.random.Generator) -> list[Elem]:
    """A geometric distractor: a star, a ring-like polygon or a cross."""
    kind = rng.integers(3)
    if kind == 0:
        k = int(rng.integers(4, 8))
        t = np.arange(2 * k) * np.pi / k
        r = np.where(np.arange(2 * k) % 2 == 0, 1.0, rng.uniform(0.35, 0.6))
        return [(0, "tex", [np.stack([r * np.cos(t), r * np.sin(t)], 1)])]
    if kind == 1:
        k = int(rng.integers(5, 12))
        t = np.sort(rng.uniform(0, 2 * np.pi, k))
        r = rng.uniform(0.5, 1.0, k)
        return [(0, "tex", [np.stack([r * np.cos(t), r * np.sin(t)], 1)])]
    w = rng.uniform(0.2, 0.45)
    return [(0, "tex", [np.array([[-1, -w], [1, -w], [1, w], [-1, w]]), np.array([[-w, -1], [w, -1], [w, 1], [-w, 1]])])]


# ---------------------------------------------------------------------------------------
# rasterisation

def _texture(paint: Paint, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Weight of the secondary colour (0..1) at model coordinates (u, v)."""
    k = 2 * np.pi / paint.period
    if paint.texture == "stripes":
        t = np.sin(k * (u * np.cos(paint.angle) + v * np.sin(paint.angle)) + paint.phase) * 3
    elif paint.texture == "bands":
        t = np.sin(k * 0.6 * u + paint.phase) * 3
    elif paint.texture == "spots":
        t = (np.sin(k * u + paint.phase) * np.sin(k * v + 1.3 * paint.phase) - 0.45) * 8
    elif paint.texture == "checks":
        t = np.sin(k * 0.8 * u + paint.phase) * np.sin(k * 0.8 * v) * 6
    elif paint.texture == "twotone":
        t = (v - 0.08) * 12
    else:
        return np.zeros_like(u)
    return (np.clip(t, -1, 1) * 0.5 + 0.5) * 0.85


def place(elems: list[Elem], size: float, cx: float, cy: float) -> tuple[list[Elem], float, np.ndarray]:
    """Scale model polygons so the model's box has sqrt-area `size` px, centred at (cx, cy);
    returns the pixel polygons, the scale and the model-box centre (to invert for textures)."""
    pts = np.concatenate([q for _, _, polys in elems for q in polys])
    lo, hi = pts.min(0), pts.max(0)
    s = size / np.sqrt(max((hi - lo).prod(), 1e-6))
    mid = (lo + hi) / 2
    return [(p, k, [(q - mid) * s + (cx, cy) for q in polys]) for p, k, polys in elems], s, mid


def rasterise(elems_px: list[Elem], paint: Paint, scale: float, mid: np.ndarray, cx: float, cy: float,
              rot: float = 0.0, shade: float = 0.3) -> Layer:
    """Draw pixel polygons into a window: part map, then colours (texture attached to the
    model frame so it moves and scales with the object), with a top-lit shading."""
    pts = np.concatenate([q for _, _, polys in elems_px for q in polys])
    x0 = int(np.floor(pts[:, 0].min() / SS)) * SS
    y0 = int(np.floor(pts[:, 1].min() / SS)) * SS
    x1 = int(np.ceil((pts[:, 0].max() + 1) / SS)) * SS
    y1 = int(np.ceil((pts[:, 1].max() + 1) / SS)) * SS
    parts = np.full((y1 - y0, x1 - x0), 255, np.uint8)
    kinds = np.zeros_like(parts)
    origin = np.array([x0, y0], np.float64)
    for p, k, polys in elems_px:
        ints = [np.round((q - origin) * (1 << _SHIFT)).astype(np.int32) for q in polys]
        cv2.fillPoly(parts, ints, p, cv2.LINE_8, _SHIFT)
        cv2.fillPoly(kinds, ints, _PAINTS.index(k), cv2.LINE_8, _SHIFT)
    ys, xs = np.nonzero(parts != 255)
    mx = (xs.astype(np.float32) + (x0 + 0.5 - cx)) / scale + mid[0]
    my = (ys.astype(np.float32) + (y0 + 0.5 - cy)) / scale + mid[1]
    c, s = np.cos(rot), np.sin(rot)
    k = kinds[ys, xs]
    t = _texture(paint, mx * c + my * s, -mx * s + my * c)[:, None]
    solid = np.stack([paint.rgb1, paint.leg, paint.face, paint.beak, paint.eye])
    col = np.where((k == 0)[:, None], paint.rgb1 * (1 - t) + paint.rgb2 * t, solid[k])
    vmin, vmax = (my.min(), my.max()) if my.size else (0.0, 1.0)
    light = 1 + shade / 2 - shade * (my - vmin) / max(vmax - vmin, 1e-6)
    rgb = np.zeros((*parts.shape, 3), np.float32)
    rgb[ys, xs] = col * light[:, None]
    return Layer(x0, y0, parts.view(np.int8), rgb)


def draw(elems: list[Elem], paint: Paint, size: float, cx: float, cy: float, rot: float = 0.0) -> Layer:
    """Place model polygons at (cx, cy) with sqrt-area `size` (SS px) and rasterise them."""
    px, s, mid = place(elems, size, cx, cy)
    return rasterise(px, paint, s, mid, cx, cy, rot)


def occluder(rng: np.random.Generator, w: int, h: int, target: tuple[float, float, float, float] | None,
             palette: np.ndarray) -> Layer:
    """A plain foreground occluder (post, bar, fence, bush or box), near `target` if given
    (x1, y1, x2, y2 in SS px); coloured from the background palette."""
    if target is None:
        tx, ty, tw, th = rng.uniform(0, w), rng.uniform(0, h), w * 0.3, h * 0.3
    else:
        tx, ty = rng.uniform(target[0], target[2]), rng.uniform(target[1], target[3])
        tw, th = max(target[2] - target[0], 4 * SS), max(target[3] - target[1], 4 * SS)
    kind = rng.integers(5)
    polys: list[Poly] = []
    if kind == 0:  # vertical post through the whole image
        bw = rng.uniform(0.1, 0.35) * tw
        polys.append(np.array([[tx - bw / 2, -SS], [tx + bw / 2, -SS], [tx + bw / 2, h + SS], [tx - bw / 2, h + SS]]))
    elif kind == 1:  # horizontal bar from one border
        bh = rng.uniform(0.1, 0.3) * th
        x_end = tx + rng.uniform(0, 0.6) * tw
        polys.append(np.array([[-SS, ty - bh / 2], [x_end, ty - bh / 2], [x_end, ty + bh / 2], [-SS, ty + bh / 2]]))
    elif kind == 2:  # fence: thin posts
        k, bw = int(rng.integers(3, 7)), rng.uniform(0.04, 0.09) * tw
        for x in tx + np.arange(k) * tw * rng.uniform(0.2, 0.4) - tw / 2:
            polys.append(np.array([[x, ty - th], [x + bw, ty - th], [x + bw, h + SS], [x, h + SS]]))
    elif kind == 3:  # bush: a cluster of discs rising from below
        for _ in range(int(rng.integers(3, 8))):
            r = rng.uniform(0.15, 0.35) * max(tw, th)
            polys.append(circle(tx + rng.normal(0, 0.3) * tw, ty + rng.uniform(0, 0.6) * th, r, 16))
    else:  # rotated box
        bw, bh, a = rng.uniform(0.3, 0.7) * tw, rng.uniform(0.3, 0.7) * th, rng.normal(0, 0.3)
        polys.append(_rot(np.array([[-bw, -bh], [bw, -bh], [bw, bh], [-bw, bh]]) / 2, a) + (tx, ty))
    base = palette[rng.integers(len(palette))] * rng.uniform(0.45, 0.9)
    paint = Paint(rgb1=base, rgb2=base * rng.uniform(0.7, 1.0), texture=str(rng.choice(["plain", "stripes", "spots"])),
                  period=float(rng.uniform(3, 8) * SS), angle=float(rng.uniform(0, np.pi)), phase=0.0,
                  leg=base, face=base, eye=base, beak=base)
    return rasterise([(0, "tex", polys)], paint, 1.0, np.zeros(2), 0.0, 0.0, shade=0.15)


# ---------------------------------------------------------------------------------------
# backgrounds and finishing

def background(rng: np.random.Generator, w: int, h: int) -> tuple[np.ndarray, np.ndarray]:
    """A cluttered, textured background of `w` x `h` output px, returned at SS x that size
    (float32 RGB), and its palette: a smooth colour field, multi-scale value noise, sometimes
    a grating, and clutter strokes and shapes, some textured as categories are."""
    hue, sat, val = rng.random(), rng.uniform(0.1, 0.6), rng.uniform(0.3, 0.85)
    palette = np.stack([hsv(hue + rng.normal(0, 0.08), sat + rng.normal(0, 0.12), val + rng.normal(0, 0.15))
                        for _ in range(6)])
    grid = palette[rng.integers(6, size=(int(rng.integers(2, 5)), int(rng.integers(2, 6))))]
    img = cv2.resize(grid, (w, h), interpolation=cv2.INTER_CUBIC)
    for cells, amp in ((4, 18.0), (12, 12.0), (40, 8.0)):
        noise = rng.normal(0, amp, size=(max(2, cells * h // w), cells)).astype(np.float32)
        img += cv2.resize(noise, (w, h), interpolation=cv2.INTER_CUBIC)[..., None]
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    if rng.random() < 0.4:
        a, period = rng.uniform(0, np.pi), rng.uniform(4, 16)
        img += (np.sin((xx * np.cos(a) + yy * np.sin(a)) * 2 * np.pi / period) * rng.uniform(6, 18))[..., None]
    scale = min(w, h)
    for _ in range(int(rng.integers(4, 20))):
        col = palette[rng.integers(6)] * rng.uniform(0.6, 1.3) if rng.random() < 0.75 else \
            hsv(rng.random(), rng.uniform(0.2, 0.8), rng.uniform(0.2, 0.9))
        col = tuple(float(c) for c in col)
        kind = rng.integers(4)
        if kind == 0:
            p = (rng.uniform(0, w, 2) * (1 << _SHIFT)).astype(np.int32)
            q = p + (rng.normal(0, 0.3 * scale, 2) * (1 << _SHIFT)).astype(np.int32)
            cv2.line(img, tuple(int(v) for v in p), tuple(int(v) for v in q), col,
                     int(rng.integers(1, 4)), cv2.LINE_AA, _SHIFT)
        elif kind == 1:
            centre = tuple(int(v) for v in rng.uniform(0, 1, 2) * (w, h))
            axes = tuple(int(v) for v in rng.uniform(0.03, 0.25, 2) * scale)
            cv2.ellipse(img, centre, axes, float(rng.uniform(0, 180)), 0, 360, col, -1, cv2.LINE_AA)
        else:
            k = int(rng.integers(3, 7))
            pts = rng.uniform(0, 1, 2) * (w, h) + rng.normal(0, 0.12 * scale, (k, 2))
            ints = [np.round(pts * (1 << _SHIFT)).astype(np.int32)]
            if kind == 2:
                cv2.fillPoly(img, ints, col, cv2.LINE_AA, _SHIFT)
                continue
            m = np.zeros((h, w), np.uint8)  # a patch textured like a category's body
            cv2.fillPoly(m, ints, 1, cv2.LINE_8, _SHIFT)
            ys, xs = np.nonzero(m)
            paint, unit = random_paint(rng), 0.1 * scale
            t = _texture(paint, xx[ys, xs] / unit, yy[ys, xs] / unit)[:, None]
            img[ys, xs] = paint.rgb1 * (1 - t) + paint.rgb2 * t
    return cv2.resize(img, (w * SS, h * SS), interpolation=cv2.INTER_LINEAR), palette


def window(layer: Layer, w: int, h: int) -> tuple[tuple[slice, slice], tuple[slice, slice]] | None:
    """(canvas slices, layer slices) of the layer's part inside a w x h canvas; None if outside."""
    lh, lw = layer.parts.shape
    x0, y0 = max(layer.x0, 0), max(layer.y0, 0)
    x1, y1 = min(layer.x0 + lw, w), min(layer.y0 + lh, h)
    if x0 >= x1 or y0 >= y1:
        return None
    return (slice(y0, y1), slice(x0, x1)), (slice(y0 - layer.y0, y1 - layer.y0), slice(x0 - layer.x0, x1 - layer.x0))


def composite(canvas: np.ndarray, layer: Layer) -> None:
    """Paint `layer` over `canvas` (in place), clipped to the canvas."""
    win = window(layer, canvas.shape[1], canvas.shape[0])
    if win is not None:
        np.copyto(canvas[win[0]], layer.rgb[win[1]], where=layer.sil[win[1]][..., None])


def block_sum(a: np.ndarray) -> np.ndarray:
    """Sum over SS x SS blocks (a's first two sides are multiples of SS)."""
    a = a.astype(np.float32) if a.dtype == bool else a
    return sum(a[i::SS, j::SS] for i in range(SS) for j in range(SS))


def covered(mask: np.ndarray) -> np.ndarray:
    """Output pixels at least half covered by a supersampled mask."""
    return block_sum(mask.view(np.uint8)) * 2 >= SS * SS


def finish(canvas: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Average down to output size, then vary illumination and colour cast, add sensor
    noise and sometimes defocus blur; uint8 RGB."""
    gain = rng.uniform(0.75, 1.15) * rng.uniform(0.93, 1.07, size=3) / (SS * SS)
    img = block_sum(canvas) * gain.astype(np.float32) + np.float32(rng.normal(0, 6))
    img += rng.standard_normal(img.shape, dtype=np.float32) * np.float32(rng.uniform(2, 6))
    if rng.random() < 0.2:
        img = cv2.GaussianBlur(img, (0, 0), rng.uniform(0.5, 0.9))
    return np.clip(np.round(img), 0, 255).astype(np.uint8)
