"""The house style, deterministic saving, labelled boxes, and the numbered, captioned display of
a figure (lsda_core.publish.viz)."""
from pathlib import Path

import IPython.display
import matplotlib.pyplot as plt
import numpy as np
import pytest
from IPython.display import Markdown

from lsda_core.publish import viz


def line_figure() -> plt.Figure:
    """A small figure with a line, a legend and text: the parts whose ids vary between saves."""
    fig, ax = viz.figure(width=3, height=2)
    ax.plot([0, 1, 2], [1, 0, 2], label="a line")
    ax.text(1, 1, "text")
    ax.legend()
    return fig


def test_style_is_seaborns_theme_with_the_books_palette_and_fixed_svg_ids():
    plt.rcParams["svg.hashsalt"] = None
    viz.style()
    assert plt.rcParams["svg.hashsalt"] == "lsda-study"
    assert plt.rcParams["axes.prop_cycle"].by_key()["color"] == viz.PALETTE
    assert plt.rcParams["font.size"] == viz.STYLE["font.size"]
    assert plt.rcParams["xtick.major.size"] > 0  # seaborn's "ticks" style draws ticks


def test_saving_a_figure_twice_gives_the_same_bytes(tmp_path):
    fig = line_figure()
    a = viz.savefig(fig, "f", tmp_path / "a")
    b = viz.savefig(fig, "f", tmp_path / "b")
    c = viz.savefig(line_figure(), "f", tmp_path / "c")
    assert [p.suffix for p in a] == [".png", ".svg"]
    for x, y, z in zip(a, b, c):
        assert x.read_bytes() == y.read_bytes() == z.read_bytes(), x.name
    assert b"Date" not in a[1].read_bytes() and b"matplotlib.org" not in a[0].read_bytes()
    plt.close("all")


def test_a_figure_wider_than_the_column_is_scaled_to_it():
    fig, _ = viz.figure(width=2 * viz.MAX_WIDTH, height=4)
    assert tuple(fig.get_size_inches()) == (viz.MAX_WIDTH, 2)
    fig2, _ = viz.figure(width=5, height=4)
    assert tuple(fig2.get_size_inches()) == (5, 4)
    plt.close("all")


def test_label_is_the_cross_reference_name():
    assert viz.label("rcnn_pool5_units") == "fig-rcnn-pool5-units"


def test_bundle_is_a_figure_directive_with_label_caption_and_relative_path(tmp_path):
    folder = tmp_path / "book" / "figures" / "rcnn"
    png = viz.savefig(line_figure(), "rcnn_table2", folder)[0]
    b = viz.figure_bundle(png, tmp_path / "book", "rcnn_table2", "Test mAP:\n*FT fc7* is best.")
    md = b["text/markdown"]
    assert md.startswith("```{figure} figures/rcnn/rcnn_table2.png\n:name: fig-rcnn-table2\n")
    assert "\n\nTest mAP: *FT fc7* is best.\n```" in md
    assert str(tmp_path) not in md
    assert b["text/html"].startswith('<figure><img src="data:image/png;base64,')
    assert "<figcaption>Test mAP: <em>FT fc7</em> is best.</figcaption>" in b["text/html"]
    assert b["text/plain"] == "Figure (rcnn_table2): Test mAP: *FT fc7* is best."
    plt.close("all")


@pytest.fixture
def shown(monkeypatch):
    """What `viz.show` displays: (object, keyword arguments) per call."""
    calls = []
    monkeypatch.setattr(IPython.display, "display", lambda obj, **kw: calls.append((obj, kw)))
    return calls


def test_show_saves_displays_the_bundle_raw_and_closes(tmp_path, shown):
    fig = line_figure()
    folder = tmp_path / "figures" / "world"
    viz.show(viz.Captioned(fig, "A caption."), "world_voc", folder)
    assert sorted(p.name for p in folder.iterdir()) == ["world_voc.png", "world_voc.svg"]
    (bundle, kw), = shown
    assert kw == {"raw": True}
    assert bundle["text/markdown"].startswith("```{figure} figures/world/world_voc.png\n:name: fig-world-voc")
    assert not plt.fignum_exists(fig.number)


def test_show_passes_anything_else_through(tmp_path, shown):
    note = Markdown("No such image in this run.")
    viz.show(note, "lsda_figure4", tmp_path / "figures" / "lsda")
    assert shown == [(note, {})]
    assert not (tmp_path / "figures").exists()


def test_box_labels_stay_inside_the_image():
    fig, ax = viz.figure(width=3, height=2)
    image = np.zeros((100, 200, 3), np.uint8)
    boxes = [[10, 50, 60, 90], [150, 2, 195, 40], [20, 5, 40, 30]]
    viz.draw_boxes(ax, image, boxes, ["left", "right, top", ""], dashed=[False, True, False])
    assert len(ax.patches) == 3 and [p.get_linestyle() for p in ax.patches] == ["-", "--", "-"]
    left, right = ax.texts  # the empty label is not drawn
    assert (left.get_ha(), left.get_va(), left.get_position()) == ("left", "bottom", (9.5, 49))
    assert (right.get_ha(), right.get_va(), right.get_position()) == ("right", "top", (194.5, 2.5))
    plt.close(fig)


def test_labels_of_nearby_boxes_are_moved_apart(tmp_path):
    fig, ax = viz.figure(width=3, height=2)
    image = np.zeros((100, 200, 3), np.uint8)
    viz.draw_boxes(ax, image, [[10, 50, 60, 90], [12, 51, 40, 70], [120, 50, 160, 90]], ["first", "second", "far"])
    before = [t.get_position() for t in ax.texts]
    viz.savefig(fig, "boxes", tmp_path)
    r = fig.canvas.get_renderer()
    first, second, _ = (t.get_bbox_patch().get_window_extent(r) for t in ax.texts)
    assert not first.overlaps(second) and second.y1 <= first.y0  # moved below the first, in the image
    assert [t.get_position() for t in ax.texts][::2] == before[::2]  # the others stay
    plt.close(fig)


def test_the_book_uses_show_for_every_figure():
    """Every chapter displays its figures through `viz.show` (so each is numbered and captioned)."""
    root = Path(__file__).resolve().parents[2] / "book"
    text = "".join(p.read_text() for p in root.glob("*.ipynb"))
    assert "plt.show" not in text and "display(fig" not in text
    assert text.count("viz.show(") >= 20


def test_palette_rgb_is_the_palette_as_bytes_cycling():
    rgb = viz.palette_rgb(len(viz.PALETTE) + 1)
    assert rgb[0] == (0x00, 0x72, 0xB2) and rgb[3] == (0xD5, 0x5E, 0x00) and rgb[-1] == rgb[0]
