"""The papers' numbers are transcribed consistently (each row's mean matches its mAP)."""
import re
from pathlib import Path

import numpy as np
import pytest

from lsda_core.publish import paper

PAPERS = Path(__file__).resolve().parents[2] / "shared" / "papers"


@pytest.mark.parametrize("row", list(paper.RCNN_TABLE2))
def test_rcnn_rows_average_to_their_map(row):
    aps, m = paper.RCNN_TABLE2[row]
    assert len(aps) == 20 and abs(np.mean(aps) - m) < 0.06


@pytest.mark.skipif(not (PAPERS / "rcnn.txt").is_file(), reason="../shared/papers not beside the checkout")
def test_rcnn_rows_match_the_paper_text():
    text = (PAPERS / "rcnn.txt").read_text()
    for row, (aps, m) in paper.RCNN_TABLE2.items():
        nums = " ".join(f"{v:.1f}" for v in aps + [m])
        assert re.search(re.escape(nums), text), row


@pytest.mark.skipif(not (PAPERS / "lsda.txt").is_file(), reason="../shared/papers not beside the checkout")
def test_lsda_rows_match_the_paper_text():
    text = (PAPERS / "lsda.txt").read_text()
    for row, vals in paper.LSDA_TABLE1.items():
        assert " ".join(f"{v:.2f}" for v in vals) in text, row
