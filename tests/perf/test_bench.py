"""`lsda bench` (lsda_core.perf.bench) in a tiny reduced mode on the CPU: the run's rows and file
structure, merging runs of several device kinds, shares of peak, the GPU rows without
CUDA, the tables, the CLI; and the GPU path of feature extraction leaving CPU results
unchanged. No timing is asserted: the figures only have to exist, be finite and agree
with each other."""
import dataclasses
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from lsda_core.perf import bench
from lsda_core.publish import perf_report
from lsda_core.core import boxes as B
from lsda_core.detection import features as Fe
from lsda_core.data.voc import write_imagesets, write_voc_xml
from lsda_core.core.errors import LsdaError
from lsda_core.models import nets
from lsda_core.models.nets import CaffeNet
from lsda_core.core.structures import ImageAnn
from synthetic import make_detection, params

ROOT = Path(__file__).resolve().parents[2]
NO_GPU = "not measured: no GPU on this machine"
# a small stand-in for the paper preset: another net (fc 48), 5 "paper" regions per image
PAPER_YAML = """\
net: {conv_channels: [8, 12, 16, 16, 12], fc_width: 48}
proposals: {max_boxes: 5}
fast: {scale: 80}
"""
TINY = {"bench.images": 2, "bench.regions": 2, "bench.classes_reduced": 10, "bench.svm_images": 3,
        "bench.repeats": 1, "fast.scale": 80, "world.voc_classes": 3}
EXPECTED_KEYS = {"peak.float32", "peak.float16", "peak.bfloat16", "proposals.images", "proposals.boxes", "features.embedded",
                 "features.paper", "features.paper.fp32", "scoring.100k", "svm", "training.pretrain",
                 "training.finetune", "threads.blas_all", "threads.blas_one", "threads.speedup",
                 "training.pretrain.net", "training.finetune.net", "features.embedded.net"} | {
    f"detector.{size}.{name}" for size in ("embedded", "embedded.one_thread", "paper", "paper.fp32")
    for name in ("warp", "fast", "speedup")}
ROW_FIELDS = {"key", "stage", "what", "device", "value", "unit", "seconds", "gflop", "gflop_per_s", "peak", "of_peak",
              "status"}


@pytest.fixture(scope="module")
def paper_yaml(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("paper") / "paper.yaml"
    path.write_text(PAPER_YAML)
    return path


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory, paper_yaml):
    """One reduced run on two synthetic scenes, on the CPU."""
    tmp = tmp_path_factory.mktemp("bench")
    ds, _ = make_detection(tmp / "det", 2, 0)
    p = params(**TINY, **{"bench.paper_params": str(paper_yaml), "runtime.artifacts": str(tmp / "art")})
    return bench.run(p, ds.images)


def rows_by_key(run):
    return {r["key"]: r for r in run["rows"]}


def test_run_has_every_row_with_its_fields(tiny_run):
    assert tiny_run["device"] == "cpu" and tiny_run["mode"] == "reduced"
    assert tiny_run["machine"]["cores"] >= 1 and tiny_run["threads"] >= 1 and tiny_run["seconds"] > 0
    rows = rows_by_key(tiny_run)
    assert set(rows) == EXPECTED_KEYS and len(rows) == len(tiny_run["rows"])
    for r in tiny_run["rows"]:
        assert set(r) == ROW_FIELDS, r["key"]
        if r["status"].startswith("not measured"):
            assert r["value"] is None
        else:
            assert math.isfinite(r["value"]) and r["value"] > 0, r["key"]
    json.dumps(tiny_run)  # the file can hold it


