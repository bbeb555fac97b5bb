"""The R-CNN chapter's tables and ablations (lsda_core.experiments.rcnn) on tiny synthetic data:
the rows each defines, that they reuse Table 2's cached detectors and features, that their
bootstrap spreads are paired, and that `prepare` computes the features the chapter uses."""
import json
from dataclasses import replace

import matplotlib.pyplot as plt
import numpy as np
import pytest
from synthetic import make_detection, params

from lsda_core.detection import pipeline as DP
from lsda_core.evaluation import hoiem as A
from lsda_core.evaluation import stats
from lsda_core.experiments import rcnn as R
from lsda_core.models import finetune as FT
from lsda_core.publish import paper, plots, report, viz
from lsda_core.store import stages
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
    fig = plots.table2_figure(t2)
    best = max(t2.results, key=lambda k: t2.results[k].map)
    assert isinstance(fig, viz.Captioned) and f"*{best}* at {100 * t2.results[best].map:.1f}" in fig.caption
    plt.close(fig.fig)


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


def test_layer_gains_are_table2s_differences(chapter, monkeypatch):
    """`lsda sweep rcnn_layers` measures with the chapter's own detectors (same cache entries)."""
    p, cache, bench, nets, t2 = chapter
    monkeypatch.setattr(R, "load_benchmark", lambda p, cache: bench)
    monkeypatch.setattr(R, "load_networks", lambda p, cache, bench: nets)
    monkeypatch.setattr(R.PR, "pretrain_quality", lambda p, cache, model, hist: {"val_top1": 0.5, "train_top1": 0.6})
    g = R.layer_gains(p, cache)
    m = {k: 100 * r.map for k, r in t2.results.items()}
    assert g["fc6 - pool5"] == pytest.approx(m["fc6"] - m["pool5"])
    assert g["FT gain fc7"] == pytest.approx(m["FT fc7"] - m["fc7"]) and g["FT fc7"] == pytest.approx(m["FT fc7"])
    assert g["FT gain pool5"] == pytest.approx(m["FT pool5"] - m["pool5"]) and g["val_top1"] == 0.5


def test_ablations_reuse_table2_and_share_its_resamples(chapter):
    p, cache, bench, nets, t2 = chapter
    gray = R.grayscale_ablation(p, cache, bench, nets, t2)
    soft = R.softmax_ablation(p, cache, bench, nets, t2)
    assert list(gray.results) == ["fc6", R.GRAY_ROW] and gray.results["fc6"] is t2.results["fc6"]
    assert list(soft.results) == ["FT fc7", R.SOFTMAX_ROW] and soft.results["FT fc7"] is t2.results["FT fc7"]
    np.testing.assert_array_equal(gray.spread["fc6"], t2.spread["fc6"])  # the same resamples: paired
    np.testing.assert_array_equal(soft.spread["FT fc7"], t2.spread["FT fc7"])
    rows = R.merged(t2, gray, soft)
    assert list(rows.results) == list(t2.results) + [R.GRAY_ROW, R.SOFTMAX_ROW]
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
    fig = plots.threshold_figure(grid)
    best = max(grid.results, key=lambda t: grid.results[t].map)
    assert isinstance(fig, viz.Captioned) and f"threshold here is {best} ({100 * grid.results[best].map:.1f} mAP)" \
        in fig.caption
    plt.close(fig.fig)
    text = report.rcnn_discussion([t2], grid, bench.classes).data
    assert f"FT fc7 at {paper.RCNN_MAP['R-CNN FT fc7']:.1f}" in text


def test_seeded_rows_share_pretraining_and_resamples(chapter, tmp_path, monkeypatch):
    """Every training seed retrains fine-tuning and SVMs on the same pre-trained network; the
    chapter's own run is seed runtime.seed's; every seed is bootstrapped on the same resamples;
    the findings judge every R-CNN claim and hand them to the build."""
    p, cache, bench, nets, t2 = chapter
    seen = []

    def networks(q, cache, bench):  # the chapter's pre-trained network (that its key ignores
        seen.append(q.runtime.seed)  # runtime.seed is tested with pre-training), fine-tuned with q
        ft, hist = FT.finetune(q, nets["pretrained"], bench.train, bench.proposals, cache, bench.classes)
        return {**nets, "finetuned": ft, "finetune_history": hist}

    monkeypatch.setattr(R, "load_networks", networks)
    gray = R.grayscale_ablation(p, cache, bench, nets, t2)
    seeds = R.seeded(p, cache, bench, t2, gray)
    S, B = len(p.rcnn.seeds), p.rcnn.bootstrap
    assert seeds.seeds == p.rcnn.seeds and S > 1
    assert seeds.points["FT fc7"].shape == (S,) and seeds.samples["FT fc7"].shape == (S, B)
    i = p.rcnn.seeds.index(p.runtime.seed)
    assert seeds.points["FT fc7"][i] == t2.results["FT fc7"].map
    np.testing.assert_array_equal(seeds.samples["FT fc7"][i], t2.spread["FT fc7"])
    assert seeds.points["FT fc7"][1 - i] != seeds.points["FT fc7"][i]  # another fine-tuning, another result
    assert seen == [s for s in p.rcnn.seeds if s != p.runtime.seed]  # the chapter's own seed is reused
    table = report.seed_table(seeds)
    assert list(table.index) == p.rcnn.seeds + ["mean", "std"] and "FT fc7" in table and R.GRAY_ROW in table
    grid = R.neg_iou_grid(p, cache, bench, t2)
    diag = R.diagnosis(p, bench, t2)
    shares = R.figure_stats(p, bench, diag)
    assert set(shares.points) == set(R.FIG4_SHARES) | set(R.FIG5_SUBSETS)
    assert all(0 <= v[0] <= 1 for v in shares.points.values())
    ch = diag.results["FT fc7"]["characteristics"]["per_characteristic"]  # the figure's own numbers
    assert shares.points["FT fc7: worst-subset AP_N"][0] == pytest.approx(np.nanmean([r["min"] for r in ch.values()]))
    found = report.rcnn_findings(p, seeds, grid, shares, str(tmp_path), {"recall": 0.9})
    assert [f["id"] for f in found] == [c.id for c in paper.RCNN_CLAIMS]  # every claim has its rows
    assert all(f["verdict"] in stats.VERDICTS for f in found)
    by = {f["id"]: f for f in found}
    assert by["rcnn-ft-fc7"]["seeds"] == S and by["rcnn-neg-iou"]["seeds"] == 1
    assert by["rcnn-ft-fc7"]["ours"] == pytest.approx(100 * np.mean(seeds.points["FT fc7"] - seeds.points["fc7"]),
                                                      abs=1e-3)
    part = json.loads((tmp_path / "rcnn.json").read_text())
    assert part["findings"] == found and part["premises"][0]["id"] == "recall"


