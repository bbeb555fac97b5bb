"""`lsda bench`: the study's throughput per stage on this machine, each compute-bound figure
also as a share of a peak measured in the same run, to set beside the papers' speed claims.

Rows of a run (`run`), each naming the device it ran on:
- peak: a large matrix product on the run's device, GFLOP/s, the better of its times at the
  run's start and at its end (`_settle_peaks`): float32; on CUDA also float16
  (the reference of the GPU path's rows), on a CPU that multiplies bfloat16 natively also
  bfloat16 (the reference of rows whose net runs in it, `net.precision`). Each row's share of
  peak is held against the peak of the arithmetic it ran in (`arithmetic`);
- proposals: selective search (`proposals.selective_search`, one process, one thread, as
  each worker of the pipeline) on `bench.images` test images: images and boxes per second;
- warped features: regions per second through `features.pool5_of_regions` and
  `fc_features` (fc7), at the embedded size (`net`) on the images' proposals, and at the
  paper size (the net of `bench.paper_params`: 227 px, 4096-wide fc);
- detectors: images per second of the warping detector (warp, the whole net, the output
  layer) and of the fast one (`spp.detect_scores`: one conv pass, SPP, the head) on the same
  images and proposals, and the speed-up, at both sizes; at the embedded size also with one
  torch thread (on a busy machine the many small operations of these small nets wait for
  their threads to be scheduled: measured on a loaded 2-core machine, 2 threads made the
  fast detector 35x and the warping one 3x slower than 1 thread);
- SVM training: `svm.train_svms` (liblinear, hard-negative mining) on synthetic features of
  the R-CNN chapter's shape: the proposals per image measured above, `net.fc_width`
  dimensions, `world.voc_classes` classes, `bench.svm_images` images (`--full`:
  world.voc_train + voc_val, the chapter's trainval);
- thread policy: a detection loop (per image, fc7 in torch, then SVM scores in NumPy) with
  NumPy's BLAS on every core and on one thread (`runtime.thread_policy`), and the speed-up;
- scoring: R-CNN's 2000 x 4096 by 4096 x N float32 product, in seconds for N = 100k (reduced
  mode: measured with `bench.classes_reduced` classes and extrapolated linearly).
- network alone (`<stage>.net`): the embedded feature row and the two training steps again with
  their network alone on an input made beforehand (no decoding, warping or augmenting); its share
  of peak is the most the stage could reach with this net and batch size, the reason a stage
  stays below half the peak when this share does too.

At the paper size every image has the paper preset's `proposals.max_boxes` (R-CNN's 2000)
regions: its proposals repeated (the cost of a region does not depend on its box). With
`--full` or on CUDA every image is timed so; in the reduced mode on the CPU only the first.
There the fast detector still gets all 2000 regions (its per-region work, SPP and the fc head,
is small, and its fc products run efficiently only in large batches: from 64 regions the line
below overstated its time by more than half); the warping detector gets `bench.regions` regions,
and its time is extrapolated along the line through its times with 0 and that many regions
(a fixed part per image plus one per region; its batches of warped windows are large already,
so the line errs only slightly, on the slow side).

Networks have random weights (the time does not depend on them), images are decoded before
timing, each time is the fastest of `bench.repeats` runs (CUDA synchronised; on CUDA after
one untimed run); the detectors compared in a row take their passes in turn, so a slow spell
of a shared machine slows both rather than one and the speed-up stays a ratio of like times.
FLOPs are those of convolutions and matrix products, counted by torch's FlopCounterMode on one
region and on none (the work is linear in the regions); a row's share of peak is its GFLOP/s
over the peak.

On CUDA the feature and detector rows run the GPU path (`features.to_device`,
`features.autocast`: float16 autocast, pinned asynchronous copies; the warp is batched on
the device and the input channels-last either way), and the paper-size rows are measured
again with it off. Runs on the CPU keep those rows, saying why they were not measured.

The results file (JSON, `default_path`): {"format": 1, "runs": {"<device> <mode>": run}}.
`save` replaces only the run of the same device kind and mode, so CPU and GPU runs stand
side by side. A run: device, mode, machine (`runtime.machine`), threads, finished, seconds,
max_rss_mib, max_cuda_mib, tf32 (on CUDA: whether float32 products and convolutions may use
TF32, torch's settings), params_digest, peaks {"float32": GFLOP/s, "float16" and "bfloat16":
GFLOP/s or null}, rows.
A row: key, stage, what, device, value, unit, seconds and gflop (of the timed unit: all
timed images, or one image where the row is per image), gflop_per_s, peak (which one),
of_peak, status ("measured", "extrapolated" or "not measured: <why>").
"""
from __future__ import annotations

import dataclasses

import contextlib
import json
import math
import os
import resource
import time
import zlib
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence

import numpy as np
import torch
from threadpoolctl import threadpool_limits
from torch.utils.flop_counter import FlopCounterMode

from lsda_core.detection import features as F
from lsda_core.core import params as P
from lsda_core.detection import spp as SPP
from lsda_core.detection import svm as S
from lsda_core.store.files import atomic_write_text
from lsda_core.data.images import load_image
from lsda_core.data.text import check_output_file, read_text, write_output
from lsda_core.core.errors import LsdaError
from lsda_core.models import finetune as FT
from lsda_core.models.finetune import context_pixels
from lsda_core.models.pretrain import augment, sgd_step
from lsda_core.models.solver import param_groups, step as sgd_update
from lsda_core.models.nets import CaffeNet, bf16_supported
from lsda_core.detection.proposals import ProposalConfig, selective_search
from lsda_core.store import runtime as RT
from lsda_core.store.runtime import machine, pick_device
from lsda_core.store.stages import stage_of
from lsda_core.core.structures import DetectionDataset, ImageAnn

