"""The teaching figures (lsda_core.publish.teaching) on tiny synthetic scenes: the pipeline figure
runs the chapter's own detector, the training windows are fine-tuning's, the neighbour table is
the transfer's, and the false positives are Hoiem's, with their types and overlaps."""
from dataclasses import replace

import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch
from synthetic import make_detection, params

from lsda_core.core.structures import DetectionDataset, keep_classes
from lsda_core.data.comp4 import Detections
from lsda_core.data.images import load_image
from lsda_core.detection import pipeline as DP
from lsda_core.evaluation import hoiem as An
from lsda_core.experiments import lsda as L
from lsda_core.experiments import rcnn as R
from lsda_core.models import finetune as FT
from lsda_core.publish import teaching as T
from lsda_core.publish import viz
from lsda_core.store.cache import Cache

pytestmark = pytest.mark.usefixtures("one_thread")
SUPER = {"red": "warm", "green": "warm", "blue": "cool", "yellow": "cool"}


def _with_superclass(ds: DetectionDataset, split: str) -> DetectionDataset:
    """`ds` as split `split`, every object naming its superclass (`SUPER`), as the world's do."""
    images = [replace(im, objects=[replace(o, attrs={"superclass": SUPER[o.cls]}) for o in im.objects])
              for im in ds.images]
    return replace(ds, images=images, split=split)


@pytest.fixture(scope="module")
def rcnn(pretrained, tmp_path_factory):
    """(params, cache, benchmark, networks, a Table 2 holding the FT fc7 row) on synthetic scenes."""
    pre, pre_hist, _ = pretrained
    tmp = tmp_path_factory.mktemp("teaching-rcnn")
    p = params()
    cache = Cache(tmp / "cache")
    train, train_props = make_detection(tmp / "train", 8, 1)
    test, test_props = make_detection(tmp / "test", 5, 2)
    test = replace(test, images=[replace(im, image_id="te" + im.image_id) for im in test.images], split="test")
    bench = DP.Benchmark(list(train.classes), train, test,
                         {**train_props, **{"te" + k: v for k, v in test_props.items()}})
    ft, ft_hist = FT.finetune(p, pre, bench.train, bench.proposals, cache, bench.classes)
    nets = {"pretrained": pre, "pretrain_history": pre_hist, "finetuned": ft, "finetune_history": ft_hist}
    fs = DP.cnn_features(p, cache, ft, bench, "fc7", "ft")
    t2 = R.Table2({"FT fc7": DP.svm_detector(p, cache, fs, bench, "FT fc7")}, {}, {"FT fc7": fs})
    return p, cache, bench, nets, t2


def test_pipeline_ends_in_the_chapters_detections(rcnn):
    p, cache, bench, nets, t2 = rcnn
    steps = T.pipeline_steps(p, cache, bench, nets, t2, windows=3)
    assert steps.image.image_id == T.pipeline_image(bench.test, t2.results["FT fc7"]).image_id
    assert len(steps.proposals) == len(bench.proposals[steps.image.image_id]) == len(steps.scores)
    # the figure's NMS output is the cached detector's on that image, class by class
    mine = sorted((bench.classes[c], tuple(b.astype(np.float32)), s) for c, s, b in steps.detections)
    theirs = sorted((c, tuple(d.boxes[i]), float(d.scores[i])) for c, d in t2.results["FT fc7"].detections.items()
                    for i, x in enumerate(d.image_ids) if x == steps.image.image_id)
    assert [m[:2] for m in mine] == [t[:2] for t in theirs]
    assert [m[2] for m in mine] == pytest.approx([t[2] for t in theirs], abs=1e-4)
    assert [s for _, s, _ in steps.detections] == sorted((s for _, s, _ in steps.detections), reverse=True)
    # shown: the windows behind the best detections, then the proposal scoring lowest
    assert len(steps.shown) == len(set(steps.shown.tolist())) <= 3
    assert steps.shown[-1] == np.argmin(steps.scores.max(axis=1))
    assert np.array_equal(steps.proposals[steps.shown[0]], steps.detections[0][2].astype(np.float32))
    assert steps.crops.shape == (len(steps.shown), p.net.input_size, p.net.input_size, 3)
    assert steps.features.shape == (len(steps.shown), p.net.fc_width)
    fig = T.pipeline_figure(steps)
    assert isinstance(fig, viz.Captioned) and f"{len(steps.proposals)} selective-search proposals" in fig.caption
    plt.close(fig.fig)


