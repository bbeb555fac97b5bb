"""The R-CNN chapter's tables and ablations (lsda_core.experiments.rcnn) on tiny synthetic data:
the rows each defines, that they reuse Table 2's cached detectors and features, that their
bootstrap spreads are paired, and that `prepare` computes the features the chapter uses."""
from dataclasses import replace

import matplotlib.pyplot as plt
import numpy as np
import pytest
from synthetic import make_detection, params

from lsda_core.detection import pipeline as DP
from lsda_core.experiments import rcnn as R
from lsda_core.models import finetune as FT
from lsda_core.publish import paper, plots, report
from lsda_core.store.cache import Cache

pytestmark = pytest.mark.usefixtures("one_thread")
TINY = {"rcnn.bootstrap": 4, "rcnn.seeds": [0, 1], "rcnn.neg_iou_grid": [0.0, 0.3, 0.5], "rcnn.timing_images": 1,
        "units.top": 3, "units.montage_top": 4, "units.generic": 1}


def _split(root, n, seed, prefix):
    """A synthetic split whose image ids start with `prefix` and whose objects name a superclass."""
    ds, props = make_detection(root, n, seed)
    images = [replace(im, image_id=prefix + im.image_id,
                      objects=[replace(o, attrs={"superclass": "warm" if o.cls == "red" else "cool"})
                               for o in im.objects]) for im in ds.images]
    return replace(ds, images=images), {prefix + k: v for k, v in props.items()}


@pytest.fixture(scope="module")
def chapter(pretrained, tmp_path_factory):
    """(params, cache, benchmark, networks, Table 2) on synthetic scenes."""
    pre, pre_hist, _ = pretrained
    tmp = tmp_path_factory.mktemp("rcnn-chapter")
    p = params(**TINY)
    cache = Cache(tmp / "cache")
    train, train_props = _split(tmp / "train", 8, 1, "tr")
    test, test_props = _split(tmp / "test", 6, 2, "te")
    bench = DP.Benchmark(list(train.classes), train, replace(test, split="test"), {**train_props, **test_props})
    ft, ft_hist = FT.finetune(p, pre, bench.train, bench.proposals, cache, bench.classes)
    nets = {"pretrained": pre, "pretrain_history": pre_hist, "finetuned": ft, "finetune_history": ft_hist}
    return p, cache, bench, nets, R.table2(p, cache, bench, nets)


def test_table2_has_every_row_with_a_paired_spread(chapter):
    p, cache, bench, _, t2 = chapter
    cnn = ["pool5", "fc6", "fc7", "FT pool5", "FT fc6", "FT fc7"]
    assert list(t2.features) == cnn + [R.HOG_ROW]
    assert list(t2.results) == cnn + [R.HOG_ROW, R.BBOX_ROW]
    assert set(t2.spread) == set(t2.results) and all(len(v) == p.rcnn.bootstrap for v in t2.spread.values())
    for name, r in t2.results.items():
        assert r.name == name and set(r.ap) == set(bench.classes) and 0.0 <= r.map <= 1.0
    # the rows are the detectors the pipeline gives for those features (read back from the cache)
    again = DP.svm_detector(p, cache, t2.features["FT fc7"], bench, "FT fc7")
    assert again.map == t2.results["FT fc7"].map
    table = report.ap_table(t2.results.values(), bench.classes, t2.spread)
    assert table.loc["FT fc7", "paper mAP (VOC 2007)"] == paper.RCNN_MAP["R-CNN FT fc7"]
    assert np.isnan(table.loc[R.BBOX_ROW, "paper mAP (VOC 2007)"])
    plt.close(plots.table2_figure(table))


def test_prepare_computes_the_features_of_the_chapter(chapter, monkeypatch):
    p, cache, bench, nets, t2 = chapter
    monkeypatch.setattr(R, "load_benchmark", lambda p, cache: bench)
    monkeypatch.setattr(R, "load_networks", lambda p, cache, bench: nets)
    lines = R.prepare(p, cache, "features")
    feats = [ln for ln in lines if ln.startswith("features: ")]
    for fs in list(t2.features.values()) + [R.grayscale_features(p, cache, bench, nets)]:
        assert any(fs.key.rsplit("/", 1)[0] in ln for ln in feats), fs.name
    assert len(feats) == 4  # pool5 of each network, pool5 of the grayscale images, HOG
    assert any(ln.startswith("features: pool5, fc6, fc7:") for ln in feats)


