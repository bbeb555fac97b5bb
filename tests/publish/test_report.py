"""The findings table: each claim's difference, its bootstrap spread and the verdict rule."""
import numpy as np

from lsda_core.detection.pipeline import DetectorResult
from lsda_core.publish import paper, report


def result(name: str, m: float) -> DetectorResult:
    return DetectorResult(name, {}, m)


def test_findings_rows_and_verdicts():
    results = {"A": result("A", 0.30), "B": result("B", 0.25), "C": result("C", 0.31)}
    rng = np.random.default_rng(0)
    base = rng.normal(0.28, 0.01, 50)
    spread = {"A": base + 0.05, "B": base, "C": base + 0.06 + rng.normal(0, 0.02, 50)}
    claims = [paper.Claim("A beats B", "A", "B", 5.0), paper.Claim("B beats C", "B", "C", 1.0),
              paper.Claim("needs a row we lack", "A", "Z", 1.0)]
    df = report.findings(results, spread, claims)
    assert list(df["finding"]) == ["A beats B", "B beats C"]  # a claim without our row is left out
    a, b = df.iloc[0], df.iloc[1]
    assert a["ours (points)"] == 5.0 and a["bootstrap std"] == 0.0 and a["verdict"] == "replicates"
    assert b["ours (points)"] == -6.0 and b["verdict"] == "does not replicate (opposite, beyond noise)"


def test_findings_maps_and_row_names():
    """`maps` replaces each result's mAP (LSDA's held-out mAP); `ours` maps paper rows to ours."""
    results = {"x": result("x", 0.9), "y": result("y", 0.1)}
    spread = {"x": np.full(10, 0.2), "y": np.full(10, 0.1)}
    df = report.findings(results, spread, [paper.Claim("P beats Q", "P", "Q", 2.0)],
                         maps={"x": 12.0, "y": 10.0}, ours={"P": "x", "Q": "y"})
    assert df.iloc[0]["ours (points)"] == 2.0 and df.iloc[0]["verdict"] == "replicates"
