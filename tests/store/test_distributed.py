"""Runs beyond one process: 2 CPU processes over gloo (as torchrun starts them) split
proposals and pool5 features by image into the shared cache, fine-tune as DDP, and leave the
same cache entries as one process does. One spawn serves the function-level tests; one
torchrun launch tests `lsda prepare`."""
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp
from PIL import Image

from lsda_core import cli
from lsda_core.store import distributed as D
from lsda_core.detection import features as Fe
from lsda_core.detection import proposals as PR
from lsda_core.models import finetune as T
from lsda_core.store.cache import META, Cache
from lsda_core.data.voc import write_imagesets, write_voc_xml
from lsda_core.core.errors import LsdaError
from lsda_core.models.nets import CaffeNet
from lsda_core.core.structures import ImageAnn
from test_proposals import scene
from synthetic import make_detection, params

ROOT = Path(__file__).resolve().parents[2]
WORLD = 2
# no dropout and no batch norm: the split batch then gives one process's run up to float sums;
# an odd batch (8 + 23 windows) splits unevenly (16 + 15), which the loss scaling must handle
P = params(**{"net.dropout": 0.0, "net.batch_norm": False, "net.precision": "float32", "finetune.iterations": 8, "finetune.bg_per_batch": 23})


pytestmark = pytest.mark.usefixtures("one_thread")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _model() -> CaffeNet:
    torch.manual_seed(0)
    model = CaffeNet(P.net, 4).eval()
    model.set_normalization([120, 125, 130], [40, 45, 50])
    return model


def _rank_main(rank: int, port: int, out: Path, data: dict) -> None:
    """One of the spawned processes: join the group as torchrun would, run every stage."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                      WORLD_SIZE=str(WORLD), LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    assert D.init("cpu") and D.world() == WORLD and D.rank() == rank
    try:
        _stages(out, data)
    finally:
        D.cleanup()


def _stages(out: Path, data: dict) -> None:
    rank, cache = D.rank(), Cache(out / "cache")
    done: dict[str, list] = {"proposals": [], "pool5": [], "main": []}
    D.check_shared(cache.root)
    try:
        D.check_shared(out / f"only-rank-{rank}")
        done["unshared"] = "passed"
    except LsdaError as e:
        done["unshared"] = str(e)

    # a stage built by rank 0 alone, with a nested stage inside it
    def solo(work: Path) -> None:
        inner = cache.entry("hog", {"k": 1}, lambda w: (w / "x").write_text("1"))
        done["main"].append(D.world())
        (work / "by").write_text(f"{rank} {inner.name}")
    done["main_entry"] = (cache.entry("svm", {"k": 1}, solo) / "by").read_text()

    read = PR.load_image

    def noted(path):  # runs in a forked process (`compute_proposals`): it notes the image in a file
        with open(out / f"proposals-{rank}.txt", "a") as f:
            f.write(Path(path).stem + "\n")
        return read(path)
    PR.load_image = noted
    props = PR.compute_proposals(data["scene"], cache, workers=1, progress=False)
    PR.load_image = read
    done["proposals"] = (out / f"proposals-{rank}.txt").read_text().split()
    np.savez(out / f"props-{rank}.npz", **props)

    load = Fe.load_image

    def load_image(path):
        done["pool5"].append(Path(path).name)
        return load(path)
    Fe.load_image = load_image
    regions, _ = Fe.regions_with_gt(data["det"], data["det_props"])
    done["pool5_folder"] = str(Fe.extract_pool5(_model(), data["det"], regions, P, cache, "t"))

    run = T._finetune

    def spy(*args, **kwargs):
        tuned, history = run(*args, **kwargs)
        torch.save(tuned.state_dict(), out / f"tuned-{rank}.pt")
        return tuned, history
    T._finetune = spy
    tuned, history = T.finetune(P, _model(), data["det"], data["det_props"], cache, data["det"].classes)
    torch.save(tuned.state_dict(), out / f"cached-{rank}.pt")
    done["finetune_key"], done["processes"] = history["key"], history["processes"]
    torch.save(done, out / f"done-{rank}.pt")


@pytest.fixture(scope="module")
def spawned(tmp_path_factory):
    """Both ranks' records, and the datasets they ran on."""
    tmp = tmp_path_factory.mktemp("ddp")
    (tmp / "scene").mkdir()
    det, det_props = make_detection(tmp / "det", 5, 7)
    data = {"scene": scene(tmp / "scene", 5), "det": det, "det_props": det_props}
    out = tmp / "out"
    out.mkdir()
    mp.spawn(_rank_main, args=(_free_port(), out, data), nprocs=WORLD)
    done = [torch.load(out / f"done-{r}.pt", weights_only=False) for r in range(WORLD)]
    return out, done, data


