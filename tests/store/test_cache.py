"""The artifact cache: keyed by stage, version, code state and config; atomic, resumable; safe to
clean; warm when copied elsewhere."""
import json
import pytest

from lsda_core.store import cache as C
from lsda_core.store import files


def test_entry_builds_once_and_reuses(tmp_path):
    cache, calls = C.Cache(tmp_path), []

    def build(d):
        calls.append(d)
        (d / "x.txt").write_text("hello")

    a = cache.entry("svm", {"k": 1}, build)
    b = cache.entry("svm", {"k": 1}, build)
    assert a == b and len(calls) == 1 and (a / "x.txt").read_text() == "hello"
    assert json.loads((a / C.META).read_text())["config"] == {"k": 1}
    c = cache.entry("svm", {"k": 2}, build)
    assert c != a and len(calls) == 2


def test_interrupted_build_leaves_nothing(tmp_path):
    cache = C.Cache(tmp_path)

    def crash(d):
        (d / "partial.bin").write_bytes(b"x")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        cache.entry("svm", {"k": 1}, crash)
    assert list((tmp_path / "svm").iterdir()) == []
    # the next run builds it from scratch
    d = cache.entry("svm", {"k": 1}, lambda d: (d / "ok").write_text("1"))
    assert (d / "ok").is_file() and not (d / "partial.bin").exists()


def test_key_depends_on_stage_config_version_and_code(monkeypatch):
    from lsda_core.store import stages
    k1 = C.stage_key("svm", {"a": 1})
    assert k1 == C.stage_key("svm", {"a": 1})
    assert k1 != C.stage_key("svm", {"a": 2}) and k1 != C.stage_key("detections", {"a": 1})
    assert C.stage_key("pool5-ft", {"a": 1}) != C.stage_key("pool5-pre", {"a": 1})
    monkeypatch.setattr(stages, "code_state", lambda name: (99, "locked"))
    monkeypatch.setattr(C, "code_state", stages.code_state)
    assert C.stage_key("svm", {"a": 1}) != k1  # a bumped version
    monkeypatch.setattr(C, "code_state", lambda name: (1, "0123abcd"))
    assert C.stage_key("svm", {"a": 1}) != k1  # code that the lock does not record


def test_unknown_stage_is_an_error(tmp_path):
    from lsda_core.core.errors import LsdaError
    with pytest.raises(LsdaError, match="not a stage"):
        C.Cache(tmp_path).entry("nosuchstage", {}, lambda d: None)


def test_ls_and_clean(tmp_path):
    cache = C.Cache(tmp_path)
    cache.entry("svm", {"k": 1}, lambda d: (d / "f").write_bytes(b"12345"))
    cache.entry("hog", {"k": 1}, lambda d: None)
    rows = cache.entries()
    assert sorted(r["stage"] for r in rows) == ["hog", "svm"]
    assert next(r for r in rows if r["stage"] == "svm")["bytes"] >= 5
    assert cache.clean("svm") == 1 and [r["stage"] for r in cache.entries()] == ["hog"]
    assert cache.clean() == 1 and cache.entries() == []


def test_atomic_write_replaces_whole(tmp_path):
    p = tmp_path / "sub" / "f.txt"
    files.atomic_write_text(p, "one")
    files.atomic_write_text(p, "two")
    assert p.read_text() == "two" and [x.name for x in p.parent.iterdir()] == ["f.txt"]


def test_resumable_entry_keeps_finished_items(tmp_path):
    cache, built = C.Cache(tmp_path), []

    def build(d, fail_after=None):
        for i in range(4):
            f = d / f"{i}.txt"
            if f.exists():
                continue
            if fail_after is not None and len(built) == fail_after:
                raise KeyboardInterrupt
            files.atomic_write_text(f, str(i))
            built.append(i)

    with pytest.raises(KeyboardInterrupt):
        cache.entry("proposals", {"k": 1}, lambda d: build(d, fail_after=2), resumable=True)
    assert built == [0, 1] and cache.entries() == []  # not complete, so not listed
    d = cache.entry("proposals", {"k": 1}, build, resumable=True)
    assert built == [0, 1, 2, 3]  # resumed: items 0 and 1 were not rebuilt
    assert sorted(p.name for p in d.glob("*.txt")) == ["0.txt", "1.txt", "2.txt", "3.txt"]


def test_clean_never_leaves_the_cache(tmp_path):
    """`--stage` with a path, `..` or a folder that is not a stage is refused; nothing outside
    the cache root, and nothing inside it but stage folders, is ever removed."""
    from lsda_core.core.errors import LsdaError
    outside = tmp_path / "precious"
    outside.mkdir()
    (outside / "keep.txt").write_text("x")
    root = tmp_path / "cache"
    cache = C.Cache(root)
    cache.entry("svm", {"k": 1}, lambda d: None)
    (root / "notes").mkdir()
    for bad in (str(outside), "../precious", "..", "/", "notes", "svm/..", ""):
        with pytest.raises(LsdaError):
            cache.clean(bad)
    assert (outside / "keep.txt").is_file() and (root / "notes").is_dir() and cache.entries()
    assert cache.clean() == 1 and (root / "notes").is_dir() and (outside / "keep.txt").is_file()


