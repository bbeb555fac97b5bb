"""Region proposals with masks, for R-CNN's segmentation experiment (section 5).

R-CNN took about 150 CPMC regions per image from O2P. CPMC is not available here; its
stand-in is the hierarchical grouping that selective search itself is built on (Uijlings et
al.): graph-based segments (Felzenszwalb and Huttenlocher, from scikit-image) merged greedily,
most similar neighbours first (colour-histogram intersection, small regions first, regions
that fill their joint box), every region of the hierarchy a proposal, over several
strategies (segmentation scale x colour space). Where it departs from CPMC: no figure-ground
energy; regions are ranked as selective search ranks its boxes (a region's level in its
hierarchy times a seeded random number), the first `max_masks` kept, or that whole set (the
pool) is ranked again by CPMC's kind of learned regressor (`mask_ranking`).

A mask is stored compactly: the *atoms* of an image (the pixels that every strategy's base
segmentation puts together) and, per proposal, which atoms it holds.
"""
from __future__ import annotations

import heapq
import multiprocessing as mp
import zlib
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from lsda_core.data.images import load_image
from lsda_core.store.cache import Cache
from lsda_core.store.files import atomic_save_npz
from lsda_core.store.identity import images_identity
from lsda_core.store.runtime import progress as progress_bar
from lsda_core.core.structures import DetectionDataset

BINS = 25  # colour histogram bins per channel, as selective search


@dataclass(frozen=True)
class MaskProposalConfig:
    """The grouping strategies (every scale in every colour space) and how many masks to keep."""

    scales: tuple[int, ...] = (50, 100, 200)  # Felzenszwalb's k (and smallest segment, px)
    colour_spaces: tuple[str, ...] = ("rgb", "hsv")
    sigma: float = 0.8  # Gaussian smoothing before the graph segmentation
    min_size: float = 1.0  # smallest segment, as a multiple of k (selective search: k px, on ~500 px images)
    max_masks: int = 150  # R-CNN / O2P: about 150 CPMC regions per image


@dataclass
class MaskProposals:
    """One image's proposals: `atoms` (H, W) int32, `members` (P, A) bool (proposal p holds
    atom a), ranked best first."""

    atoms: np.ndarray
    members: np.ndarray

    def masks(self, index: Sequence[int] | slice = slice(None)) -> np.ndarray:
        """(P, H, W) bool masks of the chosen proposals."""
        return self.members[index][:, self.atoms]

    @property
    def boxes(self) -> np.ndarray:
        """(P, 4) each mask's tight box, from its atoms' boxes: per side, the first member atom
        with the atoms ordered by that side (a mask without atoms gets inf, inf, -inf, -inf)."""
        atom_box = _segment_boxes(self.atoms)
        out = np.empty((len(self.members), 4))
        for k, sign in ((0, 1), (1, 1), (2, -1), (3, -1)):  # x1, y1 smallest; x2, y2 largest
            order = np.argsort(sign * atom_box[:, k], kind="stable")
            out[:, k] = atom_box[order[self.members[:, order].argmax(axis=1)], k]
        out[~self.members.any(axis=1)] = (np.inf, np.inf, -np.inf, -np.inf)
        return out


def _segment_boxes(labels: np.ndarray) -> np.ndarray:
    """(n, 4) the box [x1, y1, x2, y2] (0-based edges) of each segment 0..n-1 of a label map."""
    from scipy.ndimage import find_objects

    return np.array([[sx.start, sy.start, sx.stop, sy.stop] for sy, sx in find_objects(labels + 1)], np.float64)


