"""Composing images: object-centric classification images and cluttered detection scenes
(several objects, distractors, occluders, truncation), with each object's annotation
measured from the drawing itself (box, occlusion, truncation, part visibility).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from lsda_core.world import render as R
from lsda_core.world.categories import PARTS, Design

VIEW_P = {"left": 0.35, "right": 0.35, "front": 0.15, "rear": 0.15}
POSE = {"left": "Left", "right": "Right", "front": "Frontal", "rear": "Rear"}
MIN_SIZE_PX = 9.0         # smallest object (sqrt of box area, output px)
MIN_VISIBLE = 0.15        # an object less visible than this (of its in-image part) is not placed
MIN_VISIBLE_PX = 12       # nor one with fewer visible output pixels
MAX_TRUNCATION = 0.75     # nor one mostly outside the image
DIFFICULT_PX = 50         # difficult: fewer visible output pixels than this ...
DIFFICULT_OCCLUSION = 0.7  # ... or at least this occluded (VOC: hard to recognise without context)
FLAG_MIN = 0.05           # VOC truncated / occluded flags: more than this fraction cut / hidden


@dataclass(frozen=True)
class Style:
    """How a kind of image is composed; sizes are sqrt-area fractions of sqrt(image area)."""

    primary_size: tuple[float, float]  # of the main object, when compose() is given one
    n_other: tuple[int, int]           # other labelled objects
    other_size: tuple[float, float]
    decay: float                       # P(k others) ~ decay**k
    distractors: int
    occluders: int
    truncate_p: float                  # share of objects allowed to cross the border


@dataclass
class SceneObject:
    """One placed category instance and what its annotation says."""

    cat: int
    viewpoint: str
    primary: bool
    box: np.ndarray = field(default_factory=lambda: np.zeros(4))  # visible extent: 0-based edges, output px
    full_box: np.ndarray = field(default_factory=lambda: np.zeros(4))  # whole object, clipped to the image
    occlusion: float = 0.0
    truncation: float = 0.0
    visible_area: int = 0
    parts: dict[str, float] = field(default_factory=dict)

    @property
    def area(self) -> float:
        """Box area (output px)."""
        return float((self.box[2] - self.box[0]) * (self.box[3] - self.box[1]))

    @property
    def aspect(self) -> float:
        """Box width / height."""
        return float((self.box[2] - self.box[0]) / max(self.box[3] - self.box[1], 1e-9))

    @property
    def difficult(self) -> bool:
        """VOC's judgement as a rule: tiny or mostly hidden."""
        return self.visible_area < DIFFICULT_PX or self.occlusion >= DIFFICULT_OCCLUSION

    @property
    def truncated(self) -> bool:
        """VOC's truncated flag, as a rule."""
        return self.truncation > FLAG_MIN

    @property
    def occluded(self) -> bool:
        """VOC's occluded flag, as a rule."""
        return self.occlusion > FLAG_MIN


@dataclass
class Scene:
    """A finished image, its objects (depth order, back to front) and the instance label map
    (0 background, i = objects[i - 1] where visible)."""

    image: np.ndarray
    objects: list[SceneObject]
    labels: np.ndarray


@dataclass
class _Thing:
    """Something drawn in a scene: a category instance (with its annotation) or not."""

    layer: R.Layer
    obj: SceneObject | None   # None: distractor or occluder


def _loguniform(rng: np.random.Generator, lo: float, hi: float) -> float:
    """A draw uniform in log between lo and hi (sizes: small objects as common as large)."""
    return float(np.exp(rng.uniform(np.log(lo), np.log(max(hi, lo * 1.001)))))


def _count(rng: np.random.Generator, lo: int, hi: int, decay: float) -> int:
    """A count in [lo, hi], fewer more likely."""
    p = decay ** np.arange(hi - lo + 1)
    return lo + int(rng.choice(len(p), p=p / p.sum()))


def _others(rng: np.random.Generator, design: Design, pool: tuple[int, ...], first: list[int], n: int) -> list[int]:
    """Categories of further objects: repeats and siblings co-occur, as herds and similar
    categories do in real photographs."""
    out = list(first)
    for _ in range(n):
        r = rng.random()
        if out and r < 0.3:
            out.append(out[rng.integers(len(out))])
            continue
        if out and r < 0.55:
            sc = design.categories[out[rng.integers(len(out))]].superclass
            sibs = [c for c in pool if design.categories[c].superclass == sc]
            out.append(sibs[rng.integers(len(sibs))])
            continue
        out.append(pool[rng.integers(len(pool))])
    return out[len(first):]


