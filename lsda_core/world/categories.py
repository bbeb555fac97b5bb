"""The world's categories: superclass body templates, per-category fine detail, names, ids,
and which categories each benchmark view uses, all drawn from the world seed.

Categories of one superclass share a body template (shape, legs, tail, crest, head shape)
and differ in finer detail: the face mark on the head (the discriminative part), colour and
texture priors (informative, overlapping within a superclass) and small proportion changes.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass, replace

import numpy as np

from lsda_core.core.params import World, check_world

PARTS = ("body", "head", "legs", "tail", "crest")
VIEWPOINTS = ("left", "right", "front", "rear")
HEAD_SHAPES = ("circle", "square", "triangle", "hexagon", "diamond")
TEXTURES = ("plain", "stripes", "bands", "spots", "checks", "twotone")
BEAKS = ("none", "beak", "horn", "ears", "chin")
SIBLING_HUE_SD = 0.07     # spread of sibling categories' hues around their superclass's
SIBLING_TEXTURE_P = 0.75  # share of categories wearing one of their superclass's two textures
COLOUR_P = (0.3, 0.95)    # range of categories' colour reliability (as fruit vs. cars)

_ONSETS = ("b", "d", "f", "g", "k", "l", "m", "n", "p", "r", "s", "t", "v", "z",
           "br", "dr", "gl", "kr", "pl", "st", "tr", "sh", "ch", "th")
_VOWELS = ("a", "e", "i", "o", "u", "ai", "ou", "ea")
_CODAS = ("", "", "", "n", "r", "l", "s", "x", "m")


@dataclass(frozen=True)
class Superclass:
    """A body template shared by the categories of one superclass (model units: body height 1)."""

    name: str
    index: int
    hue: float           # colour tendency of its categories (hue, saturation, value)
    sat: float
    val: float
    textures: tuple[str, str]  # the texture families most of its categories wear
    body_n: float        # superellipse exponent of the body outline
    taper: float         # front-to-back height change of the body
    aspect: float        # body length / height in side view
    front_w: float       # body width / height seen from the front
    n_legs: int
    leg_len: float
    leg_w: float
    head_shape: str
    head_r: float
    neck_len: float
    neck_angle: float    # radians above horizontal
    tail_len: float      # 0: no tail
    tail_angle: float    # radians below horizontal (negative: raised)
    tail_w: float
    n_spikes: int        # 0: no crest
    crest_h: float

    @property
    def parts(self) -> tuple[str, ...]:
        """The parts this template has, in PARTS order."""
        has = {"body": True, "head": True, "legs": self.n_legs > 0, "tail": self.tail_len > 0,
               "crest": self.n_spikes > 0}
        return tuple(p for p in PARTS if has[p])


@dataclass(frozen=True)
class Category:
    """One category: its superclass and the fine detail that tells it from its siblings."""

    name: str
    wnid: str
    index: int           # rank by wnid (ImageNet class-folder order)
    superclass: int
    hue: float
    hue_sd: float
    colour_p: float      # share of instances that follow the colour prior (others: any hue)
    sat: float
    val: float
    hue2: float          # texture (secondary) colour
    val2: float
    texture: str
    tex_period: float    # body units
    tex_angle: float
    face_hue: float
    face_val: float
    eyes: tuple[tuple[float, float, float], ...]  # (dx, dy, r) in head radii, side view
    eye_light: bool
    beak: str
    beak_hue: float
    aspect_mul: float
    leg_mul: float
    head_mul: float
    crest_mul: float


@dataclass(frozen=True)
class Design:
    """The whole category design of a world and the categories of each benchmark view."""

    superclasses: tuple[Superclass, ...]
    categories: tuple[Category, ...]     # index order (sorted by wnid)
    voc: tuple[int, ...]                 # category indices, sorted by name
    ilsvrc: tuple[int, ...]              # sorted by name; the first half is set B
    large_boxes: tuple[int, ...]         # sorted by name

    @property
    def ilsvrc_b(self) -> tuple[int, ...]:
        """Set B: the first half of the ILSVRC-like categories alphabetically (with boxes)."""
        return self.ilsvrc[: len(self.ilsvrc) // 2]

    @property
    def ilsvrc_a(self) -> tuple[int, ...]:
        """Set A: the second half (no boxes in training)."""
        return self.ilsvrc[len(self.ilsvrc) // 2:]


def _word(rng: np.random.Generator, syllables: int) -> str:
    """A pronounceable lowercase word of onset-vowel(-coda) syllables."""
    out = []
    for i in range(syllables):
        out.append(_ONSETS[rng.integers(len(_ONSETS))] + _VOWELS[rng.integers(len(_VOWELS))])
        if i == syllables - 1 or rng.random() < 0.25:
            out.append(_CODAS[rng.integers(len(_CODAS))])
    return "".join(out)


def _names(rng: np.random.Generator, n: int, syllables: tuple[int, int], taken: set[str]) -> list[str]:
    """`n` unique words not in `taken` (which grows)."""
    out = []
    while len(out) < n:
        w = _word(rng, int(rng.integers(syllables[0], syllables[1] + 1)))
        if w not in taken and 3 <= len(w) <= 14:
            taken.add(w)
            out.append(w)
    return out


def _superclass(rng: np.random.Generator, name: str, index: int) -> Superclass:
    """Draw one body template."""
    n_legs = int(rng.choice([0, 2, 2, 3, 4, 4, 6]))
    return Superclass(
        name=name, index=index, hue=float(rng.random()), sat=float(rng.uniform(0.4, 0.85)),
        val=float(rng.uniform(0.45, 0.85)), textures=tuple(str(t) for t in rng.choice(TEXTURES, 2, replace=False)),
        body_n=float(rng.choice([1.5, 2.0, 2.5, 3.5, 5.0])), taper=float(rng.uniform(-0.35, 0.35)),
        aspect=float(rng.uniform(1.0, 2.6)), front_w=float(rng.uniform(0.6, 1.1)),
        n_legs=n_legs, leg_len=float(rng.uniform(0.3, 1.0)), leg_w=float(rng.uniform(0.08, 0.2)),
        head_shape=str(rng.choice(HEAD_SHAPES)), head_r=float(rng.uniform(0.28, 0.48)),
        neck_len=float(rng.choice([0.0, rng.uniform(0.1, 0.6)])), neck_angle=float(rng.uniform(0.0, 1.1)),
        tail_len=float(rng.uniform(0.3, 1.2)) if rng.random() < 0.7 else 0.0,
        tail_angle=float(rng.uniform(-0.8, 0.9)), tail_w=float(rng.uniform(0.07, 0.18)),
        n_spikes=int(rng.integers(1, 5)) if rng.random() < 0.6 else 0, crest_h=float(rng.uniform(0.15, 0.45)),
    )


def _faces(rng: np.random.Generator) -> list[tuple[int, str, int, bool]]:
    """Every face mark (eye count, beak, face colour slot, light eyes), in seeded order."""
    combos = list(itertools.product((1, 2, 3), BEAKS, range(6), (False, True)))
    return [combos[i] for i in rng.permutation(len(combos))]


_EYE_LAYOUTS = {1: ((-0.35, -0.15, 0.22),),
                2: ((-0.45, -0.2, 0.17), (0.05, -0.25, 0.17)),
                3: ((-0.5, -0.25, 0.14), (-0.05, -0.35, 0.14), (-0.3, 0.25, 0.12))}


def _category(rng: np.random.Generator, name: str, wnid: str, sc: Superclass,
              face: tuple[int, str, int, bool]) -> Category:
    """Draw one category's fine detail around its superclass template."""
    eyes, beak, face_slot, eye_light = face
    hue = float((sc.hue + rng.normal(0, SIBLING_HUE_SD)) % 1.0)
    texture = rng.choice(sc.textures) if rng.random() < SIBLING_TEXTURE_P else rng.choice(TEXTURES)
    jitter = rng.normal(0, 0.04, size=(eyes, 3)) * (1, 1, 0.2)
    layout = tuple((float(x + jx), float(y + jy), float(r * (1 + jr)))
                   for (x, y, r), (jx, jy, jr) in zip(_EYE_LAYOUTS[eyes], jitter))
    return Category(
        name=name, wnid=wnid, index=-1, superclass=sc.index,
        hue=hue, hue_sd=float(rng.uniform(0.03, 0.07)), colour_p=float(rng.uniform(*COLOUR_P)), sat=float(np.clip(sc.sat + rng.normal(0, 0.12), 0.25, 0.95)),
        val=float(np.clip(sc.val + rng.normal(0, 0.12), 0.3, 0.95)), hue2=float((hue + rng.uniform(0.25, 0.75)) % 1.0),
        val2=float(rng.uniform(0.15, 0.95)), texture=str(texture),
        tex_period=float(rng.uniform(0.18, 0.5)), tex_angle=float(rng.uniform(0, np.pi)),
        face_hue=float((face_slot / 6 + rng.normal(0, 0.02)) % 1.0), face_val=float(rng.uniform(0.55, 0.95)),
        eyes=layout, eye_light=bool(eye_light), beak=beak, beak_hue=float(rng.random()),
        aspect_mul=float(rng.uniform(0.88, 1.12)), leg_mul=float(rng.uniform(0.85, 1.15)),
        head_mul=float(rng.uniform(0.9, 1.1)), crest_mul=float(rng.uniform(0.75, 1.25)),
    )


