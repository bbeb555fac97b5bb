"""Pre-training on tiny synthetic data: learning, determinism, caching, the AlexNet-weights
guard, the classification image cache and augmentation."""
import pytest
import torch

from lsda_core.core import params as P
from lsda_core.models import pretrain as PT
from lsda_core.store.cache import Cache
from synthetic import COLOURS, params

pytestmark = pytest.mark.usefixtures("one_thread")


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
    other, _ = PT.pretrain(params(), *cls_data, Cache(tmp_path / "other"))  # fresh cache: trains again
    for (k, a), (_, b) in zip(model.state_dict().items(), other.state_dict().items()):
        assert torch.equal(a, b), k

    def boom(*a, **k):
        raise AssertionError("retrained although cached")

    monkeypatch.setattr(PT, "_train_classifier", boom)
    again, h2 = PT.pretrain(params(), *cls_data, cache)
    assert h2["epochs"] == history["epochs"] and again.cache_key == model.cache_key
    assert torch.equal(again.conv1.weight, model.conv1.weight)
    with pytest.raises(AssertionError, match="retrained"):  # another pre-training seed is another entry
        PT.pretrain(params(**{"pretrain.seed": 1}), *cls_data, cache)
    # the training seed (fine-tuning, SVMs) does not change pre-training: same entry
    assert PT.pretrain(params(**{"runtime.seed": 1}), *cls_data, cache)[0].cache_key == model.cache_key
    # the context of warping does not change pre-training: same entry
    PT.pretrain(params(**{"net.context": 8}), *cls_data, cache)


def test_imagenet_weights_need_the_alexnet_shape(cls_data, tmp_path):
    p = params(**{"data.imagenet_weights": str(tmp_path / "alexnet-owt-7be5be79.pth")})
    with pytest.raises(P.ParamsError, match="torchvision AlexNet's shape"):
        PT.pretrain(p, *cls_data, Cache(tmp_path))
    with pytest.raises(PT.DataError, match="no classification training set"):
        PT.pretrain(params(), None, None, Cache(tmp_path))


def test_classification_tensor_is_cached_and_resized(cls_data, tmp_path):
    train, _ = cls_data
    cache = Cache(tmp_path)
    x = PT.load_classification_tensor(train, 32, cache, progress=False)
    assert x.dtype == torch.uint8 and x.shape == (len(train), 3, 32, 32)
    assert len(list((tmp_path / "cls-images").iterdir())) == 1
    y = PT.load_classification_tensor(train, 32, cache, progress=False)
    assert torch.equal(x, y)
    stream = PT.ClassificationStream(train, 32, workers=2)
    assert torch.equal(stream[torch.tensor([3, 0])], x[[3, 0]])


def test_augment_translates_and_mirrors():
    g = torch.Generator().manual_seed(0)
    x = torch.arange(2 * 3 * 8 * 8, dtype=torch.float32).reshape(2, 3, 8, 8) + 1
    out = PT.augment(x, g, pad=2, mirror=True)
    assert out.shape == x.shape
    for i in range(2):  # every output is a shifted (maybe mirrored) window of the zero-padded input
        xp = torch.nn.functional.pad(x[i], (2, 2, 2, 2))
        found = any(torch.equal(out[i], c) for oy in range(5) for ox in range(5)
                    for c in (xp[:, oy:oy + 8, ox:ox + 8], xp[:, oy:oy + 8, ox:ox + 8].flip(-1)))
        assert found



@pytest.mark.parametrize("pad,mirror", [(3, True), (3, False), (0, True)])
def test_augment_is_the_drawn_crop_then_flip_of_each_image(pad, mirror):
    # the draws, in augment's order: row offsets, column offsets, then mirror flags
    x = torch.randn(6, 3, 9, 7)
    g = torch.Generator().manual_seed(5)
    oy = torch.randint(0, 2 * pad + 1, (6,), generator=g) if pad else torch.zeros(6, dtype=torch.long)
    ox = torch.randint(0, 2 * pad + 1, (6,), generator=g) if pad else torch.zeros(6, dtype=torch.long)
    flip = torch.rand(6, generator=g) < 0.5 if mirror else torch.zeros(6, dtype=torch.bool)
    xp = torch.nn.functional.pad(x, (pad,) * 4)
    want = torch.stack([xp[i, :, oy[i]:oy[i] + 9, ox[i]:ox[i] + 7] for i in range(6)])
    want = torch.where(flip[:, None, None, None], want.flip(-1), want)
    got = PT.augment(x, torch.Generator().manual_seed(5), pad=pad, mirror=mirror)
    assert torch.equal(got, want) and got.is_contiguous()
    if mirror:
        assert 0 < int(flip.sum()) < 6  # both branches exercised by this seed

# ------------------------------------------------------------------------------ windows
