"""pool5 units (R-CNN Figures 3 and 6): top regions on hand-made pool5 caches (planted
activations, NMS within but not across images, normalisation by the channel's maximum),
the unit <-> column mapping, receptive fields by hand, unit choice from SVM weights, crops
and the montage."""
from pathlib import Path

import matplotlib.patches
import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch

from lsda_core.core import boxes as B
from lsda_core.detection import features as Fe
from lsda_core.publish import plots
from lsda_core.evaluation import units as U
from lsda_core.models.finetune import context_pixels
from lsda_core.core.params import Net, ParamsError
from lsda_core.detection.pipeline import FeatureSet
from lsda_core.core.structures import DetectionDataset, ImageAnn
from lsda_core.evaluation.units import Unit
from synthetic import make_detection, params

C = 4  # pool5 channels of the hand-made caches


def write_cache(folder: Path, boxes: dict[str, np.ndarray], feats: dict[str, np.ndarray]) -> None:
    """A pool5 cache laid out as lsda_core.detection.features writes it: per image its regions and its
    float16 (N, C * 36) features."""
    folder.mkdir(parents=True, exist_ok=True)
    for image_id in boxes:
        np.save(folder / f"{image_id}.boxes.npy", np.asarray(boxes[image_id], np.float32))
        np.save(folder / f"{image_id}.npy", np.asarray(feats[image_id], np.float16))


def cache_features(folder: Path, ids: list[str], loads: list[str] | None = None) -> FeatureSet:
    """The cache as a pool5 FeatureSet of split "test" (as rcnn.cnn_features returns it);
    `loads` records each feature load."""
    def load(split: str, image_id: str) -> np.ndarray:
        if loads is not None:
            loads.append(image_id)
        return Fe.load_pool5(folder, image_id).astype(np.float32)

    regions = {i: Fe.load_regions(folder, i) for i in ids}
    return FeatureSet("pool5 synthetic", str(folder), {"test": regions}, {}, load)


