"""The CaffeNet-shaped network: grid sizes, pool5 layout, fc path, receptive fields, weights."""
import dataclasses

import pytest
import torch
import torch.nn.functional as F

from lsda_core.models import nets
from lsda_core.core.errors import DataError
from lsda_core.models.nets import CaffeNet, grid_sizes, receptive_field
from lsda_core.core.params import Net, ParamsError

CAFFENET = Net(**nets.PRESETS["caffenet"])  # Caffe's bvlc_reference_caffenet, R-CNN's network
ALEXNET = Net(**nets.PRESETS["torchvision_alexnet"])  # torchvision's AlexNet shape, 227 px input
SMALL = Net(conv_channels=[8, 8, 8, 8, 8], fc_width=16, precision="float32")  # exact arithmetic


def test_grid_sizes_of_the_presets():
    assert grid_sizes(CAFFENET) == {"input": 227, "conv1": 55, "pool1": 27, "conv2": 27, "pool2": 13,
                                    "conv3": 13, "conv4": 13, "conv5": 13, "pool5": 6}
    assert grid_sizes(ALEXNET)["conv1"] == 56 and grid_sizes(ALEXNET)["pool5"] == 6
    assert grid_sizes(dataclasses.replace(ALEXNET, input_size=224))["pool5"] == 6
    assert Net(**nets.PRESETS["embedded"]) == Net()
    emb = grid_sizes(Net())
    assert emb == {"input": 64, "conv1": 30, "conv2": 30, "pool2": 14, "conv3": 14, "conv4": 14,
                   "conv5": 14, "pool5": 6}


def test_wrong_grid_raises_params_error_naming_the_sizes():
    with pytest.raises(ParamsError, match=r"pool5 must be a 6 x 6 grid.*4 x 4 .input 48 -> conv1 22"):
        CaffeNet(dataclasses.replace(Net(), input_size=48), 10)
    with pytest.raises(ParamsError, match="conv_channels"):
        CaffeNet(dataclasses.replace(Net(), conv_channels=[8, 8, 8]), 10)
    with pytest.raises(ParamsError, match="groups"):
        CaffeNet(dataclasses.replace(Net(), conv_channels=[8, 9, 8, 8, 8], groups=True), 10)


def test_receptive_field_of_caffenet_pool5_is_195_stride_32():
    # conv1 11/4: 11, jump 4; pool1 3/2: 11+2*4=19, jump 8; conv2 5: 19+4*8=51; pool2 3/2:
    # 51+2*8=67, jump 16; conv3-5 3: 67+3*2*16=163; pool5 3/2: 163+2*16=195, jump 32.
    # offset: conv2 pad 2 at jump 8 (-16) + conv3-5 pad 1 at jump 16 (-48) = -64.
    assert receptive_field(CAFFENET, "pool5") == (195, 32, -64)
    assert receptive_field(CAFFENET, "conv1") == (11, 4, 0)
    assert receptive_field(CAFFENET, "pool2") == (67, 16, -16)


def test_receptive_field_of_the_embedded_net():
    # conv1 8/2 pad 1: size 8, jump 2, offset -1; conv2 3 pad 1: 8+2*2=12, offset -1-2=-3;
    # pool2 3/2: 12+2*2=16, jump 4; conv3 3 pad 1: 16+2*4=24, offset -3-4=-7; conv4: 32, -11;
    # conv5: 40, -15; pool5 3/2: 40+2*4=48, jump 8, offset -15.
    assert receptive_field(Net(), "pool5") == (48, 8, -15)
    assert receptive_field(Net(), "conv3") == (24, 4, -7)


