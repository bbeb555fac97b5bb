"""R-CNN fine-tuning on tiny synthetic data: window lists, the 32/96 sampler, batched
warping, learning, caching, determinism, freezing and trainable output rows."""
import numpy as np
import pytest
import torch

from lsda_core.core import boxes as B
from lsda_core.models import finetune as FT
from lsda_core.store.cache import Cache
from lsda_core.models.nets import CaffeNet
from lsda_core.core.structures import DetectionDataset, ImageAnn, ObjectAnn
from synthetic import make_detection, params

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def det_data(tmp_path_factory):
    return make_detection(tmp_path_factory.mktemp("det"), 12, 2)


def test_window_lists_on_a_hand_made_image(tmp_path):
    objs = [ObjectAnn("a", np.array([10, 10, 50, 50.])),
            ObjectAnn("b", np.array([60, 60, 90, 90.]), difficult=True),
            ObjectAnn("c", np.array([0, 60, 30, 90.]))]  # class outside the list: not ground truth
    ds = DetectionDataset("hand", "train", ["a", "b", "c"], [ImageAnn("x", tmp_path / "x.png", 100, 100, objs),
                                                              ImageAnn("y", tmp_path / "y.png", 100, 100, [])])
    props = {"x": np.array([[10, 10, 50, 54],    # IoU 40*40/(40*44) = 0.91 with a -> fg 1
                            [60, 58, 90, 92],    # IoU 900/1020 = 0.88 with b (difficult) -> fg 2
                            [0, 60, 30, 90],     # exactly the c object: background (c is not a class)
                            [10, 10, 30, 30],    # IoU 0.25 with a -> bg
                            [10, 10, 38, 50]]),  # IoU 0.7 with a -> fg 1
             "y": np.array([[0, 0, 20, 20.]])}   # an image without objects: bg
    w = FT.window_lists(ds, props, ["a", "b"], fg_iou=0.5)
    # fg: the two ground-truth boxes, then proposals 0, 1, 4 of image x
    assert w["fg_box"].tolist() == [[10, 10, 50, 50], [60, 60, 90, 90], [10, 10, 50, 54], [60, 58, 90, 92],
                                    [10, 10, 38, 50]]
    assert w["fg_label"].tolist() == [1, 2, 1, 2, 1]
    assert w["fg_image"].tolist() == [0] * 5
    assert w["bg_box"].tolist() == [[0, 60, 30, 90], [10, 10, 30, 30], [0, 0, 20, 20]]
    assert w["bg_image"].tolist() == [0, 0, 1]
    assert np.allclose(w["bg_iou"], [0.0, 0.25, 0.0])
    assert np.allclose(w["fg_iou"][2:], [40 * 40 / (40 * 44), 900 / 1020, 0.7])


def test_sampler_draws_the_32_96_split():
    w = {"fg_image": np.arange(5), "fg_box": np.tile(np.arange(5, dtype=np.float32)[:, None], (1, 4)),
         "fg_label": np.array([1, 2, 3, 1, 2]), "fg_window": np.arange(5) + 10,
         "bg_image": np.arange(100, 107), "bg_box": np.zeros((7, 4), np.float32), "bg_window": np.arange(7) + 100}
    g = torch.Generator().manual_seed(0)
    flips = []
    for _ in range(20):
        b = FT.sample_windows(w, 32, 96, g, mirror=True)
        assert b["label"].shape == (128,) and (b["label"][:32] > 0).all() and (b["label"][32:] == 0).all()
        assert (b["image"][:32] < 5).all() and (b["image"][32:] >= 100).all()
        # labels travel with their windows
        assert torch.equal(b["label"][:32], torch.from_numpy(w["fg_label"])[b["image"][:32]])
        assert torch.equal(b["box"][:32, 0].long(), b["image"][:32])
        assert torch.equal(b["window"], b["image"] + torch.where(b["image"] < 5, 10, 0))
        flips.append(b["flip"].float().mean().item())
    assert 0.4 < np.mean(flips) < 0.6
    # uniform with replacement: every window of the small lists is drawn, some many times
    b = FT.sample_windows(w, 32, 96, g)
    assert set(b["image"][:32].tolist()) == set(range(5)) and set(b["image"][32:].tolist()) == set(range(100, 107))
    assert not FT.sample_windows(w, 4, 4, g, mirror=False)["flip"].any()


def test_warp_batch_groups_by_image_and_mirrors(det_data):
    ds, _ = det_data
    m = CaffeNet(params().net, 4)
    store = FT.ImageStore(ds)
    assert store.in_memory and store[0].dtype == torch.uint8
    image = torch.tensor([1, 0, 1])
    box = torch.tensor([[5, 5, 40, 30], [0, 0, 96, 80], [10, 20, 50, 70.]])
    flip = torch.tensor([False, False, True])
    x = FT.warp_batch(m, store, image, box, 64, 5, flip)
    ref1 = B.warp_regions(m.normalize(store[1]), box[[0, 2]], 64, 5)
    ref0 = B.warp_regions(m.normalize(store[0]), box[[1]], 64, 5)
    assert torch.equal(x[0], ref1[0]) and torch.equal(x[1], ref0[0]) and torch.equal(x[2], ref1[1].flip(-1))
    assert FT.context_pixels(params()) == 5  # round(16 * 64 / 227)