def test_helpers_are_identities_in_one_process(tmp_path):
    assert not D.active() and D.world() == 1 and D.rank() == 0 and D.is_main()
    assert D.shard([3, 1, 2]) == [3, 1, 2] and D.broadcast("x") == "x" and D.gather(5) == [5]
    D.barrier()
    D.check_shared(tmp_path)
    assert not D.init("cpu")  # not launched: no process group
    with pytest.raises(ValueError, match="ranks must be main, shard or all"):
        Cache(tmp_path).entry("svm", {}, lambda work: None, ranks="every")


def test_stages_built_by_rank_0_alone(spawned):
    _, done, _ = spawned
    assert done[0]["main"] == [1] and done[1]["main"] == []  # rank 0 built it, as a single process
    assert done[0]["main_entry"] == done[1]["main_entry"] and done[0]["main_entry"].startswith("0 ")


def test_a_cache_not_shared_by_every_rank_is_an_error(spawned):
    _, done, _ = spawned
    for d in done:
        assert "1 of 2 processes do not see" in d["unshared"] and "shared by every node" in d["unshared"]


def test_sharded_proposals_equal_one_process(spawned, tmp_path):
    out, done, data = spawned
    ids = sorted(im.image_id for im in data["scene"].images)
    assert [d["proposals"] for d in done] == [ids[0::2], ids[1::2]]  # each rank its share, once
    one = PR.compute_proposals(data["scene"], Cache(tmp_path), workers=1, progress=False)
    for r in range(WORLD):
        got = np.load(out / f"props-{r}.npz")
        assert sorted(got.files) == ids
        for i in ids:
            assert got[i].dtype == one[i].dtype and np.array_equal(got[i], one[i])  # bitwise
    key = next((tmp_path / "proposals").glob(f"*/{META}")).parent.name
    assert (out / "cache" / "proposals" / key / META).is_file()  # the same key: the book finds it


def test_sharded_pool5_equals_one_process(spawned, tmp_path):
    out, done, data = spawned
    names = sorted(Path(im.path).name for im in data["det"].images)
    assert sorted(done[0]["pool5"] + done[1]["pool5"]) == names and not set(done[0]["pool5"]) & set(done[1]["pool5"])
    regions, _ = Fe.regions_with_gt(data["det"], data["det_props"])
    one = Fe.extract_pool5(_model(), data["det"], regions, P, Cache(tmp_path), "t")
    folder = Path(done[0]["pool5_folder"])
    assert done[1]["pool5_folder"] == str(folder) and folder.name == one.name
    for im in data["det"].images:
        assert np.array_equal(Fe.load_regions(folder, im.image_id), Fe.load_regions(one, im.image_id))
        np.testing.assert_allclose(Fe.load_pool5(folder, im.image_id).astype(np.float32),
                                   Fe.load_pool5(one, im.image_id).astype(np.float32), rtol=1e-2, atol=1e-3)


