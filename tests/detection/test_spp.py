"""The fast detector (lsda_core.detection.spp): the conv trunk, SPP-net's projection, exact batched
spatial pyramid pooling against a naive per-box reference, the head initialised from
CaffeNet, fc-only fine-tuning, the feature cache and one-pass scoring. Tiny nets, seconds."""
import dataclasses
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from lsda_core.detection import features as Fe
from lsda_core.models import finetune as FT
from lsda_core.detection import spp
from lsda_core.store.cache import Cache
from lsda_core.data.images import load_image
from lsda_core.core.errors import DataError
from lsda_core.models.nets import CaffeNet
from lsda_core.core.params import ParamsError
from synthetic import make_detection, params

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    ds, props = make_detection(tmp_path_factory.mktemp("det"), 5, 7)
    p = params(**{"fast.scale": 96})
    torch.manual_seed(0)
    model = CaffeNet(p.net, 4).eval()
    model.set_normalization([120, 125, 130], [40, 45, 50])
    regions, _ = Fe.regions_with_gt(ds, props, ds.classes)
    return ds, props, p, model, regions


# ------------------------------------------------------------------------- naive reference

def naive_spp(conv: torch.Tensor, cells: torch.Tensor, bins) -> torch.Tensor:
    """Per box and per bin, in Python: the max over SPP-net's bin
    [floor(i n / b), ceil((i + 1) n / b)) of the box's cells; levels concatenated, each (c, y, x)."""
    rows = []
    for x0, y0, x1, y1 in cells.tolist():
        crop = conv[:, y0:y1 + 1, x0:x1 + 1]
        nh, nw = crop.shape[1:]
        parts = []
        for b in bins:
            level = torch.empty(conv.shape[0], b, b, dtype=conv.dtype)
            for i in range(b):
                for j in range(b):
                    ys, ye = math.floor(i * nh / b), math.ceil((i + 1) * nh / b)
                    xs, xe = math.floor(j * nw / b), math.ceil((j + 1) * nw / b)
                    level[:, i, j] = crop[:, ys:ye, xs:xe].amax(dim=(1, 2))
            assert torch.equal(level, F.adaptive_max_pool2d(crop[None], b)[0])  # same edges as torch
            parts.append(level.reshape(-1))
        rows.append(torch.cat(parts))
    return torch.stack(rows)


def random_boxes(g: torch.Generator, n: int, w: float, h: float) -> torch.Tensor:
    """Boxes of every kind: inside, tiny, huge, crossing and outside the image."""
    x1 = torch.rand(n, generator=g) * w * 1.2 - 0.1 * w
    y1 = torch.rand(n, generator=g) * h * 1.2 - 0.1 * h
    bw = torch.rand(n, generator=g) ** 2 * w
    bh = torch.rand(n, generator=g) ** 2 * h
    boxes = torch.stack([x1, y1, x1 + bw, y1 + bh], 1)
    extra = torch.tensor([[0, 0, w, h], [-50, -50, 2 * w, 2 * h], [5, 5, 5.2, 5.1], [w + 10, 3, w + 30, 9]])
    return torch.cat([boxes, extra.to(boxes.dtype)])


# ------------------------------------------------------------------------ the conv pass

def test_conv_map_resizes_the_shorter_side_and_reports_the_transform(setup):
    _, _, p, model, _ = setup
    img = np.random.default_rng(0).integers(0, 256, (80, 96, 3), dtype=np.uint8)
    conv, tf = spp.conv_map(model, img, 40)  # 80 x 96 -> 40 x 48
    assert conv.shape[0] == model.conv5.out_channels and (tf.height, tf.width) == conv.shape[1:]
    assert tf.sx == tf.sy == 0.5 and tf.stride == 4
    # the embedded trunk: receptive field 40 px, offset -15 -> cell 0 centred at pixel edge 5
    assert tf.centre == 5.0
    with torch.no_grad():
        x = F.interpolate(model.normalize(torch.from_numpy(img).permute(2, 0, 1))[None], size=(40, 48),
                          mode="bilinear", align_corners=False)
        assert torch.allclose(conv, model.conv_trunk(x)[0], atol=1e-6)
    conv2, tf2 = spp.conv_map(model, img, 80)  # already 80: no resize
    assert tf2.sx == tf2.sy == 1.0 and conv2.shape[1:] == (18, 22)
    assert not model.training