def test_warp_batch_equals_warp_regions_on_a_shuffled_batch(det_data):
    # windows of many images in random order, some images several times and some not at all,
    # as a fine-tuning batch draws them: each window bit for bit its image's warp_regions
    ds, _ = det_data
    m = CaffeNet(params().net, 4)
    store = FT.ImageStore(ds)
    g = torch.Generator().manual_seed(3)
    n = 40
    image = torch.randint(0, len(ds) - 2, (n,), generator=g)
    wh = torch.tensor([[ds.images[i].width, ds.images[i].height] for i in image.tolist()], dtype=torch.float32)
    xy = torch.rand(n, 2, generator=g) * wh * 0.8 - 5  # some windows cross the image's edge
    box = torch.cat([xy, xy + 4 + torch.rand(n, 2, generator=g) * wh * 0.6], 1)
    flip = torch.rand(n, generator=g) < 0.5
    x = FT.warp_batch(m, store, image, box, 64, 5, flip)
    for k in range(n):
        ref = B.warp_regions(m.normalize(store[int(image[k])]), box[k:k + 1], 64, 5)[0]
        ref = ref.flip(-1) if flip[k] else ref
        assert torch.equal(x[k].view(torch.int32), ref.view(torch.int32)), k
    assert FT.warp_batch(m, store, image[:0], box[:0], 64, 5).shape == (0, 3, 64, 64)


def test_image_store_keeps_normalized_images_for_one_normalisation(det_data, monkeypatch):
    ds, _ = det_data
    m = CaffeNet(params().net, 4)
    store = FT.ImageStore(ds)
    assert store.keeps_normalized
    a, = store.normalized([1], m)
    assert torch.equal(a, m.normalize(store[1])) and store.normalized([1], m)[0] is a  # kept
    m.set_normalization([100, 110, 120], [50, 60, 70])  # another normalisation: made anew
    b, = store.normalized([1], m)
    assert b is not a and torch.equal(b, m.normalize(store[1]))
    monkeypatch.setattr(FT, "NORMALIZED_BYTES", 0)  # too large to keep: normalised on every call
    small = FT.ImageStore(ds)
    assert small.in_memory and not small.keeps_normalized
    once, again = small.normalized([1, 1], m)
    assert torch.equal(once, b) and once is not again


# ----------------------------------------------------------------------------- finetune

def test_finetune_trains_a_new_head_and_is_cached(pretrained, det_data, monkeypatch):
    model, _, cache = pretrained
    ds, props = det_data
    p = params()
    tuned, hist = FT.finetune(p, model, ds, props, cache, ds.classes)
    assert tuned.num_classes == 4 and model.num_classes == 4 and tuned is not model
    assert hist["n_fg_windows"] > 0 and hist["n_bg_windows"] > 0 and hist["log"][-1]["iteration"] == 20
    assert not torch.equal(tuned.conv1.weight, model.conv1.weight)  # all layers learn by default
    assert torch.equal(tuned.mean, model.mean)
    assert tuned.cache_key.startswith("finetune/")

    def boom(*a, **k):
        raise AssertionError("fine-tuned again although cached")

    monkeypatch.setattr(FT, "_finetune", boom)
    again, h2 = FT.finetune(p, model, ds, props, cache, ds.classes)
    assert h2["log"] == hist["log"] and torch.equal(again.head.weight, tuned.head.weight)
    with pytest.raises(AssertionError, match="again"):
        FT.finetune(params(**{"finetune.lr": 0.005}), model, ds, props, cache, ds.classes)
    with pytest.raises(AssertionError, match="again"):
        FT.finetune(p, model, ds, props, cache, ds.classes, frozen={"conv1"})


def test_finetune_is_deterministic(pretrained, det_data, tmp_path):
    model, _, _ = pretrained
    ds, props = det_data
    p = params(**{"finetune.iterations": 6})
    a, _ = FT.finetune(p, model, ds, props, Cache(tmp_path / "a"), ds.classes)
    b, _ = FT.finetune(p, model, ds, props, Cache(tmp_path / "b"), ds.classes)
    for (k, x), (_, y) in zip(a.state_dict().items(), b.state_dict().items()):
        assert torch.equal(x, y), k


def test_frozen_layers_do_not_move(pretrained, det_data, tmp_path):
    model, _, _ = pretrained
    ds, props = det_data
    p = params(**{"finetune.iterations": 8})
    frozen = {"conv1", "conv2", "conv3", "conv4", "conv5", "fc6"}
    tuned, hist = FT.finetune(p, model, ds, props, Cache(tmp_path), ds.classes, frozen=frozen)
    for name in frozen:
        assert torch.equal(tuned.layer(name).weight, model.layer(name).weight), name
        assert torch.equal(tuned.layer(name).bias, model.layer(name).bias), name
    assert not torch.equal(tuned.fc7.weight, model.fc7.weight)
    assert hist["frozen"] == sorted(frozen)
    with pytest.raises(ValueError, match="unknown layers"):
        FT.finetune(p, model, ds, props, Cache(tmp_path), ds.classes, frozen={"fc8"})