FORMAT = 1
ROOT = Path(__file__).resolve().parents[2]
RCNN_REGIONS, RCNN_DIM, RCNN_CLASSES = 2000, 4096, 100_000  # R-CNN section 2.2's scoring product
PEAK_SIDE = {("cpu", False): 2048, ("cpu", True): 4096, ("cuda", False): 8192, ("cuda", True): 8192}
SVM_BYTES = 2 << 30  # synthetic SVM features held in memory up to this size (fewer images beyond)
FAST_TARGET, GPU_WARP_MS, GPU_FAST_MS = 8.0, 50.0, 10.0  # issue 6's targets
MEASURED, EXTRAPOLATED = "measured", "extrapolated"
THREAD_IMAGES = 20  # images of the thread-policy rows' detection loop
# The fine-tuning step draws its windows from as many images as the R-CNN chapter's trainval
# (copies of the bench's images, decoded each on its own) up to this many: a batch then touches
# as many images as a real step (~115 of 600), and warping's cost per image is counted.
FT_STEP_IMAGES = 1000


# ------------------------------------------------------------------------------ timing

def of_peak(gflop: float, seconds: float, peak_gflops: float) -> float:
    """Share of the peak: the work's rate (`gflop / seconds`) over `peak_gflops`."""
    return gflop / seconds / peak_gflops


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(fn: Callable[[], Any], device: torch.device) -> tuple[float, Any]:
    """(seconds of one call of `fn`, its result), synchronised around the call on CUDA."""
    _sync(device)
    t0 = time.perf_counter()
    out = fn()
    _sync(device)
    return time.perf_counter() - t0, out


def _best(fn: Callable[[], Any], repeats: int, device: torch.device) -> tuple[float, Any]:
    """(seconds of the fastest of `repeats` calls of `fn`, the last call's result); on CUDA
    after one untimed call (kernel selection), synchronised around each call."""
    if device.type == "cuda":
        fn()
    best, out = math.inf, None
    for _ in range(repeats):
        sec, out = _timed(fn, device)
        best = min(best, sec)
    return best, out


@contextlib.contextmanager
def _threads(n: int) -> Iterator[None]:
    """torch's intra-op threads set to `n` inside the block."""
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _gflop(fn: Callable[[], Any]) -> float:
    """GFLOP of one call of `fn` (convolutions and matrix products)."""
    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops() / 1e9


def _row(key: str, stage: str, what: str, device: torch.device | str, value: float | None, unit: str,
         seconds: float | None = None, gflop: float | None = None, peak: str | None = None,
         peaks: dict[str, float | None] | None = None, status: str = MEASURED) -> dict[str, Any]:
    """One figure (module docstring); `peak` names the reference of its share of peak."""
    ref = (peaks or {}).get(peak) if peak else None
    rate = gflop / seconds if gflop and seconds else None
    return {"key": key, "stage": stage, "what": what, "device": str(device), "value": value, "unit": unit,
            "seconds": seconds, "gflop": gflop, "gflop_per_s": rate, "peak": peak if rate and ref else None,
            "of_peak": of_peak(gflop, seconds, ref) if rate and ref else None, "status": status}


def why_not_gpu() -> str:
    if torch.cuda.is_available():
        return "not measured: this run is on the CPU (runtime.device)"
    return "not measured: no GPU on this machine"


# ------------------------------------------------------------------------------ inputs

def paper_params(p: P.Params) -> P.Params:
    """The paper-size preset (`bench.paper_params`; relative paths from the project root)."""
    path = Path(p.bench.paper_params)
    return P.load(path if path.is_absolute() else ROOT / path)


def _tile(boxes: np.ndarray, n: int, width: int, height: int) -> np.ndarray:
    """`n` boxes: `boxes` repeated (the whole image when there are none)."""
    if len(boxes) == 0:
        boxes = np.array([[0, 0, width, height]], np.float32)
    return np.resize(np.asarray(boxes, np.float32), (n, 4))