def _centre(rng: np.random.Generator, extent: float, side: float, truncate: bool) -> float:
    """A centre coordinate keeping the object inside (or letting it cross the border)."""
    slack = 0.45 * extent if truncate else 0.0
    lo, hi = extent / 2 - slack, side - extent / 2 + slack
    return float(rng.uniform(lo, hi)) if lo < hi else side / 2 + float(rng.normal(0, 0.05 * side))


def _instance(rng: np.random.Generator, design: Design, cat: int, size: float, w: int, h: int,
              truncate: bool, primary: bool) -> _Thing:
    """Draw one category instance at a random place, viewpoint, articulation and colour."""
    c = design.categories[cat]
    sc = design.superclasses[c.superclass]
    view = str(rng.choice(list(VIEW_P), p=list(VIEW_P.values())))
    art = R.sample_artic(rng, sc)
    paint = R.sample_paint(rng, c)
    elems = R.object_model(sc, c, view, art)
    pts = np.concatenate([q for _, _, polys in elems for q in polys])
    ext = pts.max(0) - pts.min(0)
    bw, bh = size * np.sqrt(ext[0] / ext[1]), size * np.sqrt(ext[1] / ext[0])
    cx, cy = _centre(rng, bw, w, truncate), _centre(rng, bh, h, truncate)
    return _Thing(R.draw(elems, paint, size, cx, cy, art.rot), SceneObject(cat, view, primary))


def _distractor(rng: np.random.Generator, design: Design, size: float, w: int, h: int) -> _Thing:
    """A thing of no category: a headless body, a lone head (a category's face mark), or a shape."""
    r = rng.random()
    if r < 0.35:
        c = design.categories[rng.integers(len(design.categories))]
        sc = design.superclasses[c.superclass]
        elems = [(0, k, polys) for _, k, polys in
                 R.head_model(sc, c, str(rng.choice(["left", "front"])), np.zeros(2), float(rng.normal(0, 0.3)))]
        paint = R.sample_paint(rng, c)
    else:
        elems = R.blob_model(rng) if r < 0.75 else R.shape_model(rng)
        paint = R.random_paint(rng)
    cx, cy = rng.uniform(0, w), rng.uniform(0, h)
    return _Thing(R.draw(elems, paint, size, cx, cy), None)


def _owners(things: list[_Thing], w: int, h: int) -> np.ndarray:
    """Which thing each supersampled pixel shows (-1: background)."""
    own = np.full((h, w), -1, np.int16)
    for i, t in enumerate(things):
        win = R.window(t.layer, w, h)
        if win is not None:
            own[win[0]][t.layer.sil[win[1]]] = i
    return own


def _measure(t: _Thing, i: int, own: np.ndarray, w: int, h: int) -> tuple[float, float, int]:
    """(visible share of the in-image silhouette, truncation, visible output pixels)."""
    sil = t.layer.sil
    total = int(sil.sum())
    win = R.window(t.layer, w, h)
    if win is None or total == 0:
        return 0.0, 1.0, 0
    inside = int(sil[win[1]].sum())
    vis = own[win[0]] == i
    vis_px = int(R.covered(vis).sum())
    return (int(vis.sum()) / inside if inside else 0.0), 1 - inside / total, vis_px


def _resolve(things: list[_Thing], w: int, h: int) -> np.ndarray:
    """Remove objects that ended up (almost) invisible, and things that hide a primary (or
    the last remaining) object, until every labelled object is visible enough; returns the
    owner map."""
    while True:
        own = _owners(things, w, h)
        last = sum(t.obj is not None for t in things) == 1
        bad = []
        for i, t in enumerate(things):
            if t.obj is not None:
                vis, trunc, px = _measure(t, i, own, w, h)
                kept = t.obj.primary or last
                if vis < MIN_VISIBLE or px < MIN_VISIBLE_PX or (trunc > MAX_TRUNCATION and not kept):
                    bad.append((vis, i, kept))
        for _, i, kept in sorted(bad):
            if not kept:
                del things[i]
                break
            win = R.window(things[i].layer, w, h)
            cover = own[win[0]][things[i].layer.sil[win[1]]] if win is not None else np.zeros(0, np.int16)
            cover = cover[cover > i]
            if cover.size:
                del things[int(np.bincount(cover).argmax())]
                break
        else:
            return own