def test_receptive_field_matches_gradient_support(monkeypatch):
    """Empirical check: the input pixels that influence one pool5 unit are exactly its field
    (clipped to the image). Max-pooling passes gradient to one argmax per window only, so the
    pools average here; positive weights and biases keep every ReLU open."""
    net = dataclasses.replace(SMALL, lrn=False)
    monkeypatch.setattr(nets.F, "max_pool2d", lambda x, k, s: F.avg_pool2d(x, k, s))
    torch.manual_seed(0)
    m = CaffeNet(net, 3).eval()
    with torch.no_grad():
        for name in nets.CONVS:
            conv = m.layer(name)
            conv.weight.abs_()
            conv.bias.fill_(0.1)
    x = torch.rand(1, 3, 64, 64, requires_grad=True)
    y, xx = 2, 3
    m.pool5(x)[0, :, y, xx].sum().backward()
    rows = torch.nonzero(x.grad[0].abs().sum(dim=(0, 2))).flatten()
    cols = torch.nonzero(x.grad[0].abs().sum(dim=(0, 1))).flatten()
    size, stride, off = receptive_field(net, "pool5")
    assert (rows.min().item(), rows.max().item()) == (max(0, off + y * stride), min(63, off + y * stride + size - 1))
    assert (cols.min().item(), cols.max().item()) == (max(0, off + xx * stride), min(63, off + xx * stride + size - 1))


def test_pool5_shape_and_flattening_order():
    torch.manual_seed(0)
    m = CaffeNet(SMALL, 5).eval()
    x = m.normalize(torch.randint(0, 256, (4, 3, 64, 64), dtype=torch.uint8))
    with torch.no_grad():
        p5 = m.pool5(x)
        assert p5.shape == (4, 8, 6, 6)
        flat = p5.reshape(4, -1)
        c, yy, xx = 5, 2, 4
        assert torch.equal(flat[:, c * 36 + yy * 6 + xx], p5[:, c, yy, xx])
        assert torch.allclose(m.fc(flat, "fc6"), m.fc(p5, "fc6"))


def test_fc_equals_the_eval_path_without_dropout():
    torch.manual_seed(0)
    m = CaffeNet(dataclasses.replace(SMALL, dropout=0.5), 5).eval()
    x = m.normalize(torch.rand(3, 3, 64, 64) * 255)
    with torch.no_grad():
        p5 = m.pool5(x)
        fc6 = F.relu(p5.reshape(3, -1) @ m.fc6.weight.T + m.fc6.bias)
        fc7 = F.relu(fc6 @ m.fc7.weight.T + m.fc7.bias)
        assert torch.allclose(m.fc(p5, "fc6"), fc6, atol=1e-6)
        assert torch.allclose(m.fc(p5, "fc7"), fc7, atol=1e-6)
        assert torch.allclose(m(x), m.head(fc7), atol=1e-6)
        m.train()
        torch.manual_seed(1)
        assert not torch.allclose(m(x), m.head(fc7))  # dropout is on in training only


def test_normalize_and_head():
    m = CaffeNet(SMALL, 5)
    m.set_normalization([10, 20, 30], [2, 4, 5])
    x = torch.tensor([10, 20, 30], dtype=torch.uint8).reshape(3, 1, 1).expand(3, 2, 2)
    assert torch.equal(m.normalize(x), torch.zeros(3, 2, 2))
    assert torch.allclose(m.normalize(x.float()[None] + 10), torch.tensor([5.0, 2.5, 2.0]).reshape(1, 3, 1, 1).expand(1, 3, 2, 2))
    torch.manual_seed(0)
    head = m.replace_head(1000, std=0.01)
    assert m.num_classes == 1000 and torch.all(head.bias == 0)
    assert 0.008 < head.weight.std().item() < 0.012 and abs(head.weight.mean().item()) < 1e-3


def test_batch_norm_is_folded_in_eval_mode():
    torch.manual_seed(0)
    m = CaffeNet(dataclasses.replace(SMALL, batch_norm=True), 5)
    x = torch.randn(6, 3, 64, 64)
    m.train()
    with torch.no_grad():
        for _ in range(3):
            m.pool5(x)  # running statistics move
        for bn in m.bn:
            bn.weight.uniform_(0.5, 1.5)
            bn.bias.uniform_(-0.2, 0.2)
    m.eval()
    with torch.no_grad():
        folded = m.pool5(x)
        h = x
        for i, name in enumerate(nets.CONVS):  # the unfolded path, by hand
            h = F.relu(m.bn[i](m.layer(name)(h)))
            if name in ("conv2", "conv5"):
                h = F.max_pool2d(h, 3, 2)
            if name in ("conv1", "conv2") and m.net.lrn:
                h = CaffeNet._lrn(h)
    assert torch.allclose(folded, h, atol=1e-4, rtol=1e-4)
    assert "bn.0.running_mean" in m.state_dict()