def test_rows_measure_what_they_say(tiny_run):
    rows = rows_by_key(tiny_run)
    assert "fc 48" in rows["features.paper"]["what"] and "fc 32" in rows["features.embedded"]["what"]
    assert "2 regions" in rows["features.paper"]["what"]  # the first image, bench.regions of it
    # paper-size detectors, 5 regions per image: the warping one extrapolated from 0 and 2, the
    # fast one measured on all 5 (its small per-region batches would overstate its time)
    assert rows["detector.paper.warp"]["status"].startswith("extrapolated linearly from 0 and 2")
    assert rows["detector.paper.fast"]["status"] == "measured"
    assert rows["detector.paper.speedup"]["status"] == "extrapolated"
    for name in ("warp", "fast"):
        assert "5 regions per image" in rows[f"detector.paper.{name}"]["what"]
        assert rows[f"detector.embedded.{name}"]["status"] == "measured"
    for size in ("embedded", "paper"):
        sp = rows[f"detector.{size}.speedup"]["value"]
        assert sp == pytest.approx(rows[f"detector.{size}.fast"]["value"] / rows[f"detector.{size}.warp"]["value"])
    score = rows["scoring.100k"]
    assert score["status"] == "extrapolated linearly from 10 classes"
    assert score["gflop"] == pytest.approx(2 * 2000 * 4096 * 100_000 / 1e9)
    assert "3 classes, 3 images" in rows["svm"]["what"]
    many, one = rows["threads.blas_all"], rows["threads.blas_one"]
    assert "1 thread (the study's policy)" in one["what"] and f"on {os.cpu_count()} threads" in many["what"]
    assert rows["threads.speedup"]["value"] == pytest.approx(many["seconds"] / one["seconds"])


def test_share_of_peak_is_flops_over_time_over_the_peak_of_its_arithmetic(tiny_run):
    """Rows of the nets are held against the peak of `net.precision` as it runs here (bfloat16
    on a CPU that has it), the float32 scoring product against float32's."""
    assert bench.of_peak(10.0, 2.0, 5.0) == 1.0
    rows = rows_by_key(tiny_run)
    assert rows["peak.float32"]["of_peak"] == pytest.approx(1.0)
    if nets.bf16_supported():
        assert rows["peak.bfloat16"]["of_peak"] == pytest.approx(1.0) and tiny_run["peaks"]["bfloat16"] > 0
    else:
        assert rows["peak.bfloat16"]["status"].startswith("not measured: this CPU has no native bfloat16")
    shared = [r for r in tiny_run["rows"] if r["of_peak"] is not None]
    assert {r["key"] for r in shared} >= {"features.embedded", "features.paper", "detector.paper.warp", "scoring.100k",
                                          "training.pretrain", "training.finetune"}
    arithmetic = nets.resolve_precision(params(**TINY).net.precision)
    for r in shared:
        if r["stage"] != "peak":
            assert r["peak"] == ("float32" if r["key"] == "scoring.100k" else arithmetic), r["key"]
        assert r["gflop_per_s"] == pytest.approx(r["gflop"] / r["seconds"])
        assert r["of_peak"] == pytest.approx(r["gflop"] / r["seconds"] / tiny_run["peaks"][r["peak"]])


def test_each_peak_is_the_better_of_the_runs_start_and_end_and_shares_follow_it():
    """A slow spell during the first product must not inflate the run's shares: the end's
    faster float32 product replaces it and every float32 row is restated; bfloat16's slower
    second measurement leaves its own peak and rows as they were."""
    rows = [bench._row("peak.float32", "peak", "p", "cpu", 100.0, "GFLOP/s", 1.0, 100.0, "float32", {"float32": 100.0}),
            bench._row("peak.bfloat16", "peak", "p", "cpu", 300.0, "GFLOP/s", 1.0, 300.0, "bfloat16",
                       {"bfloat16": 300.0}),
            bench._row("a", "training", "a", "cpu", 1.0, "x/s", 1.0, 80.0, "float32", {"float32": 100.0}),
            bench._row("b", "training", "b", "cpu", 1.0, "x/s", 1.0, 150.0, "bfloat16", {"bfloat16": 300.0}),
            bench._row("c", "svm", "c", "cpu", 1.0, "s")]
    peaks = {"float32": 100.0, "float16": None, "bfloat16": 300.0}
    later = {"float32": 200.0, "float16": None, "bfloat16": 250.0}
    later_rows = [bench._row("peak.float32", "peak", "p again", "cpu", 200.0, "GFLOP/s", 0.5, 100.0, "float32", later),
                  bench._row("peak.bfloat16", "peak", "p again", "cpu", 250.0, "GFLOP/s", 1.2, 300.0, "bfloat16", later)]
    bench._settle_peaks(rows, peaks, (later, later_rows))
    assert peaks == {"float32": 200.0, "float16": None, "bfloat16": 300.0}
    by = {r["key"]: r for r in rows}
    assert by["peak.float32"]["what"] == "p again" and by["peak.bfloat16"]["what"] == "p"
    assert by["a"]["of_peak"] == pytest.approx(0.4) and by["b"]["of_peak"] == pytest.approx(0.5)
    assert by["peak.float32"]["of_peak"] == pytest.approx(1.0) and by["c"]["of_peak"] is None


