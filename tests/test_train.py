"""Pre-training and fine-tuning on tiny synthetic data: coloured rectangles whose class is
their colour. Fast (seconds), with real assertions on learning, sampling, freezing, caching
and determinism."""
import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from lsda_core import boxes as B
from lsda_core import params as P
from lsda_core import train as T
from lsda_core.cache import Cache
from lsda_core.nets import CaffeNet
from lsda_core.structures import ClassificationDataset, DetectionDataset, ImageAnn, ObjectAnn

COLOURS = {"red": (220, 40, 40), "green": (40, 200, 60), "blue": (40, 60, 220), "yellow": (230, 220, 40)}
SMALL_NET = {"net.conv_channels": [8, 12, 16, 16, 12], "net.fc_width": 32, "net.dropout": 0.2, "net.lrn": False}


def params(**over):
    base = {"runtime.progress": False, "runtime.device": "cpu", **SMALL_NET,
            "pretrain.epochs": 10, "pretrain.batch_size": 16, "pretrain.lr": 0.02, "pretrain.lr_steps": [8],
            "finetune.iterations": 20, "finetune.fg_per_batch": 8, "finetune.bg_per_batch": 24,
            "finetune.lr_step": 15}
    base.update(over)
    return P.load(None, base)


def _background(rng, h, w):
    return np.clip(rng.normal(128, 20, (h, w, 3)), 0, 255).astype(np.uint8)


def make_classification(root: Path, per_class: int, seed: int, split: str = "train") -> ClassificationDataset:
    """64 px images, one rectangle of the class's colour at a random place and size."""
    rng = np.random.default_rng(seed)
    paths, labels = [], []
    for c, (name, rgb) in enumerate(COLOURS.items()):
        (root / split / name).mkdir(parents=True, exist_ok=True)
        for k in range(per_class):
            img = _background(rng, 64, 64)
            w, h = rng.integers(20, 44, 2)
            x, y = rng.integers(0, 64 - w), rng.integers(0, 64 - h)
            img[y:y + h, x:x + w] = np.array(rgb) + rng.integers(-20, 20, 3)
            path = root / split / name / f"{k:03d}.png"
            Image.fromarray(img).save(path)
            paths.append(path)
            labels.append(c)
    return ClassificationDataset("synthetic", split, list(COLOURS), paths, np.array(labels), root)