def test_diagnosis_of_the_three_detectors(chapter):
    p, _, bench, _, t2 = chapter
    diag = R.diagnosis(p, bench, t2)
    assert list(diag.results) == list(R.DIAGNOSED) and diag.groups == {"cool": ["blue", "green"], "warm": ["red"]}
    assert list(diag.diagnoses) == list(R.DIAGNOSED)  # analyze was given these: the same result as its own
    again = A.analyze(bench.test, t2.results["FT fc7"].detections, diag.groups, p.analysis)
    assert again["fp_types"] == diag.results["FT fc7"]["fp_types"] and again["trend"] == diag.results["FT fc7"]["trend"]
    assert set(diag.shown) <= set(diag.groups) and len(diag.shown) <= R.DIAGNOSED_GROUPS
    for r in diag.results.values():
        assert {"trend", "ap_impact", "characteristics"} <= set(r) and set(diag.shown) <= set(r["trend"])
    assert list(report.fp_impact_table(diag).columns) == list(R.DIAGNOSED)
    assert list(report.sensitivity_table(diag).columns) == list(R.DIAGNOSED)
    figs = [plots.fp_trend_figure(diag), plots.sensitivity_figure(diag)]
    assert all(isinstance(f, viz.Captioned) and f.caption for f in figs)
    assert all(f"*{label}*" in figs[0].caption for label in diag.results)  # each detector's most common FP type
    assert "Fine-tuning (*FT fc7* against *fc7 (no FT)*) raised the worst subset" in figs[1].caption
    for f in figs:
        plt.close(f.fig)


def test_pool5_units_and_their_regions(chapter):
    p, cache, bench, nets, t2 = chapter
    u = R.pool5_units(p, cache, bench, nets, t2)
    assert len(u.units) == p.units.positive + p.units.negative + p.units.generic == len(u.tops)
    assert u.input_size == p.net.input_size and u.caffenet == (195, 32, 227)  # CaffeNet's pool5
    assert len(u.fill) == 3
    assert "CaffeNet: 195 px of 227, stride 32" in report.receptive_field(u).data
    figs = [plots.pool5_units_figure(u, bench.test, p), plots.pool5_montage_figure(u, bench.test, p)]
    assert all(isinstance(f, viz.Captioned) and f.caption for f in figs)
    cat, k = plots.unit_category(u.tops[0].head(p.units.montage_top), bench.test)
    assert f"{k} of them cover" in figs[1].caption
    for f in figs:
        plt.close(f.fig)


def test_timing_per_image(chapter):
    p, cache, bench, nets, t2 = chapter
    t = R.timing(p, cache, bench, nets, t2)
    assert t["images"] == p.rcnn.timing_images
    assert t["total"] == pytest.approx(t["proposals"] + t["features"] + t["scoring"])
    assert report.rcnn_timing_table(t).loc["total", "paper CPU (s / image)"] == paper.RCNN_SECONDS_PER_IMAGE["cpu"]


def test_a_warm_chapter_reads_no_features(chapter):
    """Once its results are cached, the chapter needs none of the scratch stages (features,
    decoded images) that `lsda book` removes: Table 2, box regression, the units, both
    ablations and the grid come back from the cache with the same numbers, and no feature
    entry is built again."""
    p, cache, bench, nets, t2 = chapter

    def everything(t2):
        units = R.pool5_units(p, cache, bench, nets, t2)
        rows = R.merged(t2, R.grayscale_ablation(p, cache, bench, nets, t2), R.softmax_ablation(p, cache, bench, nets, t2))
        grid = R.neg_iou_grid(p, cache, bench, t2)
        return ({k: r.map for k, r in rows.results.items()}, {t: r.map for t, r in grid.results.items()},
                [(u.image_ids, u.activation.tolist()) for u in units.tops])

    first = everything(t2)
    assert cache.clean_scratch() > 0
    again = everything(R.table2(p, cache, bench, nets))
    assert again == first
    assert [d.name for d in cache.stage_folders() if stages.stage_of(d.name).name in stages.SCRATCH] == []
