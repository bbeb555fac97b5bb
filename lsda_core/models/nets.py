"""The CaffeNet-shaped network of R-CNN and LSDA: conv1-5, pool5 on a 6 x 6 grid, fc6, fc7 and
a replaceable output layer (`head`), with input normalisation inside the model.

Layer order follows CaffeNet (Caffe's reference ImageNet model, the one R-CNN used):
conv1 -> ReLU -> [pool1 3/2] -> [LRN] -> conv2 -> ReLU -> pool2 3/2 -> [LRN] -> conv3 -> ReLU
-> conv4 -> ReLU -> conv5 -> ReLU -> pool5 3/2 -> fc6 -> ReLU -> dropout -> fc7 -> ReLU ->
dropout -> head. (CaffeNet pools before normalising; Krizhevsky's AlexNet the other way round.)
LRN is CaffeNet's: 5 channels, alpha 1e-4, beta 0.75, k 1. `groups` splits conv2, conv4 and
conv5 into CaffeNet's two groups. Paddings: conv1 `net.conv1_pad`, conv2 `kernel // 2`,
conv3-5 1 (all "same" as in CaffeNet); pools have none. Pooling floors its output size
(PyTorch's default; Caffe rounds up, which gives the same sizes on every preset here, since
their pooled maps have odd sides).

Normalisation: images enter as RGB on the 0..255 scale; `normalize(x)` returns
`(x - mean) / std` with per-channel `mean` and `std` buffers of the model. Every other entry
point (`forward`, `pool5`) takes *normalised* input, so a warped window whose outside-image
part is 0 after normalisation is filled with the mean, as in R-CNN. Caffe only subtracted the
mean; dividing by a std too (torchvision's convention, needed for its AlexNet weights) keeps
that property. `pretrain` sets the buffers from the training images (or torchvision's).

Batch normalisation (`net.batch_norm`, not in CaffeNet): after each conv, before its ReLU.
The embedded net uses it instead of LRN because without it the small net, trained from
scratch on 8,000 images of 200 categories, sits at chance for epochs (measured on one embedded
world, lr 0.02, dropout 0.25: without it 1 % val top-1 after 12 epochs, at chance for the
first 6; with it 8 % after 8 epochs and 29 % after 24). It is part of layer convK (frozen with
it, statistics included) and is folded into the convolution in eval mode, so feature
extraction pays nothing for it. The torchvision-AlexNet and CaffeNet presets have it off.
Without gradients the folded weights (and every fc layer's weights, cast for autocast) are
made once and kept until a parameter or statistic changes (`WeightCache`).

torchvision's AlexNet puts dropout before fc6 and fc7 rather than after them; with its weights
loaded here dropout follows CaffeNet's placement (it only matters while training).

Arithmetic (`net.precision`): on the CPU the conv and fc layers may run in bfloat16 under
autocast (`resolve_precision`: "auto" takes it where the CPU multiplies bfloat16 natively,
AVX512-BF16 or AMX). Weights, their gradients and batch norm's statistics stay float32, and
every public method returns float32, so callers see no difference but rounding. In `lsda bench`
runs on a 2-core AMD EPYC with AVX512-BF16, two runs each way (embedded net; images, windows or
regions per second, bfloat16 over float32): training steps 1.4-2.4x, warped features and the
warping detector 1.8-2.1x, the fast detector 1.0-1.6x (its one small conv pass per image gains
least), a 2048-square matrix product 2.4-2.7x. A cold build of the book went from about 95 to 64
minutes.

Initialisation: Kaiming-normal weights (fan-in, ReLU gain) and zero biases for conv1-fc7
(trains from scratch without Caffe's hand-tuned per-layer Gaussians); the output layer
N(0, 0.01), bias 0, as R-CNN's new fc8.
"""
from __future__ import annotations

import contextlib
from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable, Iterator

import torch
import torch.nn as nn
import torch.nn.functional as F

from lsda_core.core.errors import DataError
from lsda_core.core.params import PRECISIONS, Net, ParamsError

LAYERS = ("conv1", "conv2", "conv3", "conv4", "conv5", "fc6", "fc7", "head")
CONVS = LAYERS[:5]
GRID = 6  # pool5's side, as in CaffeNet

