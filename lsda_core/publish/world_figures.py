"""The world chapter's figures and tables, read from a generated world's files (images,
world.json, objects.csv) so they show exactly what the benchmarks contain."""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from matplotlib.patches import Rectangle
from PIL import Image

from lsda_core.core.params import World
from lsda_core.publish.viz import PALETTE, figure
from lsda_core.world import render as R
from lsda_core.world.categories import PARTS, VIEWPOINTS, Design, design

if TYPE_CHECKING:
    import matplotlib.pyplot as plt

    from lsda_core.world import WorldLayout

# (view, split) of each detection benchmark, with the folder inside the view holding its images
DETECTION = {("voc", "test"): "JPEGImages", ("ilsvrc", "train"): "ILSVRC2013_DET_train",
             ("ilsvrc", "val"): "ILSVRC2013_DET_val", ("large", "train"): "JPEGImages",
             ("large", "test"): "JPEGImages"}


def objects(layout: WorldLayout) -> pd.DataFrame:
    """objects.csv: every drawn object of every view, with `annotated` 0/1."""
    return pd.read_csv(layout.objects, dtype={"image": str})


def world_design(layout: WorldLayout) -> Design:
    """The category design, rebuilt from the parameters recorded in world.json."""
    return design(World(**layout.info()["params"]))


def _image_path(layout: WorldLayout, view: str, split: str, image: str, wnid: str) -> Path:
    if view == "classification":
        return layout.classification / split / wnid / f"{image}.JPEG"
    folder = getattr(layout, view) / DETECTION[(view, split)]
    if view == "ilsvrc" and split == "train":
        return folder / image.rsplit("_", 1)[0] / f"{image}.JPEG"
    return folder / (f"{image}.JPEG" if view == "ilsvrc" else f"{image}.jpg")


def classification_samples(layout: WorldLayout, n_classes: int = 8, per_class: int = 6,
                           seed: int = 0) -> plt.Figure:
    """Training images of a few categories (rows), with their one image-level label."""
    cats = layout.categories()
    rng = np.random.default_rng(seed)
    picked = [cats[i] for i in sorted(rng.choice(len(cats), min(n_classes, len(cats)), replace=False))]
    fig, axes = figure(len(picked), per_class, width=1.1 * per_class, height=1.2 * len(picked), squeeze=False)
    for r, c in enumerate(picked):
        files = sorted((layout.classification / "train" / c["wnid"]).glob("*.JPEG"))
        for k, ax in enumerate(axes[r]):
            ax.axis("off")
            if k < len(files):
                ax.imshow(Image.open(files[k]))
        axes[r, 0].set_title(f"{c['name']} ({c['superclass']})", loc="left", fontsize=8)
    return fig