def test_pipeline_image_holds_the_best_right_detection(tmp_path):
    ds, _ = make_detection(tmp_path, 3, 5)
    gt = ds.images[2].objects[0]
    wrong = np.array([[0.0, 0, 5, 5]])
    dets = {c: Detections([], np.zeros(0), np.zeros((0, 4))) for c in ds.classes}
    dets[gt.cls] = Detections([ds.images[0].image_id, ds.images[2].image_id], np.array([9.0, 2.0]),
                              np.vstack([wrong, gt.box[None]]))
    result = DP.DetectorResult("d", {}, 0.0, dets)
    assert T.pipeline_image(ds, result).image_id == ds.images[2].image_id  # the higher-scoring one is wrong
    dets[gt.cls] = Detections([ds.images[1].image_id], np.array([1.0]), wrong)
    assert T.pipeline_image(ds, result).image_id == ds.images[0].image_id  # none right: the first image


def test_training_windows_are_finetunings(rcnn):
    p, _, bench, nets, _ = rcnn
    tw = T.training_windows(p, bench, nets["finetuned"], n=6)
    assert tw.batch == {"foreground": p.finetune.fg_per_batch, "background": p.finetune.bg_per_batch}
    fill = T.mean_colour(nets["finetuned"])
    for kind in ("foreground", "background"):
        assert 0 < len(tw.crops[kind]) <= 6
        for j, (i, box) in enumerate(zip(tw.images[kind], tw.boxes[kind])):
            im = bench.train.images[i]
            iou = T.best_iou(box, im.boxes())
            assert iou == pytest.approx(float(tw.ious[kind][j]), abs=1e-5)
            if kind == "foreground":  # labelled with the class of the box it overlaps most
                assert iou >= p.finetune.fg_iou
                assert T.best_iou(box, im.boxes(tw.labels[kind][j])) == pytest.approx(iou, abs=1e-5)
            else:
                assert iou < p.finetune.fg_iou and tw.labels[kind][j] == ""
            crop = T.display_warps(load_image(im.path), box[None], p, fill)[0]
            want = crop[:, ::-1] if tw.flipped[kind][j] else crop
            assert np.array_equal(tw.crops[kind][j], want)
    fig = T.training_windows_figure(tw, cols=3)
    assert f"IoU >= {p.finetune.fg_iou:g}" in fig.caption
    plt.close(fig.fig)


def _lsda_benchmark(tmp_path, n=6):
    """Red / green / blue / yellow scenes: B = blue, green; A = red, yellow; superclasses `SUPER`."""
    classes = ["red", "green", "blue", "yellow"]
    ds, props = make_detection(tmp_path, n, 3, classes=tuple(classes))
    ds = _with_superclass(ds, "val2")
    b, a = L._split_b_a(classes)
    bench = DP.Benchmark(classes, keep_classes(ds, b), ds, props, metric="ilsvrc")
    return L.LsdaBenchmark(bench, b, a, ds, None, None, {"yellow": "Yellow"})


class _Head:
    """A stand-in classification network: only its output layer matters to the transfer."""

    def __init__(self, w: np.ndarray) -> None:
        self.head = torch.nn.Linear(w.shape[1], w.shape[0])
        with torch.no_grad():
            self.head.weight.copy_(torch.as_tensor(w))