def test_damaged_meta_is_rebuilt_not_trusted(tmp_path):
    cache, calls = C.Cache(tmp_path), []
    d = cache.entry("svm", {"k": 1}, lambda d: calls.append(1))
    (d / C.META).write_text('{"stage": "svm", "ke')  # truncated
    assert cache.entries() == []
    assert cache.entry("svm", {"k": 1}, lambda d: calls.append(1)) == d and calls == [1, 1]


def test_explain_names_what_differs(tmp_path):
    cache = C.Cache(tmp_path)
    a = cache.entry("svm", {"features": "x", "svm": {"C": 1}}, lambda d: None)
    cache.entry("svm", {"features": "x", "svm": {"C": 2}}, lambda d: None)
    lines = cache.explain(f"svm/{a.name[:8]}")
    assert any("svm.C = 1" in ln for ln in lines)
    assert any("differs from svm/" in ln and "svm.C" in ln and "features" not in ln for ln in lines)
    with pytest.raises(C.CacheError):
        cache.explain("svm/nosuchkey")


def test_copied_cache_and_dataset_stay_warm(tmp_path, monkeypatch):
    """Keys hold content digests, never paths: proposals computed for a dataset in one folder
    and cached in another are found after both are copied elsewhere."""
    import shutil

    from synthetic import make_detection

    from lsda_core.core.structures import DetectionDataset
    from lsda_core.detection import proposals as PR

    ds, _ = make_detection(tmp_path / "data", 3, 0)
    cfg = PR.ProposalConfig(max_boxes=20)
    first = PR.compute_proposals(ds, C.Cache(tmp_path / "cache"), cfg, workers=1, progress=False)
    shutil.copytree(tmp_path / "data", tmp_path / "moved" / "data")
    shutil.copytree(tmp_path / "cache", tmp_path / "moved" / "cache")
    shutil.rmtree(tmp_path / "data")
    shutil.rmtree(tmp_path / "cache")
    moved = DetectionDataset(ds.name, ds.split, ds.classes,
                             [type(im)(im.image_id, tmp_path / "moved" / "data" / im.path.name, im.width, im.height,
                                       im.objects) for im in ds.images], tmp_path / "moved" / "data")
    monkeypatch.setattr(PR, "selective_search", lambda *a, **k: (_ for _ in ()).throw(AssertionError("rebuilt")))
    again = PR.compute_proposals(moved, C.Cache(tmp_path / "moved" / "cache"), cfg, workers=1, progress=False)
    assert first.keys() == again.keys() and all((first[k] == again[k]).all() for k in first)


def test_cache_folder_that_cannot_be_one(tmp_path):
    (tmp_path / "file").write_text("x")
    for root in (tmp_path / "file", tmp_path / "file" / "below"):
        with pytest.raises(C.CacheError, match="runtime.artifacts: "):
            C.Cache(root).entry("svm", {}, lambda d: None)


def test_own_seconds_leave_out_entries_built_inside(tmp_path, monkeypatch):
    """A detections entry that builds an svm entry on the way: its seconds count the svm's
    build, its own seconds do not (a fake clock: the svm takes 5 s, the rest 2 s)."""
    now = [0.0]
    monkeypatch.setattr(C.time, "time", lambda: now[0])
    cache = C.Cache(tmp_path)

    def svm(d):
        now[0] += 5.0

    def detections(d):
        now[0] += 1.0
        cache.entry("svm", {"k": 1}, svm)
        now[0] += 1.0

    cache.entry("detections", {"k": 1}, detections)
    got = {e["stage"]: (e["seconds"], e["own_seconds"]) for e in cache.entries()}
    assert got == {"svm": (5.0, 5.0), "detections": (7.0, 2.0)}
    assert C._NESTED == []


def test_lazy_entry_is_named_now_and_built_when_read(tmp_path):
    """A Lazy entry's ref is the stage/key its folder will have; nothing is built until its
    folder is asked for, then once; entry_ref / entry_folder take either form."""
    cache, calls = C.Cache(tmp_path), []
    lazy = cache.lazy("pool5-x", {"k": 1}, lambda d: calls.append(d), resumable=True)
    assert calls == [] and not (tmp_path / "pool5-x").exists()
    folder = lazy.folder()
    assert lazy.ref == f"pool5-x/{folder.name}" == C.entry_ref(folder) == C.entry_ref(lazy)
    assert lazy.folder() == folder == C.entry_folder(lazy) == C.entry_folder(folder) and len(calls) == 1
    assert C.Cache(tmp_path).lazy("pool5-x", {"k": 1}, lambda d: calls.append(d)).folder() == folder
    assert len(calls) == 1  # found in the cache, not built again


def test_every_build_hands_freed_heap_back_after_it_and_a_reuse_does_not(tmp_path, monkeypatch):
    trims, events = [], []
    monkeypatch.setattr(C, "_TRIM", lambda pad: trims.append(pad) or events.append("trim"))
    cache = C.Cache(tmp_path)
    cache.entry("svm", {"k": 1}, lambda d: events.append("build") or (d / "x").write_text("1"))
    cache.entry("svm", {"k": 1}, lambda d: events.append("build"))  # cached: no build, no trim
    with pytest.raises(RuntimeError):
        cache.entry("svm", {"k": 2}, lambda d: events.append("build") or (_ for _ in ()).throw(RuntimeError("x")))
    assert events == ["build", "trim", "build", "trim"] and trims == [0, 0]  # also after a failed build
    monkeypatch.setattr(C, "_TRIM", None)  # not glibc: nothing to call
    C.release_freed_memory()