# torchvision's ImageNet normalisation, (x / 255 - m) / s, expressed on 0..255 inputs
TORCHVISION_MEAN = (0.485 * 255, 0.456 * 255, 0.406 * 255)
TORCHVISION_STD = (0.229 * 255, 0.224 * 255, 0.225 * 255)
# torchvision AlexNet's state-dict names -> ours
ALEXNET_KEYS = {"features.0": "conv1", "features.3": "conv2", "features.6": "conv3", "features.8": "conv4",
                "features.10": "conv5", "classifier.1": "fc6", "classifier.4": "fc7", "classifier.6": "head"}


# `net:` settings of the three presets (YAML-ready); every other key takes the schema default.
PRESETS: dict[str, dict[str, Any]] = {
    # torchvision's AlexNet (Krizhevsky's one-tower variant): its ImageNet weights load
    "torchvision_alexnet": {"input_size": 227, "conv_channels": [64, 192, 384, 256, 256], "conv1_kernel": 11,
                            "conv1_stride": 4, "conv1_pad": 2, "pool1": True, "conv2_kernel": 5, "groups": False,
                            "lrn": False, "batch_norm": False, "fc_width": 4096, "dropout": 0.5, "context": 16},
    # CaffeNet proper (bvlc_reference_caffenet, R-CNN's network)
    "caffenet": {"input_size": 227, "conv_channels": [96, 256, 384, 384, 256], "conv1_kernel": 11,
                 "conv1_stride": 4, "conv1_pad": 0, "pool1": True, "conv2_kernel": 5, "groups": True,
                 "lrn": True, "batch_norm": False, "fc_width": 4096, "dropout": 0.5, "context": 16},
    # the embedded default: the schema's defaults (params.Net)
    "embedded": asdict(Net()),
}


def layer_specs(net: Net) -> list[tuple[str, int, int, int]]:
    """The spatial layers in order, as (name, kernel, stride, padding)."""
    specs = [("conv1", net.conv1_kernel, net.conv1_stride, net.conv1_pad)]
    if net.pool1:
        specs.append(("pool1", 3, 2, 0))
    specs += [("conv2", net.conv2_kernel, 1, net.conv2_kernel // 2), ("pool2", 3, 2, 0),
              ("conv3", 3, 1, 1), ("conv4", 3, 1, 1), ("conv5", 3, 1, 1), ("pool5", 3, 2, 0)]
    return specs


def grid_sizes(net: Net) -> dict[str, int]:
    """Side of each spatial layer's output map, from `input` to `pool5` (floor rounding)."""
    sizes = {"input": net.input_size}
    n = net.input_size
    for name, k, s, pad in layer_specs(net):
        n = (n + 2 * pad - k) // s + 1 if n + 2 * pad >= k else 0
        sizes[name] = n
    return sizes


def check_net(net: Net) -> dict[str, int]:
    """Grid sizes of a valid net; `ParamsError` naming the sizes (or channels) otherwise."""
    ch = net.conv_channels
    if len(ch) != 5 or any(c < 1 for c in ch):
        raise ParamsError(f"net.conv_channels: need 5 positive channel counts (conv1-5), got {ch}")
    if net.groups:
        pairs = {"conv2": (ch[0], ch[1]), "conv4": (ch[2], ch[3]), "conv5": (ch[3], ch[4])}
        for name, (cin, cout) in pairs.items():
            if cin % 2 or cout % 2:
                raise ParamsError(f"net.groups: {name} splits into 2 groups, so its input and output channels "
                                  f"({cin}, {cout}) must be even (net.conv_channels {ch})")
    sizes = grid_sizes(net)
    if sizes["pool5"] != GRID:
        chain = " -> ".join(f"{k} {v}" for k, v in sizes.items())
        raise ParamsError(f"net: pool5 must be a {GRID} x {GRID} grid, but these settings give "
                          f"{sizes['pool5']} x {sizes['pool5']} ({chain}); change net.input_size, "
                          f"net.conv1_kernel/stride/pad, net.pool1 or net.conv2_kernel")
    return sizes


def bf16_supported() -> bool:
    """Whether this CPU multiplies bfloat16 natively (oneDNN's check: AVX512-BF16 or AMX)."""
    return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())


def resolve_precision(choice: str) -> str:
    """`net.precision` as it runs here: "auto" becomes bfloat16 where `bf16_supported`, else float32."""
    if choice not in PRECISIONS:
        raise ParamsError(f"net.precision: {choice!r} is not one of {list(PRECISIONS)}")
    if choice == "auto":
        return "bfloat16" if bf16_supported() else "float32"
    return choice