def test_arithmetic_names_the_peak_of_a_nets_products():
    cpu, gpu = torch.device("cpu"), torch.device("cuda")
    for precision, cpu_peak in (("float32", "float32"), ("bfloat16", "bfloat16")):
        net = CaffeNet(params(**{"net.precision": precision}).net, 3)
        assert bench.arithmetic(net, cpu, True) == cpu_peak
        assert bench.arithmetic(net, gpu, True) == "float16" and bench.arithmetic(net, gpu, False) == "float32"


def test_work_is_counted_per_region(tiny_run):
    """The warped features' work is the net's on each region: the paper net's rows, with the
    same 2 regions, count one region's FLOPs twice."""
    rows = rows_by_key(tiny_run)
    one = rows["features.paper"]["gflop"] / 2
    assert one > 0
    warp = rows["detector.paper.warp"]  # 5 regions of the same net, plus its output layer
    assert 5 * one < warp["gflop"] < 5 * one * 1.1


def test_training_steps_count_forward_and_backward(tiny_run):
    """A training step's work is about three forward passes (forward, gradients of inputs and
    of weights; conv1 needs no input gradient) over its batch: the pre-training step's batch
    of `pretrain.batch_size` images, the fine-tuning step's fg + bg windows."""
    rows = rows_by_key(tiny_run)
    p = params(**TINY)
    net = CaffeNet(p.net, p.world.n_categories).eval()
    one = bench._gflop(lambda: net(torch.zeros(1, 3, p.net.input_size, p.net.input_size)))
    pre, ft = rows["training.pretrain"], rows["training.finetune"]
    n = p.finetune.fg_per_batch + p.finetune.bg_per_batch
    assert 2.3 * one * p.pretrain.batch_size < pre["gflop"] < 3.1 * one * p.pretrain.batch_size
    assert 2.3 * one * n < ft["gflop"] < 3.1 * one * n and f"{n} warped windows" in ft["what"]
    # drawn from as many images as the chapter's trainval, so a batch pays warping per image as a real step
    n_ims = min(p.world.voc_train + p.world.voc_val, bench.FT_STEP_IMAGES)
    assert f"drawn from {n_ims} images" in ft["what"] and n_ims > n // 2
    assert pre["value"] == pytest.approx(p.pretrain.batch_size / pre["seconds"])


def test_network_alone_rows_do_the_stages_work_without_preparing_its_input(tiny_run):
    """Each `.net` row counts the same work as its stage (warping, augmenting and normalising
    count none) over the same batch, against the same peak."""
    rows = rows_by_key(tiny_run)
    for stage in ("training.pretrain", "training.finetune", "features.embedded"):
        whole, alone = rows[stage], rows[stage + bench.NET_ALONE]
        assert alone["gflop"] == pytest.approx(whole["gflop"], rel=1e-6), stage
        assert alone["peak"] == whole["peak"] and alone["unit"] == whole["unit"] and alone["stage"] == "network alone"
        assert alone["value"] == pytest.approx(float(alone["what"].split(" on ")[1].split()[0]) / alone["seconds"])


def test_a_stage_below_half_says_whether_its_network_alone_is_too(tiny_run):
    """Below half with its network alone below half too: the network is the reason; with the
    network alone above half: preparing the input is."""
    name = "fine-tuning (SGD step) at half the matrix-product peak or more"
    for alone, says in ((0.3, "below half as well"), (0.7, "preparing the input")):
        run = json.loads(json.dumps(tiny_run))
        for r in run["rows"]:
            if r["key"] in ("training.finetune", "training.finetune.net"):
                r["of_peak"] = 0.2 if r["key"] == "training.finetune" else alone
        measured = perf_report.targets_table({"format": 1, "runs": {"cpu reduced": run}}).loc[name, "measured"]
        assert f"its network alone, on an input made beforehand: {alone:.2f}" in measured and says in measured


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_gpu_rows_say_not_measured_without_cuda(tiny_run):
    rows = rows_by_key(tiny_run)
    gpu = ["peak.float16", "features.paper.fp32"] + [f"detector.paper.fp32.{n}" for n in ("warp", "fast", "speedup")]
    for key in gpu:
        assert rows[key]["status"] == NO_GPU and rows[key]["device"] == "cuda"
    assert tiny_run["peaks"]["float16"] is None
    assert all(r["status"] != NO_GPU for k, r in rows.items() if k not in gpu)


