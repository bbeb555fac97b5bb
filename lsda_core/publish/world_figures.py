"""The world chapter's figures and tables, read from a generated world's files (images,
world.json, objects.csv) so they show exactly what the benchmarks contain."""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.lines import Line2D
from matplotlib.patches import Patch, Rectangle
from PIL import Image

from lsda_core.core.params import World
from lsda_core.publish.tables import Table, readable
from lsda_core.publish.viz import MAX_WIDTH, PALETTE, Captioned, figure, palette_rgb
from lsda_core.world import render as R
from lsda_core.world.categories import PARTS, VIEWPOINTS, Design, design

if TYPE_CHECKING:
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
                           seed: int = 0) -> Captioned:
    """Training images of a few categories (rows), with their one image-level label; the caption
    says how often a training image shows a second, unlabelled object."""
    cats = layout.categories()
    rng = np.random.default_rng(seed)
    picked = [cats[i] for i in sorted(rng.choice(len(cats), min(n_classes, len(cats)), replace=False))]
    width = min(MAX_WIDTH, 1.1 * per_class)
    fig, axes = figure(len(picked), per_class, width=width, height=width / per_class * 1.12 * len(picked),
                       squeeze=False)
    for r, c in enumerate(picked):
        files = sorted((layout.classification / "train" / c["wnid"]).glob("*.JPEG"))
        for k, ax in enumerate(axes[r]):
            ax.axis("off")
            if k < len(files):
                ax.imshow(Image.open(files[k]))
        axes[r, 0].set_title(f"{c['name']} ({c['superclass']})", loc="left", fontsize=8)
    df = objects(layout)
    train = df[(df.view == "classification") & (df.split == "train")]
    second = (train.annotated == 0).groupby(train.image).any()
    text = (f"Classification training images of {len(picked)} of the {len(cats)} categories (one row each; the "
            f"superclass in brackets), each labelled with its category only. {100 * second.mean():.0f} % of the "
            f"{len(second)} training images also show a second, smaller object of another category, unlabelled.")
    return Captioned(fig, text)


VIEW_NAMES = {"voc": "VOC-like", "ilsvrc": "ILSVRC-like", "large": "large-view"}


