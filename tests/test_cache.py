"""The artifact cache: keyed by parameters and code, atomic, resumable."""
import json
import pytest

from lsda_core.store import cache as C


def test_entry_builds_once_and_reuses(tmp_path):
    cache, calls = C.Cache(tmp_path), []

    def build(d):
        calls.append(d)
        (d / "x.txt").write_text("hello")

    a = cache.entry("stage", {"k": 1}, build)
    b = cache.entry("stage", {"k": 1}, build)
    assert a == b and len(calls) == 1 and (a / "x.txt").read_text() == "hello"
    assert json.loads((a / C.META).read_text())["config"] == {"k": 1}
    c = cache.entry("stage", {"k": 2}, build)
    assert c != a and len(calls) == 2


def test_interrupted_build_leaves_nothing(tmp_path):
    cache = C.Cache(tmp_path)

    def crash(d):
        (d / "partial.bin").write_bytes(b"x")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        cache.entry("stage", {"k": 1}, crash)
    assert list((tmp_path / "stage").iterdir()) == []
    # the next run builds it from scratch
    d = cache.entry("stage", {"k": 1}, lambda d: (d / "ok").write_text("1"))
    assert (d / "ok").is_file() and not (d / "partial.bin").exists()


def test_key_depends_on_parameters_and_code():
    from lsda_core.core import params as P
    k1 = C.stage_key({"a": 1}, [C])
    assert k1 == C.stage_key({"a": 1}, [C])
    assert k1 != C.stage_key({"a": 2}, [C])
    assert k1 != C.stage_key({"a": 1}, [C, P])  # more code, another key


def test_ls_and_clean(tmp_path):
    cache = C.Cache(tmp_path)
    cache.entry("a", {"k": 1}, lambda d: (d / "f").write_bytes(b"12345"))
    cache.entry("b", {"k": 1}, lambda d: None)
    rows = cache.entries()
    assert sorted(r["stage"] for r in rows) == ["a", "b"]
    assert next(r for r in rows if r["stage"] == "a")["bytes"] >= 5
    assert cache.clean("a") == 1 and [r["stage"] for r in cache.entries()] == ["b"]
    assert cache.clean() == 1 and cache.entries() == []


def test_atomic_write_replaces_whole(tmp_path):
    p = tmp_path / "sub" / "f.txt"
    C.atomic_write_text(p, "one")
    C.atomic_write_text(p, "two")
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
            C.atomic_write_text(f, str(i))
            built.append(i)

    with pytest.raises(KeyboardInterrupt):
        cache.entry("s", {"k": 1}, lambda d: build(d, fail_after=2), resumable=True)
    assert built == [0, 1] and cache.entries() == []  # not complete, so not listed
    d = cache.entry("s", {"k": 1}, build, resumable=True)
    assert built == [0, 1, 2, 3]  # resumed: items 0 and 1 were not rebuilt
    assert sorted(p.name for p in d.glob("*.txt")) == ["0.txt", "1.txt", "2.txt", "3.txt"]