def fake_gpu_run(warp_ms: float, fast_ms: float) -> dict:
    """A run as a GPU machine would store it (only the rows the tables read)."""
    machine = {"host": "gpu-box", "cpu": "Some CPU", "cores": 16, "torch": "x", "gpu": "Some GPU"}
    rows = [bench._row("detector.paper.warp", "detectors", "w", "cuda", 1000 / warp_ms, "images/s"),
            bench._row("detector.paper.fast", "detectors", "f", "cuda", 1000 / fast_ms, "images/s"),
            bench._row("detector.paper.speedup", "detectors", "s", "cuda", warp_ms / fast_ms, "x")]
    return {"device": "cuda", "mode": "full", "machine": machine, "threads": 16, "finished": "2026-01-01 00:00:00",
            "seconds": 1.0, "peaks": {"float32": 5e4, "float16": 5e5}, "rows": rows}


def test_save_merges_runs_per_device_kind(tiny_run, tmp_path):
    path = tmp_path / "bench" / "bench.json"
    bench.save(fake_gpu_run(40.0, 5.0), path)
    doc = bench.save(tiny_run, path)
    assert set(doc["runs"]) == {"cuda full", "cpu reduced"}
    again = dict(tiny_run, finished="later")
    doc = bench.save(again, path)  # a new CPU run replaces the CPU run only
    assert set(doc["runs"]) == {"cuda full", "cpu reduced"}
    assert doc["runs"]["cpu reduced"]["finished"] == "later"
    assert bench.load(path) == doc
    assert doc["runs"]["cuda full"]["machine"]["gpu"] == "Some GPU"


def test_load_refuses_what_is_not_a_results_file(tmp_path):
    assert bench.load(tmp_path / "none.json") == {"format": bench.FORMAT, "runs": {}}
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(LsdaError, match="not a bench results file"):
        bench.load(bad)
    bad.write_text('{"runs": []}')
    with pytest.raises(LsdaError, match="not a bench results file"):
        bench.save(fake_gpu_run(1.0, 1.0), bad)


def test_results_file_that_cannot_be_one_fails_before_measuring(tmp_path):
    """`lsda bench --out` is loaded before the measuring: a folder, a path under a file or a
    file that is not text fail there, in one line, not in a traceback after minutes."""
    with pytest.raises(LsdaError, match=rf"^{tmp_path}: is a folder, but the bench results file must be a file"):
        bench.load(tmp_path)
    f = tmp_path / "f"
    f.write_text("")
    with pytest.raises(LsdaError, match=rf"^{f / 'b.json'}: cannot write the bench results file: {f} is a file"):
        bench.load(f / "b.json")
    f.write_bytes(b"\xff\xfe")
    with pytest.raises(LsdaError, match=rf"^{f}: cannot read bench results file \(not UTF-8 text"):
        bench.load(f)


def test_targets_hold_gpu_times_against_their_goals(tiny_run):
    doc = {"format": 1, "runs": {"cpu reduced": tiny_run}}
    t = perf_report.targets_table(doc)
    gpu = t.loc[[i for i in t.index if "on a GPU" in i]]
    assert len(gpu) == 2 and (gpu["met"] == "not measured").all()
    if not torch.cuda.is_available():
        assert (gpu["measured"] == NO_GPU).all()
    assert (t.loc[[i for i in t.index if i.startswith("the book")], "met"] == "not measured").all()
    doc["runs"]["cuda full"] = fake_gpu_run(40.0, 12.0)
    t = perf_report.targets_table(doc)
    warp = t.loc["warping detector on a GPU, paper size (227 px, fc 4096, 2000 proposals)"]
    fast = t.loc["fast detector on a GPU, paper size (227 px, fc 4096, 2000 proposals)"]
    assert (warp["measured"], warp["met"]) == ("40.0 ms", "yes")
    assert (fast["measured"], fast["met"]) == ("12.0 ms", "no")
    speed = t.loc["fast detector vs warping, same machine and proposals (paper size, 2000 regions)"]
    cpu, gpu = list(speed["met"])  # the CPU run's (extrapolated), then the "GPU"'s 40 / 12 = 3.3x
    assert cpu.endswith(" (extrapolated)") and gpu == "no"


