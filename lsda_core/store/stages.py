"""Every cached stage of the study in one table: its name, the functions it runs (the roots of
its code, `store.code`), and its version in the committed lock file `stages.lock`.

A stage's cache key is a digest of its name, its version, the parameters and upstream entries
it is given (its `config`), and the state of its code:
- the lock records, per stage, a version and the digest of its code; while the live code has
  that digest, the key holds only the version (so a comment, a docstring or a refactor recorded
  as "results unchanged" rebuilds nothing);
- when the live code differs from the lock, the key holds the live digest, so an edit that
  nobody recorded can never be served the old result;
- `lsda cache lock` records the live digests: `--bump STAGE` raises a stage's version (its
  results change: everything after it rebuilds), `--same` records that they do not.
`tests/store/test_stages.py` fails while the lock is behind the code, so every code change is
recorded one way or the other.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from lsda_core.core.errors import LsdaError
from lsda_core.store.code import CodeBase, shared
from lsda_core.store.files import atomic_write_text

LOCK = Path(__file__).with_name("stages.lock")
FORMAT = 1


@dataclass(frozen=True)
class Stage:
    """A cached stage: `roots` are the functions it runs ("module:name"); whatever they call
    inside lsda_core is found from them."""

    name: str
    roots: tuple[str, ...]
    what: str


_P = "lsda_core."
STAGES: dict[str, Stage] = {s.name: s for s in (
    Stage("world", (_P + "world:ensure_world",), "the embedded world, written as VOC / ILSVRC / ImageNet folders"),
    Stage("cls-images", (_P + "models.pretrain:load_classification_tensor",),
          "classification images decoded and resized into one uint8 tensor"),
    Stage("pretrain", (_P + "models.pretrain:pretrain",), "the pre-trained network (trained here, or ImageNet weights)"),
    Stage("retrain", (_P + "models.pretrain:retrain",), "a network re-trained on classification data (LSDA)"),
    Stage("finetune", (_P + "models.finetune:finetune",), "a network fine-tuned on warped proposals"),
    Stage("proposals", (_P + "detection.proposals:compute_proposals",), "selective-search boxes per image"),
    Stage("mask-proposals", (_P + "detection.mask_proposals:mask_proposals_entry",),
          "mask proposals (hierarchical grouping of graph-based segments) per image"),
    Stage("mask-ranker", (_P + "experiments.segmentation:ranker_entry",),
          "the regressor of a mask's object overlap that ranks the mask proposals (CPMC's ranking)"),
    Stage("mask-ranking", (_P + "experiments.segmentation:ranked",),
          "the mask proposals each image keeps, ranked by a regressor trained on the train split (CPMC's ranking)"),
    Stage("segpool5", (_P + "detection.o2p:region_pool5_entry",),
          "pool5 of every mask proposal of a split, full or fg (R-CNN's segmentation)"),
    Stage("segment", (_P + "experiments.segmentation:row_result",),
          "one row of R-CNN's Table 3: SVRs trained, threshold chosen, the eval split labelled and scored"),
    Stage("pool5", (_P + "detection.features:extract_pool5",), "pool5 of every region of a split, per network"),
    Stage("grayscale", (_P + "detection.pipeline:grayscale",), "a split's images in grayscale"),
    Stage("hog", (_P + "detection.hog:extract_hog",), "HOG of every warped region of a split"),
    Stage("svm", (_P + "detection.pipeline:train_svm_detector", _P + "detection.pipeline:cnn_features",
                  _P + "detection.pipeline:hog_features"), "per-class linear SVMs on one feature set"),
    Stage("detections", (_P + "detection.pipeline:cached_detections", _P + "detection.pipeline:svm_detector",
                         _P + "detection.pipeline:cnn_features", _P + "detection.pipeline:hog_features",
                         _P + "detection.pipeline:bbox_refiner", _P + "detection.pipeline:softmax_detector",
                         _P + "experiments.lsda:detector",
                         _P + "experiments.lsda:proposal_features"),
          "a detector's scored and NMS-ed boxes on the test split"),
    Stage("spp", (_P + "detection.spp:extract_spp",), "spatial-pyramid-pooled features of every region (fast detector)"),
    Stage("finetune-spp", (_P + "detection.spp:finetune_head",), "the fast detector's fc layers fine-tuned on SPP features"),
    Stage("bootstrap", (_P + "evaluation.stats:bootstrap_map",),
          "one detector's mAP on the bootstrap resamples of the test images"),
    Stage("units", (_P + "evaluation.units:cached_top_regions",), "the test regions that excite chosen pool5 units most"),
    Stage("perf", (_P + "experiments.performance:measure",),
          "one reduced `lsda bench` run of this code and parameters on this machine (the performance chapter)"),
    Stage("evaluation", (_P + "experiments.premises:evaluated",),
          "a classification network's top-1 / top-5 on a classification split"),
)}
# models derived in memory from a cached model, with no entry of their own: their keys
# (`identity.derived_key`) carry the derivation's locked version and code state just as a stage's
# do, so a refactor recorded `--same` rebuilds nothing and an unrecorded edit is never served
DERIVED: dict[str, Stage] = {s.name: s for s in (
    Stage("derive-transfer", (_P + "experiments.lsda:transfer",),
          "LSDA's category transfer: a detector's output layer for categories without boxes"),
    Stage("derive-order", (_P + "experiments.lsda:_reorder_head",),
          "a classifier's output layer reordered to a benchmark's categories (LSDA, large scale)"),
    Stage("derive-spp", (_P + "detection.spp:SppHead",), "the fast detector's head initialised from a network's fc layers"),
)}
# everything the lock records
LOCKED: dict[str, Stage] = {**STAGES, **DERIVED}
# features and decoded images: read only while the results made from them are built, so a full
# `lsda book` removes them when it finishes (`--keep-features` keeps them)
SCRATCH = ("pool5", "segpool5", "hog", "spp", "cls-images")


def stage_of(name: str) -> Stage:
    """The stage an entry name belongs to: the name itself, or its part before the first
    '-' ("pool5-ft" is a `pool5` entry)."""
    if name in STAGES:
        return STAGES[name]
    base = name.split("-", 1)[0]
    if base in STAGES:
        return STAGES[base]
    raise LsdaError(f"{name!r} is not a stage of the study (stages: {', '.join(STAGES)})")


@lru_cache(maxsize=8)
def read_lock(path: Path = LOCK) -> dict[str, dict[str, Any]]:
    """The lock's stages: {name: {"version": int, "code": digest}} (empty when there is no lock)."""
    if not path.is_file():
        return {}
    try:
        doc = json.loads(path.read_text())
        return {k: {"version": int(v["version"]), "code": str(v["code"])} for k, v in doc["stages"].items()}
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as e:
        raise LsdaError(f"{path}: not a stage lock file ({e}); restore it from git") from None


