"""The status page's tables: chapters in book order with their cold build times, and the
parameters as the keys that differ from the schema's defaults."""
from lsda_core.publish import book, status

MACHINE = {"cpu": "cpu", "cores": 2, "gpu": "none"}


def chapter(seconds: float) -> dict:
    return {"params_file": "/x/params.resolved.yaml", "overrides": {}, "params_digest": "d", "seconds": seconds,
            "finished": "2026-01-01 00:00:00", "machine": MACHINE}


LOG = {"chapters": {"status": chapter(1.0), "intro": chapter(2.0), "world": chapter(3.0), "zzz": chapter(4.0),
                    "rcnn": chapter(5.0)},
       "builds": [{"cache": "cold", "chapters": {"world": 30.0, "rcnn": 50.0, "intro": 2.5}},
                  {"cache": "warm", "chapters": {"world": 1.0, "rcnn": 1.0, "intro": 1.0}}]}


def test_chapters_in_book_order_with_cold_times():
    t = status.chapter_table(LOG, order=["intro", "world", "rcnn", "status"])
    assert list(t["chapter"]) == ["intro", "world", "rcnn", "status", "zzz", "total"]  # unknown chapters last
    assert list(t["in the latest cold build (s)"]) == [2.5, 30.0, 50.0, "\u2014", "\u2014", 82.5]
    assert list(t["run time (s)"]) == [2.0, 3.0, 5.0, 1.0, 4.0, 15.0]


def test_default_order_is_the_tocs():
    names = [c.name for c in book.chapters(book.project_root())]
    t = status.chapter_table({"chapters": {n: chapter(1.0) for n in reversed(names)}})
    assert list(t["chapter"])[:-1] == names
    assert set(t["in the latest cold build (s)"]) == {"\u2014"}  # no cold build on record


def test_cold_seconds_skip_builds_without_chapter_times():
    log = {"builds": [{"cache": "cold", "chapters": {"world": 3.0}}, {"cache": "cold"}]}
    assert status.cold_seconds(log) == {"world": 3.0} and status.cold_seconds({"chapters": {}}) == {}


def test_params_listing_is_the_changed_keys_only(tmp_path):
    root = book.project_root()
    p, resolved = book.resolve_params(root / "params" / "smoke.yaml", {"runtime.artifacts": str(tmp_path / "a")},
                                      tmp_path)
    text = status.params_listing(p, str(resolved), {}).data
    assert text.startswith(f"Preset `params/smoke.yaml`, digest `{p.digest()}`")  # the preset, not the resolved file
    assert "| `world.n_categories` | `24` | `200` |" in text and "world.seed" not in text
    assert str(tmp_path) not in text


def test_preset_of_a_plain_file_is_the_file(tmp_path):
    (tmp_path / "mine.yaml").write_text("world:\n  seed: 3\n")
    assert status.preset_of(tmp_path / "mine.yaml") == ".../mine.yaml"
    assert status.preset_of("params/smoke.yaml") == "params/smoke.yaml"


def test_build_table_gives_budgets_met_and_kernel_restarts():
    def build(cache: str, seconds: float, **extra) -> dict:
        return {"cache": cache, "seconds": seconds, "machine": MACHINE, "entries_built": 3, "entries_reused": 1,
                "finished": "2026-01-01 00:00:00", **extra}
    log = {"builds": [build("cold", 1000.0), build("cold", 2772.6, kernel_restarts={"rcnn": 8481325056}),
                      build("warm", 82.3, kernel_restarts={})]}
    t = status.build_table(log)
    assert list(t["met"]) == ["no", "yes"] and list(t["seconds"]) == [2772.6, 82.3]  # the latest of each kind
    assert list(t["budget (s)"]) == [1800, 180]
    assert t["kernel restarts"].iloc[0] == "after rcnn (7.9 GiB)" and t["kernel restarts"].iloc[1] == "none"
    old = status.build_table({"builds": [build("cold", 10.0)]})
    assert old["kernel restarts"].iloc[0] == "not recorded" and old["met"].iloc[1] == "not run yet"