def test_build_budgets_come_from_the_run_log(tiny_run):
    machine = tiny_run["machine"]
    log = {"chapters": {}, "builds": [
        {"cache": "cold", "seconds": 1500.0, "machine": machine, "finished": "x", "entries_built": 9,
         "entries_reused": 0},
        {"cache": "warm", "seconds": 200.0, "machine": machine, "finished": "y", "entries_built": 0,
         "entries_reused": 9}]}
    t = perf_report.targets_table({"format": 1, "runs": {}}, log)
    cold = t.loc["the book on the embedded default, from an empty cache"]
    warm = t.loc["the book on the embedded default, warm cache"]
    assert (cold["measured"], cold["met"]) == ("25.0 min", "yes")
    assert (warm["measured"], warm["met"]) == ("3.3 min", "no")
    size = t.loc["artifacts/ after a full build (every cached stage)"]
    assert size["met"] == "not measured"  # these builds recorded no size
    log["builds"][-1]["artifacts_bytes"] = 1_300_000_000
    size = perf_report.targets_table({"format": 1, "runs": {}}, log).loc["artifacts/ after a full build (every cached stage)"]
    assert (size["measured"], size["met"]) == ("1.30 GB", "no") and size["where"].startswith("warm build")


def test_compute_bound_stages_are_held_against_half_the_peak(tiny_run):
    """Each compute-bound row of a run (training steps, features, scoring) is a target at 0.5 of
    that run's peak; SVM training (liblinear, FLOPs not counted) says it is not measured."""
    t = perf_report.targets_table({"format": 1, "runs": {"cpu reduced": tiny_run}})
    rows = rows_by_key(tiny_run)
    stages = t.loc[[i for i in t.index if i.endswith("at half the matrix-product peak or more")]]
    assert len(stages) == len(perf_report.STAGE_TARGETS) + 1
    pre = stages.loc["pre-training (SGD step) at half the matrix-product peak or more"]
    share = rows["training.pretrain"]["of_peak"]
    assert pre["measured"].startswith(f"{share:.2f} (") and pre["met"] == ("yes" if share >= 0.5 else "no")
    assert stages.loc["SVM training at half the matrix-product peak or more", "met"] == "not measured"


def test_paper_table_sets_our_figures_beside_the_papers(tiny_run):
    doc = {"format": 1, "runs": {"cpu reduced": tiny_run, "cuda full": fake_gpu_run(40.0, 5.0)}}
    t = perf_report.paper_table(doc)
    assert t.loc["R-CNN: proposals + features, s / image, CPU", "paper"] == 53.0
    assert t.loc["LSDA: speed-up of the fast detector", "paper"] == 8.0
    assert t.loc["R-CNN: 2000 x 4096 by 4096 x 100k scoring product, s (multi-core CPU)", "paper"] == 10.0
    assert t.loc["LSDA: warping detector, s / image", "cuda full"] == "0.040"
    assert t.loc["LSDA: speed-up of the fast detector", "cuda full"] == "8.0"
    assert t.loc["R-CNN: proposals + features, s / image, GPU", "cpu reduced"] == ""  # CPU runs: CPU claims only
    rows = rows_by_key(tiny_run)
    ours = 1 / rows["proposals.images"]["value"] + 2000 / rows["features.paper"]["value"]
    assert t.loc["R-CNN: proposals + features, s / image, CPU", "cpu reduced"] == f"{ours:.2f}"
    long = perf_report.table(doc, current="cpu reduced")
    assert len(long) == len(tiny_run["rows"]) + 3
    assert set(long.index.get_level_values("run")) == {"cpu reduced (this build)", "cuda full (2026-01-01 00:00:00)"}