def test_ddp_finetuning_all_reduces_and_matches_one_process(spawned, tmp_path):
    out, done, data = spawned
    tuned = [torch.load(out / f"tuned-{r}.pt", weights_only=True) for r in range(WORLD)]
    cached = [torch.load(out / f"cached-{r}.pt", weights_only=True) for r in range(WORLD)]
    start = _model().state_dict()
    for k, v in tuned[0].items():
        assert torch.isfinite(v).all(), k
        assert torch.equal(v, tuned[1][k]), k  # each rank saw half the batch: gradients were all-reduced
        assert torch.equal(v, cached[0][k]) and torch.equal(v, cached[1][k]), k  # every rank loads rank 0's
    assert not torch.equal(tuned[0]["conv1.weight"], start["conv1.weight"])  # it learned
    assert done[0]["processes"] == done[1]["processes"] == WORLD
    assert done[0]["finetune_key"] == done[1]["finetune_key"]
    one, hist = T.finetune(P, _model(), data["det"], data["det_props"], Cache(tmp_path), data["det"].classes)
    assert hist["key"] == done[0]["finetune_key"] and hist["processes"] == 1  # same key as one process
    for k, v in one.state_dict().items():  # the split batch is R-CNN's batch
        torch.testing.assert_close(tuned[0][k], v, rtol=1e-3, atol=1e-4, msg=k)


# ------------------------------------------------------------------------- the command

def _tiny_voc(root: Path) -> None:
    """A VOC-layout folder: trainval of 3 and test of 2 flat-rectangle scenes."""
    (root / "JPEGImages").mkdir(parents=True)
    (root / "src").mkdir()
    anns = scene(root / "src", 5).images
    for split, part in (("trainval", anns[:3]), ("test", anns[3:])):
        ids = []
        for a in part:
            image_id = f"{int(a.image_id):06d}"
            path = root / "JPEGImages" / f"{image_id}.jpg"
            Image.open(a.path).convert("RGB").save(path, quality=95)
            write_voc_xml(root / "Annotations" / f"{image_id}.xml", ImageAnn(image_id, path, a.width, a.height,
                                                                             a.objects))
            ids.append(image_id)
        write_imagesets(root, split, ids, ["box"])


def _prepare_args(voc: Path, artifacts: Path) -> list[str]:
    return ["prepare", "--params", "params/paper_voc2007.yaml", "--stage", "proposals",
            "-p", "data.voc_root", str(voc), "-p", "runtime.artifacts", str(artifacts),
            "-p", "runtime.device", "cpu", "-p", "runtime.workers", "1", "-p", "runtime.progress", "false"]


def test_prepare_under_torchrun_fills_the_cache_one_process_fills(tmp_path, monkeypatch):
    _tiny_voc(tmp_path / "voc")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    res = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                          "-m", "lsda_core.cli", *_prepare_args(tmp_path / "voc", tmp_path / "ddp")],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert res.stdout.count("prepared rcnn up to proposals") == 1 and "with 2 process(es)" in res.stdout  # rank 0 only
    monkeypatch.chdir(ROOT)
    assert cli.main(_prepare_args(tmp_path / "voc", tmp_path / "one")) == 0
    files = sorted(p.relative_to(tmp_path / "one") for p in (tmp_path / "one" / "proposals").rglob("*.npy"))
    assert len(files) == 5  # two entries (trainval, test), one file per image
    assert files == sorted(p.relative_to(tmp_path / "ddp") for p in (tmp_path / "ddp" / "proposals").rglob("*.npy"))
    for f in files:
        assert (tmp_path / "ddp" / f).read_bytes() == (tmp_path / "one" / f).read_bytes()


@pytest.mark.parametrize("command, expect", [
    (["prepare", "--params", "params/smoke.yaml"], "MASTER_ADDR, MASTER_PORT not set: launch with torchrun"),
    (["book", "--params", "params/smoke.yaml"], "only `lsda prepare` runs under torchrun"),
])
def test_clear_errors_outside_torchrun(command, expect):
    env = {**os.environ, "WORLD_SIZE": "2", "RANK": "0", "LOCAL_RANK": "0"}
    env.pop("MASTER_ADDR", None)
    env.pop("MASTER_PORT", None)
    res = subprocess.run([sys.executable, "-m", "lsda_core.cli", *command], cwd=ROOT, env=env,
                         capture_output=True, text=True)
    assert res.returncode == 2 and "Traceback" not in res.stderr, res.stderr
    assert res.stderr.startswith("lsda: error: ") and expect in res.stderr, res.stderr
