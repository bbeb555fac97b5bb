"""`hoiem.fp_share_samples`: the share of FP types among the top false positives, on the test set and resamples."""
import numpy as np
import pytest

from lsda_core.evaluation.ap import Matching
from lsda_core.evaluation.hoiem import FP_TYPES, ClassDiagnosis, fp_share_samples

LOC, SIM, BG = FP_TYPES.index("loc"), FP_TYPES.index("sim"), FP_TYPES.index("bg")


def diag(cls, fp_type, image_index):
    """A class's detections in score order: fp_type per detection (-1: TP) and the image of each."""
    fp_type, img = np.array(fp_type, np.int8), np.array(image_index, np.int64)
    n, tp = len(img), fp_type < 0
    m = Matching(order=np.arange(n), scores=np.linspace(1, 0, n), image_index=img, tp=tp, fp=~tp,
                 ignored=np.zeros(n, bool), gt_index=np.full(n, -1), iou=np.zeros(n), n_pos=int(tp.sum()))
    return ClassDiagnosis(cls, m, fp_type)


# cat's FPs by rank: bg@0, loc@1, bg@2, sim@1 (TPs on images 0 and 2 in between)
# dog's FPs by rank: loc@2, loc@0, bg@1
DIAGS = {"cat": diag("cat", [-1, BG, LOC, BG, -1, SIM], [0, 0, 1, 2, 2, 1]),
         "dog": diag("dog", [LOC, LOC, -1, BG], [2, 0, 1, 1])}
# interleaved by rank, cat before dog within a rank: bg loc | loc loc | bg bg | sim


def test_share_on_the_test_set_is_a_count_among_the_interleaved_top_n():
    """Full-set share = hand count among the top n FPs interleaved by rank (class order breaks ties), TPs ignored."""
    none = np.zeros((0, 3), np.int64)
    assert fp_share_samples(DIAGS, None, ["loc"], 4, none)[0] == pytest.approx(3 / 4)      # bg loc loc loc
    assert fp_share_samples(DIAGS, None, ["bg"], 6, none)[0] == pytest.approx(3 / 6)       # bg loc loc loc bg bg
    assert fp_share_samples(DIAGS, None, ["loc", "sim"], 100, none)[0] == pytest.approx(4 / 7)  # all 7 FPs
    assert fp_share_samples(DIAGS, ["cat", "dog"], ["loc"], 1, none)[0] == 0.0             # cat's bg first
    assert fp_share_samples(DIAGS, ["dog", "cat"], ["loc"], 1, none)[0] == 1.0             # dog's loc first
    assert fp_share_samples(DIAGS, ["dog", "bird"], ["loc"], 3, none)[0] == pytest.approx(2 / 3)  # dog only


def test_all_ones_picks_equal_the_full_set():
    """A resample drawing every image once gives the test set's share."""
    full, boot = fp_share_samples(DIAGS, None, ["loc"], 4, np.ones((3, 3), np.int64))
    assert boot.shape == (3,) and np.allclose(boot, full)


def test_picks_drop_or_repeat_an_image_s_false_positives():
    """Count 0 removes an image's FPs; count 2 repeats each in place (ranks shift), as a hand interleaving gives."""
    picks = np.array([[1, 0, 1],    # image 1 dropped: cat bg bg, dog loc loc -> bg loc bg loc
                      [2, 1, 1]])   # image 0 twice: cat bg bg loc bg sim, dog loc loc loc bg
    _, boot4 = fp_share_samples(DIAGS, None, ["loc"], 4, picks)
    assert boot4 == pytest.approx([2 / 4, 2 / 4])   # bg loc bg loc | bg loc bg loc
    _, boot6 = fp_share_samples(DIAGS, None, ["loc"], 6, picks)
    assert boot6 == pytest.approx([2 / 4, 4 / 6])   # only 4 FPs left | bg loc bg loc loc loc
    _, boot_bg = fp_share_samples(DIAGS, None, ["bg"], 100, picks)
    assert boot_bg == pytest.approx([2 / 4, 4 / 9])  # all FPs: cat's 2 bg of 4 | 3 + 1 bg of 9