def test_gpu_path_leaves_cpu_results_unchanged():
    """On the CPU the GPU path is off whatever the option says: the features equal, bit for
    bit, the plain warp + forward pass."""
    p = params()
    torch.manual_seed(0)
    model = CaffeNet(p.net, 4).eval()
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (50, 70, 3), dtype=np.uint8)
    boxes = np.array([[5, 4, 40, 30], [0, 0, 70, 50], [30, 20, 69, 49]], np.float32)
    on = Fe.pool5_of_regions(model, image, boxes, 64, 8, gpu_path=True)
    off = Fe.pool5_of_regions(model, image, boxes, 64, 8, gpu_path=False)
    with torch.inference_mode():
        ref = model.pool5(B.warp_regions(model.normalize(torch.from_numpy(image).permute(2, 0, 1)), boxes, 64, 8))
    assert on.dtype == torch.float32 and torch.equal(on, off) and torch.equal(on, ref)
    fc_on, fc_off = (Fe.fc_features(model, on, "fc7", gpu_path=g) for g in (True, False))
    assert fc_on.dtype == np.float32 and np.array_equal(fc_on, fc_off)
    with torch.inference_mode():
        assert np.array_equal(fc_on, model.fc(ref, "fc7").numpy())


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_gpu_path_on_cuda_is_close_to_float32():
    p = params()
    torch.manual_seed(0)
    model = CaffeNet(p.net, 4).eval().cuda()
    image = np.random.default_rng(0).integers(0, 256, (50, 70, 3), dtype=np.uint8)
    boxes = np.array([[5, 4, 40, 30], [0, 0, 70, 50]], np.float32)
    on = Fe.pool5_of_regions(model, image, boxes, 64, 8, gpu_path=True)
    off = Fe.pool5_of_regions(model, image, boxes, 64, 8, gpu_path=False)
    assert on.dtype == torch.float32 and on.is_cuda
    torch.testing.assert_close(on, off, rtol=2e-2, atol=2e-2 * float(off.abs().max()))


def write_voc(root: Path, images: list[ImageAnn]) -> Path:
    """The synthetic scenes as a VOC-layout test split."""
    for im in images:
        path = root / "JPEGImages" / f"{im.image_id}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.open(im.path).convert("RGB").save(path, quality=95)
        write_voc_xml(root / "Annotations" / f"{im.image_id}.xml", dataclasses.replace(im, path=path))
    write_imagesets(root, "test", [im.image_id for im in images], [])
    return root