def test_validation_loss_is_logged_without_changing_training(pretrained, det_data, tmp_path):
    """A held-out set adds `val_loss` to every log row (the loss of a fixed window sample, which
    falls as the network learns) and its own cache entry; the training itself is unchanged."""
    model, _, _ = pretrained
    ds, props = det_data
    p = params(**{"finetune.iterations": 100, "finetune.lr_step": 1000})
    plain, h0 = FT.finetune(p, model, ds, props, Cache(tmp_path / "a"), ds.classes)
    held, h1 = FT.finetune(p, model, ds, props, Cache(tmp_path / "a"), ds.classes, val=(ds, props))
    assert held.cache_key != plain.cache_key and "val_loss" not in h0["log"][0]
    vl = [r["val_loss"] for r in h1["log"]]
    assert len(vl) == len(h1["log"]) == 2 and all(np.isfinite(vl)) and vl[-1] < vl[0]
    assert [r["loss"] for r in h1["log"]] == [r["loss"] for r in h0["log"]]  # the same SGD steps
    assert torch.equal(held.head.weight, plain.head.weight)


def test_cached_pool5_windows_train_like_warping(pretrained, det_data, tmp_path):
    """With conv1-5 frozen and no mirroring, training fc layers on cached pool5 of the windows
    is the warping procedure itself: the same batches, the same dropout, nearly the same weights."""
    from lsda_core.detection import features as Fe
    model, _, _ = pretrained
    ds, props = det_data
    p = params(**{"finetune.iterations": 12, "finetune.mirror": False, "net.dropout": 0.0})
    convs = {"conv1", "conv2", "conv3", "conv4", "conv5"}
    warped, _ = FT.finetune(p, model, ds, props, Cache(tmp_path / "w"), ds.classes, frozen=convs)
    regions, _ = Fe.regions_with_gt(ds, props, ds.classes)
    folder = Fe.extract_pool5(model, ds, regions, p, Cache(tmp_path / "f"), "win")
    cached = FT.CachedWindows(folder.name, lambda i: Fe.load_pool5(folder, i))
    fast, hist = FT.finetune(p, model, ds, props, Cache(tmp_path / "c"), ds.classes, frozen=convs, cached=cached)
    assert hist["windows"].startswith("cached")
    assert not torch.equal(fast.fc6.weight, model.fc6.weight)
    for name in ("fc6", "fc7", "head"):
        a, b = warped.layer(name).weight, fast.layer(name).weight
        assert torch.allclose(a, b, atol=2e-3), (name, (a - b).abs().max())
    with pytest.raises(ValueError, match="every conv layer frozen"):
        FT.finetune(p, model, ds, props, Cache(tmp_path / "c"), ds.classes, frozen={"conv1"}, cached=cached)


def test_frozen_batch_norm_keeps_its_statistics(det_data, tmp_path):
    ds, props = det_data
    p = params(**{"finetune.iterations": 4, "net.batch_norm": True})
    torch.manual_seed(0)
    model = CaffeNet(p.net, 4)
    frozen = {"conv1", "conv2"}
    tuned, _ = FT.finetune(p, model, ds, props, Cache(tmp_path), ds.classes, frozen=frozen)
    before, after = model.state_dict(), tuned.state_dict()
    for k in before:
        if k.startswith(("conv1.", "conv2.", "bn.0.", "bn.1.")):
            assert torch.equal(before[k], after[k]), k
    assert not torch.equal(before["bn.2.running_mean"], after["bn.2.running_mean"])
    assert not torch.equal(before["conv3.weight"], after["conv3.weight"])


def test_head_init_and_trainable_rows(pretrained, det_data, tmp_path):
    """LSDA's 'background only' row: the head starts from given weights and only row 0 learns."""
    model, _, _ = pretrained
    ds, props = det_data
    p = params(**{"finetune.iterations": 8})
    g = torch.Generator().manual_seed(3)
    w0, b0 = torch.randn(4, 32, generator=g) * 0.01, torch.randn(4, generator=g) * 0.01
    frozen = {"conv1", "conv2", "conv3", "conv4", "conv5", "fc6", "fc7"}
    tuned, _ = FT.finetune(p, model, ds, props, Cache(tmp_path), ds.classes, frozen=frozen,
                          head_init=(w0, b0), head_rows=[0])
    assert torch.equal(tuned.head.weight[1:], w0[1:]) and torch.equal(tuned.head.bias[1:], b0[1:])
    assert not torch.equal(tuned.head.weight[0], w0[0])
    assert torch.equal(tuned.fc7.weight, model.fc7.weight)
    with pytest.raises(ValueError, match="head_init"):
        FT.finetune(p, model, ds, props, Cache(tmp_path), ds.classes, head_init=(w0[:3], b0[:3]))
