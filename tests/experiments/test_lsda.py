"""LSDA's pieces on tiny synthetic data: the B/A split, which layers each Table 1 row adapts
(frozen layers and set A's classifiers must not move), the nearest-neighbour transfer, and
the detector's score_i - score_background."""
import copy
from pathlib import Path

import numpy as np
import pytest
import torch

from lsda_core.publish import paper
from lsda_core.experiments import lsda as L
from lsda_core.detection import pipeline as DP
from lsda_core.store.cache import Cache
from lsda_core.data.comp4 import Detections
from lsda_core.models.nets import CaffeNet
from lsda_core.core.structures import keep_classes
from synthetic import make_detection, params

pytestmark = pytest.mark.usefixtures("one_thread")
CLASSES = ["red", "green", "blue", "yellow"]  # alphabetical: blue, green | red, yellow


def test_set_b_is_the_first_half_alphabetically_by_name():
    b, a = L._split_b_a(["n3", "n1", "n2", "n4"], {"n1": "zebra", "n2": "apple", "n3": "mango", "n4": "kiwi"})
    assert b == ["n2", "n4"] and a == ["n3", "n1"]  # apple, kiwi | mango, zebra; benchmark order kept
    assert L._split_b_a(CLASSES) == (["green", "blue"], ["red", "yellow"])


def test_rows_freeze_what_table1_says():
    frozen = {r.name: set(r.frozen()) for r in L.ROWS}
    convs = {"conv1", "conv2", "conv3", "conv4", "conv5"}
    assert frozen["fcbgrnd"] == convs | {"fc6", "fc7"}
    assert frozen["fcbgrnd,fc6"] == convs | {"fc7"}
    assert frozen["fcbgrnd,fc7"] == convs | {"fc6"}
    assert frozen["fcbgrnd,fc6,fc7,fcB"] == convs
    assert frozen[L.FULL_ROW] == set()
    assert [r.fcB for r in L.ROWS] == [False, False, False, True, False, True, True]
    assert {r.name for r in L.ROWS} | {L.CLS_ROW, L.ORACLE_ROW} <= set(paper.LSDA_TABLE1)
    from lsda_core.core.params import Lsda
    assert set(Lsda.__dataclass_fields__["large_row"].metadata["choices"]) == {r.name for r in L.ROWS}


def test_neighbours_use_normalised_weights():
    w = np.array([[10.0, 0], [0, 1], [1, 1], [1, 0.1], [0.1, 1]])
    nn = L.neighbours(w, source=[0, 1, 2], target=[3, 4], k=1)
    assert nn.tolist() == [[0], [1]]  # row 3 points along row 0 (whatever its length)
    assert L.neighbours(w, [0, 1, 2], [3], k=0).shape == (1, 3)
    assert L.neighbours(w, [0, 1, 2], [3], k=2).tolist() == [[0, 2]]


def _tiny_benchmark(tmp_path, n=10):
    ds, props = make_detection(tmp_path / "det", n, 3, classes=tuple(CLASSES))
    b, a = L._split_b_a(CLASSES)
    bench = DP.Benchmark(CLASSES, keep_classes(ds, b), ds, props, metric="ilsvrc")
    return L.LsdaBenchmark(bench, b, a, ds, None, None, {})


def _cls_model(p):
    torch.manual_seed(0)
    m = CaffeNet(p.net, len(CLASSES)).eval()
    m.cache_key = "test-classifier"
    return m


def test_transfer_moves_held_out_rows_by_their_neighbours_change(tmp_path):
    p = params()
    lb = _tiny_benchmark(tmp_path, 2)
    cls = _cls_model(p)
    det = copy.deepcopy(cls)
    w0, b0 = cls.head.weight.detach(), cls.head.bias.detach()
    det.head = torch.nn.Linear(w0.shape[1], len(CLASSES) + 1)
    delta = {"green": 1.0, "blue": -3.0}
    with torch.no_grad():
        det.head.weight[0] = 7.0
        det.head.bias[0] = 7.0
        for i, c in enumerate(CLASSES):
            det.head.weight[1 + i] = w0[i] + delta.get(c, 0.0)
            det.head.bias[1 + i] = b0[i] + delta.get(c, 0.0)
    out = L.transfer(det, cls, lb, k=0)  # every B neighbour: mean change -1
    for i, c in enumerate(CLASSES):
        want = delta[c] if c in delta else -1.0
        assert torch.allclose(out.head.weight[1 + i], w0[i] + want, atol=1e-6), c
        # eq. 1 moves weights only: set A's biases stay the detection network's
        assert torch.allclose(out.head.bias[1 + i], det.head.bias[1 + i], atol=1e-6), c
    assert torch.all(out.head.weight[0] == 7.0)
    moved = L.transfer(det, cls, lb, k=0, move_bias=True)  # the ablation moves them the same way
    for i, c in enumerate(CLASSES):
        want = delta[c] if c in delta else -1.0
        assert torch.allclose(moved.head.weight[1 + i], out.head.weight[1 + i]), c
        assert torch.allclose(moved.head.bias[1 + i], b0[i] + want, atol=1e-6), c
    assert moved.cache_key != out.cache_key
    one = L.transfer(det, cls, lb, k=1)
    for c in lb.A:
        i = CLASSES.index(c)
        nn = lb.B[int(L.neighbours(w0.numpy(), [CLASSES.index(x) for x in lb.B], [i], 1)[0, 0])]
        assert torch.allclose(one.head.weight[1 + i], w0[i] + delta[nn], atol=1e-6)