def _relu_then_pool(m: CaffeNet, x: torch.Tensor) -> torch.Tensor:
    """pool5 in CaffeNet's literal layer order (each ReLU before its max pool), training mode."""
    h = x.contiguous(memory_format=torch.channels_last)
    for i, name in enumerate(nets.CONVS):
        h = m.layer(name)(h)
        h = F.relu(m.bn[i](h) if m.bn is not None else h)
        if name == "conv1" and m.net.pool1 or name in ("conv2", "conv5"):
            h = F.max_pool2d(h, 3, 2)
        if name in ("conv1", "conv2") and m.net.lrn:
            h = CaffeNet._lrn(h)
    return h


def _in_net_arithmetic(m: CaffeNet, x: torch.Tensor) -> torch.Tensor:
    with nets.cpu_autocast(m.bf16, x):
        return _relu_then_pool(m, x).float()


@pytest.mark.parametrize("net", [dataclasses.replace(SMALL, batch_norm=True, precision="bfloat16"),
                                 dataclasses.replace(CAFFENET, conv_channels=[8, 8, 8, 8, 8], fc_width=16,
                                                     precision="float32")],
                         ids=["embedded-bn-bf16", "caffenet-lrn-pool1"])
def test_pooling_before_relu_gives_caffenets_values_and_gradients_bit_for_bit(net):
    # the trunk pools before each ReLU that precedes a pool (faster); CaffeNet's order is the reference
    torch.manual_seed(0)
    m = CaffeNet(net, 5).train()
    x = torch.randn(8, 3, net.input_size, net.input_size)
    x[:, :, :6] = 0  # flat regions: ties inside pooling windows, positive and zero
    grads = []
    for fn in (m.pool5, lambda t: _in_net_arithmetic(m, t)):
        m.zero_grad()
        out = fn(x)
        (out * torch.linspace(-1, 1, out.numel()).reshape(out.shape)).sum().backward()
        grads.append((out.detach(), [p.grad.clone() for p in m.parameters() if p.grad is not None]))
    (a, ga), (b, gb) = grads
    assert torch.equal(a, b) and len(ga) == len(gb) and all(torch.equal(u, v) for u, v in zip(ga, gb))
def test_in_eval_switches_only_a_training_module_and_restores_it():
    m = CaffeNet(SMALL, 5)
    with nets.in_eval(m) as inside:
        assert inside is m and not m.training and not m.fc6.training
    assert m.training and m.fc6.training
    with pytest.raises(RuntimeError, match="boom"):
        with nets.in_eval(m):
            raise RuntimeError("boom")
    assert m.training
    m.eval()
    m.fc6.train()  # a mixed state is left as it is when the module itself is in eval mode
    with nets.in_eval(m):
        assert m.fc6.training
    assert not m.training and m.fc6.training


def test_lrn_matches_torch():
    x = torch.randn(2, 12, 5, 5) * 40
    assert torch.allclose(CaffeNet._lrn(x), F.local_response_norm(x, 5, 1e-4, 0.75, 1.0), atol=1e-4)


def _alexnet_model(num_classes=1000):
    """AlexNet-shaped model without its 61M-parameter initialisation (meta, then empty)."""
    with torch.device("meta"):
        m = CaffeNet(ALEXNET, num_classes)
    return m.to_empty(device="cpu")