def cpu_autocast(bf16: bool, x: torch.Tensor) -> contextlib.AbstractContextManager:
    """bfloat16 autocast for work on CPU tensors like `x` when `bf16`; nothing otherwise."""
    if bf16 and x.device.type == "cpu":
        return torch.autocast("cpu", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def _pool_relu(x: torch.Tensor) -> torch.Tensor:
    """CaffeNet's ReLU then 3/2 max pool, computed as pool then ReLU (equal, see `CaffeNet._trunk`)."""
    return F.relu(F.max_pool2d(x, 3, 2))


class WeightCache:
    """Weights as a forward without gradients uses them (batch norm folded in, cast to the
    autocast dtype), made once and reused while their sources are the same tensors, unchanged:
    every in-place update (an SGD step, `copy_`, `load_state_dict`, batch norm's running
    statistics) bumps a tensor's version and rebuilds them. With gradients on, or sources made
    in inference mode (no version counter), they are made on every call. Casting and folding
    on every call was a tenth of the fast detector's time per image on the embedded net."""

    def __init__(self) -> None:
        self._entries: dict[str, tuple[tuple[torch.Tensor, ...], tuple[tuple[int, int], ...], Any]] = {}

    def __len__(self) -> int:
        """How many prepared weight sets are kept."""
        return len(self._entries)

    def get(self, name: str, sources: tuple[torch.Tensor, ...], make: Callable[[], Any]) -> Any:
        """`make()`, or what it returned before for `name` from these same, unchanged `sources`."""
        if torch.is_grad_enabled() or any(t.is_inference() for t in sources):
            return make()
        stamp = tuple((t._version, t.data_ptr()) for t in sources)
        hit = self._entries.get(name)
        if hit is not None and hit[1] == stamp and all(a is b for a, b in zip(hit[0], sources)):
            return hit[2]
        out = make()
        self._entries[name] = (sources, stamp, out)  # holds the sources: their ids cannot be reused
        return out


def _autocast_dtype(device: torch.device) -> torch.dtype | None:
    """The dtype an autocast region now casts products to on `device`'s type, or None."""
    kind = device.type
    return torch.get_autocast_dtype(kind) if torch.is_autocast_enabled(kind) else None


def _cast(t: torch.Tensor | None, dtype: torch.dtype | None) -> torch.Tensor | None:
    return t if t is None or dtype is None else t.to(dtype)


class Linear(nn.Linear):
    """nn.Linear whose weights, cast to the autocast dtype, are kept between calls without
    gradients (`WeightCache`); same parameters and state dict, same products."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.cached = WeightCache()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dtype = _autocast_dtype(x.device)
        if dtype is None:  # nothing to cast
            return super().forward(x)
        w, b = self.cached.get(str(dtype), (self.weight, self.bias),
                                lambda: (_cast(self.weight, dtype), _cast(self.bias, dtype)))
        return F.linear(x, w, b)


@contextlib.contextmanager
def in_eval(module: nn.Module) -> Iterator[nn.Module]:
    """`module` in eval mode for the block, its mode restored after; a module already in eval
    mode is left alone (switching walks every submodule, a cost on the per-image path)."""
    if not module.training:
        yield module
        return
    module.eval()
    try:
        yield module
    finally:
        module.train()


def receptive_field(net: Net, layer: str = "pool5") -> tuple[int, int, int]:
    """(size, stride, offset) of one unit of `layer`'s output map, in input pixels.

    Unit `i` (along x or y) sees the input pixels `[offset + i * stride, offset + i * stride
    + size)` (0-based pixel edges; offset < 0 means the field starts in the zero padding).
    Computed from the layer definitions: size grows by `(k - 1) * jump` per layer, `jump`
    multiplies by the stride, offset moves by `-pad * jump`.
    """
    size, jump, offset = 1, 1, 0
    names = [s[0] for s in layer_specs(net)]
    if layer not in names:
        raise ValueError(f"unknown layer {layer!r}; spatial layers are {names}")
    for name, k, s, pad in layer_specs(net):
        size += (k - 1) * jump
        offset -= pad * jump
        jump *= s
        if name == layer:
            break
    return size, jump, offset


def matches_torchvision_alexnet(net: Net) -> bool:
    """Whether the net has the shape of torchvision's AlexNet (so its weights load)."""
    return (list(net.conv_channels) == [64, 192, 384, 256, 256] and net.conv1_kernel == 11
            and net.conv1_stride == 4 and net.conv1_pad == 2 and net.pool1 and net.conv2_kernel == 5
            and not net.groups and not net.lrn and not net.batch_norm and net.fc_width == 4096)


class CaffeNet(nn.Module):
    """CaffeNet-shaped network; see the module docstring for layer order and conventions."""

    def __init__(self, net: Net, num_classes: int) -> None:
        super().__init__()
        self.sizes = check_net(net)
        self.net = net
        self.bf16 = resolve_precision(net.precision) == "bfloat16"  # CPU arithmetic (module docstring)
        self.cache_key: str | None = None  # set by the stage that built or loaded the weights
        ch = net.conv_channels
        g = 2 if net.groups else 1
        self.conv1 = nn.Conv2d(3, ch[0], net.conv1_kernel, net.conv1_stride, net.conv1_pad)
        self.conv2 = nn.Conv2d(ch[0], ch[1], net.conv2_kernel, 1, net.conv2_kernel // 2, groups=g)
        self.conv3 = nn.Conv2d(ch[1], ch[2], 3, 1, 1)
        self.conv4 = nn.Conv2d(ch[2], ch[3], 3, 1, 1, groups=g)
        self.conv5 = nn.Conv2d(ch[3], ch[4], 3, 1, 1, groups=g)
        # optional batch normalisation after each conv (before its ReLU): bn1..bn5, part of
        # the layer convK for freezing; BatchNorm's eps and momentum are torch's defaults
        self.bn = nn.ModuleList([nn.BatchNorm2d(c) for c in ch]) if net.batch_norm else None
        self.fc6 = Linear(ch[4] * GRID * GRID, net.fc_width)
        self.fc7 = Linear(net.fc_width, net.fc_width)
        self.head = Linear(net.fc_width, num_classes)
        self.folded = WeightCache()  # eval mode's conv weights with batch norm folded in
        self.register_buffer("mean", torch.full((1, 3, 1, 1), 127.5))
        self.register_buffer("std", torch.full((1, 3, 1, 1), 64.0))
        for m in (self.conv1, self.conv2, self.conv3, self.conv4, self.conv5, self.fc6, self.fc7):
            nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
            nn.init.zeros_(m.bias)
        self.replace_head(num_classes)

    # -------------------------------------------------------------------------- parts
    @property
    def num_classes(self) -> int:
        return self.head.out_features

    @property
    def pool5_dim(self) -> int:
        return self.conv5.out_channels * GRID * GRID

    def layer(self, name: str) -> nn.Module:
        if name not in LAYERS:
            raise ValueError(f"unknown layer {name!r}; layers are {list(LAYERS)}")
        return getattr(self, name)

    def layer_modules(self, name: str) -> list[nn.Module]:
        """The modules of a layer: convK and its batch norm (when present), or the linear."""
        mods = [self.layer(name)]
        if self.bn is not None and name in CONVS:
            mods.append(self.bn[CONVS.index(name)])
        return mods

    def replace_head(self, n: int, std: float = 0.01) -> nn.Linear:
        """A new output layer of `n` outputs, weights N(0, std), bias 0 (R-CNN's new fc8)."""
        p = next(self.parameters())
        head = Linear(self.net.fc_width, n).to(device=p.device, dtype=p.dtype)
        nn.init.normal_(head.weight, 0.0, std)
        nn.init.zeros_(head.bias)
        self.head = head
        return head

    def set_normalization(self, mean: Any, std: Any) -> None:
        """Per-channel mean and std on the 0..255 scale."""
        self.mean.copy_(torch.as_tensor(mean, dtype=self.mean.dtype).reshape(1, 3, 1, 1))
        self.std.copy_(torch.as_tensor(std, dtype=self.std.dtype).reshape(1, 3, 1, 1))

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) or (3, H, W) RGB, uint8 or float on 0..255 -> float32 `(x - mean) / std`
        on the model's device."""
        x = torch.as_tensor(x).to(self.mean.device)
        mean, std = (self.mean[0], self.std[0]) if x.ndim == 3 else (self.mean, self.std)
        return (x.to(self.mean.dtype) - mean) / std

    # ------------------------------------------------------------------------ forward
    def pool5(self, x: torch.Tensor) -> torch.Tensor:
        """Normalised (N, 3, S, S) input -> pool5 maps (N, C5, 6, 6)."""
        with cpu_autocast(self.bf16, x):
            return self._pool5(x).float()

    def _pool5(self, x: torch.Tensor) -> torch.Tensor:
        return self._trunk(x, pool5=True)

    def conv_trunk(self, x: torch.Tensor) -> torch.Tensor:
        """Normalised (N, 3, H, W) input of any size -> conv5 maps after ReLU (channels-last
        memory layout inside, 2x faster on CPU; the returned maps index as usual). The
        fast detector runs this once per image and pools each proposal from it."""
        with cpu_autocast(self.bf16, x):
            return self._trunk(x).float()

    def _trunk(self, x: torch.Tensor, pool5: bool = False) -> torch.Tensor:
        """`conv_trunk` in the arithmetic of the caller's autocast; with `pool5`, pool5's maps.

        Each 3/2 max pool runs before the ReLU that precedes it in CaffeNet: the two commute
        exactly, values and gradients alike (the pool picks the same element, ReLU passes positive
        values unchanged and zeroes the gradient of the rest either way), and the ReLU and its
        backward then touch 4-5x fewer values (embedded pre-training step: 3-6 % faster)."""
        x = x.contiguous(memory_format=torch.channels_last)
        pool1 = self.net.pool1
        x = self._conv(0, x, relu=not pool1)
        if pool1:
            x = _pool_relu(x)
        if self.net.lrn:
            x = self._lrn(x)
        x = _pool_relu(self._conv(1, x, relu=False))
        if self.net.lrn:
            x = self._lrn(x)
        x = self._conv(2, x)
        x = self._conv(3, x)
        return _pool_relu(self._conv(4, x, relu=False)) if pool5 else self._conv(4, x)

    def _conv(self, i: int, x: torch.Tensor, relu: bool = True) -> torch.Tensor:
        """conv(i+1) -> [batch norm] -> ReLU (without `relu`, the caller applies it). In eval mode
        the batch norm is folded into the convolution's weights (same result up to rounding, no
        extra pass over the maps)."""
        conv = getattr(self, CONVS[i])
        bn = None if self.bn is None else self.bn[i]
        if self.training:
            y = conv(x) if bn is None else bn(conv(x))
        else:
            dtype = _autocast_dtype(x.device)
            sources = (conv.weight, conv.bias) + (() if bn is None else
                                                  (bn.weight, bn.bias, bn.running_mean, bn.running_var))
            w, b = self.folded.get(f"{CONVS[i]}:{dtype}", sources, lambda: self._folded(conv, bn, dtype))
            y = F.conv2d(x, w, b, conv.stride, conv.padding, conv.dilation, conv.groups)
        return F.relu(y) if relu else y

    @staticmethod
    def _folded(conv: nn.Conv2d, bn: nn.BatchNorm2d | None, dtype: torch.dtype | None) -> tuple[torch.Tensor, ...]:
        """conv's weight and bias with `bn` (eval mode) folded in, cast to `dtype` (autocast's)."""
        w, b = conv.weight, conv.bias
        if bn is not None:
            scale = bn.weight * torch.rsqrt(bn.running_var + bn.eps)
            w, b = w * scale[:, None, None, None], (b - bn.running_mean) * scale + bn.bias
        return _cast(w, dtype), _cast(b, dtype)

    @staticmethod
    def _lrn(x: torch.Tensor, size: int = 5, alpha: float = 1e-4, beta: float = 0.75, k: float = 1.0) -> torch.Tensor:
        """Caffe's across-channel LRN, x / (k + alpha / size * sum of x^2 over `size`
        neighbouring channels)^beta, as F.local_response_norm but with the channel window sum
        done by a 1 x 1 convolution with a band matrix (several times faster on CPU)."""
        c = x.shape[1]
        i = torch.arange(c, device=x.device)
        band = ((i[:, None] - i[None, :]).abs() <= size // 2).to(x.dtype)
        if size % 2 == 0:  # even windows reach one further back than forward, as in torch
            band = ((i[None, :] - i[:, None] >= -(size // 2)) & (i[None, :] - i[:, None] <= (size - 1) // 2)).to(x.dtype)
        s = F.conv2d(x * x, band[:, :, None, None])
        return x * (k + (alpha / size) * s).pow(-beta)

    def fc(self, pool5: torch.Tensor, layer: str = "fc7") -> torch.Tensor:
        """fc6 or fc7 features from pool5 maps (N, C, 6, 6) or their (N, C*36) flattening in
        (channel, y, x) order, as relu(x W + b) without dropout (R-CNN's layer ablation)."""
        if layer not in ("fc6", "fc7"):
            raise ValueError(f"layer must be fc6 or fc7, got {layer!r}")
        with cpu_autocast(self.bf16, pool5):
            x = F.relu(self.fc6(pool5.flatten(1) if pool5.ndim > 2 else pool5))
            return (x if layer == "fc6" else F.relu(self.fc7(x))).float()

    def features(self, pool5: torch.Tensor) -> torch.Tensor:
        """fc7 after dropout (training) or fc7 (eval): the input of the output layer."""
        with cpu_autocast(self.bf16, pool5):
            return self._features(pool5).float()

    def _features(self, pool5: torch.Tensor) -> torch.Tensor:
        p = self.net.dropout
        x = F.dropout(F.relu(self.fc6(pool5.flatten(1))), p, self.training)
        return F.dropout(F.relu(self.fc7(x)), p, self.training)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Normalised (N, 3, S, S) input -> logits (N, num_classes)."""
        with cpu_autocast(self.bf16, x):
            return self.head(self._features(self._pool5(x))).float()


# ------------------------------------------------------------------ torchvision weights

def apply_alexnet_state(model: CaffeNet, state: dict[str, torch.Tensor], source: str = "state dict") -> None:
    """Copy a torchvision AlexNet state dict into `model` and set torchvision's normalisation.
    `DataError` naming `source` when the model or the tensors do not have AlexNet's shape."""
    if not matches_torchvision_alexnet(model.net):
        raise DataError(f"{source}: torchvision AlexNet weights need net: conv_channels [64, 192, 384, 256, 256], "
                        f"conv1_kernel 11, conv1_stride 4, conv1_pad 2, pool1 true, conv2_kernel 5, groups false, "
                        f"lrn false, batch_norm false, fc_width 4096 (params/paper_*.yaml); this net is {asdict(model.net)}")
    mapped = {}
    for src, dst in ALEXNET_KEYS.items():
        for part in ("weight", "bias"):
            key = f"{src}.{part}"
            if key not in state:
                raise DataError(f"{source}: not a torchvision AlexNet state dict (no {key!r}; "
                                f"has {sorted(state)[:8]}...)")
            want = getattr(model, dst)
            want = getattr(want, part).shape
            got = state[key]
            if not isinstance(got, torch.Tensor) or tuple(got.shape) != tuple(want):
                shape = tuple(got.shape) if isinstance(got, torch.Tensor) else type(got).__name__
                if dst == "head" and isinstance(got, torch.Tensor) and got.shape[1:] == want[1:]:
                    raise DataError(f"{source}: {key} has {got.shape[0]} outputs but the model has "
                                    f"{want[0]}; build the model with {got.shape[0]} classes")
                raise DataError(f"{source}: {key} has shape {shape}, expected {tuple(want)} for {dst}")
            own = getattr(getattr(model, dst), part)
            mapped[f"{dst}.{part}"] = got.detach().to(device=own.device, dtype=own.dtype)
    # assign: the loaded tensors become the parameters (no second 240 MB copy)
    model.load_state_dict(mapped, strict=False, assign=True)
    with torch.no_grad():
        model.set_normalization(TORCHVISION_MEAN, TORCHVISION_STD)


def load_alexnet_weights(model: CaffeNet, path: str | Path) -> CaffeNet:
    """Load torchvision's AlexNet cache file (`alexnet-owt-7be5be79.pth`) into a model of
    AlexNet's shape; nothing is downloaded. `DataError` naming the file when it is missing,
    unreadable or of another shape."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: AlexNet weight file not found (data.imagenet_weights; torchvision keeps it "
                        f"as ~/.cache/torch/hub/checkpoints/alexnet-owt-7be5be79.pth)")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unpickling failure is an unreadable file
        reason = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise DataError(f"{path}: cannot read AlexNet weights ({reason})") from None
    if not isinstance(state, dict):
        raise DataError(f"{path}: not a state dict (got {type(state).__name__})")
    apply_alexnet_state(model, state, str(path))
    return model