@pytest.mark.parametrize("row", [L.ROWS[0], L.ROWS[5], L.ROWS[6]], ids=lambda r: r.name)
def test_adaptation_moves_only_what_the_row_adapts(tmp_path, row):
    p = params(**{"finetune.iterations": 6})
    lb = _tiny_benchmark(tmp_path)
    cls = _cls_model(p)
    cache = Cache(tmp_path / "cache")
    windows = L.window_cache(p, cache, cls, lb)
    model, hist = L.adapt(p, cache, cls, lb, row, windows)
    assert hist["windows"] == ("warped" if row.convs else "cached pool5, not mirrored")
    for name in row.frozen():
        assert torch.equal(model.layer(name).weight, cls.layer(name).weight), name
    for name in row.fc:
        assert not torch.equal(model.layer(name).weight, cls.layer(name).weight), name
    w, w0 = model.head.weight, cls.head.weight
    for i, c in enumerate(CLASSES):
        moved = not torch.equal(w[1 + i], w0[i])
        assert moved == (c in lb.B and row.fcB), c  # set A never learns
    assert not torch.equal(w[0], L._head_init(p, cls)[0][0])  # the background learns


def test_detector_scores_against_the_background(tmp_path):
    p = params(**{"detect.nms": 1.0})
    lb = _tiny_benchmark(tmp_path, 2)
    model = _cls_model(p)
    model.head = torch.nn.Linear(model.fc7.out_features, len(CLASSES) + 1)
    with torch.no_grad():
        model.head.weight.zero_()
        model.head.bias.copy_(torch.tensor([2.0, 5.0, 1.0, 2.0, 0.0]))
    bench = lb.bench
    regions = {im.image_id: bench.proposals[im.image_id][:3] for im in bench.test.images}
    dim = model.pool5_dim
    fs = DP.FeatureSet("t", "t", {"test": regions}, {}, lambda s, i: np.zeros((3, dim), np.float16))
    cache = Cache(tmp_path / "cache")
    res = L.detector(p, cache, model, fs, bench, "bg")
    d: Detections = res.detections["red"]
    assert np.allclose(d.scores, 5.0 - 2.0)
    cls = _cls_model(p)  # K outputs, no background: raw scores
    with torch.no_grad():
        cls.head.weight.zero_()
        cls.head.bias.copy_(torch.tensor([5.0, 1.0, 2.0, 0.0]))
    assert np.allclose(L.detector(p, cache, cls, fs, bench, "raw", background=False).detections["red"].scores, 5.0)


def test_prepare_fills_the_lsda_chapters_proposals(tmp_path, capsys):
    from lsda_core import cli
    from lsda_core.core import params as P
    art, smoke = tmp_path / "art", str(Path(__file__).resolve().parents[2] / "params" / "smoke.yaml")
    assert cli.main(["prepare", "--chapter", "lsda", "--stage", "proposals", "--params", smoke,
                     "-p", "runtime.artifacts", str(art), "-p", "runtime.progress", "false"]) == 0
    out = capsys.readouterr().out
    assert "prepared lsda up to proposals" in out
    p = P.load(smoke, {"runtime.artifacts": str(art)})
    lb = L.load_benchmark(p, Cache(art))  # now only reads the cache
    assert set(lb.bench.proposals) == {im.image_id for im in lb.train_all.images} | {im.image_id for im in lb.bench.test.images}
    assert len(lb.B) == len(lb.A) == p.world.ilsvrc_classes // 2
    assert all(o.cls in lb.B for im in lb.bench.train.images for o in im.objects)
    assert any(o.cls in lb.A for im in lb.train_all.images for o in im.objects)
