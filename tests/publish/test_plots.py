"""The chapters' figures (lsda_core.publish.plots): right and wrong detections, the category a
unit responds to, bars beside the paper's, and captions computed from what is drawn. Figures
made from a whole experiment are tested with it (tests/experiments, tests/evaluation)."""
import matplotlib.colors
import matplotlib.pyplot as plt
import numpy as np
import pytest
from IPython.display import Markdown
from synthetic import make_detection

from lsda_core.core.structures import ImageAnn, ObjectAnn
from lsda_core.data.comp4 import Detections
from lsda_core.detection.pipeline import DetectorResult
from lsda_core.evaluation.units import Unit, UnitTop
from lsda_core.publish import plots, viz


def box(x1: float, y1: float, x2: float, y2: float) -> np.ndarray:
    return np.array([x1, y1, x2, y2], np.float64)


def scene() -> ImageAnn:
    """Two red objects and a blue one."""
    return ImageAnn("i", None, 100, 80, [ObjectAnn("red", box(0, 0, 20, 20)), ObjectAnn("red", box(50, 50, 70, 70)),
                                          ObjectAnn("blue", box(30, 0, 50, 30))])


def test_judge_matches_each_object_once_and_by_class():
    boxes = [box(0, 0, 20, 20), box(1, 1, 20, 20), box(30, 0, 50, 30), box(52, 50, 70, 70), box(80, 60, 99, 79)]
    classes = ["red", "red", "red", "red", "blue"]
    # right; a duplicate of the first; on the blue object; the second red; on nothing
    assert plots.judge(boxes, classes, scene()) == [True, False, False, True, False]
    assert plots.judge([box(0, 0, 20, 20)], ["green"], scene()) == [False]


def test_unit_category_is_the_class_most_regions_cover(tmp_path):
    ds, _ = make_detection(tmp_path, 3, 0)
    images = ds.images
    regions = [(images[0].image_id, images[0].objects[0].box)] * 2 + [(images[1].image_id, box(0, 0, 2, 2))]
    top = UnitTop(Unit(0, 0, 0), [i for i, _ in regions], np.arange(3), np.stack([b for _, b in regions]),
                  np.array([3.0, 2.0, 1.0], np.float32), 3.0)
    assert plots.unit_category(top, ds) == (images[0].objects[0].cls, 2)
    assert plots.unit_category(top.head(0), ds) == ("background", 0)
    off = UnitTop(Unit(0, 0, 0), [images[1].image_id], np.arange(1), box(0, 0, 2, 2)[None], np.ones(1), 1.0)
    assert plots.unit_category(off, ds) == ("background", 1)


def test_bars_beside_the_papers_skip_a_missing_paper_number():
    fig, ax = viz.figure(width=5, height=3)
    plots.bars_vs_paper(ax, {"a": 10.0, "b": 20.0, "c": 5.0}, {"a": 1.0, "b": 2.0}, {"a": 12.0, "c": 7.0},
                        "paper", "mAP (%)")
    ours, theirs = ax.containers[0], ax.containers[1]
    assert [b.get_width() for b in ours] == [10.0, 20.0, 5.0] and [b.get_width() for b in theirs] == [12.0, 7.0]
    assert [t.get_text().strip() for t in ax.texts] == ["10.0", "20.0", "5.0", "12.0", "7.0"]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["a", "b", "c"]
    assert matplotlib.colors.to_hex(ours[0].get_facecolor()) == viz.PALETTE[0].lower()
    plt.close(fig)


class Split:
    """A test split: its images."""

    def __init__(self, images: list[ImageAnn]):
        self.images = images