def synthetic_region_sets(n_images: int, regions: int, dim: int, n_classes: int,
                          seed: int = 0) -> list[S.RegionSet]:
    """SVM training images of a given shape: 1-3 ground-truth boxes (more when needed for every
    class to have one; classes in turn) in a 500 x 375 frame, then `regions` proposals (half
    jittered ground truth, half random boxes); features |N(0, 1)| plus, per class, the region's
    overlap with the class's boxes times a class pattern, so that mining finds hard negatives
    as on real features."""
    rng = np.random.default_rng(seed)
    pattern = rng.normal(0.0, 1.0, (n_classes, dim)).astype(np.float32)
    sets = []
    n_seen = 0
    for i in range(n_images):
        n_gt = max(int(rng.integers(1, 4)), -(-n_classes // n_images))
        cls = (n_seen + np.arange(n_gt)) % n_classes  # in turn: every class has positives
        n_seen += n_gt
        xy = rng.uniform([0, 0], [400, 275], (n_gt, 2))
        gt = np.hstack([xy, xy + rng.uniform(30, 100, (n_gt, 2))])
        n_jit = regions // 2
        jit = gt[rng.integers(0, n_gt, n_jit)] + rng.normal(0, 15, (n_jit, 4))
        xy = rng.uniform([0, 0], [450, 325], (regions - n_jit, 2))
        rand = np.hstack([xy, xy + rng.uniform(10, 150, (regions - n_jit, 2))])
        boxes = np.vstack([gt, jit, rand])
        overlap = S.class_overlaps(boxes, cls, n_classes).astype(np.float32)
        feats = np.abs(rng.normal(0.0, 1.0, (len(boxes), dim))).astype(np.float32) + 2 * overlap @ pattern
        sets.append(S.RegionSet(boxes=boxes, gt_classes=cls, feats=feats, image_id=f"synthetic-{i}"))
    return sets


# ------------------------------------------------------------------------------ detectors

def _over_images(score: Callable[[np.ndarray, np.ndarray], Any], pixels: Sequence[np.ndarray],
                 boxes: Sequence[np.ndarray]) -> Callable[[], list]:
    return lambda: [score(img, b) for img, b in zip(pixels, boxes)]


def detector_rounds(scorers: Mapping[str, Callable[[np.ndarray, np.ndarray], Any]], pixels: Sequence[np.ndarray],
                    boxes: Mapping[str, Sequence[np.ndarray]], repeats: int,
                    device: torch.device) -> dict[str, list[float]]:
    """Seconds per image of each detector in each of `repeats` rounds over these images and its
    boxes (`boxes[name]`): a round passes every detector over all the images, one after the
    other, so a slow spell of a shared machine reaches all of them rather than one; on CUDA
    after one untimed pass each. The one timing harness of `lsda bench` and of the LSDA
    chapter's warping vs fast comparison (`detector_seconds` keeps each one's fastest round)."""
    passes = {k: _over_images(f, pixels, boxes[k]) for k, f in scorers.items()}
    if device.type == "cuda":
        for run in passes.values():
            run()
    rounds: dict[str, list[float]] = {k: [] for k in passes}
    for _ in range(repeats):
        for k, run in passes.items():
            rounds[k].append(_timed(run, device)[0] / max(len(pixels), 1))
    return rounds


NO_REGION = ", no proposal"  # the key of a detector timed again on no region (its fixed part)


def with_no_region(scorers: Mapping[str, Callable], boxes: Mapping[str, Sequence[np.ndarray]],
                   names: Sequence[str]) -> tuple[dict[str, Callable], dict[str, Sequence[np.ndarray]]]:
    """`scorers` and `boxes` with each detector of `names` added again on no region (key
    `name + NO_REGION`), so that one `detector_rounds` call times both in the same rounds."""
    return ({**scorers, **{k + NO_REGION: scorers[k] for k in names}},
            {**boxes, **{k + NO_REGION: [b[:0] for b in boxes[k]] for k in names}})


def detector_seconds(scorers: Mapping[str, Callable[[np.ndarray, np.ndarray], Any]], pixels: Sequence[np.ndarray],
                     boxes: Mapping[str, Sequence[np.ndarray]], repeats: int, device: torch.device) -> dict[str, float]:
    """Seconds per image of each detector: its fastest of `repeats` rounds (`detector_rounds`)."""
    return {k: min(v) for k, v in detector_rounds(scorers, pixels, boxes, repeats, device).items()}


# ------------------------------------------------------------------------------ stages

def arithmetic(model: CaffeNet | SPP.SppHead, device: torch.device, gpu_path: bool) -> str:
    """The peak a model's rows are held against: the arithmetic its products run in (on CUDA
    float16 on the GPU path, else float32; on the CPU its `net.precision`)."""
    if device.type == "cuda":
        return "float16" if gpu_path else "float32"
    return "bfloat16" if model.bf16 else "float32"


def _peaks(device: torch.device, full: bool, repeats: int) -> tuple[dict[str, float | None], list[dict]]:
    n = PEAK_SIDE[(device.type, full)]
    peaks: dict[str, float | None] = {"float32": None, "float16": None, "bfloat16": None}
    rows = []
    cuda = device.type == "cuda"
    kinds = [(torch.float32, "float32"), (torch.float16, "float16")] + ([] if cuda else [(torch.bfloat16, "bfloat16")])
    for dtype, name in kinds:
        what = f"{name} matrix product {n} x {n} x {n}"
        if name == "float16" and not cuda:
            rows.append(_row(f"peak.{name}", "peak", what, "cuda", None, "GFLOP/s", status=why_not_gpu()))
            continue
        if name == "bfloat16" and not bf16_supported():
            rows.append(_row(f"peak.{name}", "peak", what, device, None, "GFLOP/s",
                             status="not measured: this CPU has no native bfloat16 (AVX512-BF16 or AMX)"))
            continue
        a, b = (torch.randn(n, n, device=device).to(dtype) for _ in range(2))
        sec, _ = _best(lambda: a @ b, repeats, device)
        gflop = 2 * n ** 3 / 1e9
        peaks[name] = gflop / sec
        rows.append(_row(f"peak.{name}", "peak", what, device, gflop / sec, "GFLOP/s", sec, gflop, name, peaks))
    return peaks, rows


def _settle_peaks(rows: list[dict], peaks: dict[str, float | None],
                  again: tuple[dict[str, float | None], list[dict]]) -> None:
    """Keep each peak's better measurement of the run's start and end (`again`) and restate every
    row's share against it: a slow spell during one product (seen on this 2-core VM: 208 and then
    388 bfloat16 GFLOP/s in two runs a minute apart) would otherwise inflate every share of the run."""
    later, later_rows = again
    for name, value in later.items():
        if value is not None and (peaks[name] is None or value > peaks[name]):
            peaks[name] = value
            i = next(i for i, r in enumerate(rows) if r["key"] == f"peak.{name}")
            rows[i] = next(r for r in later_rows if r["key"] == f"peak.{name}")
    for r in rows:
        if r["peak"] is not None:
            r["of_peak"] = of_peak(r["gflop"], r["seconds"], peaks[r["peak"]])


def _proposals(p: P.Params, ims: Sequence[ImageAnn], pixels: Sequence[np.ndarray],
               repeats: int) -> tuple[list[np.ndarray], list[dict]]:
    cfg = ProposalConfig(**dataclasses.asdict(p.proposals))
    cpu = torch.device("cpu")
    sec, boxes = _best(lambda: [selective_search(img, cfg, seed=zlib.crc32(im.image_id.encode()))
                                for im, img in zip(ims, pixels)], repeats, cpu)
    n_boxes = sum(len(b) for b in boxes)
    size = f"{np.mean([i.shape[1] for i in pixels]):.0f} x {np.mean([i.shape[0] for i in pixels]):.0f} px"
    what = f"selective search ({cfg.mode}), {len(ims)} images of {size}, one thread"
    return boxes, [
        _row("proposals.images", "proposals", what, cpu, len(ims) / sec, "images/s", sec),
        _row("proposals.boxes", "proposals", f"{what}, {n_boxes / len(ims):.0f} boxes per image", cpu,
             n_boxes / sec, "boxes/s", sec),
    ]


def _features(key: str, what: str, model: CaffeNet, context: float, pixels: Sequence[np.ndarray],
              boxes: Sequence[np.ndarray], repeats: int, peaks: dict, gpu_path: bool) -> dict:
    """Regions per second through pool5_of_regions + fc_features (fc7). The work is the same
    for every region (a window of the net's input size), so it is counted on one."""
    device, size = model.mean.device, model.net.input_size

    def features(img: np.ndarray, b: np.ndarray) -> np.ndarray:
        return F.fc_features(model, F.pool5_of_regions(model, img, b, size, context, gpu_path=gpu_path), "fc7",
                             gpu_path=gpu_path)

    n = sum(len(b) for b in boxes)
    gflop = n * _gflop(lambda: features(pixels[0], _tile(boxes[0][:1], 1, *pixels[0].shape[1::-1])))
    sec, _ = _best(_over_images(features, pixels, boxes), repeats, device)
    return _row(key, "warped features", f"{what}, {n} regions", device, n / sec, "regions/s", sec, gflop,
                arithmetic(model, device, gpu_path), peaks)


def _features_net(key: str, model: CaffeNet, context: float, pixels: Sequence[np.ndarray],
                  boxes: Sequence[np.ndarray], repeats: int, peaks: dict, gpu_path: bool) -> dict:
    """`_features`' network alone: every image's windows warped beforehand (`F.warped_windows`, as
    the stage warps them), then pool5 and fc7."""
    device, size = model.mean.device, model.net.input_size
    windows = [x for img, b in zip(pixels, boxes) for x in F.warped_windows(model, img, b, size, context,
                                                                             gpu_path=gpu_path)]

    def net() -> None:
        for x in windows:
            with F.autocast(device, gpu_path):
                p5 = model.pool5(x).float()
            F.fc_features(model, p5, "fc7", gpu_path=gpu_path)

    n = sum(len(w) for w in windows)
    return _net_alone(key, net, n, "regions/s", f"{n} regions", repeats, device, arithmetic(model, device, gpu_path),
                      peaks)


def _detectors(scorers: dict[str, Callable], pixels: Sequence[np.ndarray], boxes: dict[str, Sequence[np.ndarray]],
               per_image: int | None, repeats: int, device: torch.device) -> dict[str, tuple[float, float, str]]:
    """(seconds, GFLOP, status) per image of each detector, timed in turn (`detector_seconds`).
    Both are linear in the regions: a fixed part per image (the detector on no region:
    normalisation, the fast detector's conv pass) plus one per region, and the work is counted
    so. `per_image`: the time and work at that many regions per image, extrapolated along that
    line for a detector whose boxes (the same number for every image) are fewer."""
    short = [k for k in scorers if per_image is not None and len(boxes[k][0]) != per_image]
    runs, bx = with_no_region(scorers, boxes, short)
    sec = detector_seconds(runs, pixels, bx, repeats, device)
    out = {}
    for k, score in scorers.items():
        gflop, fixed = detector_work(score, pixels, boxes[k])
        if k not in short:
            out[k] = (sec[k], gflop, MEASURED)
            continue
        n = len(boxes[k][0])
        m = per_image / n
        sec0 = sec[k + NO_REGION]
        out[k] = (sec0 + max(sec[k] - sec0, 0.0) * m, fixed + (gflop - fixed) * m,
                  f"{EXTRAPOLATED} linearly from 0 and {n} regions per image")
    return out


def detector_work(score: Callable[[np.ndarray, np.ndarray], Any], pixels: Sequence[np.ndarray],
                  boxes: Sequence[np.ndarray]) -> tuple[float, float]:
    """(GFLOP per image, the part of it on no region) of one detector on these images and boxes:
    the work on no region (normalisation, the fast detector's conv pass) plus each region's,
    counted on one (the rest is linear in the regions). The one work count of `lsda bench` and
    of the LSDA chapter's warping vs fast comparison."""
    n_im = max(len(pixels), 1)
    g0 = [_gflop(lambda: score(img, b[:0])) for img, b in zip(pixels, boxes)]
    g1 = [_gflop(lambda: score(img, b[:1])) for img, b in zip(pixels, boxes)]
    return sum(a + len(b) * (c - a) for a, c, b in zip(g0, g1, boxes)) / n_im, sum(g0) / n_im


def _detector_rows(prefix: str, what: str, warp: Callable, fast: Callable, pixels: Sequence[np.ndarray],
                   boxes: Sequence[np.ndarray], per_image: int | None, repeats: int, device: torch.device,
                   peaks: dict, peak: str, fast_boxes: Sequence[np.ndarray] | None = None) -> list[dict]:
    """Images per second of both detectors on the same images and boxes (the fast one on
    `fast_boxes` when given: more of the same boxes), and the speed-up."""
    out, per = [], {}
    timed = _detectors({"warp": warp, "fast": fast}, pixels, {"warp": boxes, "fast": fast_boxes or boxes}, per_image,
                       repeats, device)
    for name, label in (("warp", "warping detector (warp, net, output layer)"),
                        ("fast", "fast detector (one conv pass, SPP, head)")):
        sec, gflop, status = timed[name]
        per[name] = sec
        out.append(_row(f"{prefix}.{name}", "detectors", f"{label}, {what}", device, 1 / sec, "images/s", sec,
                        gflop, peak, peaks, status))
    status = MEASURED if out[0]["status"] == out[1]["status"] == MEASURED else EXTRAPOLATED
    out.append(_row(f"{prefix}.speedup", "detectors", f"fast vs warping detector, {what}", device,
                    per["warp"] / per["fast"], "x", status=status))
    return out


def _sgd(model: CaffeNet, lr: float, weight_decay: float, momentum: float, head_mult: float) -> torch.optim.SGD:
    return torch.optim.SGD(param_groups(model, lr, weight_decay, head_mult), lr=lr, momentum=momentum)


def _training(p: P.Params, ims: Sequence[ImageAnn], props: Sequence[np.ndarray], device: torch.device,
              repeats: int, peaks: dict) -> list[dict]:
    """The two training stages' own steps at the embedded size: a pre-training step
    (`pretrain.sgd_step`: normalise, augment, forward, backward, SGD on `pretrain.batch_size`
    images of `world.cls_size` resized to the net's input) and a fine-tuning step (R-CNN's
    `finetune.fg_per_batch` + `bg_per_batch` windows drawn from the ground truth and proposals of
    `FT_STEP_IMAGES` copies of the images at most, warped by `finetune.warp_batch`, forward,
    backward, SGD). Work counted by FlopCounterMode on one step, backward included."""
    gen = torch.Generator().manual_seed(p.runtime.seed)
    S = p.net.input_size
    net = CaffeNet(p.net, p.world.n_categories).to(device).train()
    opt = _sgd(net, p.pretrain.lr, p.pretrain.weight_decay, p.pretrain.momentum, 1.0)
    bs = p.pretrain.batch_size
    batch = torch.randint(0, 256, (bs, 3, S, S), generator=gen, dtype=torch.uint8).to(device)
    y = torch.randint(0, p.world.n_categories, (bs,), generator=gen).to(device)
    pre = lambda: sgd_step(net, opt, batch, y, gen)  # noqa: E731
    pre()  # first step: allocations
    gflop = _gflop(pre)
    sec, _ = _best(pre, repeats, device)
    rows = [_row("training.pretrain", "training", f"pre-training step, {bs} images of {S} px, embedded net", device,
                 bs / sec, "images/s", sec, gflop, arithmetic(net, device, False), peaks)]
    x = augment(net.normalize(batch), gen)  # the step's input, made once: the network alone is timed
    rows.append(_net_alone("training.pretrain", lambda: sgd_update(opt, torch.nn.functional.cross_entropy(net(x), y)),
                           bs, "images/s", f"{bs} images", repeats, device, arithmetic(net, device, False), peaks))
    classes = sorted({o.cls for im in ims for o in im.objects})
    n_ims = min(p.world.voc_train + p.world.voc_val, FT_STEP_IMAGES)
    src = [k % len(ims) for k in range(n_ims)]
    copies = [dataclasses.replace(ims[j], image_id=f"{ims[j].image_id}#{k}") for k, j in enumerate(src)]
    ds = DetectionDataset("bench", "test", classes, copies)
    windows = FT.window_lists(ds, {c.image_id: props[j] for c, j in zip(copies, src)}, classes, p.finetune.fg_iou)
    store = FT.ImageStore(ds, device)
    ft = CaffeNet(p.net, len(classes) + 1).to(device).train()
    opt = _sgd(ft, p.finetune.lr, p.finetune.weight_decay, p.finetune.momentum, 10.0)
    ctx = context_pixels(p)
    n = p.finetune.fg_per_batch + p.finetune.bg_per_batch

    def ft_step() -> None:
        b = FT.sample_windows(windows, p.finetune.fg_per_batch, p.finetune.bg_per_batch, gen, p.finetune.mirror)
        logits = ft(FT.warp_batch(ft, store, b["image"], b["box"], S, ctx, b["flip"]))
        sgd_update(opt, torch.nn.functional.cross_entropy(logits, b["label"].to(device)))

    ft_step()
    gflop = _gflop(ft_step)
    sec, _ = _best(ft_step, repeats, device)
    what = (f"fine-tuning step, {n} warped windows drawn from {n_ims} images (copies of {len(ims)}, as many as the "
            f"R-CNN chapter's trainval), embedded net")
    rows.append(_row("training.finetune", "training", what, device, n / sec, "windows/s", sec, gflop,
                     arithmetic(ft, device, False), peaks))
    b = FT.sample_windows(windows, p.finetune.fg_per_batch, p.finetune.bg_per_batch, gen, p.finetune.mirror)
    xw, yw = FT.warp_batch(ft, store, b["image"], b["box"], S, ctx, b["flip"]), b["label"].to(device)
    rows.append(_net_alone("training.finetune", lambda: sgd_update(opt, torch.nn.functional.cross_entropy(ft(xw), yw)),
                           n, "windows/s", f"{n} windows", repeats, device, arithmetic(ft, device, False), peaks))
    return rows


NET_ALONE = ".net"  # the key suffix of a stage's row timed on its network alone


def _net_alone(key: str, fn: Callable[[], Any], n: int, unit: str, what: str, repeats: int, device: torch.device,
               peak: str, peaks: dict) -> dict:
    """The row of stage `key` with its network alone (`fn`: forward, and backward and SGD when
    training) on an input made beforehand: no decoding, warping or augmenting. Its share of peak
    is the most the stage could reach at this net and batch size if preparing its input were free."""
    fn()
    gflop = _gflop(fn)
    sec, _ = _best(fn, repeats, device)
    return _row(key + NET_ALONE, "network alone", f"{key}'s network alone on {what} made beforehand", device,
                n / sec, unit, sec, gflop, peak, peaks)


def _svm(p: P.Params, full: bool, regions: int, repeats: int) -> dict:
    n_cls, dim = p.world.voc_classes, p.net.fc_width
    n_images = p.world.voc_train + p.world.voc_val if full else p.bench.svm_images
    fit = max(1, SVM_BYTES // (4 * (regions + 3) * dim))
    capped = f" (capped from {n_images} to fit {SVM_BYTES >> 30} GiB)" if n_images > fit else ""
    n_images = min(n_images, fit)
    sets = synthetic_region_sets(n_images, regions, dim, n_cls, seed=p.runtime.seed)
    sec, _ = _best(lambda: S.train_svms(sets, n_cls, p.svm, seed=p.runtime.seed), repeats, torch.device("cpu"))
    what = (f"liblinear with hard-negative mining, {n_cls} classes, {n_images} images{capped} x ~{regions} "
            f"regions x {dim} synthetic features")
    return _row("svm", "SVM training", what, "cpu", sec, "s", sec)


def _thread_policy(p: P.Params, regions: int, repeats: int) -> list[dict]:
    """A detection loop as `pipeline.run_detector` runs it on the CPU, on synthetic pool5: per
    image, fc7 of its regions in torch, then their SVM scores in NumPy (`svm.score`); timed
    with NumPy's BLAS on every core and on one thread (`runtime.thread_policy`), the two in
    turn within each round, each keeping its fastest."""
    net = CaffeNet(p.net, p.world.voc_classes + 1).eval()
    gen = torch.Generator().manual_seed(p.runtime.seed)
    pool5 = [torch.randn(regions, net.pool5_dim, generator=gen).numpy() for _ in range(THREAD_IMAGES)]
    W = torch.randn(p.world.voc_classes, p.net.fc_width, generator=gen).numpy()
    b = np.zeros(p.world.voc_classes, np.float32)

    def loop() -> None:
        for x in pool5:
            S.score(F.fc_features(net, x, "fc7"), W, b)

    cores = os.cpu_count() or 1
    best = {cores: math.inf, RT.BLAS_THREADS: math.inf}
    with torch.inference_mode():
        loop()
        for _ in range(repeats):
            for n in best:
                with threadpool_limits(n, user_api="blas"):
                    best[n] = min(best[n], _timed(loop, torch.device("cpu"))[0] / THREAD_IMAGES)
    what = (f"{THREAD_IMAGES} images x {regions} regions: fc7 in torch ({torch.get_num_threads()} threads), "
            f"then SVM scores of {p.world.voc_classes} classes in NumPy")
    many, one = best[cores], best[RT.BLAS_THREADS]
    return [_row("threads.blas_all", "thread policy", f"{what}, NumPy's BLAS on {cores} threads", "cpu",
                 1 / many, "images/s", many),
            _row("threads.blas_one", "thread policy", f"{what}, NumPy's BLAS on {RT.BLAS_THREADS} thread "
                 "(the study's policy)", "cpu", 1 / one, "images/s", one),
            _row("threads.speedup", "thread policy", "the policy's speed-up of that loop", "cpu", many / one, "x")]


def _scoring(device: torch.device, n_classes: int, repeats: int, peaks: dict) -> dict:
    x = torch.randn(RCNN_REGIONS, RCNN_DIM, device=device)
    w = torch.randn(RCNN_DIM, n_classes, device=device)
    sec, _ = _best(lambda: x @ w, repeats, device)
    gflop = 2 * RCNN_REGIONS * RCNN_DIM * n_classes / 1e9
    k = RCNN_CLASSES / n_classes
    what = f"float32 product {RCNN_REGIONS} x {RCNN_DIM} by {RCNN_DIM} x 100k"
    status = MEASURED if n_classes == RCNN_CLASSES else f"{EXTRAPOLATED} linearly from {n_classes} classes"
    return _row("scoring.100k", "scoring", what, device, sec * k, "s", sec * k, gflop * k, "float32", peaks, status)


def run(p: P.Params, images: Sequence[ImageAnn], full: bool = False) -> dict[str, Any]:
    """Measure every stage now, reduced (the book's) or `full`, on `runtime.device`; returns
    the run (module docstring). `images`: the test images to time (`experiments.rcnn.bench_images`).

    Paper-size rows: every image with the paper preset's `proposals.max_boxes` (2000)
    regions when `full` or on CUDA (milliseconds there); else the first image only, with
    `bench.regions` regions (the detectors extrapolated to 2000)."""
    t_start = time.time()
    device = pick_device(p.runtime.device)
    cuda = device.type == "cuda"
    b, pp = p.bench, paper_params(p)
    ims = list(images)
    if not ims:
        raise LsdaError("bench: no test images to time")
    pixels = [np.require(load_image(im.path), requirements=["W", "C"]) for im in ims]
    n_out = p.world.voc_classes + 1
    with torch.inference_mode():
        peaks, rows = _peaks(device, full, b.repeats)
        props, found = _proposals(p, ims, pixels, b.repeats)
        rows += found
        small = CaffeNet(p.net, n_out).eval().to(device)
        ctx = context_pixels(p)
        net_small = f"embedded net ({p.net.input_size} px, fc {p.net.fc_width})"
        rows.append(_features("features.embedded", net_small, small, ctx, pixels, props, b.repeats, peaks, True))
        rows.append(_features_net("features.embedded", small, ctx, pixels, props, b.repeats, peaks, True))
        small_head = SPP.SppHead.from_model(small, p.fast.bins)
        what = f"{net_small}, fast.scale {p.fast.scale}, the images' proposals"
        for prefix, threads in (("detector.embedded", torch.get_num_threads()), ("detector.embedded.one_thread", 1)):
            with _threads(threads):
                rows += _detector_rows(prefix, f"{what}, {threads} torch thread{'s' * (threads > 1)}",
                                       F.warp_scorer(small, ctx, True), SPP.fast_scorer(small, small_head, p, True),
                                       pixels, props, None, b.repeats, device, peaks, arithmetic(small, device, True))
        rows += _paper_rows(pp, pixels, props, n_out, full, b, device, peaks)
        n_cls = RCNN_CLASSES if full else min(b.classes_reduced, RCNN_CLASSES)
        rows.append(_scoring(device, n_cls, b.repeats, peaks))
    rows += _training(p, ims, props, device, b.repeats, peaks)
    regions = max(1, round(np.mean([len(x) for x in props])))
    rows.append(_svm(p, full, regions, b.repeats))
    rows += _thread_policy(p, regions, b.repeats)
    with torch.inference_mode():
        _settle_peaks(rows, peaks, _peaks(device, full, b.repeats))
    return {"device": device.type, "mode": "full" if full else "reduced", "machine": machine(),
            "threads": torch.get_num_threads(), "finished": time.strftime("%Y-%m-%d %H:%M:%S"),
            "seconds": round(time.time() - t_start, 1), "params_digest": p.digest(),
            "max_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
            "max_cuda_mib": round(torch.cuda.max_memory_allocated(device) / 2**20) if cuda else None,
            "tf32": {"matmul": torch.backends.cuda.matmul.allow_tf32, "cudnn": torch.backends.cudnn.allow_tf32}
            if cuda else None, "peaks": peaks, "rows": rows}


def _paper_rows(pp: P.Params, pixels: Sequence[np.ndarray], props: Sequence[np.ndarray], n_out: int, full: bool,
                b: P.Bench, device: torch.device, peaks: dict) -> list[dict]:
    """Warped features and both detectors at the paper size; on CUDA again with the GPU
    path off, on the CPU those rows saying why they were not measured."""
    cuda = device.type == "cuda"
    target = pp.proposals.max_boxes
    if not (full or cuda):
        pixels, props = pixels[:1], props[:1]
    n = target if full or cuda else min(b.regions, target)
    every = [_tile(bx, target, img.shape[1], img.shape[0]) for bx, img in zip(props, pixels)]
    tiled = [b[:n] for b in every]  # the warping detector's and the features' share of them
    model = CaffeNet(pp.net, n_out).eval().to(device)
    head = SPP.SppHead.from_model(model, pp.fast.bins)
    ctx = context_pixels(pp)
    net = f"paper net ({pp.net.input_size} px, fc {pp.net.fc_width})"
    what = f"{net}, fast.scale {pp.fast.scale}, {target} regions per image"
    off = "GPU path off (float32, synchronous copies)"
    rows = [_features("features.paper", net, model, ctx, pixels, tiled, b.repeats, peaks, True)]
    rows += _detector_rows("detector.paper", what, F.warp_scorer(model, ctx, True),
                           SPP.fast_scorer(model, head, pp, True), pixels, tiled, target, b.repeats, device, peaks,
                           arithmetic(model, device, True), fast_boxes=every)
    if cuda:
        rows.append(_features("features.paper.fp32", f"{net}, {off}", model, ctx, pixels, tiled, b.repeats, peaks,
                              False))
        rows += _detector_rows("detector.paper.fp32", f"{what}, {off}", F.warp_scorer(model, ctx, False),
                               SPP.fast_scorer(model, head, pp, False), pixels, tiled, target, b.repeats, device,
                               peaks, "float32")
        return rows
    why = why_not_gpu()
    rows.append(_row("features.paper.fp32", "warped features", f"{net}, {off}", "cuda", None, "regions/s",
                     status=why))
    for name, label, unit in (("warp", "warping detector", "images/s"), ("fast", "fast detector", "images/s"),
                              ("speedup", "fast vs warping detector", "x")):
        rows.append(_row(f"detector.paper.fp32.{name}", "detectors", f"{label}, {what}, {off}", "cuda", None, unit,
                         status=why))
    return rows


# ------------------------------------------------------------------------------ the file

def default_path(p: P.Params) -> Path:
    return Path(p.runtime.artifacts) / "bench" / "bench.json"


def run_key(run: dict[str, Any]) -> str:
    """A run's place in the file: its device kind and mode, e.g. "cpu reduced"."""
    return f"{run['device']} {run['mode']}"


def load(path: str | Path) -> dict[str, Any]:
    """The results file (an empty one when there is none); LsdaError if it is not one, or if
    `path` cannot be one (a folder, or under a file)."""
    path = check_output_file(path, "bench results file")
    if not path.exists():
        return {"format": FORMAT, "runs": {}}
    try:
        doc = json.loads(read_text(path, "bench results file"))
    except json.JSONDecodeError as e:
        raise LsdaError(f"{path}: not a bench results file ({e}); move it away or delete it") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT or not isinstance(doc.get("runs"), dict):
        raise LsdaError(f"{path}: not a bench results file of format {FORMAT}; move it away or delete it")
    return doc


def save(run: dict[str, Any], path: str | Path) -> dict[str, Any]:
    """Merge `run` into the results file (replacing only the run of its device kind and mode),
    write it atomically and return the merged document."""
    path = Path(path)
    doc = load(path)
    doc["runs"][run_key(run)] = run
    write_output(path, json.dumps(doc, indent=1, sort_keys=True), "bench results file")
    return doc


def speedup_scaling(t: Mapping[str, float], target: float = FAST_TARGET) -> dict[str, float]:
    """The LSDA chapter's two detector times per image (`lsda.time_variants`: on the images'
    proposals and on none) split into a fixed part (no proposal: normalisation, the fast
    detector's one conv pass) plus one per proposal, and what follows for the speed-up: its
    limit as the proposals grow (the ratio of the per-proposal parts) and the proposals per
    image from which it reaches `target` (inf: never; 0: always)."""
    n = max(t["proposals / image"], 1e-12)
    fw, ff = t["warping" + NO_REGION], t["fast" + NO_REGION]
    pw, pf = max(t["warping"] - fw, 0.0) / n, max(t["fast"] - ff, 0.0) / n
    need = (target * ff - fw) / (pw - target * pf) if pw > target * pf else math.inf
    return {"warping fixed": fw, "fast fixed": ff, "warping per proposal": pw, "fast per proposal": pf,
            "limit": pw / pf if pf > 0 else math.inf, "proposals for target": max(need, 0.0), "target": target}


def speedup_at(s: Mapping[str, float], proposals: float) -> float:
    """The speed-up at `proposals` per image along `speedup_scaling`'s two lines."""
    return ((s["warping fixed"] + s["warping per proposal"] * proposals)
            / (s["fast fixed"] + s["fast per proposal"] * proposals))


def record_fast_accuracy(path: str | Path, warping_map: float, fast_map: float, timing: dict[str, float]) -> None:
    """Keep the LSDA chapter's fast-vs-warping comparison (mAP (%) over every category of its
    benchmark, with trained networks; seconds per image) in the results file, for the targets."""
    path = Path(path)
    doc = load(path)
    doc["fast_vs_warping"] = {"warping_map": warping_map, "fast_map": fast_map, "timing": timing,
                              "machine": machine(), "measured": time.strftime("%Y-%m-%d %H:%M:%S")}
    atomic_write_text(path, json.dumps(doc, indent=1, sort_keys=True))


# Cached stages whose work is convolutions and matrix products, each with the bench row that
# measures its own step: the row's share of peak turns the stage's recorded time into its time at
# the peak (`work_floor`).
PEAK_BOUND = {"pretrain": "training.pretrain", "retrain": "training.pretrain", "finetune": "training.finetune",
              "pool5": "features.embedded"}


def work_floor(build: dict[str, Any], run: dict[str, Any]) -> dict[str, Any]:
    """How fast a recorded build (`run_log.json`'s `builds` item) could be on the bench run's
    machine: each peak-bound stage (`PEAK_BOUND`) at the matrix-product peak, its recorded own
    seconds times its step's measured share of peak (the share stands for the whole stage),
    every other stage and the time outside stages as recorded. The build records entries by
    name ("pool5-ft", "pool5-pre"): each counts for its stage (`stages.stage_of`). Seconds;
    None where the run lacks the stage's row."""
    rows = {r["key"]: r for r in run["rows"]}
    totals: dict[str, dict[str, float]] = {}
    for name, st in build.get("stages", {}).items():
        stage = stage_of(name).name if name.split("-", 1)[0] in PEAK_BOUND else name
        t = totals.setdefault(stage, {"built": 0, "seconds": 0.0})
        t["built"] += st["built"]
        t["seconds"] += st["seconds"]
    bound = {}
    for stage, key in PEAK_BOUND.items():
        st, row = totals.get(stage), rows.get(key)
        if st and st["built"]:
            share = row.get("of_peak") if row else None
            bound[stage] = {"seconds": st["seconds"], "at_peak": st["seconds"] * min(share, 1.0) if share else None,
                            "of_peak": share}
    other = build["seconds"] - sum(b["seconds"] for b in bound.values())
    known = [b["at_peak"] for b in bound.values()]
    return {"seconds": build["seconds"], "stages": bound, "other": other,
            "floor": other + sum(known) if None not in known else None}