def make_detection(root: Path, n_images: int, seed: int, classes=("red", "green", "blue")):
    """96 x 80 scenes with 1-2 coloured rectangles; proposals: jittered ground truth and
    random boxes (so both window lists are populated)."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    images, proposals = [], {}
    for i in range(n_images):
        img = _background(rng, 80, 96)
        objs = []
        for _ in range(int(rng.integers(1, 3))):
            cls = str(rng.choice(classes))
            w, h = rng.integers(20, 40, 2)
            x, y = rng.integers(0, 96 - w), rng.integers(0, 80 - h)
            img[y:y + h, x:x + w] = COLOURS[cls]
            objs.append(ObjectAnn(cls, np.array([x, y, x + w, y + h], dtype=np.float64)))
        path = root / f"{i:04d}.png"
        Image.fromarray(img).save(path)
        gt = np.array([o.box for o in objs])
        jitter = np.repeat(gt, 4, axis=0) + rng.normal(0, 3, (4 * len(gt), 4))
        x1 = rng.uniform(0, 70, (20, 1))
        y1 = rng.uniform(0, 55, (20, 1))
        rand = np.hstack([x1, y1, x1 + rng.uniform(8, 26, (20, 1)), y1 + rng.uniform(8, 25, (20, 1))])
        proposals[f"{i:04d}"] = np.vstack([jitter, rand]).astype(np.float32)
        images.append(ImageAnn(f"{i:04d}", path, 96, 80, objs))
    return DetectionDataset("synthetic", "train", list(classes), images, root), proposals


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny nets: one thread is faster than two and immune to a busy machine's scheduling."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def cls_data(tmp_path_factory):
    root = tmp_path_factory.mktemp("cls")
    return make_classification(root, 24, 0, "train"), make_classification(root, 8, 1, "val")


@pytest.fixture(scope="module")
def det_data(tmp_path_factory):
    return make_detection(tmp_path_factory.mktemp("det"), 12, 2)


@pytest.fixture(scope="module")
def pretrained(cls_data, tmp_path_factory):
    cache = Cache(tmp_path_factory.mktemp("cache"))
    model, history = T.pretrain(params(), *cls_data, cache)
    return model, history, cache


# ---------------------------------------------------------------------------- pretraining

def test_pretraining_learns(pretrained):
    model, history, _ = pretrained
    ep = history["epochs"]
    assert len(ep) == 10 and history["source"] == "trained"
    assert {"train_loss", "train_acc", "val_top1", "val_top5", "seconds", "lr"} <= set(ep[0])
    assert ep[-1]["val_top1"] >= 0.6  # chance is 0.25
    assert ep[-1]["train_loss"] < ep[0]["train_loss"]
    assert ep[-1]["lr"] == pytest.approx(0.002) and ep[0]["lr"] == pytest.approx(0.02)
    assert history["classes"] == list(COLOURS)
    assert not model.training and model.cache_key.startswith("pretrain/")
    # normalisation buffers: the training images' per-channel statistics
    assert 90 < model.mean.flatten()[0].item() < 170 and model.std.min().item() > 10


def test_pretraining_is_deterministic_and_cached(cls_data, pretrained, tmp_path, monkeypatch):
    model, history, cache = pretrained
    other, _ = T.pretrain(params(), *cls_data, Cache(tmp_path / "other"))  # fresh cache: trains again
    for (k, a), (_, b) in zip(model.state_dict().items(), other.state_dict().items()):
        assert torch.equal(a, b), k

    def boom(*a, **k):
        raise AssertionError("retrained although cached")

    monkeypatch.setattr(T, "_train_classifier", boom)
    again, h2 = T.pretrain(params(), *cls_data, cache)
    assert h2["epochs"] == history["epochs"] and again.cache_key == model.cache_key
    assert torch.equal(again.conv1.weight, model.conv1.weight)
    with pytest.raises(AssertionError, match="retrained"):  # another seed is another entry
        T.pretrain(params(**{"runtime.seed": 1}), *cls_data, cache)
    # the context of warping does not change pre-training: same entry
    T.pretrain(params(**{"net.context": 8}), *cls_data, cache)


def test_imagenet_weights_need_the_alexnet_shape(cls_data, tmp_path):
    p = params(**{"data.imagenet_weights": str(tmp_path / "alexnet-owt-7be5be79.pth")})
    with pytest.raises(P.ParamsError, match="torchvision AlexNet's shape"):
        T.pretrain(p, *cls_data, Cache(tmp_path))
    with pytest.raises(T.DataError, match="no classification training set"):
        T.pretrain(params(), None, None, Cache(tmp_path))


def test_classification_tensor_is_cached_and_resized(cls_data, tmp_path):
    train, _ = cls_data
    cache = Cache(tmp_path)
    x = T.load_classification_tensor(train, 32, cache, progress=False)
    assert x.dtype == torch.uint8 and x.shape == (len(train), 3, 32, 32)
    assert len(list((tmp_path / "cls-images").iterdir())) == 1
    y = T.load_classification_tensor(train, 32, cache, progress=False)
    assert torch.equal(x, y)
    stream = T.ClassificationStream(train, 32, workers=2)
    assert torch.equal(stream[torch.tensor([3, 0])], x[[3, 0]])


def test_augment_translates_and_mirrors():
    g = torch.Generator().manual_seed(0)
    x = torch.arange(2 * 3 * 8 * 8, dtype=torch.float32).reshape(2, 3, 8, 8) + 1
    out = T.augment(x, g, pad=2, mirror=True)
    assert out.shape == x.shape
    for i in range(2):  # every output is a shifted (maybe mirrored) window of the zero-padded input
        xp = torch.nn.functional.pad(x[i], (2, 2, 2, 2))
        found = any(torch.equal(out[i], c) for oy in range(5) for ox in range(5)
                    for c in (xp[:, oy:oy + 8, ox:ox + 8], xp[:, oy:oy + 8, ox:ox + 8].flip(-1)))
        assert found


# ------------------------------------------------------------------------------ windows

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
    w = T.window_lists(ds, props, ["a", "b"], fg_iou=0.5)
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
         "fg_label": np.array([1, 2, 3, 1, 2]),
         "bg_image": np.arange(100, 107), "bg_box": np.zeros((7, 4), np.float32)}
    g = torch.Generator().manual_seed(0)
    flips = []
    for _ in range(20):
        b = T.sample_windows(w, 32, 96, g, mirror=True)
        assert b["label"].shape == (128,) and (b["label"][:32] > 0).all() and (b["label"][32:] == 0).all()
        assert (b["image"][:32] < 5).all() and (b["image"][32:] >= 100).all()
        # labels travel with their windows
        assert torch.equal(b["label"][:32], torch.from_numpy(w["fg_label"])[b["image"][:32]])
        assert torch.equal(b["box"][:32, 0].long(), b["image"][:32])
        flips.append(b["flip"].float().mean().item())
    assert 0.4 < np.mean(flips) < 0.6
    # uniform with replacement: every window of the small lists is drawn, some many times
    b = T.sample_windows(w, 32, 96, g)
    assert set(b["image"][:32].tolist()) == set(range(5)) and set(b["image"][32:].tolist()) == set(range(100, 107))
    assert not T.sample_windows(w, 4, 4, g, mirror=False)["flip"].any()


def test_warp_batch_groups_by_image_and_mirrors(det_data):
    ds, _ = det_data
    m = CaffeNet(params().net, 4)
    store = T.ImageStore(ds)
    assert store.in_memory and store[0].dtype == torch.uint8
    image = torch.tensor([1, 0, 1])
    box = torch.tensor([[5, 5, 40, 30], [0, 0, 96, 80], [10, 20, 50, 70.]])
    flip = torch.tensor([False, False, True])
    x = T.warp_batch(m, store, image, box, 64, 5, flip)
    ref1 = B.warp_regions(m.normalize(store[1]), box[[0, 2]], 64, 5)
    ref0 = B.warp_regions(m.normalize(store[0]), box[[1]], 64, 5)
    assert torch.equal(x[0], ref1[0]) and torch.equal(x[1], ref0[0]) and torch.equal(x[2], ref1[1].flip(-1))
    assert T.context_pixels(params()) == 5  # round(16 * 64 / 227)


# ----------------------------------------------------------------------------- finetune

def test_finetune_trains_a_new_head_and_is_cached(pretrained, det_data, monkeypatch):
    model, _, cache = pretrained
    ds, props = det_data
    p = params()
    tuned, hist = T.finetune(p, model, ds, props, cache, ds.classes)
    assert tuned.num_classes == 4 and model.num_classes == 4 and tuned is not model
    assert hist["n_fg_windows"] > 0 and hist["n_bg_windows"] > 0 and hist["log"][-1]["iteration"] == 20
    assert not torch.equal(tuned.conv1.weight, model.conv1.weight)  # all layers learn by default
    assert torch.equal(tuned.mean, model.mean)
    assert tuned.cache_key.startswith("finetune/")

    def boom(*a, **k):
        raise AssertionError("fine-tuned again although cached")

    monkeypatch.setattr(T, "_finetune", boom)
    again, h2 = T.finetune(p, model, ds, props, cache, ds.classes)
    assert h2["log"] == hist["log"] and torch.equal(again.head.weight, tuned.head.weight)
    with pytest.raises(AssertionError, match="again"):
        T.finetune(params(**{"finetune.lr": 0.005}), model, ds, props, cache, ds.classes)
    with pytest.raises(AssertionError, match="again"):
        T.finetune(p, model, ds, props, cache, ds.classes, frozen={"conv1"})


def test_finetune_is_deterministic(pretrained, det_data, tmp_path):
    model, _, _ = pretrained
    ds, props = det_data
    p = params(**{"finetune.iterations": 6})
    a, _ = T.finetune(p, model, ds, props, Cache(tmp_path / "a"), ds.classes)
    b, _ = T.finetune(p, model, ds, props, Cache(tmp_path / "b"), ds.classes)
    for (k, x), (_, y) in zip(a.state_dict().items(), b.state_dict().items()):
        assert torch.equal(x, y), k


def test_frozen_layers_do_not_move(pretrained, det_data, tmp_path):
    model, _, _ = pretrained
    ds, props = det_data
    p = params(**{"finetune.iterations": 8})
    frozen = {"conv1", "conv2", "conv3", "conv4", "conv5", "fc6"}
    tuned, hist = T.finetune(p, model, ds, props, Cache(tmp_path), ds.classes, frozen=frozen)
    for name in frozen:
        assert torch.equal(tuned.layer(name).weight, model.layer(name).weight), name
        assert torch.equal(tuned.layer(name).bias, model.layer(name).bias), name
    assert not torch.equal(tuned.fc7.weight, model.fc7.weight)
    assert hist["frozen"] == sorted(frozen)
    with pytest.raises(ValueError, match="unknown layers"):
        T.finetune(p, model, ds, props, Cache(tmp_path), ds.classes, frozen={"fc8"})


def test_frozen_batch_norm_keeps_its_statistics(det_data, tmp_path):
    ds, props = det_data
    p = params(**{"finetune.iterations": 4, "net.batch_norm": True})
    torch.manual_seed(0)
    model = CaffeNet(p.net, 4)
    frozen = {"conv1", "conv2"}
    tuned, _ = T.finetune(p, model, ds, props, Cache(tmp_path), ds.classes, frozen=frozen)
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
    tuned, _ = T.finetune(p, model, ds, props, Cache(tmp_path), ds.classes, frozen=frozen,
                          head_init=(w0, b0), head_rows=[0])
    assert torch.equal(tuned.head.weight[1:], w0[1:]) and torch.equal(tuned.head.bias[1:], b0[1:])
    assert not torch.equal(tuned.head.weight[0], w0[0])
    assert torch.equal(tuned.fc7.weight, model.fc7.weight)
    with pytest.raises(ValueError, match="head_init"):
        T.finetune(p, model, ds, props, Cache(tmp_path), ds.classes, head_init=(w0[:3], b0[:3]))


def test_lr_multipliers_follow_caffe():
    m = CaffeNet(params(**{"net.batch_norm": True}).net, 3)
    groups = {g["name"]: g for g in T._param_groups(m, 0.001, 5e-4, head_mult=10.0, frozen={"conv1"})}
    assert "conv1.weight" not in groups and not m.conv1.weight.requires_grad
    assert groups["conv2.weight"]["lr"] == pytest.approx(0.001) and groups["conv2.weight"]["weight_decay"] == 5e-4
    assert groups["conv2.bias"]["lr"] == pytest.approx(0.002) and groups["conv2.bias"]["weight_decay"] == 0
    assert groups["head.weight"]["lr"] == pytest.approx(0.01) and groups["head.bias"]["lr"] == pytest.approx(0.02)
    assert groups["conv2.bn.weight"]["weight_decay"] == 0 and groups["conv2.bn.bias"]["lr"] == pytest.approx(0.001)
    assert "conv1.bn.weight" not in groups and not m.bn[0].weight.requires_grad


def test_identity_changes_with_content(cls_data, det_data):
    train, _ = cls_data
    ds, _ = det_data
    a = T.dataset_identity(train)
    b = T.dataset_identity(dataclasses.replace(train, labels=np.roll(train.labels, 1)))
    assert a["n"] == b["n"] and a["content"] != b["content"]
    c = T.dataset_identity(ds)
    d = T.dataset_identity(dataclasses.replace(ds, images=ds.images[:-1]))
    assert c != d
