"""The performance chapter's table and figure, on hand-made results."""
import matplotlib.pyplot as plt

from lsda_core.publish import perf_report as PR
from lsda_core.publish import viz

MACHINE = {"cpu": "Some CPU", "cores": 2, "gpu": "none", "host": "h"}


def row(key, stage, of_peak, value=1.0):
    return {"key": key, "stage": stage, "what": f"{key}, described at length", "value": value, "unit": "x/s",
            "gflop_per_s": None if of_peak is None else 10 * of_peak, "of_peak": of_peak,
            "peak": None if of_peak is None else "float32", "status": "measured", "device": "cpu"}


def doc():
    rows = [row("peak.float32", "peak", 1.0), row("features.embedded", "warped features", 0.6),
            row("scoring.100k", "scoring", 0.2), row("svm", "SVM training", None)]
    return {"runs": {"cpu old": {"rows": rows[:2], "machine": MACHINE, "finished": "2026-01-01 00:00:00"},
                     "cpu reduced": {"rows": rows, "machine": MACHINE, "finished": "2026-12-02 00:00:00"}}}


def test_table_one_block_per_run_this_build_first_descriptions_collapsed():
    t = PR.table(doc(), current="cpu reduced")
    assert list(t.index.get_level_values("run").unique()) == ["cpu reduced (this build)",
                                                              "cpu old (2026-01-01 00:00:00)"]
    assert list(t.loc["cpu reduced (this build)"].index) == ["peak, float32", "warped features, embedded net",
                                                            "scoring, 100k classes", "SVM training"]
    page = t.to_html()
    first, second = page.split("<details><summary>cpu old")
    assert first.startswith("<details open><summary>cpu reduced (this build); device: cpu; machine: Some CPU")
    table, described = first.split("<details><summary>What each figure measures</summary>")
    assert "described at length" not in table and "svm, described at length" in described


def test_share_of_peak_figure_is_captioned_from_its_rows():
    fig = PR.of_peak_figure(doc())
    assert isinstance(fig, viz.Captioned)
    assert "2 of 3 reach half the peak or more; the highest is warped features, embedded net (cpu old) at 0.60" \
        in fig.caption
    plt.close(fig.fig)