def grid_boxes(n: int) -> np.ndarray:
    """n 20 px boxes 30 px apart: no two overlap, so NMS removes none."""
    j = np.arange(n)
    x, y = (j % 4) * 30.0, (j // 4) * 30.0
    return np.stack([x, y, x + 20, y + 20], 1)


A = Unit(2, 3, 1)  # the unit with planted top regions
PLANTED = [("b", 4, 9.0), ("a", 0, 8.0), ("c", 7, 7.0), ("a", 5, 6.0)]  # best first


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    """Three images of 12 non-overlapping regions, activations in [0, 1), with unit A's four
    planted tops, channel 1's maximum (20) at another unit, and 100 in channel 3."""
    rng = np.random.default_rng(0)
    ids = ["a", "b", "c"]
    boxes = {i: grid_boxes(12) for i in ids}
    feats = {i: rng.uniform(0, 1, (12, C * 36)) for i in ids}
    for i, r, v in PLANTED:
        feats[i][r, A.column] = v
    feats["c"][11, Unit(0, 0, 1).column] = 20.0
    feats["a"][3, Unit(5, 5, 3).column] = 100.0
    folder = tmp_path_factory.mktemp("pool5") / "planted"
    write_cache(folder, boxes, feats)
    return folder, ids


def test_unit_column_is_the_channel_y_x_flattening():
    rng = np.random.default_rng(1)
    maps = rng.normal(size=(5, C, 6, 6))
    flat = maps.reshape(5, -1)  # how features.extract_pool5 flattens (N, C, 6, 6)
    for c, y, x in [(0, 0, 0), (1, 2, 3), (3, 5, 4), (2, 0, 5)]:
        u = Unit(y, x, c)
        assert u.column == c * 36 + y * 6 + x
        assert np.array_equal(flat[:, u.column], maps[:, c, y, x])
    assert [Unit.from_column(k).column for k in range(C * 36)] == list(range(C * 36))
    assert Unit.from_column(Unit(4, 1, 3).column) == Unit(4, 1, 3)
    with pytest.raises(ValueError, match="y and x"):
        Unit(6, 0, 0)


def test_top_regions_are_the_planted_ones_and_each_image_loads_once(planted):
    folder, ids = planted
    loads = []
    fs = cache_features(folder, ids, loads)
    other = Unit(0, 0, 0)
    top_a, top_o = U.top_regions(fs, [A, other], k=4)
    assert sorted(loads) == ids  # all units from one load per image
    assert [(i, int(r)) for i, r in zip(top_a.image_ids, top_a.region_index)] == [(i, r) for i, r, _ in PLANTED]
    assert np.array_equal(top_a.activation, [v for *_, v in PLANTED])
    for i, r, box in zip(top_a.image_ids, top_a.region_index, top_a.boxes):
        assert np.array_equal(box, Fe.load_regions(folder, i)[r])
    # the other unit gets its own ranking: the four largest of its column over the set
    col = np.concatenate([Fe.load_pool5(folder, i)[:, other.column].astype(np.float32) for i in ids])
    assert np.allclose(top_o.activation, np.sort(col)[::-1][:4])
    assert top_a.head(2).image_ids == ["b", "a"] and len(top_a.head(2).activation) == 2


def test_activation_is_normalised_by_the_channels_maximum_over_the_set(planted):
    folder, ids = planted
    top_a, top_3 = U.top_regions(cache_features(folder, ids), [A, Unit(1, 1, 3)], k=4)
    # channel 1's maximum is 20 at unit (0, 0, 1) of a region outside A's top list;
    # channel 3's 100 does not count for channel 1
    assert top_a.channel_max == 20.0
    assert np.allclose(top_a.normalised, np.array([9, 8, 7, 6]) / 20)
    assert top_3.channel_max == 100.0 and top_3.normalised.max() < 0.01


def test_nms_within_each_image_but_not_across_images(tmp_path):
    # image p: r1 overlaps r0 (IoU 0.68) and r3 overlaps r0 (IoU 0.33); r2 barely touches r0
    # (IoU 0.03) but overlaps r3 (IoU 0.103). Image q: two copies of p's r1.
    boxes = {"p": np.array([[0, 0, 20, 20], [2, 2, 22, 22], [15, 15, 35, 35], [10, 0, 30, 20]]),
             "q": np.array([[2, 2, 22, 22], [2, 2, 22, 22]])}
    u, v = Unit(0, 0, 0), Unit(5, 5, 1)
    feats = {i: np.zeros((len(b), C * 36)) for i, b in boxes.items()}
    feats["p"][:, u.column] = [5, 4, 3, 4.5]
    feats["q"][:, u.column] = [4.25, 4.125]
    feats["p"][:, v.column] = [1, 2, 6, 0]
    write_cache(tmp_path, boxes, feats)
    fs = cache_features(tmp_path, ["p", "q"])
    top_u, top_v = U.top_regions(fs, [u, v], k=5, nms=0.1)
    # u: r0 suppresses r1 and r3 in p; q's copy of r1 survives (other image), its twin not
    assert list(zip(top_u.image_ids, top_u.region_index.tolist())) == [("p", 0), ("q", 0), ("p", 2)]
    assert np.array_equal(top_u.activation, [5, 4.25, 3])
    # v, same images, its own NMS: r2 first suppresses r3 (IoU 0.103 > 0.1), r1 survives
    # (IoU 0.065) and suppresses r0; in q the tie keeps the earlier region
    assert list(zip(top_v.image_ids, top_v.region_index.tolist())) == [("p", 2), ("p", 1), ("q", 0)]
    # without suppression every region counts
    (all_u,) = U.top_regions(fs, [u], k=5, nms=1.0)
    assert np.array_equal(all_u.activation, [5, 4.5, 4.25, 4.125, 4])


@pytest.mark.parametrize("chunk", [4096, 7])
def test_nms_many_equals_nms_on_each_score_row(monkeypatch, chunk):
    monkeypatch.setattr(B, "_NMS_FULL_MATRIX", chunk)  # 7: the IoU matrix in row chunks
    rng = np.random.default_rng(6)
    xy = rng.uniform(0, 60, (40, 2))
    boxes = torch.tensor(np.hstack([xy, xy + rng.uniform(5, 40, (40, 2))]))
    scores = torch.tensor(rng.integers(0, 6, (5, 40)), dtype=torch.float64)  # many ties
    for thresh in (0.0, 0.1, 0.5):
        many = B.nms_many(boxes, scores, thresh)
        for row, got in zip(scores, many):
            assert torch.equal(got, B.nms(boxes, row, thresh, impl="torch"))
        for row, got in zip(scores, B.nms_many(boxes, scores, thresh, top_k=3)):
            assert torch.equal(got, B.nms(boxes, row, thresh, impl="torch")[:3])
    assert [len(x) for x in B.nms_many(boxes[:0], scores[:, :0], 0.1, 3)] == [0] * 5


def test_ties_keep_the_earlier_image_then_the_earlier_region(tmp_path):
    u = Unit(1, 1, 0)
    boxes = {"m": grid_boxes(3), "n": grid_boxes(3)}
    feats = {i: np.zeros((3, C * 36)) for i in boxes}
    write_cache(tmp_path, boxes, feats)
    (top,) = U.top_regions(cache_features(tmp_path, ["m", "n"]), [u], k=4)
    assert list(zip(top.image_ids, top.region_index.tolist())) == [("m", 0), ("m", 1), ("m", 2), ("n", 0)]
    (top,) = U.top_regions(cache_features(tmp_path, ["m", "n"]), [u], k=2)
    assert list(zip(top.image_ids, top.region_index.tolist())) == [("m", 0), ("m", 1)]


def test_receptive_box_by_hand():
    # conv1 4/2 pad 0: size 4, jump 2, offset 0; pool1 3/2: 4+2*2=8, jump 4; conv2 5 pad 2:
    # 8+4*4=24, offset -8; pool2 3/2: 24+2*4=32, jump 8; conv3-5 3 pad 1: 48, 64, 80, offset
    # -16, -24, -32; pool5 3/2: 80+2*8=96, jump 16. Grid 115 -> 56 -> 27 -> 27 -> 13 -> 6.
    net = Net(input_size=115, conv1_kernel=4, conv1_stride=2, conv1_pad=0, pool1=True, conv2_kernel=5)
    # unit x = 4: [-32 + 64, -32 + 64 + 96) = [32, 128) -> [32, 115]; y = 1: [-16, 80) -> [0, 80]
    assert np.array_equal(U.receptive_box(net, Unit(1, 4, 0)), [32, 0, 115, 80])
    # the embedded net (size 48, stride 8, offset -15): x = 5 -> [25, 73) -> [25, 64]
    assert np.array_equal(U.receptive_box(Net(), Unit(0, 5, 7)), [25, 0, 64, 33])


def test_receptive_box_in_image_follows_the_context_padded_window():
    net = Net()  # 64 px input; unit (0, 5): [25, 0, 64, 33] in the warp
    regions = np.array([[10, 20, 40, 50], [0, 0, 30, 30]], np.float32)
    got = U.receptive_box_in_image(net, Unit(0, 5, 0), regions, context=8, width=32, height=100)
    # context 8 of 64: the 30 px box grows by 64 / 48 to a 40 px window, [5, 15, 45, 55] and
    # [-5, -5, 35, 35]; one warp pixel is 40 / 64 = 0.625 image pixels
    assert np.allclose(got[0], [5 + 25 * 0.625, 15, 32, 15 + 33 * 0.625])  # x2 45 clipped to width 32
    assert np.allclose(got[1], [-5 + 25 * 0.625, 0, 32, -5 + 33 * 0.625])  # y1 -5 clipped to 0


def test_units_from_svm_weights_with_planted_extremes():
    rng = np.random.default_rng(2)
    classes = ["bird", "cat", "dog"]
    W = rng.uniform(-0.1, 0.1, (3, 8 * 36))
    W[1, Unit(2, 3, 1).column] = 5
    W[1, Unit(1, 1, 0).column] = 4
    W[1, Unit(4, 0, 3).column] = -6
    W[1, Unit(0, 2, 2).column] = -3
    W[:, Unit(5, 5, 5).column] += 2  # evidence for every class: generic
    W[:, Unit(4, 4, 5).column] += 1.8  # second best, but channel 5 is taken
    W[:, Unit(3, 3, 6).column] += 1.5
    own = U.svm_units(W * 7.5, classes, "cat", positive=2, negative=2)  # any feature scale
    assert own == [Unit(2, 3, 1), Unit(1, 1, 0), Unit(4, 0, 3), Unit(0, 2, 2)]
    assert [u.label for u in own] == ["cat +", "cat +", "cat -", "cat -"]
    # (2, 3, 1) averages 5/3 over the classes, more than (3, 3, 6), but channel 1 is shown
    assert U.generic_units(W, 2, exclude=own) == [Unit(5, 5, 5), Unit(3, 3, 6)]
    assert U.generic_units(W, 2) == [Unit(5, 5, 5), Unit(2, 3, 1)]

    p = params(**{"units.category": "cat", "units.positive": 1, "units.negative": 1, "units.generic": 2})
    chosen = U.choose_units(p, {"W": W}, classes)
    assert chosen == [Unit(2, 3, 1), Unit(4, 0, 3), Unit(5, 5, 5), Unit(3, 3, 6)]
    assert U.choose_units(params(), {"W": W}, classes)[0].label == "bird +"  # default: first class
    with pytest.raises(ParamsError, match="units.category"):
        U.choose_units(params(**{"units.category": "cow"}), {"W": W}, classes)


def test_units_by_parameter():
    p = params(**{"units.units": [[1, 2, 3], [5, 0, 11]]})  # the small net has 12 pool5 channels
    assert U.choose_units(p) == [Unit(1, 2, 3), Unit(5, 0, 11)]
    for bad in ([[6, 0, 0]], [[0, 0, 12]], [[0, 0]]):
        with pytest.raises(ParamsError, match=r"units.units\[0\]"):
            U.choose_units(params(**{"units.units": bad}))
    with pytest.raises(ParamsError, match="pool5 SVM"):
        U.choose_units(params())


def test_crops_are_the_warped_regions_with_the_outside_filled(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(3)
    img = rng.integers(0, 256, (40, 50, 3), dtype=np.uint8)
    Image.fromarray(img).save(tmp_path / "im.png")
    ds = DetectionDataset("t", "test", ["x"], [ImageAnn("im", tmp_path / "im.png", 50, 40)])
    p = params()
    box = np.array([[0, 0, 20, 20]], np.float32)  # at the corner: part of the window is outside
    top = U.UnitTop(Unit(0, 0, 0), ["im"], np.array([0]), box, np.array([1.0], np.float32), 1.0)
    fill = (10.0, 200.0, 30.0)
    crop = U.unit_crops(top, ds, p, fill)
    S = p.net.input_size
    assert crop.shape == (1, S, S, 3) and crop.dtype == np.uint8
    ctx = context_pixels(p)
    g = B.warp_geometry(box, 50, 40, S, ctx)
    pad = g["pad"][0].long().tolist()
    assert pad[0] > 0 and pad[1] > 0
    assert (crop[0, :pad[1], :, :] == np.array(fill, np.uint8)).all()
    ref = B.warp_regions(torch.from_numpy(img).permute(2, 0, 1).float(), box, S, ctx)
    inside = ref[0].permute(1, 2, 0).numpy()[pad[1]:, pad[0]:]
    assert np.abs(crop[0, pad[1]:, pad[0]:].astype(float) - inside).max() <= 1


def test_unit_montage_draws_every_crop_with_its_receptive_field(tmp_path):
    ds, props = make_detection(tmp_path / "det", 3, 4)
    rng = np.random.default_rng(5)
    ids = [im.image_id for im in ds.images]
    write_cache(tmp_path / "pool5", props, {i: rng.uniform(0, 1, (len(props[i]), 12 * 36)) for i in ids})
    fs = cache_features(tmp_path / "pool5", ids)
    p = params()
    units = [Unit(0, 5, 2), Unit(3, 3, 11)]
    tops = U.top_regions(fs, units, k=5)
    fig = plots.unit_montage(tops, ds, p, n=4)  # Figure 3 layout: one row of 4 per unit
    ax = fig.axes[0]
    rects = [a for a in ax.patches if isinstance(a, matplotlib.patches.Rectangle)]
    assert len(rects) == 8 and len(ax.texts) == 8 + 2  # a value per crop, a heading per unit
    for heading, u, top in zip(ax.texts[8:], units, tops):  # the unit, why chosen, what its regions cover
        cat, k = plots.unit_category(top.head(4), ds)
        assert heading.get_text().startswith(f"unit ({u.y}, {u.x}, {u.channel}) · ")
        assert f"its 4 regions cover {cat} {k}" in heading.get_text()
    S = p.net.input_size
    canvas, head = ax.images[0].get_array(), max(12, S // 4)  # a heading band above each unit's crops
    rf = U.receptive_box(p.net, units[0])  # [25, 0, 64, 33]
    assert rects[0].get_xy() == (rf[0] - 0.5, head + rf[1] - 0.5) and rects[0].get_width() == rf[2] - rf[0]
    assert ax.texts[0].get_text() == f"{tops[0].normalised[0]:.2f}"
    assert np.array_equal(canvas[head:head + S, :S], U.unit_crops(tops[0], ds, p)[0])
    plt.close(fig)
    fig = plots.unit_montage(tops[:1], ds, p, cols=2)  # Figure 6 layout: 5 crops, 2 a row
    step = S + max(2, S // 16)
    assert fig.axes[0].images[0].get_array().shape[:2] == (head + 3 * step - (step - S), 2 * step - (step - S))
    assert len(fig.axes[0].texts) == 5 + 1
    plt.close(fig)