def detection_samples(layout: WorldLayout, view: str, split: str, n: int = 8, cols: int = 4,
                      seed: int = 0) -> plt.Figure:
    """Scenes of one benchmark split with their boxes (solid, named) and the objects present
    but not annotated in that split (dashed grey)."""
    df = objects(layout)
    df = df[(df.view == view) & (df.split == split)]
    images = sorted(df.image.unique())
    rng = np.random.default_rng(seed)
    picked = sorted(rng.choice(len(images), min(n, len(images)), replace=False))
    rows = -(-len(picked) // cols)
    fig, axes = figure(rows, cols, width=2.4 * cols, height=1.95 * rows, squeeze=False)
    colours = {c: PALETTE[i % len(PALETTE)] for i, c in enumerate(sorted(df.category.unique()))}
    for ax in axes.flat:
        ax.axis("off")
    for ax, i in zip(axes.flat, picked):
        objs = df[df.image == images[i]]
        ax.imshow(Image.open(_image_path(layout, view, split, images[i], objs.wnid.iloc[0])))
        for o in objs.itertuples():
            w, h = o.x2 - o.x1, o.y2 - o.y1
            if o.annotated:
                ax.add_patch(Rectangle((o.x1 - 0.5, o.y1 - 0.5), w, h, fill=False, lw=1.2, ec=colours[o.category],
                                       ls="--" if o.difficult else "-"))
                ax.text(o.x1, o.y1 - 1, o.category, fontsize=6, color="white", va="bottom",
                        bbox={"fc": colours[o.category], "ec": "none", "pad": 0.5})
            else:
                ax.add_patch(Rectangle((o.x1 - 0.5, o.y1 - 0.5), w, h, fill=False, lw=0.8, ec="0.85", ls=":"))
    return fig


def exemplar(d: Design, cat: int, view: str = "left", size: int = 48, grey: float = 215.0) -> np.ndarray:
    """One category instance in its typical colours and a neutral pose, on a plain tile."""
    c = d.categories[cat]
    sc = d.superclasses[c.superclass]
    art = R.Artic(legs=(0.0,) * max(sc.n_legs, 1), tilt=0.0, tail=0.0, rot=0.0)
    side = size * R.SS
    canvas = np.full((side, side, 3), grey, np.float32)
    elems = R.object_model(sc, c, view, art)
    pts = np.concatenate([q for _, _, polys in elems for q in polys])
    ext = pts.max(0) - pts.min(0)
    fit = 0.88 * side / max(ext[0] / np.sqrt(ext.prod()), ext[1] / np.sqrt(ext.prod()))
    R.composite(canvas, R.draw(elems, R.sample_paint(None, c), fit, side / 2, side / 2))
    return np.clip(R.block_sum(canvas) / R.SS ** 2, 0, 255).astype(np.uint8)


def category_grid(layout: WorldLayout, tile: int = 40) -> plt.Figure:
    """One exemplar per category (columns), one superclass per row: siblings share a body
    and differ in face mark, colour, texture and proportions."""
    d = world_design(layout)
    rows = [[c.index for c in d.categories if c.superclass == s.index] for s in d.superclasses]
    cols = max(len(r) for r in rows)
    mosaic = np.full((len(rows) * tile, cols * tile, 3), 255, np.uint8)
    for i, r in enumerate(rows):
        for j, c in enumerate(sorted(r, key=lambda k: d.categories[k].name)):
            mosaic[i * tile:(i + 1) * tile, j * tile:(j + 1) * tile] = exemplar(d, c, size=tile)
    fig, ax = figure(width=min(0.42 * cols + 1.2, 14), height=0.42 * len(rows) + 0.4)
    ax.imshow(mosaic, interpolation="nearest")
    ax.grid(False)
    ax.set_xticks([])
    ax.set_yticks((np.arange(len(rows)) + 0.5) * tile, [s.name for s in d.superclasses], fontsize=7)
    for side in ("left", "bottom"):
        ax.spines[side].set_visible(False)
    return fig


def anatomy(layout: WorldLayout, superclass: int = 0, n_siblings: int = 5, tile: int = 72) -> plt.Figure:
    """Top: one category in each viewpoint, and its part map; bottom: siblings of its
    superclass in the same view (they differ mainly in the head: the discriminative part)."""
    d = world_design(layout)
    sibs = sorted((c.index for c in d.categories if c.superclass == superclass), key=lambda k: d.categories[k].name)
    first, sc = sibs[0], d.superclasses[superclass]
    ncols = max(len(VIEWPOINTS) + 1, min(n_siblings, len(sibs)))
    fig, axes = figure(2, ncols, width=1.3 * ncols, height=3.0, squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, view in zip(axes[0], VIEWPOINTS):
        ax.imshow(exemplar(d, first, view, tile))
        ax.set_title(view, fontsize=8)
    layer = R.draw(R.object_model(sc, d.categories[first], "left", R.Artic((0.0,) * max(sc.n_legs, 1), 0, 0, 0)),
                   R.sample_paint(None, d.categories[first]), tile * R.SS * 0.6, tile * R.SS / 2, tile * R.SS / 2)
    partmap = np.full((tile * R.SS, tile * R.SS, 3), 255.0, np.float32)
    colour = np.array([[int(PALETTE[i][k:k + 2], 16) for k in (1, 3, 5)] for i in range(len(PARTS))], np.float32)
    layer.rgb = colour[np.maximum(layer.parts, 0)]
    R.composite(partmap, layer)
    ax = axes[0, len(VIEWPOINTS)]
    ax.imshow(partmap.astype(np.uint8))
    ax.set_title("parts", fontsize=8)
    for i, p in enumerate(sc.parts):
        ax.text(1.02, 0.9 - 0.17 * i, p, transform=ax.transAxes, fontsize=7, color=PALETTE[PARTS.index(p)])
    for ax, c in zip(axes[1], sibs[:ncols]):
        ax.imshow(exemplar(d, c, "left", tile))
        ax.set_title(d.categories[c].name, fontsize=7)
    fig.suptitle(f"superclass {sc.name}: {d.categories[first].name} and its siblings", fontsize=9)
    return fig


def _views(df: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """Annotated objects of each benchmark's evaluation split, and the classification view."""
    a = df[df.annotated == 1]
    return {"VOC-like (all splits)": a[a.view == "voc"], "ILSVRC-like val": a[(a.view == "ilsvrc") & (a.split == "val")],
            "large test": a[(a.view == "large") & (a.split == "test")],
            "classification (labelled object)": a[a.view == "classification"]}


def attribute_distributions(layout: WorldLayout) -> plt.Figure:
    """What error analysis bins by: size, aspect ratio, occlusion, truncation, viewpoint,
    part visibility, and objects per image, for each view."""
    info = layout.info()["params"]
    df = objects(layout)
    fig, axes = figure(2, 4, width=12, height=5.2)
    ax = axes.flat
    for k, (name, v) in enumerate(_views(df).items()):
        side = info["cls_size"] ** 2 if name.startswith("class") else info["det_width"] * info["det_height"]
        col = PALETTE[k]
        kw = {"histtype": "step", "density": True, "color": col, "label": name, "lw": 1.2}
        ax[0].hist(np.sqrt(v.area / side), bins=np.linspace(0, 1.05, 30), **kw)
        ax[1].hist(np.log2(v.aspect_ratio), bins=np.linspace(-3, 3, 31), **kw)
        ax[2].hist(v.occlusion, bins=np.linspace(0, 1, 21), **kw)
        ax[3].hist(v.truncation, bins=np.linspace(0, 1, 21), **kw)
        counts = v.viewpoint.value_counts(normalize=True).reindex(list(VIEWPOINTS), fill_value=0)
        ax[4].bar(np.arange(4) + 0.2 * k - 0.3, counts.values, width=0.2, color=col)
        parts = v.parts.str.split(";").explode().str.split(":", expand=True)
        vis = (parts[1].astype(float) >= 0.5).groupby(parts[0]).mean().reindex(list(PARTS))
        ax[5].bar(np.arange(len(PARTS)) + 0.2 * k - 0.3, vis.values, width=0.2, color=col)
        if not name.startswith("class"):
            per = v.groupby("image").size()
            ax[6].hist(per, bins=np.arange(0.5, per.max() + 1.5), **kw)
            ax[7].bar(k, v.difficult.mean(), color=col)
    titles = ["object size: sqrt(box area / image area)", "aspect ratio: log2(w / h)", "occlusion fraction",
              "truncation fraction", "viewpoint", "parts at least half visible", "annotated objects per image",
              "share of objects marked difficult"]
    for a, t in zip(ax, titles):
        a.set_title(t, fontsize=8)
    ax[4].set_xticks(range(4), VIEWPOINTS)
    ax[5].set_xticks(range(len(PARTS)), PARTS)
    ax[7].set_xticks(range(3), ["VOC", "ILSVRC val", "large"])
    ax[0].legend(fontsize=6, loc="upper right")
    fig.tight_layout()
    return fig


def view_sizes(layout: WorldLayout) -> pd.DataFrame:
    """Images, categories and objects (annotated / drawn) of every view and split."""
    info = layout.info()
    views = info["views"]
    df = objects(layout)
    rows = []
    classes = {"classification": views["classification"]["classes"], "voc": len(views["voc"]["classes"]),
               "ilsvrc": len(views["ilsvrc"]["classes"]), "large": len(info["categories"])}
    for (view, split), g in df.groupby(["view", "split"], sort=False):
        boxed = sorted(g[g.annotated == 1].category.unique())
        rows.append({"view": view, "split": split, "images": g.image.nunique(), "categories": classes[view],
                     "categories with boxes": "(labels only)" if view == "classification" else len(boxed),
                     "objects drawn": len(g), "objects annotated": int(g.annotated.sum()),
                     "difficult": int(g[g.annotated == 1].difficult.sum())})
    return pd.DataFrame(rows)


def describe(layout: WorldLayout) -> dict[str, object]:
    """A few numbers the chapter's prose quotes."""
    info = layout.info()
    return {"categories": len(info["categories"]), "superclasses": len(info["superclasses"]),
            "voc": info["views"]["voc"]["classes"], "set_b": info["views"]["ilsvrc"]["set_b"],
            "set_a": info["views"]["ilsvrc"]["set_a"], "blacklist": info["views"]["ilsvrc"]["blacklist"],
            "rules": info["rules"]}