def _alexnet_state(scale=1.0):
    """A fabricated torchvision AlexNet state dict with the real shapes; each tensor is
    uninitialised except its first weight element and its bias, which identify it."""
    shapes = {"features.0": (64, 3, 11, 11), "features.3": (192, 64, 5, 5), "features.6": (384, 192, 3, 3),
              "features.8": (256, 384, 3, 3), "features.10": (256, 256, 3, 3), "classifier.1": (4096, 9216),
              "classifier.4": (4096, 4096), "classifier.6": (1000, 4096)}
    sd = {}
    for i, (k, shape) in enumerate(shapes.items()):
        w = torch.empty(shape)
        w.view(-1)[0] = (i + 1) * scale
        sd[f"{k}.weight"] = w
        sd[f"{k}.bias"] = torch.full(shape[:1], -(i + 1) * scale)
    return sd


def test_alexnet_mapping_and_normalisation():
    m = _alexnet_model()
    nets.apply_alexnet_state(m, _alexnet_state())
    for i, name in enumerate(nets.LAYERS):
        assert m.layer(name).weight.flatten()[0].item() == i + 1 and m.layer(name).weight.requires_grad
        assert m.layer(name).bias.flatten()[-1].item() == -(i + 1)
    x = torch.full((1, 3, 1, 1), 255.0)  # white: (1 - mean) / std in torchvision's terms
    expect = (1 - torch.tensor([0.485, 0.456, 0.406])) / torch.tensor([0.229, 0.224, 0.225])
    assert torch.allclose(m.normalize(x).flatten(), expect, atol=1e-5)


def test_alexnet_errors_name_the_file(tmp_path):
    m = CaffeNet(SMALL, 10)
    with pytest.raises(DataError, match="conv_channels"):
        nets.apply_alexnet_state(m, {}, "w.pth")
    big = _alexnet_model(10)
    with pytest.raises(DataError, match=r"w.pth: classifier.6.weight has 1000 outputs"):
        nets.apply_alexnet_state(big, _alexnet_state(), "w.pth")
    missing = tmp_path / "alexnet-owt-7be5be79.pth"
    with pytest.raises(DataError, match=f"{missing}: AlexNet weight file not found"):
        nets.load_alexnet_weights(big, missing)
    missing.write_bytes(b"not a checkpoint")
    with pytest.raises(DataError, match=f"{missing}: cannot read AlexNet weights"):
        nets.load_alexnet_weights(big, missing)
    sd = {k: v[:2].clone() for k, v in _alexnet_state(0.0).items() if "classifier" not in k}
    torch.save(sd, missing)
    with pytest.raises(DataError, match=rf"{missing}: (not a torchvision AlexNet|features.0.weight has shape)"):
        nets.load_alexnet_weights(big, missing)
    torch.save({k: v.clone() for k, v in sd.items() if k != "features.0.weight"}, missing)
    with pytest.raises(DataError, match=r"no 'features.0.weight'"):
        nets.load_alexnet_weights(big, missing)


def test_load_alexnet_weights_from_a_file(tmp_path, monkeypatch):
    """The file path end to end; torch.load is checked to run with weights_only and the
    fabricated real-shape state dict stands in for the 240 MB file."""
    path = tmp_path / "alexnet-owt-7be5be79.pth"
    torch.save({"x": torch.zeros(1)}, path)
    seen = {}

    def fake_load(f, map_location=None, weights_only=False):
        seen.update(path=f, weights_only=weights_only)
        return _alexnet_state(0.5)

    monkeypatch.setattr(nets.torch, "load", fake_load)
    m = nets.load_alexnet_weights(_alexnet_model(), path)
    assert seen == {"path": path, "weights_only": True}
    assert m.fc7.weight.flatten()[0].item() == 3.5 and m.head.bias[3].item() == -4.0
    assert nets.matches_torchvision_alexnet(ALEXNET) and not nets.matches_torchvision_alexnet(CAFFENET)


def test_resolve_precision():
    assert nets.resolve_precision("float32") == "float32"
    assert nets.resolve_precision("bfloat16") == "bfloat16"
    assert nets.resolve_precision("auto") == ("bfloat16" if nets.bf16_supported() else "float32")
    with pytest.raises(ParamsError, match="net.precision: 'half'"):
        nets.resolve_precision("half")