def _unique_rows(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(index of each distinct row's first occurrence, each row's distinct-row number) of a 2-D
    integer array; rows are compared as bytes, which sort fast."""
    packed = np.ascontiguousarray(rows)
    keys = packed.view(np.dtype((np.void, packed.shape[1] * packed.itemsize))).ravel()
    _, first, inverse = np.unique(keys, return_index=True, return_inverse=True)
    return first, inverse


def _colour(image: np.ndarray, space: str) -> np.ndarray:
    if space == "rgb":
        return image
    if space == "hsv":
        from skimage.color import rgb2hsv
        return (rgb2hsv(image) * 255).astype(np.uint8)
    if space == "lab":  # L in 0..100, a and b in about -128..127, each mapped onto 0..255
        from skimage.color import rgb2lab
        lab = rgb2lab(image)
        return np.clip(np.stack([lab[..., 0] * 2.55, lab[..., 1] + 128, lab[..., 2] + 128], -1), 0, 255).astype(np.uint8)
    raise ValueError(f"unknown colour space {space!r} (rgb, hsv, lab)")


def adjacency(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(E, 2) pairs i < j of segments that touch (4-neighbourhood), and (E,) the length of
    each pair's shared boundary in pixel edges."""
    pairs = np.concatenate([np.stack([labels[:, :-1].ravel(), labels[:, 1:].ravel()], 1),
                            np.stack([labels[:-1].ravel(), labels[1:].ravel()], 1)]).astype(np.int64)
    pairs = pairs[pairs[:, 0] != pairs[:, 1]]
    return np.unique(np.sort(pairs, axis=1), axis=0, return_counts=True)


def hierarchy(image: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Greedy grouping of the segments of `labels` (0..n-1), most similar neighbours first.
    Regions are numbered as selective search numbers them: the n segments, then one per merge;
    returns the merges, (R - n, 2) the two regions each one joins, and (R,) each region's level
    (1 for the last merge, larger further down; the segments deepest)."""
    n = int(labels.max()) + 1
    size = np.bincount(labels.ravel(), minlength=n).astype(np.float64)
    q = np.minimum(image.astype(np.int64) * BINS // 256, BINS - 1)
    idx = labels.ravel()[:, None] * (3 * BINS) + np.arange(3)[None, :] * BINS + q.reshape(-1, 3)
    hist = np.bincount(idx.ravel(), minlength=n * 3 * BINS).reshape(n, 3 * BINS).astype(np.float64)
    hist /= np.maximum(hist.sum(1, keepdims=True), 1)
    area = float(labels.size)
    sizes, hists, boxes = list(size), list(hist), list(_segment_boxes(labels))
    merges: list[tuple[int, int]] = []
    neighbours: dict[int, set[int]] = {i: set() for i in range(n)}
    for i, j in adjacency(labels)[0]:
        neighbours[int(i)].add(int(j))
        neighbours[int(j)].add(int(i))

    def sim(i: int, j: int) -> float:
        b = np.concatenate([np.minimum(boxes[i][:2], boxes[j][:2]), np.maximum(boxes[i][2:], boxes[j][2:])])
        joint = (b[2] - b[0]) * (b[3] - b[1])
        return (float(np.minimum(hists[i], hists[j]).sum()) / 3 + 1 - (sizes[i] + sizes[j]) / area
                + 1 - (joint - sizes[i] - sizes[j]) / area)

    heap = [(-sim(i, j), i, j) for i in neighbours for j in neighbours[i] if i < j]
    heapq.heapify(heap)
    alive = set(range(n))
    while heap:
        _, i, j = heapq.heappop(heap)
        if i not in alive or j not in alive:
            continue
        k = len(sizes)
        sizes.append(sizes[i] + sizes[j])
        hists.append((hists[i] * sizes[i] + hists[j] * sizes[j]) / sizes[k])
        boxes.append(np.concatenate([np.minimum(boxes[i][:2], boxes[j][:2]), np.maximum(boxes[i][2:], boxes[j][2:])]))
        merges.append((i, j))
        near = (neighbours.pop(i) | neighbours.pop(j)) - {i, j}
        alive -= {i, j}
        for m in near:
            neighbours[m] -= {i, j}
            neighbours[m].add(k)
            heapq.heappush(heap, (-sim(m, k), m, k))
        neighbours[k] = near
        alive.add(k)
    r = n + len(merges)
    level = np.concatenate([np.full(n, r - n + 1), np.arange(r - n, 0, -1)]).astype(np.float64)
    return np.array(merges, dtype=np.int64).reshape(-1, 2), level


def segments_of(n: int, merges: np.ndarray, region: int) -> list[int]:
    """The segments (0..n-1) region `region` of a hierarchy (`hierarchy`'s numbering) is made of."""
    out, todo = [], [region]
    while todo:
        r = todo.pop()
        if r < n:
            out.append(r)
        else:
            todo.extend(merges[r - n])
    return out


def propose(image: np.ndarray, cfg: MaskProposalConfig = MaskProposalConfig(), seed: int = 0) -> MaskProposals:
    """The ranked mask proposals of one RGB image (module docstring). Regions are made into
    masks in rank order, repeats skipped, until `max_masks`: memory stays that many masks."""
    from skimage.segmentation import felzenszwalb

    rng = np.random.default_rng(seed)
    strategies = []
    for space in cfg.colour_spaces:
        col = _colour(image, space)
        for k in cfg.scales:
            labels = felzenszwalb(col, scale=k, sigma=cfg.sigma, min_size=max(1, round(k * cfg.min_size))).astype(np.int64)
            strategies.append((labels, *hierarchy(col, labels)))
    # atoms: the pixels every base segmentation puts together
    stacked = np.stack([s[0].ravel() for s in strategies], 1).astype(np.int32)
    first, atoms = _unique_rows(stacked)
    n_atoms = len(first)
    atoms_of = []  # per strategy, per segment: its atoms
    for s, (labels, _, _) in enumerate(strategies):
        seg = stacked[first, s]
        order = np.argsort(seg, kind="stable")
        atoms_of.append(np.split(order, np.cumsum(np.bincount(seg, minlength=int(labels.max()) + 1))[:-1]))
    cand = [(rank, s, r) for s, (_, _, level) in enumerate(strategies)
            for r, rank in enumerate(level * rng.random(len(level)))]
    cand.sort(key=lambda c: c[0])
    kept, seen = [], set()
    for _, s, r in cand:
        labels, merges, _ = strategies[s]
        mask = np.zeros(n_atoms, bool)
        mask[np.concatenate([atoms_of[s][g] for g in segments_of(int(labels.max()) + 1, merges, r)])] = True
        key = np.packbits(mask).tobytes()
        if key not in seen:
            seen.add(key)
            kept.append(mask)
            if len(kept) == cfg.max_masks:
                break
    return MaskProposals(atoms.reshape(image.shape[:2]).astype(np.int32), np.stack(kept))


def mask_iou(props: MaskProposals, objects: np.ndarray, ids: Sequence[int]) -> np.ndarray:
    """(P, len(ids)) the IoU of each proposal's mask with each object `ids` of an instance map
    (`objects`: 0 background, i the i-th object, 255 void: counted in neither mask), from
    per-atom pixel counts."""
    a = int(props.atoms.max()) + 1
    atom_px = np.bincount(props.atoms[objects != 255], minlength=a).astype(np.float64)
    per_atom = np.zeros((a, len(ids)))
    for g, i in enumerate(ids):  # few objects per image
        per_atom[:, g] = np.bincount(props.atoms[objects == i], minlength=a)
    m = props.members.astype(np.float64)
    inter = m @ per_atom
    return inter / np.maximum((m @ atom_px)[:, None] + per_atom.sum(0)[None, :] - inter, 1)


def best_overlap(props: MaskProposals, objects: np.ndarray) -> np.ndarray:
    """Per object of an instance map (`mask_iou`), the best IoU of any proposal's mask with it,
    as O2P reports."""
    ids = [i for i in np.unique(objects) if i not in (0, 255)]
    return mask_iou(props, objects, ids).max(axis=0) if ids else np.zeros(0)


def _one(args: tuple[str, str, MaskProposalConfig]) -> MaskProposals:
    image_id, path, cfg = args
    return propose(load_image(path), cfg, seed=zlib.crc32(image_id.encode()))


def compute_mask_proposals(dataset: DetectionDataset, cache: Cache, cfg: MaskProposalConfig = MaskProposalConfig(),
                           workers: int = 1, progress: bool = True) -> dict[str, MaskProposals]:
    """Mask proposals for every image of `dataset` (`mask_proposals_entry`), read back."""
    return load_mask_proposals(mask_proposals_entry(dataset, cache, cfg, workers, progress), dataset)


def load_mask_proposals(folder: Path, dataset: DetectionDataset) -> dict[str, MaskProposals]:
    """The mask proposals of every image of `dataset` from a `mask_proposals_entry` folder."""
    out = {}
    for im in dataset.images:
        z = np.load(Path(folder) / f"{im.image_id}.npz")
        out[im.image_id] = MaskProposals(z["atoms"].astype(np.int32),
                                         np.unpackbits(z["members"], axis=1, count=int(z["n_atoms"])).astype(bool))
    return out


def mask_proposals_entry(dataset: DetectionDataset, cache: Cache, cfg: MaskProposalConfig = MaskProposalConfig(),
                         workers: int = 1, progress: bool = True) -> Path:
    """The cache entry (stage `mask-proposals`) of every image's mask proposals, computed in
    `workers` processes when absent; one deflated .npz per image (atoms as int16, bit-packed
    members: about 25 KiB for 1000 masks, a tenth of the raw arrays), written atomically, so a
    rerun resumes."""
    images = {im.image_id: str(im.path) for im in dataset.images}
    config = {"images": images_identity(dataset.images), **asdict(cfg)}

    def save(folder: Path, image_id: str, p: MaskProposals) -> None:
        atoms = p.atoms.astype(np.int16) if p.members.shape[1] <= np.iinfo(np.int16).max else p.atoms
        atomic_save_npz(folder / f"{image_id}.npz", compressed=True, atoms=atoms,
                        members=np.packbits(p.members, axis=1), n_atoms=np.array(p.members.shape[1]))

    def build(folder: Path) -> None:
        todo = [i for i in sorted(images) if not (folder / f"{i}.npz").is_file()]
        jobs = [(i, images[i], cfg) for i in todo]
        if workers > 1 and len(jobs) > 1:
            with ProcessPoolExecutor(workers, mp_context=mp.get_context("fork")) as ex:
                for i, p in progress_bar(zip(todo, ex.map(_one, jobs, chunksize=4)), "mask proposals", progress,
                                         total=len(todo)):
                    save(folder, i, p)
        else:
            for i, job in progress_bar(zip(todo, jobs), "mask proposals", progress, total=len(todo)):
                save(folder, i, _one(job))

    return cache.entry("mask-proposals", config, build, resumable=True)
