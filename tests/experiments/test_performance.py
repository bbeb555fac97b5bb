"""The performance chapter's bench run is a cached stage: measured once per code, parameters,
images and machine; a warm book shows that run again, and any change measures anew."""
import json

from lsda_core.experiments import performance
from lsda_core.perf import bench
from synthetic import make_detection, params


def test_the_bench_run_is_measured_once_and_kept(tmp_path, monkeypatch):
    ds, _ = make_detection(tmp_path / "det", 2, 0)
    runs = []

    def fake_run(p, images):  # what bench.run returns, without the half minute of measuring
        runs.append([im.image_id for im in images])
        return {"device": "cpu", "mode": "reduced", "n": len(runs), "repeats": p.bench.repeats, "rows": []}

    monkeypatch.setattr(performance, "bench_images", lambda p, cache: ds.images)
    monkeypatch.setattr(bench, "run", fake_run)
    p = params(**{"runtime.artifacts": str(tmp_path / "art")})
    cache = performance.Cache(p.runtime.artifacts)
    first = performance.measure(p, cache)
    assert first.now and first.run["n"] == 1 and first.key == "cpu reduced"
    assert json.loads(bench.default_path(p).read_text())["runs"]["cpu reduced"]["n"] == 1
    again = performance.measure(p, cache)  # a warm build: the same run, not measured
    assert not again.now and again.run == first.run and len(runs) == 1
    other = params(**{"runtime.artifacts": str(tmp_path / "art"), "bench.repeats": 2})
    changed = performance.measure(other, cache)  # a parameter the bench reads: measured anew
    assert changed.now and changed.run["n"] == 2 and changed.run["repeats"] == 2
    quiet = params(**{"runtime.artifacts": str(tmp_path / "art"), "runtime.progress": True})
    assert not performance.measure(quiet, cache).now  # how progress is shown is not what is measured
    monkeypatch.setattr(performance, "bench_images", lambda p, cache: ds.images[:1])
    assert performance.measure(p, cache).now  # other images
    monkeypatch.setattr(performance, "machine", lambda: {"cpu": "another machine"})
    assert performance.measure(p, cache).now
    assert len(runs) == 4