def test_neighbour_table_is_the_transfers_and_marks_siblings(tmp_path):
    lb = _lsda_benchmark(tmp_path)
    assert (lb.B, lb.A) == (["green", "blue"], ["red", "yellow"])
    # rows in class order red, green, blue, yellow: both held-out rows point along blue
    w = np.array([[1.0, 0.1], [0, 1], [1, 0], [3, 0.2]])
    table = T.neighbour_table(params(**{"lsda.k": 1}), lb, _Head(w))
    assert list(table.index) == ["red", "Yellow"]
    col = "its 1 nearest set-B categories (* same superclass)"
    assert table.loc["red", col] == "blue" and table.loc["Yellow", col] == "blue*"
    assert table["siblings picked"].tolist() == [0, 1] and table["siblings in set B"].tolist() == [1, 1]
    assert table["expected by chance"].tolist() == ["0.5", "0.5"]
    assert table["superclass"].tolist() == ["warm", "cool"]
    everyone = T.neighbour_table(params(**{"lsda.k": 0}), lb, _Head(w))  # k = |B|: blue first, then green
    assert everyone.loc["red", "its 2 nearest set-B categories (* same superclass)"] == "blue, green*"
    assert "1 share their superclass, against 1.0 expected" in T.neighbour_note(table).data
    assert "covers the whole of set B" in T.neighbour_note(everyone).data
    lb.names.update(blue="a blue category named at length", green="a green category named at length")
    long = T.neighbour_table(params(**{"lsda.k": 0}), lb, _Head(w))._repr_html_()  # pandas cuts past 50
    assert "a blue category named at length, a green category named at length*" in long


def test_top_false_positives_are_typed_and_one_per_image(tmp_path):
    lb = _lsda_benchmark(tmp_path)
    test = lb.bench.test
    im0, im1 = test.images[0], test.images[1]
    other = im1.objects[0]
    # red's detections: background in image 0 (best), on image 1's first object (a Sim or Oth unless
    # it is red), a second one in image 0, and a right one wherever a red object is
    reds = [(im.image_id, o.box) for im in test.images for o in im.objects if o.cls == "red"]
    ids = [im0.image_id, im1.image_id, im0.image_id] + [i for i, _ in reds]
    boxes = [np.array([0.0, 0, 3, 3]), other.box, np.array([0.0, 70, 3, 76])] + [b for _, b in reds]
    scores = [5.0, 4.0, 3.0] + [1.0] * len(reds)
    dets = {c: Detections([], np.zeros(0), np.zeros((0, 4))) for c in test.classes}
    dets["red"] = Detections(ids, np.array(scores), np.array(boxes))
    result = DP.DetectorResult("LSDA", {}, 0.0, dets)
    diag = An.diagnose(test, dets, An.similarity_groups(test))
    fps = T.top_false_positives(lb, result, diag, n=5)
    assert [e["image"].image_id for e in fps][:2] == [im0.image_id, im1.image_id]
    assert len({e["image"].image_id for e in fps}) == len(fps)
    assert fps[0]["type"] == "bg" and fps[0]["score"] == 5.0
    assert fps[0]["overlaps"] is None or fps[0]["overlaps"][1] < 0.1
    if other.cls != "red":
        assert fps[1]["type"] == ("sim" if SUPER[other.cls] == "warm" else "oth")
        assert fps[1]["overlaps"][0] == other.cls and fps[1]["overlaps"][1] == pytest.approx(1.0)
    fig = T.false_positives_figure(fps, lb.names)
    assert f"LSDA's {len(fps)} highest-scoring false positives" in fig.caption
    plt.close(fig.fig)
    assert not isinstance(T.false_positives_figure([], {}), viz.Captioned)


def test_lsda_idea_figure_names_this_runs_sets(tmp_path):
    lb = _lsda_benchmark(tmp_path)
    fig = T.lsda_idea_figure(params(**{"lsda.k": 1}), lb)
    assert "all 4 categories" in fig.caption and "the 2 categories of set B" in fig.caption
    assert "their 1 nearest set-B classifiers" in fig.caption
    plt.close(fig.fig)
    assert "their 2 nearest" in T.lsda_idea_figure(params(**{"lsda.k": 10}), lb).caption  # k is at most |B|
    texts = [t.get_text() for t in fig.fig.axes[0].texts]
    assert any("fcA: 2" in t for t in texts) and any(f"conv1\n{params().net.conv_channels[0]}" in t for t in texts)
    plt.close(fig.fig)


def test_sentence():
    assert T.sentence("fc7 of the box") == "Fc7 of the box." and T.sentence("") == ""