# --------------------------------------------------------------------------- projection

def test_projection_hand_cases():
    tf = spp.MapTransform(sx=1.0, sy=1.0, stride=4, centre=2.0, height=10, width=12)  # centres 2, 6, 10, ...
    cases = {
        (6, 6, 22, 14): (2, 2, 4, 2),      # edges on centres 6 / 22 and 6 / 14: those cells excluded
        (7, 3, 21, 30): (2, 1, 4, 6),      # cells with centres strictly inside: x 10..18, y 6..26
        (10.5, 10.5, 11.5, 11.5): (2, 2, 2, 2),  # no centre inside: the cell nearest the middle
        (100, 0, 120, 50): (11, 0, 11, 9),  # right of the map / taller than it: clamped
        (-40, -40, -30, -30): (0, 0, 0, 0),
    }
    got = spp.project_boxes(torch.tensor(list(cases), dtype=torch.float64), tf)
    assert got.dtype == torch.int64
    assert got.tolist() == [list(v) for v in cases.values()]
    # the resize scales image coordinates before projection
    half = spp.MapTransform(sx=0.5, sy=2.0, stride=4, centre=2.0, height=10, width=12)
    assert spp.project_boxes([[14, 3.5, 42, 7]], half).tolist() == [[2, 2, 4, 2]]


def test_projection_is_spp_nets_formula_without_offset():
    """With cell 0 centred at 0, the projection is SPP-net's floor(x / S) + 1, ceil(x / S) - 1."""
    S = 16
    tf = spp.MapTransform(1.0, 1.0, S, 0.0, 1000, 1000)
    g = torch.Generator().manual_seed(0)
    lo = torch.rand(200, 2, generator=g) * 4000
    boxes = torch.cat([lo, lo + 40 + torch.rand(200, 2, generator=g) * 4000], 1).double()
    got = spp.project_boxes(boxes, tf)
    assert torch.equal(got[:, :2], (torch.floor(boxes[:, :2] / S) + 1).long())
    assert torch.equal(got[:, 2:], (torch.ceil(boxes[:, 2:] / S) - 1).long())


# ------------------------------------------------------------------- pyramid pooling

@pytest.mark.parametrize("bins", [(6, 3, 2, 1), (1, 4), (7,), (2, 8, 3, 4), (4, 4, 2)])
def test_spp_pool_equals_the_naive_reference_exactly(bins, monkeypatch):
    g = torch.Generator().manual_seed(sum(bins))
    C, H, W = 5, 13, 17
    tf = spp.MapTransform(sx=0.8, sy=1.1, stride=3, centre=1.5, height=H, width=W)
    boxes = random_boxes(g, 60, W * 3 / 0.8, H * 3 / 1.1)
    for conv in (torch.randn(C, H, W, generator=g),  # continuous values
                 torch.randint(0, 4, (C, H, W), generator=g).float()):  # many ties
        want = naive_spp(conv, spp.project_boxes(boxes, tf), bins)
        got = spp.spp_pool(conv[None], boxes, tf, bins)
        assert got.shape == (len(boxes), C * sum(b * b for b in bins))
        assert torch.equal(got, want)
    monkeypatch.setattr(spp, "POOL_BYTES", 1)  # one box per chunk: same result
    assert torch.equal(spp.spp_pool(conv, boxes, tf, bins), want)
    assert spp.spp_pool(conv, torch.zeros(0, 4), tf, bins).shape == (0, C * sum(b * b for b in bins))


