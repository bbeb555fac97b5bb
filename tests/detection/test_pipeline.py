"""R-CNN end to end on small VOC-format data, through the real-data code path
(`data.source: voc2007` with dataset paths), and its comp4 output scored by `lsda eval`."""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from lsda_core.core import params as P
from lsda_core.detection import pipeline as DP
from lsda_core.evaluation import stats
from lsda_core.experiments import rcnn as R
from lsda_core.store.cache import Cache
from lsda_core.world import ensure_world

ROOT = Path(__file__).resolve().parents[2]
FAST = {"pretrain.epochs": 1, "finetune.iterations": 4, "proposals.max_boxes": 30, "rcnn.bootstrap": 3}


@pytest.fixture(scope="module")
def voc_paths(tmp_path_factory):
    """A tiny world, whose VOC view and classification folders stand in for real data."""
    tmp = tmp_path_factory.mktemp("rcnn")
    p = P.load(ROOT / "params/smoke.yaml", {"runtime.artifacts": str(tmp / "art")})
    w = ensure_world(p, Cache(p.runtime.artifacts))
    return tmp, w.voc, w.classification


def test_pipeline_on_voc_layout(voc_paths):
    tmp, voc, cls = voc_paths
    p = P.load(ROOT / "params/paper_voc2007.yaml", {
        **FAST, "data.voc_root": str(voc), "data.imagenet_root": str(cls), "runtime.artifacts": str(tmp / "art2"),
        # the paper's network is too big for a test: the embedded one on the same code path
        **{f"net.{k}": v for k, v in P.load(ROOT / "params/embedded.yaml").to_dict()["net"].items()},
        "runtime.progress": False})
    cache = Cache(p.runtime.artifacts)
    bench = R.load_benchmark(p, cache)
    assert bench.train.split == "trainval" and bench.test.split == "test" and bench.classes
    assert set(bench.proposals) == {im.image_id for im in bench.train.images + bench.test.images}
    nets = R.load_networks(p, cache, bench)
    assert nets["finetuned"].head.out_features == len(bench.classes) + 1
    fs = DP.cnn_features(p, cache, nets["finetuned"], bench, "fc7", "ft")
    feats = fs.load("test", bench.test.images[0].image_id)
    assert feats.shape == (len(bench.proposals[bench.test.images[0].image_id]), p.net.fc_width)
    res = DP.svm_detector(p, cache, fs, bench, "FT fc7")
    assert set(res.ap) == set(bench.classes) and 0.0 <= res.map <= 1.0
    for c, d in res.detections.items():  # per class and image: at most max_per_image, NMS applied
        for image_id in set(d.image_ids):
            assert sum(i == image_id for i in d.image_ids) <= p.detect.max_per_image
    # the comp4 files, scored by `lsda eval`, give the same numbers
    DP.write_results(tmp / "results", bench, res)
    out = tmp / "eval.json"
    subprocess.run([sys.executable, "-m", "lsda_core.cli", "eval", "--dataset", str(voc), "--split", "test",
                    "--results", str(tmp / "results"), "--out", str(out)], check=True, capture_output=True)
    scored = json.loads(out.read_text())
    assert abs(scored["map"] - res.map) < 2e-3  # comp4 rounds boxes to 0.1 px
    # cached: the same detector again costs no training and gives the same numbers
    again = DP.svm_detector(p, cache, fs, bench, "FT fc7")
    assert again.map == res.map
    assert [e["stage"] for e in cache.entries()].count("detections") == 1  # read back, not recomputed
    for c, d in res.detections.items():
        a = again.detections[c]
        assert a.image_ids == d.image_ids and np.array_equal(a.scores, d.scores) and np.array_equal(a.boxes, d.boxes)


def test_bootstrap_is_paired_and_deterministic():
    bench_like = DP.Benchmark(["a"], None, None, {})
    from lsda_core.data.comp4 import Detections
    from lsda_core.core.structures import DetectionDataset, ImageAnn, ObjectAnn
    ims = [ImageAnn(str(i), Path("x"), 10, 10, [ObjectAnn("a", np.array([0, 0, 5, 5.0]))]) for i in range(6)]
    bench_like.test = DetectionDataset("t", "test", ["a"], ims)
    perfect = DP.DetectorResult("perfect", {"a": 1.0}, 1.0,
                               {"a": Detections([str(i) for i in range(6)], np.ones(6), np.tile([0, 0, 5, 5.0], (6, 1)))})
    s1 = stats.bootstrap_map(bench_like, [perfect], n=5, seed=1)
    s2 = stats.bootstrap_map(bench_like, [perfect], n=5, seed=1)
    np.testing.assert_array_equal(s1["perfect"], s2["perfect"])
    assert np.allclose(s1["perfect"], 1.0)  # a perfect detector is perfect on every resample
    # half right: images 0-2 detected, 3-5 missed (a false positive elsewhere instead);
    # reweighting must equal evaluating an explicitly resampled copy of the test set
    from dataclasses import replace
    from lsda_core.evaluation import ap as E
    half = DP.DetectorResult("half", {"a": 0.5}, 0.5, {"a": Detections(
        [str(i) for i in range(6)], np.arange(6, 0, -1.0),
        np.array([[0, 0, 5, 5]] * 3 + [[5, 5, 10, 10]] * 3, float))})
    got = stats.bootstrap_map(bench_like, [half], n=4, seed=3)["half"]
    rng = np.random.default_rng(3)
    for k in range(4):
        counts = np.bincount(rng.integers(0, 6, 6), minlength=6)
        copies, ids, sc, bx = [], [], [], []
        d = half.detections["a"]
        for i in range(6):
            for j in range(counts[i]):
                copies.append(replace(ims[i], image_id=f"{i}.{j}"))
                ids.append(f"{i}.{j}"), sc.append(d.scores[i]), bx.append(d.boxes[i])
        ds = replace(bench_like.test, images=copies)
        want = E.evaluate(ds, {"a": Detections(ids, np.array(sc), np.array(bx))}, "voc07")["map"]
        assert abs(got[k] - want) < 1e-12