def test_example_detections_colour_right_and_wrong_and_count_them(tmp_path):
    ds, _ = make_detection(tmp_path, 2, 1)
    im = ds.images[0]
    obj = im.objects[0]
    dets = {obj.cls: Detections([im.image_id, im.image_id], [0.9, 0.8], np.stack([obj.box, obj.box]))}
    result = DetectorResult("FT fc7", {}, 0.0, dets)
    fig = plots.example_detections(Split([im]), result, n=1, top=3)
    assert isinstance(fig, viz.Captioned)
    assert f"1 of the 2 boxes are right, finding 1 of the {len(im.objects)} objects in these images" in fig.caption
    ax = fig.fig.axes[0]
    edges = [matplotlib.colors.to_hex(p.get_edgecolor()) for p in ax.patches]
    n = len(im.objects)
    assert edges[:n] == [viz.TRUTH.lower()] * n and edges[n:] == [viz.RIGHT.lower(), viz.WRONG.lower()]
    assert [p.get_linestyle() for p in ax.patches] == ["--"] * n + ["-", "-"]
    assert [t.get_text() for t in fig.fig.legends[0].get_texts()] == ["right (IoU ≥ 0.5)", "wrong", "ground truth"]
    plt.close(fig.fig)


def test_before_after_says_how_much_of_the_object_the_classification_box_covers(tmp_path):
    ds, _ = make_detection(tmp_path, 1, 2)
    im = ds.images[0]
    gt = im.objects[0].box
    half = gt.copy()
    half[2] = (gt[0] + gt[2]) / 2  # the left half of the object
    e = {"image": im, "class": im.objects[0].cls, "gt": gt[None], "cls": half, "lsda": gt, "score": 1.0}
    fig = plots.lsda_examples([e], {im.objects[0].cls: "Red thing"})
    assert isinstance(fig, viz.Captioned)
    assert "median IoU of 0.50 (LSDA's 1.00) and cover a median 50 % of its area" in fig.caption
    assert fig.fig.axes[0].get_title() == "Red thing" and len(fig.fig.axes[0].texts) == 0  # no label to clip
    plt.close(fig.fig)
    note = plots.lsda_examples([], {})
    assert isinstance(note, Markdown)


@pytest.mark.parametrize("grid, best, text", [({0.0: 0.4, 0.3: 0.5, 0.5: 0.45}, 0.3, "the paper's choice."),
                                              ({0.0: 0.6, 0.3: 0.5}, 0.0, "gives 50.0, 10.0 points less.")])
def test_threshold_caption_compares_the_best_with_the_papers_choice(grid, best, text):
    from lsda_core.experiments.rcnn import NegIouGrid
    results = {t: DetectorResult(f"t{t}", {}, m) for t, m in grid.items()}
    fig = plots.threshold_figure(NegIouGrid(results, {r.name: np.array([r.map, r.map]) for r in results.values()}))
    assert f"The best threshold here is {best} ({100 * grid[best]:.1f} mAP)" in fig.caption
    assert fig.caption.endswith(text)
    plt.close(fig.fig)


@pytest.mark.parametrize("log, says", [([(10, 2.0), (20, 1.5)], "loss went from 2.00 to 1.50 over 20 steps"),
                                       ([(10, 1.2)], "loss was 1.20 after 10 steps")])
def test_training_caption_reads_the_histories(log, says):
    pre = {"epochs": [{"epoch": 1, "train_loss": 3.0, "val_top1": 0.2}, {"epoch": 2, "train_loss": 2.5, "val_top1": 0.4}]}
    ft = {"log": [{"iteration": i, "loss": v, "fg_acc": 0.6, "bg_acc": 0.9} for i, v in log]}
    fig = plots.training_figure({"pretrain_history": pre, "finetune_history": ft})
    assert "ran 2 epochs, ending at training loss 2.50 and validation top-1 0.40" in fig.caption
    assert f"Fine-tuning's {says}, ending at foreground accuracy 0.60" in fig.caption
    assert len(fig.fig.axes[0].get_legend().get_texts()) == 2  # the twin axis's line is in the legend
    plt.close(fig.fig)
    bare = plots.training_figure({"pretrain_history": {"source": "weights"}, "finetune_history": ft})
    assert "not trained here" in bare.caption
    plt.close(bare.fig)


def test_unit_headings_say_why_a_unit_was_chosen():
    assert plots.why_chosen("cat +") == "cat SVM, positive weight" and plots.why_chosen("cat -") == "cat SVM, negative weight"
    assert plots.why_chosen("generic") == "every SVM's weight" and plots.why_chosen("chosen") == "chosen by hand"