def test_spp_pool_level_layout_is_channel_y_x():
    """Level 1 is the max over the box's cells; a single hot cell lands at (c, y, x)."""
    tf = spp.MapTransform(1.0, 1.0, 1, 0.5, 12, 12)  # cell k centred at pixel k: box [0, 12] covers all
    conv = torch.zeros(3, 12, 12)
    conv[2, 11, 0] = 7.0  # bottom-left cell of channel 2
    f = spp.spp_pool(conv, [[0, 0, 12, 12]], tf, (6, 1))
    level6, level1 = f[0, :3 * 36], f[0, 3 * 36:]
    assert level6.nonzero().flatten().tolist() == [2 * 36 + 5 * 6 + 0] and level6.max() == 7.0
    assert level1.tolist() == [0.0, 0.0, 7.0]


# -------------------------------------------------------------------------------- head

def test_head_from_model_reproduces_fc6_on_the_level_6_bins(setup):
    _, _, p, mixed, _ = setup
    assert spp.SppHead.from_model(mixed).bf16 == mixed.bf16  # the head computes as its net
    model = CaffeNet(dataclasses.replace(p.net, precision="float32"), 4).eval()  # exact arithmetic
    model.load_state_dict(mixed.state_dict())
    C = model.conv5.out_channels
    head = spp.SppHead.from_model(model, (6, 3, 2, 1))
    assert head.in_dim == C * 50 and head.num_classes == model.num_classes and not head.training
    g = torch.Generator().manual_seed(0)
    x = torch.rand(7, head.in_dim, generator=g) * 3
    level6 = x[:, head.level_slice(6)]
    assert head.level_slice(6) == slice(0, C * 36)
    with torch.no_grad():
        assert torch.allclose(head.fc(x, "fc6"), model.fc(level6, "fc6"), atol=1e-5)
        assert torch.allclose(head.fc(x, "fc7"), model.fc(level6, "fc7"), atol=1e-5)
        assert torch.allclose(head(x), model.head(model.features(level6)), atol=1e-5)
    # level 6 last: its columns move, the equivalence holds
    last = spp.SppHead.from_model(model, (1, 2, 6))
    assert last.level_slice(6) == slice(C * 5, C * 41)
    y = torch.rand(4, last.in_dim, generator=g)
    with torch.no_grad():
        assert torch.allclose(last.fc(y, "fc6"), model.fc(y[:, C * 5:], "fc6"), atol=1e-5)
    with pytest.raises(ValueError, match="lack level 6"):
        spp.SppHead.from_model(model, (3, 2, 1))


def test_fast_params_validate():
    assert params().fast.bins == [6, 3, 2, 1]
    with pytest.raises(ParamsError, match="fast.bins"):
        params(**{"fast.bins": [3, 2, 1]})


# ----------------------------------------------------------------------- fine-tuning

def toy_features(ds, props, folder, dim, seed=0):
    """A feature folder of the windows (ground truth, then proposals) whose features say the
    window's label (separable): a block of ones for its label among 4 blocks, plus noise.
    Returns {(image index, window): label}."""
    regions, _ = Fe.regions_with_gt(ds, props, ds.classes)
    w = FT.window_lists(ds, props, ds.classes)
    label = {(int(i), int(r)): int(lab) for i, r, lab in zip(w["fg_image"], w["fg_window"], w["fg_label"])}
    label.update({(int(i), int(r)): 0 for i, r in zip(w["bg_image"], w["bg_window"])})
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    block = dim // 4
    for i, im in enumerate(ds.images):
        boxes = regions[im.image_id]
        f = rng.normal(0, 0.3, (len(boxes), dim)).clip(0)
        for r in range(len(boxes)):
            f[r, label[(i, r)] * block:(label[(i, r)] + 1) * block] += 1.0
        np.save(folder / f"{Fe.file_stem(im.image_id)}.boxes.npy", boxes)
        np.save(folder / f"{Fe.file_stem(im.image_id)}.npy", f.astype(np.float16))
    return label


