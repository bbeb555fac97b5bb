"""Region features: the pool5 cache (layout, order, resume) and fc6 / fc7 from it."""
import numpy as np
import pytest
import torch

from lsda_core.core import boxes as B
from lsda_core.detection import features as Fe
from lsda_core.store.cache import Cache
from lsda_core.data.images import load_image
from lsda_core.models.nets import CaffeNet
from synthetic import make_detection, params


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    ds, props = make_detection(tmp_path_factory.mktemp("det"), 5, 7)
    p = params()
    torch.manual_seed(0)
    model = CaffeNet(p.net, 4).eval()
    model.set_normalization([120, 125, 130], [40, 45, 50])
    regions, n_gt = Fe.regions_with_gt(ds, props)
    return ds, props, p, model, regions, n_gt


def test_regions_put_ground_truth_first(setup):
    ds, props, _, _, regions, n_gt = setup
    for im in ds.images:
        k = n_gt[im.image_id]
        assert k == len(im.objects)
        assert np.allclose(regions[im.image_id][:k], im.boxes())
        assert np.allclose(regions[im.image_id][k:], props[im.image_id])
    only, n_only = Fe.regions_with_gt(ds, props, classes=["red"])
    im = ds.images[0]
    assert n_only[im.image_id] == sum(o.cls == "red" for o in im.objects)


def test_extracted_pool5_matches_the_model_in_channel_y_x_order(setup, tmp_path):
    ds, _, p, model, regions, _ = setup
    folder = Fe.extract_pool5(model, ds, regions, p, Cache(tmp_path), "train", chunk=16)
    assert folder.parent.name == "pool5-train"
    im = ds.images[1]
    feats = Fe.load_pool5(folder, im.image_id)
    boxes = Fe.load_regions(folder, im.image_id)
    assert np.array_equal(boxes, regions[im.image_id])
    c5 = model.conv5.out_channels
    assert feats.dtype == np.float16 and feats.shape == (len(boxes), c5 * 36)
    img = torch.from_numpy(np.array(load_image(im.path))).permute(2, 0, 1)
    with torch.no_grad():
        ref = model.pool5(B.warp_regions(model.normalize(img), torch.from_numpy(boxes), 64, 5))
    assert ref.shape == (len(boxes), c5, 6, 6)
    f = torch.from_numpy(feats.astype(np.float32))
    assert torch.allclose(f, ref.reshape(len(boxes), -1), rtol=2e-3, atol=2e-3)
    c, y, x = c5 - 1, 4, 1  # unit (c, y, x) is column c * 36 + y * 6 + x
    assert torch.allclose(f[:, c * 36 + y * 6 + x], ref[:, c, y, x], rtol=2e-3, atol=2e-3)
    # fc6 / fc7 from the cache equal the model's eval path on the same pool5
    for layer in ("fc6", "fc7"):
        got = Fe.fc_features(model, feats, layer)
        with torch.no_grad():
            want = model.fc(f, layer).numpy()
        assert got.dtype == np.float32 and got.shape == (len(boxes), model.net.fc_width)
        assert np.allclose(got, want, atol=1e-5)
    assert np.array_equal(Fe.fc_features(model, feats, "pool5"), feats.astype(np.float32))
    assert not model.training


def test_extraction_is_cached_and_resumes_after_an_interruption(setup, tmp_path, monkeypatch):
    ds, _, p, model, regions, _ = setup
    cache = Cache(tmp_path)
    real = Fe.pool5_of_regions
    calls = []

    def flaky(*a, **k):
        if len(calls) == 2:
            raise KeyboardInterrupt("interrupted")
        calls.append(1)
        return real(*a, **k)

    monkeypatch.setattr(Fe, "pool5_of_regions", flaky)
    with pytest.raises(KeyboardInterrupt):
        Fe.extract_pool5(model, ds, regions, p, cache, "val")
    partial = next((tmp_path / "pool5-val").glob("*.partial"))
    assert len([f for f in partial.glob("*.npy") if not f.name.endswith(".boxes.npy")]) == 2

    counted = []
    monkeypatch.setattr(Fe, "pool5_of_regions", lambda *a, **k: counted.append(1) or real(*a, **k))
    folder = Fe.extract_pool5(model, ds, regions, p, cache, "val")
    assert len(counted) == len(ds) - 2  # only the images not done before
    assert (folder / "meta.json").is_file() and not partial.exists()
    Fe.extract_pool5(model, ds, regions, p, cache, "val")
    assert len(counted) == len(ds) - 2  # complete entry: nothing recomputed
    # resumed features equal a fresh extraction
    fresh = Fe.extract_pool5(model, ds, regions, p, Cache(tmp_path / "fresh"), "val")
    for im in ds.images:
        assert np.array_equal(Fe.load_pool5(folder, im.image_id), Fe.load_pool5(fresh, im.image_id))
    # other regions are another entry
    fewer = {k: v[:3] for k, v in regions.items()}
    other = Fe.extract_pool5(model, ds, fewer, p, cache, "val")
    assert other != folder and Fe.load_pool5(other, ds.images[0].image_id).shape[0] == 3


def test_image_ids_with_slashes_and_empty_regions(setup, tmp_path):
    ds, _, p, model, regions, _ = setup
    import dataclasses
    im = dataclasses.replace(ds.images[0], image_id="n0001/img_1")
    one = dataclasses.replace(ds, images=[im])
    folder = Fe.extract_pool5(model, one, {"n0001/img_1": np.zeros((0, 4), np.float32)}, p, Cache(tmp_path), "x")
    assert Fe.load_pool5(folder, "n0001/img_1").shape == (0, model.conv5.out_channels * 36)
    assert Fe.fc_features(model, Fe.load_pool5(folder, "n0001/img_1"), "fc7").shape == (0, model.net.fc_width)
    with pytest.raises(KeyError, match="no regions"):
        Fe.extract_pool5(model, one, {}, p, Cache(tmp_path), "x")
