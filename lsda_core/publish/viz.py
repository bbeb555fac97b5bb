"""The house style of every figure (seaborn's theme on matplotlib, the Okabe-Ito palette),
deterministic saving (PNG and SVG), and the numbered, captioned display of a figure."""
from __future__ import annotations

import base64
import html
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib
import matplotlib.patches

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import seaborn as sns

# Colours: one palette for the whole book (colour-blind-safe, Okabe-Ito).
PALETTE = ["#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#F0E442", "#000000"]


def palette_rgb(n: int) -> list[tuple[int, int, int]]:
    """The first `n` colours of the palette (cycling) as 0..255 RGB, for pictures drawn as arrays."""
    return [tuple(bytes.fromhex(PALETTE[k % len(PALETTE)][1:])) for k in range(n)]


# Meaning-bearing colours, the same in every figure: a right and a wrong detection, the ground truth
RIGHT, WRONG, TRUTH = PALETTE[2], PALETTE[3], PALETTE[5]

STYLE = {
    "figure.dpi": 110,
    "savefig.dpi": 110,
    "font.size": 9,
    "axes.titlesize": 10,
    "axes.labelsize": 9,
    "xtick.labelsize": 8,
    "ytick.labelsize": 8,
    "legend.fontsize": 8,
    "legend.title_fontsize": 8,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "axes.prop_cycle": matplotlib.cycler(color=PALETTE),
    "legend.frameon": False,
    "svg.hashsalt": "lsda-study",  # fixed ids: the same figure gives the same SVG bytes
    "path.simplify": True,
}


def style() -> None:
    """Apply the house style: seaborn's `ticks` theme at `paper` scale with the book's palette,
    then the book's rcParams (sizes, grid, fixed SVG ids); called by `figure`."""
    sns.set_theme(context="paper", style="ticks", palette=PALETTE, rc=STYLE)


# The widest figure, in inches: at `figure.dpi` about the width of the book's text column, so a
# figure is shown at (nearly) its own size and its fonts at (nearly) the size they were set
MAX_WIDTH = 7.2


def figure(nrows: int = 1, ncols: int = 1, *, width: float = 6.4, height: float | None = None,
           **kw) -> tuple[plt.Figure, Any]:
    """A new figure in the house style, laid out by matplotlib's constrained layout (so legends
    placed `outside` get room of their own); returns (fig, axes) like `plt.subplots`. A width
    above `MAX_WIDTH` is brought down to it with the height in proportion: the page would shrink
    the figure anyway, and its fonts with it."""
    style()
    height = height if height is not None else width * 0.62 * nrows / max(ncols, 1)
    if width > MAX_WIDTH:
        width, height = MAX_WIDTH, height * MAX_WIDTH / width
    kw.setdefault("layout", "constrained")
    return plt.subplots(nrows, ncols, figsize=(width, height), **kw)