def accuracy(head, folder, ds, label):
    scores = spp.cached_scores(head, folder, ds)
    return np.mean([int(scores[ds.images[i].image_id][r].argmax()) == v for (i, r), v in label.items()])


def test_finetune_head_learns_a_separable_problem_and_only_its_rows(setup, tmp_path):
    ds, props, _, _, _ = setup
    p = params(**{"finetune.iterations": 60, "finetune.lr": 0.01, "finetune.lr_step": 50, "finetune.mirror": False})
    torch.manual_seed(0)
    head = spp.SppHead(2, (6, 3, 2, 1), 16, 4, 0.2)
    folder = tmp_path / "spp-toy" / "k"
    label = toy_features(ds, props, folder, head.in_dim)
    cache = Cache(tmp_path / "cache")
    tuned, hist = spp.finetune_head(p, head, ds, props, cache, ds.classes, folder)
    assert hist["log"][-1]["loss"] < hist["log"][0]["loss"] and hist["features_in_memory"]
    assert accuracy(head, folder, ds, label) < 0.9 < 0.95 < accuracy(tuned, folder, ds, label)
    # cached: a second call trains nothing and returns the same weights
    again, hist2 = spp.finetune_head(p, head, ds, props, cache, ds.classes, folder)
    assert hist2["key"] == hist["key"] == again.cache_key
    assert all(torch.equal(a, b) for a, b in zip(tuned.state_dict().values(), again.state_dict().values()))
    # only output row 0 learns, fc6 / fc7 frozen
    only, _ = spp.finetune_head(p, head, ds, props, cache, ds.classes, folder, frozen=["fc6", "fc7"], head_rows=[0])
    assert torch.equal(only.head.weight[1:], head.head.weight[1:])
    assert torch.equal(only.head.bias[1:], head.head.bias[1:])
    assert not torch.equal(only.head.weight[0], head.head.weight[0])
    for name in ("fc6", "fc7"):
        assert torch.equal(getattr(only, name).weight, getattr(head, name).weight)
    # rows only, fc6 / fc7 learning: they move, the other rows do not
    rows, _ = spp.finetune_head(p, head, ds, props, cache, ds.classes, folder, head_rows=[0, 2])
    assert not torch.equal(rows.fc6.weight, head.fc6.weight)
    assert torch.equal(rows.head.weight[[1, 3]], head.head.weight[[1, 3]])
    with pytest.raises(ValueError, match="unknown layers"):
        spp.finetune_head(p, head, ds, props, cache, ds.classes, folder, frozen=["conv5"])
    with pytest.raises(DataError, match="mirror"):
        spp.finetune_head(params(), head, ds, props, cache, ds.classes, folder)
    fewer = {k: v[:-1] for k, v in props.items()}
    with pytest.raises(ValueError, match="not its windows"):
        spp.finetune_head(p, head, ds, fewer, cache, ds.classes, folder)


def test_feature_store_reads_from_disk_like_from_memory(setup, tmp_path):
    ds, props, _, _, _ = setup
    folder = tmp_path / "f"
    toy_features(ds, props, folder, 40)
    for im in ds.images:  # mirrored features: something else
        np.save(folder / f"{Fe.file_stem(im.image_id)}.flip.npy", -spp.load_spp(folder, im.image_id))
    ids = [im.image_id for im in ds.images]
    mem, disk = spp._Rows(folder, ids, True), spp._Rows(folder, ids, True, max_bytes=0)
    assert mem.mem is not None and disk.mem is None
    w = FT.window_lists(ds, props, ds.classes)
    b = FT.sample_windows(w, 8, 24, torch.Generator().manual_seed(0), mirror=True)
    i, r, f = b["image"].numpy(), b["window"].numpy(), b["flip"].numpy()
    got = mem.gather(i, r, f)
    assert np.array_equal(got, disk.gather(i, r, f)) and 0 < f.sum() < len(f)
    for k in range(len(i)):
        assert np.array_equal(got[k], spp.load_spp(folder, ids[i[k]], flip=bool(f[k]))[r[k]])