def test_bfloat16_net_returns_float32_close_to_the_float32_net():
    torch.manual_seed(0)
    exact = CaffeNet(dataclasses.replace(SMALL, batch_norm=True, precision="float32"), 5)
    mixed = CaffeNet(dataclasses.replace(SMALL, batch_norm=True, precision="bfloat16"), 5)
    mixed.load_state_dict(exact.state_dict())
    assert mixed.bf16 and not exact.bf16
    x = torch.randn(4, 3, 64, 64)
    with torch.no_grad():
        for m in (exact, mixed):
            m.eval()
        outs = [(m.conv_trunk(x), m.pool5(x), m.fc(m.pool5(x), "fc6"), m.features(m.pool5(x)), m(x))
                for m in (exact, mixed)]
    for a, b in zip(*outs):
        assert b.dtype == torch.float32 and b.shape == a.shape
        assert not torch.equal(a, b)  # the products did run in bfloat16
        assert (b - a).abs().max() <= 0.05 * a.abs().max()  # bfloat16 keeps 8 bits of mantissa
    mixed.train()
    loss = F.cross_entropy(mixed(x), torch.arange(4))
    loss.backward()
    assert all(t.grad is not None and t.grad.dtype == torch.float32 for t in mixed.parameters())
    assert all(t.dtype == torch.float32 for t in mixed.state_dict().values() if t.is_floating_point())


def _uncached(m: CaffeNet, x: torch.Tensor) -> torch.Tensor:
    """m(x) with gradients on: every weight folded and cast anew (nothing read from the caches)."""
    with torch.enable_grad():
        return m(x).detach()


@pytest.mark.parametrize("precision", ["float32", "bfloat16"])
def test_weight_cache_gives_the_uncached_result_and_never_a_stale_weight(precision):
    torch.manual_seed(0)
    net = dataclasses.replace(SMALL, batch_norm=True, precision=precision)
    m, other = CaffeNet(net, 5).eval(), CaffeNet(net, 5).eval()
    x = torch.randn(3, 3, 64, 64)
    with torch.no_grad():
        first, again = m(x), m(x)
    assert torch.equal(first, again) and torch.equal(first, _uncached(m, x))
    assert len(m.folded) == 5
    assert (len(m.fc6.cached) == 1) == (precision == "bfloat16")  # casts kept only under autocast
    edits = [lambda: m.conv3.weight.mul_(2.0), lambda: m.bn[1].running_var.add_(1.0),
             lambda: m.fc6.weight.add_(0.1), lambda: m.load_state_dict(other.state_dict())]
    for edit in edits:
        with torch.no_grad():
            old = m(x)
            edit()
            new = m(x)
        assert not torch.equal(old, new) and torch.equal(new, _uncached(m, x))
    with torch.no_grad():
        assert torch.equal(m(x), other(x))
        m.replace_head(7)
        assert m(x).shape == (3, 7)


def test_weight_cache_follows_sgd_and_keeps_gradients_in_eval_mode():
    torch.manual_seed(0)
    m = CaffeNet(dataclasses.replace(SMALL, batch_norm=True), 5).eval()
    x = torch.randn(3, 3, 64, 64)
    with torch.no_grad():
        old = m(x)
    loss = F.cross_entropy(m(x), torch.arange(3))  # eval mode, gradients on: folded anew, differentiable
    loss.backward()
    assert m.conv1.weight.grad is not None and m.bn[0].weight.grad is not None
    torch.optim.SGD(m.parameters(), lr=0.1).step()
    with torch.no_grad():
        new = m(x)
    assert not torch.equal(old, new) and torch.equal(new, _uncached(m, x))


def test_weight_cache_makes_anew_for_weights_made_in_inference_mode():
    with torch.inference_mode():
        m = CaffeNet(dataclasses.replace(SMALL, batch_norm=True, precision="bfloat16"), 5).eval()
        x = torch.randn(2, 3, 64, 64)
        a = m(x)
        m.conv2.weight.mul_(2.0)  # no version counter to see this by: nothing may be kept
        assert not torch.equal(a, m(x))
    assert len(m.folded) == 0 and len(m.fc6.cached) == 0