@lru_cache(maxsize=None)
def live_digest(name: str) -> str:
    """Digest of the code a stage (or derivation) runs now (computed once per process)."""
    return shared().digest(LOCKED[name].roots)


def code_state(name: str) -> tuple[int, str]:
    """(version, code token) of a stage or derivation for its cache key: token "locked" while its code is
    the locked one, else the live digest."""
    lock = read_lock().get(name)
    live = live_digest(name)
    if lock is None:
        return 0, live
    return lock["version"], "locked" if lock["code"] == live else live


def lock_status(codebase: CodeBase | None = None, lock: dict[str, dict[str, Any]] | None = None) -> dict[str, dict]:
    """Per stage and derivation: locked version and digest, live digest, and whether they agree."""
    cb = codebase or shared()
    lock = read_lock() if lock is None else lock
    out = {}
    for name, st in LOCKED.items():
        live = cb.digest(st.roots)
        entry = lock.get(name)
        out[name] = {"version": entry["version"] if entry else None, "locked": entry["code"] if entry else None,
                     "live": live, "current": bool(entry) and entry["code"] == live}
    return out


def update_lock(bump: list[str], same: bool, path: Path = LOCK) -> list[str]:
    """Record the live code of every stage and derivation: those in `bump` get version + 1; a changed stage
    not in `bump` is recorded as unchanged in results only when `same` is given. Returns
    one line per stage that changed."""
    for b in bump:
        if b not in LOCKED:
            raise LsdaError(f"--bump {b}: name a stage or derivation ({', '.join(LOCKED)})")
    lock = read_lock(path)
    status = lock_status(lock=lock)
    changed = [n for n, s in status.items() if not s["current"]]
    undecided = [n for n in changed if n not in bump and n in lock]
    if undecided and not same:
        raise LsdaError(f"code changed for {', '.join(undecided)}: say --bump STAGE for each whose results change, "
                        "or --same if none do")
    lines, new = [], {}
    for name, s in status.items():
        version = (s["version"] or 0) + (1 if name in bump or name not in lock else 0)
        new[name] = {"version": version, "code": s["live"]}
        if name in changed or name in bump:
            how = "new stage" if name not in lock else "version bumped: rebuilds" if name in bump else \
                "results unchanged: no rebuild"
            lines.append(f"{name}: v{version} code {s['live']} ({how})")
    atomic_write_text(path, json.dumps({"format": FORMAT, "stages": new}, indent=1, sort_keys=True) + "\n")
    read_lock.cache_clear()
    return lines