def savefig(fig: plt.Figure, name: str, folder: str | Path) -> list[Path]:
    """Save `fig` as `<folder>/<name>.png` and `.svg`, with no timestamps or software tags
    in the files, so the same figure gives the same bytes. The figure is laid out once (one
    draw, then its layout frozen and its tight box fixed): each file then costs one draw, not
    a layout pass and a tight-box pass of its own."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    declutter(fig, renderer)
    box = fig.get_tightbbox(renderer).padded(plt.rcParams["savefig.pad_inches"])
    with plt.rc_context({"figure.autolayout": False, "figure.constrained_layout.use": False}):
        fig.set_layout_engine(None)
    out = []
    for ext, meta in (("png", {"Software": None}), ("svg", {"Date": None, "Creator": None})):
        path = folder / f"{name}.{ext}"
        fig.savefig(path, metadata=meta, bbox_inches=box)
        out.append(path)
    return out


# a box whose top is this close to the image's top (share of its height) gets its label inside
LABEL_ROOM = 0.15
BOX_LABEL = "box-label"  # the gid of box labels (`declutter` moves them apart)


def draw_boxes(ax: Any, image: Any, boxes: Any, labels: list[str], colors: list[str] | None = None,
               dashed: list[bool] | None = None, fontsize: float = 6.5) -> None:
    """An image with labelled boxes (study convention: 0-based pixel edges). A label runs from
    its box's corner nearer the image's centre line (left corner in the left half, right in the
    right half) and sits above the box, or just inside it when the box is near the image's top,
    so labels stay inside the image; an empty label is not drawn."""
    ax.imshow(image, interpolation="nearest")
    ax.set_axis_off()
    height, width = image.shape[:2]
    for k, (box, label) in enumerate(zip(boxes, labels)):
        x1, y1, x2, y2 = (float(v) for v in box)
        color = colors[k] if colors is not None else PALETTE[0]
        ls = "--" if dashed is not None and dashed[k] else "-"
        # pixel edges: pixel i covers [i - 0.5, i + 0.5] in imshow's coordinates
        ax.add_patch(matplotlib.patches.Rectangle((x1 - 0.5, y1 - 0.5), x2 - x1, y2 - y1, fill=False,
                                                  edgecolor=color, linewidth=1.4, linestyle=ls))
        if not label:
            continue
        right = (x1 + x2) / 2 > width / 2
        inside = y1 < LABEL_ROOM * height
        ax.text(x2 - 0.5 if right else x1 - 0.5, y1 + 0.5 if inside else y1 - 1, label, color="white",
                fontsize=fontsize, ha="right" if right else "left", va="top" if inside else "bottom", clip_on=True,
                bbox={"facecolor": color, "alpha": 0.85, "pad": 1, "linewidth": 0}, gid=BOX_LABEL)


def declutter(fig: plt.Figure, renderer: Any) -> None:
    """Move box labels (`draw_boxes`) down, in drawing order, until no two of one image overlap:
    each is placed below the labels it would cover (`renderer`: of the figure, drawn once)."""
    for ax in fig.axes:
        placed: list[Any] = []
        for t in (t for t in ax.texts if t.get_gid() == BOX_LABEL):
            for _ in range(len(placed) + 1):
                t.update_bbox_position_size(renderer)
                box = t.get_bbox_patch().get_window_extent(renderer)
                hit = next((b for b in placed if box.overlaps(b)), None)
                if hit is None:
                    break
                x, y = ax.transData.transform(t.get_position())
                t.set_position(ax.transData.inverted().transform((x, y - (box.y1 - hit.y0) - 1)))
            placed.append(t.get_bbox_patch().get_window_extent(renderer))


@dataclass
class Captioned:
    """A figure with its caption: one or two sentences of Markdown that state what the figure
    shows and its takeaway, computed from the data it plots (no typed-in numbers)."""

    fig: plt.Figure
    caption: str


def label(name: str) -> str:
    """The cross-reference label of figure `name` (prose cites it as {numref}`fig-<name>`)."""
    return "fig-" + name.replace("_", "-")


EMPHASIS = re.compile(r"\*([^*]+)\*")  # the captions' only Markdown: *name*


def figure_bundle(png: Path, notebook_dir: Path, name: str, caption: str) -> dict[str, str]:
    """The display bundle of a numbered, captioned figure: MyST Markdown (a `figure` directive
    with the image path relative to the notebook) for the book, which numbers it; HTML with the
    image inlined and the caption below for JupyterLab; plain text for a terminal."""
    rel = os.path.relpath(png, notebook_dir).replace(os.sep, "/")
    text = " ".join(caption.split())
    data = base64.b64encode(png.read_bytes()).decode()
    shown = EMPHASIS.sub(r"<em>\1</em>", html.escape(text))
    return {
        "text/markdown": f"```{{figure}} {rel}\n:name: {label(name)}\n\n{text}\n```\n",
        "text/html": (f'<figure><img src="data:image/png;base64,{data}" alt="{html.escape(name)}"/>'
                      f"<figcaption>{shown}</figcaption></figure>"),
        "text/plain": f"Figure ({name}): {text}",
    }


def show(fig: Captioned | Any, name: str, folder: str | Path) -> None:
    """In a notebook: save a captioned figure (PNG and SVG, see `savefig`) into `folder`
    (`<book>/figures/<chapter>`), display it numbered with its caption, close it. Anything else
    (a note saying why this run has no such figure) is displayed as it is."""
    from IPython.display import display

    if not isinstance(fig, Captioned):
        display(fig)
        return
    png = savefig(fig.fig, name, folder)[0]
    display(figure_bundle(png, Path(folder).resolve().parent.parent, name, fig.caption), raw=True)
    plt.close(fig.fig)
