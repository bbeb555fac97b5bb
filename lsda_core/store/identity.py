"""What identifies an input in a cache key: content digests, never paths, so a cache or a dataset
moved to another folder stays warm and a changed file is never mistaken for the old one.

- an array: its bytes, shape and dtype (`array_digest`);
- an image file: the cache entry that wrote it ("world-voc/<key>") when it lives in the cache, else
  its name and size (`image_identity`; a real dataset's files are not read whole);
- a dataset split: name, split, classes, every image's identity and annotations (`dataset_identity`);
- a file such as downloaded weights: its bytes (`file_digest`);
- a model: the cache entry that made it, with the code of any step that derived it from
  another, under its locked version (`model_key`, `derived_key`).
"""
from __future__ import annotations

import hashlib
import json
import os
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import torch

from lsda_core.store.stages import code_state

META = "meta.json"


def digest(obj: Any) -> str:
    """Digest of a JSON-able object (keys sorted)."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def array_digest(arrays: Iterable[np.ndarray | torch.Tensor]) -> str:
    """Hash of the bytes, shapes and dtypes of a sequence of arrays."""
    h = hashlib.sha256()
    for a in arrays:
        a = a.detach().cpu().numpy() if isinstance(a, torch.Tensor) else np.asarray(a)
        a = np.ascontiguousarray(a)
        h.update(f"{a.dtype}{a.shape}".encode())
        h.update(a.tobytes())
    return h.hexdigest()[:16]


@lru_cache(maxsize=4096)
def folder_source(folder: Path) -> str | None:
    """'<stage>/<key>/<path inside the entry>' when `folder` lies inside a cache entry (a folder
    with meta.json above it), else None."""
    for d in (folder, *folder.parents):
        meta = d / META
        if meta.is_file():
            try:
                info = json.loads(meta.read_text())
            except (OSError, json.JSONDecodeError):
                return None
            return f"{info.get('stage')}/{info.get('key')}/{folder.relative_to(d).as_posix()}"
    return None


@lru_cache(maxsize=4096)
def _source_of(folder: str) -> str | None:
    """`folder_source` of an absolute folder, resolved once per process (a classification
    split's 24,000 images lie in a few hundred folders; resolving each image's was most of a
    warm chapter's key computing)."""
    return folder_source(Path(folder).resolve())


def image_identity(path: str | Path) -> list[Any]:
    """One image file in a cache key: its producing cache entry and name, or its name and size."""
    path = os.fspath(path)  # string functions: pathlib's parsing was most of a warm chapter's key computing
    name, src = os.path.basename(path), _source_of(os.path.dirname(os.path.abspath(path)))
    if src is not None:
        return [src, name]
    return [name, os.path.getsize(path) if os.path.isfile(path) else None]


def images_identity(images: Iterable[Any]) -> str:
    """Digest of images alone (ids and files; a dataset's `.images`): what proposals or HOG depend on."""
    return digest([[im.image_id, *image_identity(im.path)] for im in images])


def dataset_identity(ds: Any) -> dict[str, Any] | None:
    """What identifies a dataset split (classification or detection) in a cache key: name,
    split, size, and a digest of its files and labels or annotations. No paths."""
    if ds is None:
        return None
    if hasattr(ds, "paths"):  # a ClassificationDataset
        listing = [[image_identity(p) for p in ds.paths], np.asarray(ds.labels).tolist(), list(ds.classes)]
    else:
        listing = [list(ds.classes), [[im.image_id, *image_identity(im.path), im.width, im.height,
                                       [[o.cls, np.asarray(o.box).tolist(), bool(o.difficult)] for o in im.objects]]
                                      for im in ds.images]]
    return {"name": ds.name, "split": ds.split, "n": len(ds), "content": digest(listing)}


@lru_cache(maxsize=64)
def _file_digest(path: Path, size: int, mtime: float) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()[:16]


def file_digest(path: str | Path) -> str | None:
    """Digest of a file's bytes (None when there is no such file); read once per process."""
    path = Path(path).resolve()
    if not path.is_file():
        return None
    st = path.stat()
    return _file_digest(path, st.st_size, st.st_mtime)


def model_key(model: Any) -> str:
    """The cache key of the stage that produced `model`, or a digest of its weights."""
    key = getattr(model, "cache_key", None)
    return key if key else "weights-" + array_digest(v for _, v in sorted(model.state_dict().items()))


def derived_key(base: str, label: str, derivation: str) -> str:
    """The key of a model derived from the model `base` by `derivation` (a name in
    `stages.DERIVED`): the label (e.g. its k) and the derivation's version and code state from
    the lock, so a changed derivation never reuses what the old one produced and a refactor
    recorded as `--same` keeps every key."""
    version, code = code_state(derivation)
    return f"{base}+{label}@v{version}-{code}"