def _extent(covered: np.ndarray, mask: np.ndarray, ox: int, oy: int) -> np.ndarray:
    """Box (0-based edges, output px) of the output pixels `covered` marks; of the pixels the
    supersampled `mask` touches at all when it covers none (a sliver)."""
    fm = covered if covered.any() else R.block_sum(mask) > 0
    rows, cols = np.flatnonzero(fm.any(1)), np.flatnonzero(fm.any(0))
    return np.array([ox + cols[0], oy + rows[0], ox + cols[-1] + 1, oy + rows[-1] + 1], np.float64)


def _annotate(design: Design, t: _Thing, i: int, own: np.ndarray, w: int, h: int) -> tuple[np.ndarray, int, int]:
    """Fill the object's box (its visible extent, as VOC's guidelines ask), its whole extent
    clipped to the image, occlusion, truncation, visible area and part visibility;
    returns its visible mask in output pixels and that mask's offset (x, y)."""
    o, layer = t.obj, t.layer
    win = R.window(layer, w, h)
    sil = layer.sil
    vis = own[win[0]] == i
    inside = sil[win[1]]
    o.occlusion = 1 - float(vis.sum()) / max(int(inside.sum()), 1)
    o.truncation = 1 - float(inside.sum()) / max(int(sil.sum()), 1)
    ox, oy = win[0][1].start // R.SS, win[0][0].start // R.SS
    o.full_box = _extent(R.covered(inside), inside, ox, oy)
    vm = R.covered(vis)
    o.box = _extent(vm, vis, ox, oy)  # VOC's guidelines: the visible extent (`compose` trims it to the labels)
    o.visible_area = int(vm.sum())
    sub = layer.parts[win[1]]
    parts = {}
    for name in design.superclasses[design.categories[o.cat].superclass].parts:
        p = PARTS.index(name)
        drawn = int((layer.parts == p).sum())
        parts[name] = float(((sub == p) & vis).sum()) / drawn if drawn else 0.0
    o.parts = parts
    return vm, ox, oy


def compose(rng: np.random.Generator, design: Design, pool: tuple[int, ...], w: int, h: int, style: Style,
            primary: int | None = None) -> Scene:
    """One image of `w` x `h` px: background, objects of categories in `pool` (and one of
    category `primary` in front, when given), distractors and occluders."""
    W, H = w * R.SS, h * R.SS
    canvas, palette = R.background(rng, w, h)
    unit = np.sqrt(W * H)
    first = [primary] if primary is not None else []
    k = _count(rng, *style.n_other, style.decay)
    cats = _others(rng, design, pool, first, k)
    lo = MIN_SIZE_PX * R.SS / unit
    things = []
    for c in cats:
        size = _loguniform(rng, max(lo, style.other_size[0]), style.other_size[1] / max(len(cats), 1) ** 0.3)
        things.append(_instance(rng, design, c, size * unit, W, H, rng.random() < style.truncate_p, False))
    for _ in range(int(rng.integers(0, style.distractors + 1))):
        things.append(_distractor(rng, design, _loguniform(rng, lo, 0.6) * unit, W, H))
    things = [things[i] for i in rng.permutation(len(things))]
    if primary is not None:
        size = _loguniform(rng, *style.primary_size) * unit
        things.append(_instance(rng, design, primary, size, W, H, rng.random() < style.truncate_p, True))
    objs = [t for t in things if t.obj is not None]
    for _ in range(int(rng.integers(0, style.occluders + 1))):
        target = objs[rng.integers(len(objs))].layer if objs and rng.random() < 0.7 else None
        box = None if target is None else (target.x0, target.y0, target.x0 + target.parts.shape[1],
                                           target.y0 + target.parts.shape[0])
        things.append(_Thing(R.occluder(rng, W, H, box, palette), None))
    own = _resolve(things, W, H)
    for t in things:
        R.composite(canvas, t.layer)
    image = R.finish(canvas, rng)
    labels = np.zeros((h, w), np.uint8)
    objects = []
    for i, t in enumerate(things):
        if t.obj is not None:
            vm, ox, oy = _annotate(design, t, i, own, W, H)
            objects.append(t.obj)
            labels[oy:oy + vm.shape[0], ox:ox + vm.shape[1]][vm] = len(objects)
    for k, o in enumerate(objects, start=1):  # a pixel half-covered by two objects is the later one's
        ys, xs = np.nonzero(labels == k)
        if len(xs):
            o.box = np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], np.float64)
    return Scene(image, objects, labels)

