"""R-CNN's segmentation experiment on a tiny VOC-layout segmentation root the test writes: the
rows' confusions count exactly the non-void pixels, the bootstrap reweights images by hand, the
chapter's tables and claims come out."""
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lsda_core.core.structures import ImageAnn, ObjectAnn
from lsda_core.data.voc import write_imagesets, write_segmentation_list, write_voc_xml
from lsda_core.evaluation import segmentation as S
from lsda_core.evaluation.stats import resamples
from lsda_core.experiments import segmentation as SG
from lsda_core.publish import paper, seg_report
from lsda_core.store.cache import Cache
from lsda_core.world.write import class_mask
from synthetic import params

pytestmark = pytest.mark.usefixtures("one_thread")
COLOURS = {"fox": (200, 40, 40), "owl": (40, 180, 40)}


def _png(path: Path, labels: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    im = Image.fromarray(labels)
    im.putpalette([v for i in range(256) for v in (i, i, i)])
    im.save(path)


def _root(tmp: Path) -> Path:
    """Train (6) and val (4) images of 64 x 48 px with one or two flat-coloured objects each."""
    rng = np.random.default_rng(0)
    root = tmp / "voc"
    (root / "JPEGImages").mkdir(parents=True)
    for split, n in (("train", 6), ("val", 4)):
        ids = []
        for i in range(n):
            image_id = f"{split}{i}"
            img = np.clip(rng.normal(110, 10, (48, 64, 3)), 0, 255).astype(np.uint8)
            inst = np.zeros((48, 64), np.uint8)
            objs = []
            for k, cls in enumerate(rng.permutation(list(COLOURS))[: 1 + i % 2], start=1):
                x, y = int(rng.integers(0, 34)), int(rng.integers(0, 22))
                img[y:y + 24, x:x + 28] = COLOURS[str(cls)]
                inst[y:y + 24, x:x + 28] = k
                objs.append(ObjectAnn(str(cls), np.array([x, y, x + 28, y + 24], float)))
            Image.fromarray(img).save(root / "JPEGImages" / f"{image_id}.jpg")
            write_voc_xml(root / "Annotations" / f"{image_id}.xml", ImageAnn(image_id, f"{image_id}.jpg", 64, 48, objs))
            _png(root / "SegmentationObject" / f"{image_id}.png", inst)
            _png(root / "SegmentationClass" / f"{image_id}.png",
                 class_mask(inst, [sorted(COLOURS).index(o.cls) + 1 for o in objs], [False] * len(objs)))
            ids.append(image_id)
        write_imagesets(root, split, ids, sorted(COLOURS))
        write_segmentation_list(root, split, ids)
    return root


@pytest.fixture(scope="module")
def run(pretrained, tmp_path_factory):
    model, _, _ = pretrained
    tmp = tmp_path_factory.mktemp("seg")
    p = params(**{"segmentation.root": str(_root(tmp)), "segmentation.max_masks": 20, "segmentation.scales": [50],
                  "segmentation.finetuned": False, "rcnn.bootstrap": 8})
    cache = Cache(tmp / "cache")
    sb = SG.load_benchmark(p, cache)
    rows = SG.table3(p, cache, sb, {"pretrained": model})
    return p, cache, sb, rows


def test_rows_count_every_non_void_eval_pixel(run):
    p, _, sb, rows = run
    assert sb.classes == ["background", "fox", "owl"] and len(sb.train.ids) == 6 and len(sb.eval.ids) == 4
    assert set(rows) == {f"{s} {layer}" for s in SG.STRATEGIES for layer in SG.LAYERS}
    pixels = [int((sb.eval.truth[i] != S.VOID).sum()) for i in sb.eval.ids]
    for r in rows.values():
        assert r.confusion.shape == (4, 3, 3) and r.confusion.sum(axis=(1, 2)).tolist() == pixels
        assert 0.0 <= r.score <= 1.0 and r.threshold in SG.THRESHOLDS
        for image_id, labels in r.examples.items():  # the kept labelling is the one scored
            k = sb.eval.ids.index(image_id)
            assert np.array_equal(S.confusion(sb.eval.truth[image_id], labels, 3), r.confusion[k])


def test_rows_are_cached(run, pretrained):
    p, cache, sb, rows = run
    assert len([e for e in cache.entries() if e["stage"] == "segment"]) == len(rows)
    again = SG.table3(p, cache, sb, {"pretrained": pretrained[0]})
    assert all(np.array_equal(again[k].confusion, rows[k].confusion) for k in rows)
    assert len([e for e in cache.entries() if e["stage"] == "segment"]) == len(rows)


def test_bootstrap_reweights_images_by_hand():
    """Two images: one all right (4 background pixels), one all wrong (2 class-1 pixels called
    background). A resample drawing them a and b times: background IoU 4a / (4a + 2b), class 1
    IoU 0 when b > 0 (absent, not averaged, when b = 0)."""
    conf = np.array([[[4, 0], [0, 0]], [[0, 0], [2, 0]]])
    row = SG.SegRow("r", conf, 0.1, {})
    assert row.score == pytest.approx((4 / 6 + 0) / 2)
    samples = SG.bootstrap({"r": row}, 50, 0)["r"]
    for (a, b), got in zip(resamples(2, 50, 0), samples):
        want = 1.0 if b == 0 else (4 * a / (4 * a + 2 * b) + 0.0) / 2
        assert got == pytest.approx(want)


def test_chapter_tables_and_claims(run):
    p, _, sb, rows = run
    seeded = SG.seeded(p, rows)
    t3 = seg_report.table3(rows, seeded)
    assert t3.loc["full+fg fc6", "paper (VOC 2011 val)"] == paper.RCNN_TABLE3["full+fg fc6"]
    assert t3.loc["fg fc7", "ours"] == pytest.approx(100 * rows["fg fc7"].score)
    found = seg_report.findings(p, seeded)
    assert [f["id"] for f in found] == [c.id for c in paper.SEG_CLAIMS]
    assert all(f["verdict"] in ("replicated", "direction only", "not replicated", "inconclusive") for f in found)
    assert list(seg_report.per_class(rows, sb.classes).columns) == ["background", "fox", "owl", "mean"]
    bench = seg_report.benchmark(sb)  # the kept masks of both splits, and the eval pool they were ranked from
    assert len(bench) == 3 and bench["masks per image"].iloc[1] == p.segmentation.max_masks
    assert bench["objects at IoU >= 0.5"].iloc[2] >= bench["objects at IoU >= 0.5"].iloc[1]
    fig = seg_report.examples_figure(sb, rows, ("full fc6", "fg fc6"))
    assert "full fc6, fg fc6 rows" in fig.caption and len(fig.fig.axes) == 4 * len(rows["full fc6"].examples)


def test_premises_measure_coverage_and_headroom_over_background(run):
    """All-background labelling by hand: 4 background and 2 class-1 true pixels give background
    IoU 4 / 6 and class 1 0, mean 1/3; the chapter's headroom is its best row above that."""
    row = SG.SegRow("r", np.array([[[4, 0], [0, 0]], [[0, 0], [2, 0]]]), 0.1, {})
    assert SG.background_only(row) == pytest.approx(1 / 3)
    _, _, sb, rows = run
    m = SG.premises(sb, rows)
    best = max(r.score for r in rows.values())
    assert m["seg_recall"] == SG.proposal_quality(sb.eval)["recall_50"]
    assert m["seg_headroom"] == pytest.approx(100 * (best - SG.background_only(max(rows.values(), key=lambda r: r.score))))


def test_table4_is_the_best_row_evaluated_once_on_the_test_split(run, pretrained):
    """With the test split set to the eval split, Table 4's row is Table 3's full+fg fc6 row,
    served from its cache entry; its table shows that row's mean beside the paper's rows."""
    p, cache, sb, rows = run
    before = len([e for e in cache.entries() if e["stage"] == "segment"])
    q = replace(p, segmentation=replace(p.segmentation, test_split=p.segmentation.eval_split))
    t4 = SG.table4(q, cache, sb, {"pretrained": pretrained[0]})
    assert np.array_equal(t4.confusion, rows[SG.TABLE4_ROW].confusion)
    assert len([e for e in cache.entries() if e["stage"] == "segment"]) == before
    table = seg_report.table4(t4, sb.classes, q)
    ours = table.loc[f"{SG.TABLE4_ROW}, this run (val split)"]
    assert ours["mean"] == pytest.approx(100 * t4.score) and set(table.columns) >= {"fox", "owl", "95 % interval"}
    assert table.loc["full+fg fc6, the paper (VOC 2011 test)", "mean"] == paper.RCNN_TABLE4["full+fg fc6"][1]
    assert SG.table4(replace(p, segmentation=replace(p.segmentation, test_split=None)), cache, sb, {}) is None


def test_proposal_premise_and_coverage_of_the_first_masks(run):
    """Masks are ranked, so the first n of them are what `max_masks` = n keeps: coverage grows
    with n up to the whole set's; the sweep's measurement is the eval split's."""
    p, cache, sb, _ = run
    whole = SG.proposal_quality(sb.eval)
    one = SG.proposal_quality(sb.eval, 1)
    assert one["per_image"] == 1 and one["mean_best_overlap"] <= whole["mean_best_overlap"]
    assert SG.proposal_quality(sb.eval, p.segmentation.max_masks) == whole
    m = SG.proposal_premise(p, cache)
    assert m["seg_recall"] == whole["recall_50"] and m["seg_recall@150"] == whole["recall_50"]  # 20 masks kept


def test_learned_ranking_keeps_masks_of_the_pool_and_is_cached(run):
    """Each image keeps `max_masks` distinct masks of its pool (the hierarchy's masks); the
    ranker is trained once, each split ranked once; the hierarchy's own order keeps the pool."""
    p, cache, sb, _ = run
    pool = sb.pools["eval"]
    for i in sb.eval.ids:
        kept, whole = sb.eval.props[i].members, pool.props[i].members
        assert len(kept) == min(p.segmentation.max_masks, len(whole))
        rows = {r.tobytes() for r in whole}
        assert all(r.tobytes() in rows for r in kept) and len({r.tobytes() for r in kept}) == len(kept)
    stages = [e["stage"] for e in cache.entries()]
    assert stages.count("mask-ranker") == 1 and stages.count("mask-ranking") == 2
    q = replace(p, segmentation=replace(p.segmentation, ranking="hierarchy"))
    assert SG.ranked(q, cache, sb.pools["train"], pool) is pool


def test_a_cold_ranking_describes_each_pool_once(run, tmp_path, monkeypatch):
    """Training the ranker on the train pool and ranking that pool share one description of
    it; the kept masks' split carries none of the pool's descriptors."""
    p, cache, _, _ = run
    fresh = Cache(tmp_path / "cache")
    for stage in ("mask-proposals", "world"):  # the pools and data stay; ranker and rankings are rebuilt
        if (cache.root / stage).is_dir():
            (fresh.root / stage).parent.mkdir(parents=True, exist_ok=True)
            (fresh.root / stage).symlink_to(cache.root / stage)
    calls = []
    real = SG.MR.describe
    monkeypatch.setattr(SG.MR, "describe", lambda props, image: calls.append(1) or real(props, image))
    sb = SG.load_benchmark(p, fresh)
    assert len(calls) == len(sb.pools["train"].ids) + len(sb.pools["eval"].ids)
    assert sb.train.descriptors is None and sb.pools["train"].descriptors is not None
