"""The house style of every figure, and deterministic saving (PNG and SVG)."""
from __future__ import annotations

import base64
import html
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib
import matplotlib.patches

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

# Colours: one palette for the whole book (colour-blind-safe, Okabe-Ito).
PALETTE = ["#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#F0E442", "#000000"]

STYLE = {
    "figure.dpi": 110,
    "savefig.dpi": 110,
    "font.size": 9,
    "axes.titlesize": 10,
    "axes.labelsize": 9,
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
    """Apply the house style (called by `figure`; notebooks need not call it)."""
    plt.rcParams.update(STYLE)


def figure(nrows: int = 1, ncols: int = 1, *, width: float = 6.4, height: float | None = None,
           **kw) -> tuple[plt.Figure, object]:
    """A new figure in the house style; returns (fig, axes) like `plt.subplots`."""
    style()
    height = height if height is not None else width * 0.62 * nrows / max(ncols, 1)
    return plt.subplots(nrows, ncols, figsize=(width, height), **kw)


def savefig(fig: plt.Figure, name: str, folder: str | Path) -> list[Path]:
    """Save `fig` as `<folder>/<name>.png` and `.svg`, with no timestamps or software tags
    in the files, so the same figure gives the same bytes."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for ext, meta in (("png", {"Software": None}), ("svg", {"Date": None, "Creator": None})):
        path = folder / f"{name}.{ext}"
        fig.savefig(path, metadata=meta, bbox_inches="tight")
        out.append(path)
    return out


def draw_boxes(ax, image, boxes, labels, colors=None, dashed=None) -> None:
    """An image with labelled boxes (study convention: 0-based pixel edges)."""
    ax.imshow(image, interpolation="nearest")
    ax.set_axis_off()
    for k, (box, label) in enumerate(zip(boxes, labels)):
        x1, y1, x2, y2 = (float(v) for v in box)
        color = colors[k] if colors is not None else PALETTE[0]
        ls = "--" if dashed is not None and dashed[k] else "-"
        # pixel edges: pixel i covers [i - 0.5, i + 0.5] in imshow's coordinates
        ax.add_patch(matplotlib.patches.Rectangle((x1 - 0.5, y1 - 0.5), x2 - x1, y2 - y1, fill=False,
                                                  edgecolor=color, linewidth=1.2, linestyle=ls))
        ax.text(x1 - 0.5, y1 - 1, label, color="white", fontsize=6, va="bottom",
                bbox={"facecolor": color, "alpha": 0.8, "pad": 1, "linewidth": 0})


@dataclass
class Captioned:
    """A figure with its caption: one or two sentences of Markdown that state what the figure
    shows and its takeaway, computed from the data it plots (no typed-in numbers)."""

    fig: plt.Figure
    caption: str


def label(name: str) -> str:
    """The cross-reference label of figure `name` (prose cites it as {numref}`fig-<name>`)."""
    return "fig-" + name.replace("_", "-")


def figure_bundle(png: Path, notebook_dir: Path, name: str, caption: str) -> dict[str, str]:
    """The display bundle of a numbered, captioned figure: MyST Markdown (a `figure` directive
    with the image path relative to the notebook) for the book, which numbers it; HTML with the
    image inlined and the caption below for JupyterLab; plain text for a terminal."""
    rel = os.path.relpath(png, notebook_dir).replace(os.sep, "/")
    text = " ".join(caption.split())
    data = base64.b64encode(png.read_bytes()).decode()
    return {
        "text/markdown": f"```{{figure}} {rel}\n:name: {label(name)}\n\n{text}\n```\n",
        "text/html": (f'<figure><img src="data:image/png;base64,{data}" alt="{html.escape(name)}"/>'
                      f"<figcaption>{html.escape(text)}</figcaption></figure>"),
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