def detection_samples(layout: WorldLayout, view: str, split: str, n: int = 8, cols: int = 4,
                      seed: int = 0) -> Captioned:
    """Scenes of one benchmark split with their boxes (solid, named; dashed: difficult) and the
    objects present but not annotated in that split (dotted grey); the caption gives the split's
    objects per image and its shares of difficult and unannotated objects."""
    df = objects(layout)
    df = df[(df.view == view) & (df.split == split)]
    images = sorted(df.image.unique())
    rng = np.random.default_rng(seed)
    picked = sorted(rng.choice(len(images), min(n, len(images)), replace=False))
    rows = -(-len(picked) // cols)
    width = min(MAX_WIDTH, 1.8 * cols)
    fig, axes = figure(rows, cols, width=width, height=width / cols * 0.8 * rows + 0.35, squeeze=False)
    colours = {c: PALETTE[i % len(PALETTE)] for i, c in enumerate(sorted(df.category.unique()))}
    for ax in axes.flat:
        ax.axis("off")
    for ax, i in zip(axes.flat, picked):
        objs = df[df.image == images[i]]
        img = np.asarray(Image.open(_image_path(layout, view, split, images[i], objs.wnid.iloc[0])))
        ax.imshow(img)
        h, w = img.shape[:2]
        for o in objs.itertuples():
            bw, bh = o.x2 - o.x1, o.y2 - o.y1
            if o.annotated:
                ax.add_patch(Rectangle((o.x1 - 0.5, o.y1 - 0.5), bw, bh, fill=False, lw=1.2, ec=colours[o.category],
                                       ls="--" if o.difficult else "-"))
                right, inside = (o.x1 + o.x2) / 2 > w / 2, o.y1 < 0.15 * h
                ax.text(o.x2 if right else o.x1, o.y1 + 0.5 if inside else o.y1 - 1, o.category, fontsize=6,
                        color="white", ha="right" if right else "left", va="top" if inside else "bottom",
                        clip_on=True, bbox={"fc": colours[o.category], "ec": "none", "pad": 0.5})
            else:
                ax.add_patch(Rectangle((o.x1 - 0.5, o.y1 - 0.5), bw, bh, fill=False, lw=0.9, ec="0.85", ls=":"))
    handles = [Line2D([], [], color="0.3", label="annotated"), Line2D([], [], color="0.3", ls="--", label="difficult"),
               Line2D([], [], color="0.6", ls=":", label="present, not annotated")]
    fig.legend(handles=handles, loc="outside lower center", ncol=3)
    per = df.groupby("image").annotated.sum()
    boxed = df[df.annotated == 1]
    name = f"{VIEW_NAMES.get(view, view)} {split}"
    text = (f"{len(picked)} of the {len(images)} {name} scenes with their boxes (one colour per category; dashed: "
            f"difficult) and the objects present but not annotated in this split (dotted grey). Over the split: "
            f"{per.mean():.1f} annotated objects per image, {100 * boxed.difficult.mean():.0f} % of them difficult")
    hidden = int((df.annotated == 0).sum())
    text += (f"; {100 * hidden / len(df):.0f} % of the drawn objects are not annotated." if hidden else
             "; every drawn object is annotated.")
    return Captioned(fig, text)


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


def category_grid(layout: WorldLayout, tile: int = 40) -> Captioned:
    """One exemplar per category (columns), one superclass per row: siblings share a body
    and differ in face mark, colour, texture and proportions."""
    d = world_design(layout)
    rows = [[c.index for c in d.categories if c.superclass == s.index] for s in d.superclasses]
    cols = max(len(r) for r in rows)
    mosaic = np.full((len(rows) * tile, cols * tile, 3), 255, np.uint8)
    for i, r in enumerate(rows):
        for j, c in enumerate(sorted(r, key=lambda k: d.categories[k].name)):
            mosaic[i * tile:(i + 1) * tile, j * tile:(j + 1) * tile] = exemplar(d, c, size=tile)
    width = min(0.5 * cols + 1.0, MAX_WIDTH)
    fig, ax = figure(width=width, height=(width - 1.0) * len(rows) / cols + 0.2)
    ax.imshow(mosaic, interpolation="nearest")
    ax.grid(False)
    ax.set_xticks([])
    ax.set_yticks((np.arange(len(rows)) + 0.5) * tile, [s.name for s in d.superclasses], fontsize=7)
    ax.tick_params(length=0)
    for side in ax.spines.values():
        side.set_visible(False)
    sizes = [len(r) for r in rows]
    text = (f"One exemplar of each of the world's {len(d.categories)} categories in its typical colours, one row "
            f"per superclass ({len(rows)} superclasses of {min(sizes)} to {max(sizes)} categories): within a row "
            f"the body is shared, and the face mark, colours, texture and proportions differ.")
    return Captioned(fig, text)


def anatomy(layout: WorldLayout, superclass: int | None = None, n_siblings: int = 5, tile: int = 72) -> Captioned:
    """Top: one category in each viewpoint, and its part map; bottom: siblings of its superclass
    in the same view (they differ mainly in the head: the discriminative part). The superclass is
    the one with the most categories unless given; the caption says when it has no siblings."""
    d = world_design(layout)
    members = {s.index: sorted((c.index for c in d.categories if c.superclass == s.index),
                               key=lambda k: d.categories[k].name) for s in d.superclasses}
    if superclass is None:
        superclass = max(members, key=lambda s: (len(members[s]), -s))
    sibs = members[superclass]
    first, sc = sibs[0], d.superclasses[superclass]
    shown = sibs[:max(n_siblings, 1)]
    ncols = max(len(VIEWPOINTS) + 1, len(shown))
    width = min(MAX_WIDTH, 1.25 * ncols)
    fig, axes = figure(2, ncols, width=width, height=2 * width / ncols + 0.6, squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, view in zip(axes[0], VIEWPOINTS):
        ax.imshow(exemplar(d, first, view, tile))
        ax.set_title(view, fontsize=8)
    layer = R.draw(R.object_model(sc, d.categories[first], "left", R.Artic((0.0,) * max(sc.n_legs, 1), 0, 0, 0)),
                   R.sample_paint(None, d.categories[first]), tile * R.SS * 0.6, tile * R.SS / 2, tile * R.SS / 2)
    partmap = np.full((tile * R.SS, tile * R.SS, 3), 255.0, np.float32)
    colour = np.array(palette_rgb(len(PARTS)), np.float32)
    layer.rgb = colour[np.maximum(layer.parts, 0)]
    R.composite(partmap, layer)
    ax = axes[0, len(VIEWPOINTS)]
    ax.imshow(partmap.astype(np.uint8))
    ax.set_title("parts", fontsize=8)
    ax.legend(handles=[Patch(color=PALETTE[PARTS.index(q)], label=q) for q in sc.parts], loc="center left",
              bbox_to_anchor=(1.0, 0.5), fontsize=7, handlelength=1)
    for ax, c in zip(axes[1], shown):
        ax.imshow(exemplar(d, c, "left", tile))
        ax.set_title(d.categories[c].name, fontsize=8)
    name = d.categories[first].name
    text = (f"Top: *{name}* (superclass *{sc.name}*) from each of the {len(VIEWPOINTS)} viewpoints, and its part "
            f"map (the parts on which annotations measure visibility). ")
    if len(sibs) > 1:
        text += (f"Bottom: {len(shown)} of the {len(sibs)} categories of *{sc.name}*, the largest superclass, facing "
                 f"left: they share the body and differ mainly in the head, the discriminative part.")
    else:
        text += "Bottom: the same category facing left; no superclass of this world has more than one category."
    return Captioned(fig, text)


def _views(df: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """Annotated objects of each benchmark's evaluation split, and the classification view."""
    a = df[df.annotated == 1]
    return {"VOC-like (all splits)": a[a.view == "voc"], "ILSVRC-like val": a[(a.view == "ilsvrc") & (a.split == "val")],
            "large test": a[(a.view == "large") & (a.split == "test")],
            "classification (labelled object)": a[a.view == "classification"]}


def attribute_distributions(layout: WorldLayout) -> Captioned:
    """What error analysis bins by, for each view (seaborn: step histograms of each view's own
    density, and bars of shares): size, aspect ratio, occlusion, truncation, viewpoint, part
    visibility, objects per image and the share marked difficult. The caption compares the
    classification images' labelled objects with the detection scenes' (the task shift)."""
    info = layout.info()["params"]
    views = _views(objects(layout))
    frames = []
    for name, v in views.items():
        side = info["cls_size"] ** 2 if name.startswith("class") else info["det_width"] * info["det_height"]
        frames.append(pd.DataFrame({"view": name, "size": np.sqrt(v.area / side), "aspect": np.log2(v.aspect_ratio),
                                    "occlusion": v.occlusion, "truncation": v.truncation}))
    long = pd.concat(frames, ignore_index=True)
    names = list(views)
    colours = dict(zip(names, PALETTE))
    fig, axes = figure(4, 2, width=MAX_WIDTH, height=8.4)
    ax = axes.flat
    hist = {"hue": "view", "hue_order": names, "palette": colours, "element": "step", "fill": False,
            "stat": "density", "common_norm": False, "legend": False, "linewidth": 1.2}
    sns.histplot(long, x="size", bins=np.linspace(0, 1.05, 30), ax=ax[0], **hist)
    sns.histplot(long, x="aspect", bins=np.linspace(-3, 3, 31), ax=ax[1], **hist)
    sns.histplot(long, x="occlusion", bins=np.linspace(0, 1, 21), ax=ax[2], **hist)
    sns.histplot(long, x="truncation", bins=np.linspace(0, 1, 21), ax=ax[3], **hist)
    bars = {"hue": "view", "hue_order": names, "palette": colours, "legend": False, "saturation": 1}
    viewpoint = pd.concat([v.viewpoint.value_counts(normalize=True).reindex(list(VIEWPOINTS), fill_value=0)
                           .rename("share").rename_axis("viewpoint").reset_index().assign(view=n)
                           for n, v in views.items()], ignore_index=True)
    sns.barplot(viewpoint, x="viewpoint", y="share", order=list(VIEWPOINTS), ax=ax[4], **bars)
    vis = []
    for n, v in views.items():
        parts = v.parts.str.split(";").explode().str.split(":", expand=True)
        share = (parts[1].astype(float) >= 0.5).groupby(parts[0]).mean().reindex(list(PARTS))
        vis.append(share.rename("share").rename_axis("part").reset_index().assign(view=n))
    sns.barplot(pd.concat(vis, ignore_index=True), x="part", y="share", order=list(PARTS), ax=ax[5], **bars)
    scenes = [n for n in names if not n.startswith("class")]
    per = pd.concat([views[n].groupby("image").size().rename("objects").to_frame().assign(view=n) for n in scenes],
                    ignore_index=True)
    sns.histplot(per, x="objects", discrete=True, ax=ax[6], **{**hist, "hue_order": scenes})
    diff = pd.DataFrame({"view": scenes, "share": [views[n].difficult.mean() for n in scenes]})
    sns.barplot(diff, x="view", y="share", order=scenes, ax=ax[7], **{**bars, "hue_order": scenes})
    ax[7].set_xticks(range(len(scenes)), [n.split(" ")[0] for n in scenes])
    titles = ["object size: sqrt(box area / image area)", "aspect ratio: log2(w / h)", "occlusion fraction",
              "truncation fraction", "viewpoint", "parts at least half visible", "annotated objects per image",
              "share of objects marked difficult"]
    for a, t in zip(ax, titles):
        a.set_title(t, fontsize=8)
        a.set_xlabel("")
    for a in ax[4:6]:
        a.set_ylabel("share")
    fig.legend(handles=[Patch(color=colours[n], label=n) for n in names], loc="outside lower center", ncol=2)
    c = views[next(n for n in names if n.startswith("class"))]
    scene = pd.concat([views[n] for n in scenes])
    cs, ss = np.sqrt(c.area / info["cls_size"] ** 2), np.sqrt(scene.area / (info["det_width"] * info["det_height"]))
    text = (f"What error analysis bins detections by, for the evaluation splits of each benchmark and the "
            f"classification images' labelled objects (densities and shares within each view). The task shift in "
            f"numbers: a labelled classification object has median size {cs.median():.2f} of its image against "
            f"{ss.median():.2f} in the detection scenes, and mean occlusion {c.occlusion.mean():.2f} against "
            f"{scene.occlusion.mean():.2f}.")
    return Captioned(fig, text)


def view_sizes(layout: WorldLayout) -> Table:
    """Images, categories and objects (annotated / drawn) of every view and split, indexed by
    view and split (so the page shows no row numbers)."""
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
    return readable(pd.DataFrame(rows).set_index(["view", "split"]), 0)


def describe(layout: WorldLayout) -> dict[str, object]:
    """A few numbers the chapter's prose quotes."""
    info = layout.info()
    return {"categories": len(info["categories"]), "superclasses": len(info["superclasses"]),
            "voc": info["views"]["voc"]["classes"], "set_b": info["views"]["ilsvrc"]["set_b"],
            "set_a": info["views"]["ilsvrc"]["set_a"], "blacklist": info["views"]["ilsvrc"]["blacklist"],
            "rules": info["rules"]}