def _sizes(rng: np.random.Generator, n: int, k: int) -> list[int]:
    """Split `n` categories into `k` superclasses of uneven sizes, each at least 1."""
    w = rng.gamma(2.0, size=k)
    extra = rng.multinomial(n - k, w / w.sum())
    return [int(1 + e) for e in extra]


def _pick(rng: np.random.Generator, groups: list[list[int]], m: int, caps: tuple[int, int]) -> list[int]:
    """`m` categories in groups of confusable siblings: superclasses in seeded order, a seeded
    number (within `caps`) of each, so several superclasses with several siblings appear."""
    out: list[int] = []
    order = [g for g in (groups[i] for i in rng.permutation(len(groups))) if len(g) >= 2] + \
            [g for g in groups if len(g) < 2]
    while len(out) < m:
        for g in order:
            free = [c for c in g if c not in out]
            out += free[: min(int(rng.integers(caps[0], caps[1] + 1)), m - len(out))]
            if len(out) == m:
                break
    return out


def design(world: World) -> Design:
    """The category design of `world` (a pure function of its seed and sizes)."""
    check_world(world)  # more classes than categories would never finish picking them
    rng = np.random.default_rng(np.random.SeedSequence([world.seed, 0xCA7]))
    taken: set[str] = set()
    sc_names = _names(rng, world.n_superclasses, (2, 2), taken)
    supers = [_superclass(rng, n, i) for i, n in enumerate(sc_names)]
    sizes = _sizes(rng, world.n_categories, world.n_superclasses)
    names = _names(rng, world.n_categories, (2, 3), taken)
    wnids: set[int] = set()
    while len(wnids) < world.n_categories:
        wnids.add(int(rng.integers(1_000_000, 15_000_000)))
    wnid_list = [f"n{w:08d}" for w in rng.permutation(sorted(wnids))]
    cats, k = [], 0
    for sc, size in zip(supers, sizes):
        faces = _faces(rng)
        for j in range(size):
            cats.append(_category(rng, names[k], wnid_list[k], sc, faces[j % len(faces)]))
            k += 1
    cats.sort(key=lambda c: c.wnid)
    cats = [replace(c, index=i) for i, c in enumerate(cats)]
    groups = [[c.index for c in cats if c.superclass == s.index] for s in supers]
    for g in groups:
        rng.shuffle(g)
    by_name = lambda idx: tuple(sorted(idx, key=lambda i: cats[i].name))  # noqa: E731
    voc = by_name(_pick(rng, groups, world.voc_classes, (2, 5)))
    ilsvrc = by_name(_pick(rng, groups, world.ilsvrc_classes, (2, 7)))
    n_boxes = max(1, round(world.large_box_fraction * world.n_categories))
    large = by_name(rng.permutation(world.n_categories)[:n_boxes].tolist())
    return Design(tuple(supers), tuple(cats), voc, ilsvrc, large)

