"""Mask proposals: the grouping hierarchy by hand, finding flat objects, best overlap by hand,
compact caching that round-trips."""
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lsda_core.detection import mask_proposals as M
from lsda_core.store.cache import Cache
from synthetic import make_detection


def test_hierarchy_merges_most_similar_neighbours_first():
    """Three stripes, left and middle the same red, right blue: left + middle merge first (same
    colour), then everything; base segments are the deepest level, the last merge level 1."""
    labels = np.repeat(np.array([[0] * 4 + [1] * 4 + [2] * 4]), 6, axis=0)
    image = np.zeros((6, 12, 3), np.uint8)
    image[:, :8] = (200, 0, 0)
    image[:, 8:] = (0, 0, 200)
    merges, level = M.hierarchy(image, labels)
    assert merges.tolist() == [[0, 1], [2, 3]]
    assert level.tolist() == [3, 3, 3, 2, 1]
    assert [sorted(M.segments_of(3, merges, r)) for r in range(5)] == [[0], [1], [2], [0, 1], [0, 1, 2]]


def test_proposals_find_flat_objects_and_are_distinct_and_seeded():
    rng = np.random.default_rng(0)
    im = np.clip(rng.normal(100, 8, (60, 80, 3)), 0, 255).astype(np.uint8)
    im[10:30, 10:40] = (200, 40, 40)
    im[35:55, 45:75] = (40, 200, 40)
    objects = np.zeros((60, 80), np.uint8)
    objects[10:30, 10:40], objects[35:55, 45:75] = 1, 2
    cfg = M.MaskProposalConfig(max_masks=40)
    p = M.propose(im, cfg, seed=3)
    assert 1 <= len(p.members) <= 40 and p.atoms.shape == (60, 80)
    assert len({row.tobytes() for row in p.members}) == len(p.members)
    assert (M.best_overlap(p, objects) > 0.9).all()
    assert np.array_equal(M.propose(im, cfg, seed=3).members, p.members)
    masks = p.masks()
    assert masks.shape == (len(p.members), 60, 80) and masks.any(axis=(1, 2)).all()
    ys, xs = np.nonzero(masks[0])
    assert p.boxes[0].tolist() == [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]


def test_boxes_are_each_masks_tight_box_from_its_pixels():
    """Random atom maps and memberships (one mask empty): every box equals the extent of the
    mask's pixels, and the empty mask gets the empty box (inf, inf, -inf, -inf)."""
    rng = np.random.default_rng(1)
    atoms = rng.integers(0, 9, (7, 11)).repeat(3, axis=0).repeat(2, axis=1).astype(np.int32)
    atoms[atoms == atoms.max()] = 0  # ids 0..A-1 all present: relabel densely
    atoms = np.unique(atoms, return_inverse=True)[1].reshape(atoms.shape).astype(np.int32)
    members = rng.random((30, atoms.max() + 1)) < 0.3
    members[4] = False
    p = M.MaskProposals(atoms, members)
    for box, mask in zip(p.boxes, p.masks()):
        if not mask.any():
            assert box.tolist() == [np.inf, np.inf, -np.inf, -np.inf]
            continue
        ys, xs = np.nonzero(mask)
        assert box.tolist() == [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]


def test_best_overlap_by_hand_ignores_void():
    """Atoms: left half 0, right half 1 of a 2 x 4 image; proposals {0}, {0, 1}. The object is
    the 3 left-most pixels of row 0 plus the void pixel (0, 3): {0} (4 pixels) holds 2 of them,
    IoU 2 / (4 + 3 - 2) = 2 / 5; {0, 1} (7 non-void pixels) holds all 3: 3 / 7, the best."""
    p = M.MaskProposals(np.array([[0, 0, 1, 1], [0, 0, 1, 1]], np.int32), np.array([[True, False], [True, True]]))
    objects = np.array([[1, 1, 1, 255], [0, 0, 0, 0]], np.uint8)
    assert M.best_overlap(p, objects).tolist() == [pytest.approx(3 / 7)]
    assert M.best_overlap(p, np.zeros((2, 4), np.uint8)).size == 0


def test_cached_proposals_round_trip(tmp_path: Path):
    ds, _ = make_detection(tmp_path / "img", 2, seed=0)
    cache = Cache(tmp_path / "cache")
    cfg = M.MaskProposalConfig(scales=(50,), colour_spaces=("rgb",), max_masks=20)
    first = M.compute_mask_proposals(ds, cache, cfg, progress=False)
    direct = M.propose(np.asarray(Image.open(ds.images[0].path).convert("RGB")), cfg, seed=zlib.crc32(b"0000"))
    assert np.array_equal(first["0000"].members, direct.members) and np.array_equal(first["0000"].atoms, direct.atoms)
    again = M.compute_mask_proposals(ds, cache, cfg, progress=False)
    assert all(np.array_equal(first[k].members, again[k].members) for k in first)
    assert len([e for e in cache.entries() if e["stage"] == "mask-proposals"]) == 1
    assert first["0000"].atoms.dtype == np.int32
    folder = M.mask_proposals_entry(ds, cache, cfg, progress=False)
    assert np.load(folder / "0000.npz")["atoms"].dtype == np.int16  # stored small, deflated
    # entries written before compression (int32 atoms, plain .npz) read back the same
    p = first["0000"]
    np.savez(folder / "0000.npz", atoms=p.atoms.astype(np.int32), members=np.packbits(p.members, axis=1),
             n_atoms=np.array(p.members.shape[1]))
    old = M.load_mask_proposals(folder, ds)["0000"]
    assert np.array_equal(old.atoms, p.atoms) and np.array_equal(old.members, p.members)


def test_lab_strategy_is_deterministic_and_covers_the_image():
    """A Lab grouping strategy proposes masks like the others: seeded, masks of image pixels."""
    rng = np.random.default_rng(3)
    img = np.clip(rng.normal(120, 30, (24, 32, 3)), 0, 255).astype(np.uint8)
    img[4:16, 6:20] = (200, 30, 30)
    cfg = M.MaskProposalConfig(scales=(20,), colour_spaces=("lab",), max_masks=10)
    a, b = M.propose(img, cfg, seed=1), M.propose(img, cfg, seed=1)
    assert np.array_equal(a.members, b.members) and a.masks().shape[1:] == (24, 32)
    with pytest.raises(ValueError, match="colour space 'xyz'"):
        M.propose(img, M.MaskProposalConfig(colour_spaces=("xyz",)))