# ---------------------------------------------------------------- cache and scoring

def test_extract_spp_round_trip_mirror_and_resume(setup, tmp_path, monkeypatch):
    ds, _, p, model, regions = setup
    cache = Cache(tmp_path)
    real = spp.spp_features
    calls = []

    def flaky(*a, **k):
        if len(calls) == 4:  # two images (plain + mirrored each) done
            raise KeyboardInterrupt("interrupted")
        calls.append(1)
        return real(*a, **k)

    monkeypatch.setattr(spp, "spp_features", flaky)
    with pytest.raises(KeyboardInterrupt):
        spp.extract_spp(model, ds, regions, p, cache, "train", mirror=True)
    partial = next((tmp_path / "spp-train").glob("*.partial"))
    assert len(list(partial.glob("*[0-9].npy"))) == 2
    counted = []
    monkeypatch.setattr(spp, "spp_features", lambda *a, **k: counted.append(1) or real(*a, **k))
    folder = spp.extract_spp(model, ds, regions, p, cache, "train", mirror=True)
    assert len(counted) == 2 * (len(ds) - 2) and not partial.exists()
    assert spp.extract_spp(model, ds, regions, p, cache, "train", mirror=True) == folder
    assert len(counted) == 2 * (len(ds) - 2)
    fresh = spp.extract_spp(model, ds, regions, p, Cache(tmp_path / "fresh"), "train", mirror=True)
    monkeypatch.setattr(spp, "spp_features", real)
    C = model.conv5.out_channels
    for im in ds.images:
        f = spp.load_spp(folder, im.image_id)
        assert np.array_equal(f, spp.load_spp(fresh, im.image_id))
        boxes = Fe.load_regions(folder, im.image_id)
        assert np.array_equal(boxes, regions[im.image_id])
        assert f.dtype == np.float16 and f.shape == (len(boxes), C * 50)
        img = load_image(im.path)
        want = spp.spp_features(model, img, boxes, p).numpy()
        assert np.allclose(f, want, rtol=2e-3, atol=2e-3)
        # mirrored: the mirrored boxes in the mirrored image
        w = img.shape[1]
        mb = np.stack([w - boxes[:, 2], boxes[:, 1], w - boxes[:, 0], boxes[:, 3]], 1)
        mf = spp.spp_features(model, np.ascontiguousarray(img[:, ::-1]), mb, p).numpy()
        assert np.allclose(spp.load_spp(folder, im.image_id, flip=True), mf, rtol=2e-3, atol=2e-3)
    # the key follows the SPP settings and the mirror flag
    assert spp.extract_spp(model, ds, regions, p, cache, "train", mirror=False) != folder
    other = dataclasses.replace(p, fast=dataclasses.replace(p.fast, bins=[6, 1]))
    small = spp.extract_spp(model, ds, regions, other, cache, "train")
    assert spp.load_spp(small, ds.images[0].image_id).shape[1] == C * 37
    with pytest.raises(KeyError, match="no regions"):
        spp.extract_spp(model, ds, {}, p, cache, "x")


def test_detect_scores_agree_with_the_cached_path(setup, tmp_path):
    ds, _, p, model, regions = setup
    head = spp.SppHead.from_model(model, p.fast.bins)
    folder = spp.extract_spp(model, ds, regions, p, Cache(tmp_path), "test")
    cached = spp.cached_scores(head, folder, ds)
    for im in ds.images[:2]:
        got = spp.detect_scores(model, head, load_image(im.path), regions[im.image_id], p)
        assert got.dtype == np.float32 and got.shape == (len(regions[im.image_id]), model.num_classes)
        assert np.allclose(got, cached[im.image_id], rtol=1e-2, atol=1e-3)
    assert spp.detect_scores(model, head, load_image(ds.images[0].path), np.zeros((0, 4)), p).shape == (0, 4)