def test_cli_writes_the_file_and_keeps_other_devices(tmp_path, paper_yaml):
    ds, _ = make_detection(tmp_path / "det", 2, 1)
    voc = write_voc(tmp_path / "VOC2007", ds.images)
    out = tmp_path / "bench.json"
    bench.save(fake_gpu_run(40.0, 5.0), out)
    over = {**TINY, "bench.paper_params": str(paper_yaml), "runtime.artifacts": str(tmp_path / "art"),
            "runtime.device": "cpu", "data.source": "voc2007", "data.voc_root": str(voc), "net.fc_width": 32}
    args = [a for k, v in over.items() for a in ("-p", k, json.dumps(v) if not isinstance(v, str) else v)]
    res = subprocess.run([sys.executable, "-m", "lsda_core.cli", "bench", "--params", "params/smoke.yaml",
                          "--out", str(out), *args], cwd=ROOT, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr[-2000:]
    assert f"bench: {out}" in res.stdout and "cpu reduced on " in res.stdout and "scoring" in res.stdout
    doc = bench.load(out)
    assert set(doc["runs"]) == {"cpu reduced", "cuda full"}
    assert {r["key"] for r in doc["runs"]["cpu reduced"]["rows"]} == EXPECTED_KEYS
    out.write_text("[]")
    res = subprocess.run([sys.executable, "-m", "lsda_core.cli", "bench", "--out", str(out)], cwd=ROOT,
                         capture_output=True, text=True)
    assert res.returncode == 2 and res.stderr.startswith("lsda: error: ") and "not a bench results file" in res.stderr


def test_fast_accuracy_is_kept_and_held_against_two_points(tmp_path, tiny_run):
    path = tmp_path / "bench.json"
    key = "fast detector within 2 mAP points of the warping one (LSDA chapter, trained networks)"
    assert perf_report.targets_table({"format": 1, "runs": {}}).loc[key, "met"] == "not measured"
    bench.record_fast_accuracy(path, 20.0, 17.5, {"warping": 0.2, "fast": 0.02, "speed-up": 10.0})
    doc = bench.save(tiny_run, path)  # a later bench run keeps the record
    row = perf_report.targets_table(doc).loc[key]
    assert row["met"] == "no" and row["measured"].startswith("fast 17.5 vs warping 20.0 mAP (-2.5 points)")
    own = "fast detector vs warping in the LSDA chapter's own measurement (embedded, trained networks)"
    assert perf_report.targets_table(doc).loc[own, "met"] == "yes"  # 10x
    bench.record_fast_accuracy(path, 20.0, 18.5, {"warping": 0.2, "fast": 0.04, "speed-up": 5.0,
                                                  "proposals / image": 140.0})
    t = perf_report.targets_table(bench.load(path))
    assert t.loc[key, "met"] == "yes"
    assert t.loc[own, "met"] == "no" and t.loc[own, "measured"] == "5.0x (40 vs 200 ms / image, 140 proposals / image)"
    bench.record_fast_accuracy(path, 20.0, 18.5, {"warping": 0.2, "fast": 0.04, "speed-up": 5.0,
                                                  "proposals / image": 140.0, "warping GFLOP": 6.0, "fast GFLOP": 0.8})
    assert perf_report.targets_table(bench.load(path)).loc[own, "measured"] == (
        "5.0x (40 vs 200 ms / image, 140 proposals / image); work ratio 7.5x (6.00 vs 0.800 GFLOP per image), "
        "FLOP rates 30 vs 20 GFLOP/s: 8x needs the fast one at 1.07 of warping's rate or more")
    bench.record_fast_accuracy(path, 20.0, 18.5, {"warping": 0.2, "fast": 0.04, "speed-up": 5.0,
                                                  "proposals / image": 140.0, "warping, no proposal": 0.0004,
                                                  "fast, no proposal": 0.026, "speed-up, lowest round": 4.5,
                                                  "speed-up, highest round": 5.25})
    assert perf_report.targets_table(bench.load(path)).loc[own, "measured"] == (
        "5.0x (40 vs 200 ms / image; rounds 4.5x to 5.2x, 140 proposals / image); fixed part per image (no "
        "proposal) fast 26.0 vs "
        "warping 0.4 ms, per proposal 0.100 vs 1.426 ms: 8x from 332 proposals per image, 12.6x at 2000")


def test_detector_seconds_is_the_fastest_pass_per_image_the_detectors_in_turn(monkeypatch):
    """The one timing harness: each pass scores every image once; the detectors' passes
    alternate (a, b, a, b, ...), so a slow spell reaches both; each one's fastest of `repeats`
    passes, divided by the images. A fake clock: a's passes take 3, 1, 2 s, b's 4, 6, 5 s."""
    ticks = iter([0.0, 3.0, 10.0, 14.0, 20.0, 21.0, 30.0, 36.0, 40.0, 42.0, 50.0, 55.0])
    monkeypatch.setattr(bench.time, "perf_counter", lambda: next(ticks))
    seen = []
    pixels = [np.zeros((4, 5, 3)), np.zeros((6, 7, 3))]
    boxes = {"a": [np.zeros((2, 4)), np.zeros((3, 4))], "b": [np.zeros((1, 4)), np.zeros((0, 4))]}
    secs = bench.detector_seconds({k: (lambda img, b, k=k: seen.append((k, img.shape, len(b)))) for k in "ab"},
                                  pixels, boxes, 3, torch.device("cpu"))
    assert secs == {"a": pytest.approx(0.5), "b": pytest.approx(2.0)}
    assert seen == [("a", (4, 5, 3), 2), ("a", (6, 7, 3), 3), ("b", (4, 5, 3), 1), ("b", (6, 7, 3), 0)] * 3


def test_detectors_extrapolate_along_the_line_through_no_region_timed_in_the_same_rounds(monkeypatch):
    """A detector with fewer boxes than `per_image` is timed on them and on none, in the same
    call as the others (so in the same rounds), and extrapolated linearly: 1 s + (3 - 1) s * 10 / 2."""
    calls = []

    def seconds(scorers, pixels, boxes, repeats, device):
        calls.append({k: [len(b) for b in boxes[k]] for k in scorers})
        return {"warp": 3.0, "warp" + bench.NO_REGION: 1.0, "fast": 0.5}

    monkeypatch.setattr(bench, "detector_seconds", seconds)
    monkeypatch.setattr(bench, "detector_work", lambda score, pixels, boxes: (score(), 0.5))
    pixels = [np.zeros((4, 5, 3))]
    got = bench._detectors({"warp": lambda: 2.5, "fast": lambda: 1.0}, pixels,
                           {"warp": [np.zeros((2, 4))], "fast": [np.zeros((10, 4))]}, 10, 3, torch.device("cpu"))
    assert calls == [{"warp": [2], "fast": [10], "warp" + bench.NO_REGION: [0]}]
    assert got["warp"] == (pytest.approx(11.0), pytest.approx(0.5 + 2.0 * 5),
                           "extrapolated linearly from 0 and 2 regions per image")
    assert got["fast"] == (0.5, 1.0, "measured")


def test_work_floor_scales_peak_bound_stages_by_their_share():
    """Pre-training at 0.5 of peak could take half its time, fine-tuning at 0.25 a quarter; the
    rest of the build (other stages, time outside stages) stays as recorded; a share above 1
    counts as 1; a stage without a bench row leaves the floor unknown."""
    build = {"seconds": 1000.0, "stages": {"pretrain": {"built": 1, "seconds": 400.0},
                                           "finetune": {"built": 2, "seconds": 200.0},
                                           "pool5-ft": {"built": 0, "seconds": 0.0},
                                           "svm": {"built": 3, "seconds": 100.0}}}
    run = {"rows": [{"key": "training.pretrain", "of_peak": 0.5}, {"key": "training.finetune", "of_peak": 0.25},
                    {"key": "features.embedded", "of_peak": 1.3}]}
    f = bench.work_floor(build, run)
    assert f["stages"]["pretrain"]["at_peak"] == 200.0 and f["stages"]["finetune"]["at_peak"] == 50.0
    assert "pool5" not in f["stages"] and f["other"] == 400.0 and f["floor"] == 650.0
    run["rows"][1]["of_peak"] = 1.5
    assert bench.work_floor(build, run)["floor"] == 800.0
    run["rows"] = run["rows"][:1]
    assert bench.work_floor(build, run)["floor"] is None


def test_work_floor_counts_each_entry_for_its_stage():
    """A build records entries by name: "pool5-ft" and "pool5-pre" are the pool5 stage's,
    at the features row's share; "finetune-spp" is a stage of its own (not fine-tuning's)."""
    build = {"seconds": 1000.0, "stages": {"pool5-ft": {"built": 2, "seconds": 100.0},
                                           "pool5-pre": {"built": 1, "seconds": 60.0},
                                           "finetune": {"built": 1, "seconds": 200.0},
                                           "finetune-spp": {"built": 1, "seconds": 40.0}}}
    run = {"rows": [{"key": "training.finetune", "of_peak": 0.5}, {"key": "features.embedded", "of_peak": 0.25}]}
    f = bench.work_floor(build, run)
    assert f["stages"]["pool5"] == {"seconds": 160.0, "at_peak": 40.0, "of_peak": 0.25}
    assert f["stages"]["finetune"]["seconds"] == 200.0 and set(f["stages"]) == {"pool5", "finetune"}
    assert f["other"] == 640.0 and f["floor"] == 640.0 + 40.0 + 100.0


def test_work_floor_row_holds_the_cold_build_at_peak_against_its_budget(tiny_run):
    """A cold build of 60 min, 40 of them pre-training: at the run's own pre-training share of
    peak the floor is 20 + 40 x share minutes, held against the 30-minute budget."""
    machine = tiny_run["machine"]
    share = rows_by_key(tiny_run)["training.pretrain"]["of_peak"]
    log = {"chapters": {}, "builds": [{"cache": "cold", "seconds": 3600.0, "machine": machine, "finished": "x",
                                       "entries_built": 1, "entries_reused": 0,
                                       "stages": {"pretrain": {"built": 1, "seconds": 2400.0}}}]}
    t = perf_report.targets_table({"format": 1, "runs": {"cpu reduced": tiny_run}}, log)
    row = t.loc["the cold build with training and features at the matrix-product peak (work floor)"]
    floor = 20 + 40 * min(share, 1.0)
    assert row["measured"].startswith(f"{floor:.1f} min of the build's 60.0")
    assert row["met"] == ("yes" if floor <= 30 else "no")
    assert "the other 20 min as recorded" in row["measured"]


def test_speedup_targets_give_the_work_ratio_that_bounds_them(tiny_run):
    """The fast detector's speed-up row says how much less arithmetic it does per image (the
    speed-up at equal FLOP rates), from the run's own counts."""
    t = perf_report.targets_table({"format": 1, "runs": {"cpu reduced": tiny_run}})
    rows = rows_by_key(tiny_run)
    warp, fast = rows["detector.embedded.warp"], rows["detector.embedded.fast"]
    row = t.loc[[i for i in t.index if i.startswith("fast detector vs warping") and "embedded size, " in i
                 and "one torch thread" not in i]].iloc[0]
    assert f"work ratio {warp['gflop'] / fast['gflop']:.1f}x" in row["measured"]
    assert f"{warp['gflop_per_s']:.0f} vs {fast['gflop_per_s']:.0f} GFLOP/s" in row["measured"]
