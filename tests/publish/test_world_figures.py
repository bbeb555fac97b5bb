"""The world chapter's figures (lsda_core.publish.world_figures) on a tiny generated world:
each is captioned with numbers read from the world's files, and the anatomy figure shows a
superclass with siblings (or says that there is none)."""
import dataclasses

import matplotlib.pyplot as plt
import numpy as np
import pytest

from lsda_core.core.params import World
from lsda_core.publish import viz
from lsda_core.publish import world_figures as F
from lsda_core.world import WorldLayout, generate
from lsda_core.world.categories import design

TINY = World(n_categories=12, n_superclasses=3, cls_size=32, cls_train_per_class=3, cls_val_per_class=2,
             voc_classes=6, voc_train=5, voc_val=5, voc_test=6, ilsvrc_classes=8, ilsvrc_train=12,
             ilsvrc_val=10, large_box_fraction=0.25, large_train=5, large_test=5)


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> WorldLayout:
    out = tmp_path_factory.mktemp("world")
    generate(TINY, out, workers=1)
    return WorldLayout(out)


def close(c: viz.Captioned) -> str:
    """The caption of a captioned figure, after closing the figure."""
    assert isinstance(c, viz.Captioned) and c.caption
    plt.close(c.fig)
    return c.caption


def test_category_grid_counts_categories_and_superclasses(world):
    d = F.world_design(world)
    sizes = [sum(c.superclass == s.index for c in d.categories) for s in d.superclasses]
    text = close(F.category_grid(world))
    assert f"each of the world's {TINY.n_categories} categories" in text
    assert f"({TINY.n_superclasses} superclasses of {min(sizes)} to {max(sizes)} categories)" in text


def test_anatomy_shows_the_largest_superclass_and_its_siblings(world):
    d = F.world_design(world)
    sizes = {s.name: sum(c.superclass == s.index for c in d.categories) for s in d.superclasses}
    largest = max(sizes, key=sizes.get)
    c = F.anatomy(world)
    titles = [ax.get_title() for ax in c.fig.axes[5:] if ax.get_title()]
    text = close(c)
    assert f"of the {sizes[largest]} categories of *{largest}*, the largest superclass" in text
    assert len(titles) == min(5, sizes[largest]) and len(set(titles)) == len(titles)


ONE_EACH = dataclasses.replace(TINY, n_categories=3, n_superclasses=3, voc_classes=2, ilsvrc_classes=2)


class OneEach:
    """A layout whose world has one category per superclass (only its parameters are read)."""

    def info(self) -> dict:
        return {"params": dataclasses.asdict(ONE_EACH)}


def test_anatomy_says_so_when_no_superclass_has_siblings():
    assert sorted(c.superclass for c in design(ONE_EACH).categories) == [0, 1, 2]
    assert "no superclass of this world has more than one category" in close(F.anatomy(OneEach()))


def test_detection_samples_caption_reads_the_split(world):
    df = F.objects(world)
    split = df[(df.view == "ilsvrc") & (df.split == "train")]
    text = close(F.detection_samples(world, "ilsvrc", "train"))
    hidden = 100 * (split.annotated == 0).mean()
    assert f"of the {split.image.nunique()} ILSVRC-like train scenes" in text
    assert f"{split.groupby('image').annotated.sum().mean():.1f} annotated objects per image" in text
    assert f"{hidden:.0f} % of the drawn objects are not annotated" in text and hidden > 0
    voc = close(F.detection_samples(world, "voc", "test"))
    assert voc.endswith("every drawn object is annotated.")


def test_classification_and_attribute_captions(world):
    df = F.objects(world)
    train = df[(df.view == "classification") & (df.split == "train")]
    second = train.groupby("image").annotated.apply(lambda a: (a == 0).any())
    assert f"{100 * second.mean():.0f} % of the {len(second)} training images" in close(F.classification_samples(world))
    c = F.attribute_distributions(world)
    assert len(c.fig.axes) == 8 and len(c.fig.legends) == 1
    labelled = df[(df.view == "classification") & (df.annotated == 1)]
    size = np.sqrt(labelled.area / TINY.cls_size ** 2).median()
    assert f"median size {size:.2f} of its image" in close(c)


def test_view_sizes_is_indexed_by_view_and_split(world):
    """One row per view and split, named by them (no row numbers on the page), counts whole."""
    t = F.view_sizes(world)
    assert t.index.names == ["view", "split"] and ("voc", "test") in t.index
    assert (t["objects drawn"] >= t["objects annotated"]).all()
    assert "<th>0</th>" not in t.to_html()