def test_ablations_reuse_table2_and_share_its_resamples(chapter):
    p, cache, bench, nets, t2 = chapter
    gray = R.grayscale_ablation(p, cache, bench, nets, t2)
    soft = R.softmax_ablation(p, bench, nets, t2)
    assert list(gray.results) == ["fc6", R.GRAY_ROW] and gray.results["fc6"] is t2.results["fc6"]
    assert list(soft.results) == ["FT fc7", R.SOFTMAX_ROW] and soft.results["FT fc7"] is t2.results["FT fc7"]
    np.testing.assert_array_equal(gray.spread["fc6"], t2.spread["fc6"])  # the same resamples: paired
    np.testing.assert_array_equal(soft.spread["FT fc7"], t2.spread["FT fc7"])
    rows = R.merged(t2, gray, soft)
    assert list(rows.results) == list(t2.results) + [R.GRAY_ROW, R.SOFTMAX_ROW]
    found = report.rcnn_findings([t2, gray, soft])
    assert list(found["finding"]) == [c.text for c in paper.RCNN_CLAIMS]  # every claim has both of its rows
    assert list(found["paper (points)"]) == [round(c.delta, 2) for c in paper.RCNN_CLAIMS]
    assert list(report.grayscale_table(gray)["paper mAP"]) == [paper.RCNN_MAP["R-CNN fc6"], paper.RCNN_FC6_GRAYSCALE]
    assert len(report.softmax_table(soft)) == 2


def test_neg_iou_grid_uses_one_scale(chapter):
    p, cache, bench, _, t2 = chapter
    grid = R.neg_iou_grid(p, cache, bench, t2)
    assert list(grid.results) == p.rcnn.neg_iou_grid
    assert {r.info["scale"] for r in grid.results.values()} == {t2.results["FT fc7"].info["scale"]}
    assert set(grid.spread) == {r.name for r in grid.results.values()}
    table = report.neg_iou_table(grid)
    assert table.loc[paper.RCNN_NEG_IOU_CHOSEN, "paper (points from its best)"] == 0.0
    assert table.loc[0.5, "paper (points from its best)"] == -paper.RCNN_NEG_IOU_COST[0.5]
    plt.close(plots.threshold_figure(grid))
    text = report.rcnn_discussion([t2], grid, bench.classes).data
    assert f"FT fc7 at {paper.RCNN_MAP['R-CNN FT fc7']:.1f}" in text


def test_svm_seeds_one_row_per_seed(chapter):
    p, cache, bench, _, t2 = chapter
    rows = R.svm_seeds(p, cache, bench, t2)
    assert [r["seed"] for r in rows] == p.rcnn.seeds and all(set(r) == {"seed", "fc7", "FT fc7"} for r in rows)
    table = report.seed_table(rows, "FT fc7", "fc7")
    assert list(table.index)[-2:] == ["mean", "std"] and "FT fc7 - fc7" in table


def test_diagnosis_of_the_three_detectors(chapter):
    p, _, bench, _, t2 = chapter
    diag = R.diagnosis(p, bench, t2)
    assert list(diag.results) == list(R.DIAGNOSED) and diag.groups == {"cool": ["blue", "green"], "warm": ["red"]}
    assert set(diag.shown) <= set(diag.groups) and len(diag.shown) <= R.DIAGNOSED_GROUPS
    for r in diag.results.values():
        assert {"trend", "ap_impact", "characteristics"} <= set(r) and set(diag.shown) <= set(r["trend"])
    assert list(report.fp_impact_table(diag).columns) == list(R.DIAGNOSED)
    assert list(report.sensitivity_table(diag).columns) == list(R.DIAGNOSED)
    plt.close(plots.fp_trend_figure(diag))
    plt.close(plots.sensitivity_figure(diag))


def test_pool5_units_and_their_regions(chapter):
    p, cache, bench, nets, t2 = chapter
    u = R.pool5_units(p, cache, bench, nets, t2)
    assert len(u.units) == p.units.positive + p.units.negative + p.units.generic == len(u.tops)
    assert u.input_size == p.net.input_size and u.caffenet == (195, 32, 227)  # CaffeNet's pool5
    assert len(u.fill) == 3
    assert "CaffeNet: 195 px of 227, stride 32" in report.receptive_field(u).data
    plt.close(plots.pool5_units_figure(u, bench.test, p))
    plt.close(plots.pool5_montage_figure(u, bench.test, p))


def test_timing_per_image(chapter):
    p, cache, bench, nets, t2 = chapter
    t = R.timing(p, cache, bench, nets, t2)
    assert t["images"] == p.rcnn.timing_images
    assert t["total"] == pytest.approx(t["proposals"] + t["features"] + t["scoring"])
    assert report.rcnn_timing_table(t).loc["total", "paper CPU (s / image)"] == paper.RCNN_SECONDS_PER_IMAGE["cpu"]
