"""The `lsda` command: one entry point for the world, the book, evaluation and the cache.

Errors the user can fix (LsdaError: bad parameters, missing or malformed data) are printed
as one line, `lsda: error: ...`, with exit status 2 and no traceback.

`prepare` also runs under torchrun (`torchrun --nproc-per-node N -m lsda_core.cli prepare
...`): the processes split the expensive stages and share the cache, which `book` then finds.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import NoReturn

DEFAULT_PARAMS = Path("params/embedded.yaml")


def _add_params(sp: argparse.ArgumentParser, default: Path | None = DEFAULT_PARAMS) -> None:
    sp.add_argument("--params", type=Path, default=default, metavar="FILE",
                    help=f"parameter preset (YAML; default {default})")
    sp.add_argument("-p", nargs=2, action="append", default=[], metavar=("KEY", "VALUE"),
                    dest="overrides", help="override one parameter, e.g. -p world.seed 3 (repeatable)")


def _load(args: argparse.Namespace):
    from lsda_core.core import params as P
    return P.load(args.params, args.overrides)


def cmd_params(args: argparse.Namespace) -> None:
    from lsda_core.core import params as P
    import yaml
    if args.schema:
        print(P.schema_help())
        return
    print(yaml.safe_dump(_load(args).to_dict(), sort_keys=False), end="")


def cmd_world(args: argparse.Namespace) -> None:
    from lsda_core.store.cache import Cache
    from lsda_core.world import ensure_world
    p = _load(args)
    layout = ensure_world(p, Cache(p.runtime.artifacts))
    print(layout.root)


def cmd_data(args: argparse.Namespace) -> None:
    from lsda_core.store.cache import Cache
    from lsda_core.experiments.sources import summary
    p = _load(args)
    rows = summary(p, Cache(p.runtime.artifacts), check_images=args.check_images)
    print(f"{'view':<16}{'split':<8}{'images':>8}{'classes':>9}{'objects':>9}{'difficult':>10}")
    for r in rows:
        print(f"{r['view']:<16}{r['split']:<8}{r['images']:>8}{r['classes']:>9}{r['objects']:>9}{r['difficult']:>10}")


def cmd_book(args: argparse.Namespace) -> None:
    from lsda_core.publish import book
    _load(args)
    index = book.build(args.params, _overrides(args), args.out, only=args.only,
                       progress=not args.quiet, keep_features=args.keep_features)
    print(f"book: {index}")


def cmd_run(args: argparse.Namespace) -> None:
    from lsda_core.publish import book
    root = book.project_root()
    ch = book.find_chapter(root, args.chapter)
    out = args.out.resolve()
    p, resolved = book.resolve_params(args.params, _overrides(args), out)
    book.stage_sources(root, out / "src")
    s = book.execute_chapter(root, ch, p, resolved, out, progress=not args.quiet)
    print(f"{ch.name}: done in {s:.1f} s -> {args.out.resolve() / 'src' / ch.path}")


def _overrides(args: argparse.Namespace) -> dict[str, object]:
    """The `-p key value` pairs as {dotted key: value}, parsed once by the one override parser
    (params.parse_overrides); the book and the notebooks take these values as they are."""
    from lsda_core.core import params as P
    return P.parse_overrides(args.overrides)


def cmd_eval(args: argparse.Namespace) -> None:
    if args.metric == "segmentation":
        from lsda_core.evaluation import segmentation
        segmentation.eval_command(args.dataset, args.split, args.results, out=args.out)
        return
    from lsda_core.evaluation.ap import eval_command
    eval_command(args.dataset, args.split, args.results, metric=args.metric, out=args.out)


def cmd_analyze(args: argparse.Namespace) -> None:
    from lsda_core.evaluation.hoiem import analyze_command
    analyze_command(args.dataset, args.split, args.results, groups_file=args.groups, out=args.out)


def cmd_prepare(args: argparse.Namespace) -> None:
    from lsda_core.store import distributed as D
    from lsda_core.experiments import lsda as L
    from lsda_core.experiments import rcnn as R

    from lsda_core.store.cache import Cache
    p = _load(args)
    D.init(p.runtime.device)
    try:
        cache = Cache(p.runtime.artifacts)
        D.check_shared(cache.root)
        t0 = time.time()
        lines = (R if args.chapter == "rcnn" else L).prepare(p, cache, args.stage)
        if D.is_main():
            print("\n".join(lines))
            print(f"prepared {args.chapter} up to {args.stage} in {time.time() - t0:.1f} s with {D.world()} process(es); "
                  f"cache: {cache.root}")
    finally:
        D.cleanup()


def cmd_bench(args: argparse.Namespace) -> None:
    from lsda_core.experiments.rcnn import bench_images
    from lsda_core.perf import bench
    from lsda_core.publish import perf_report
    from lsda_core.store.cache import Cache
    p = _load(args)
    out = args.out or bench.default_path(p)
    bench.load(out)  # a bad results file stops us before the measuring
    run = bench.run(p, bench_images(p, Cache(p.runtime.artifacts)), full=args.full)
    bench.save(run, out)
    print(perf_report.text(run))
    print(f"bench: {out}")


def cmd_sweep(args: argparse.Namespace) -> None:
    from lsda_core.experiments import sweep
    from lsda_core.publish import book, plots, report, viz
    grid = sweep.parse_grid(args.grid)
    out = args.out.resolve()
    measure = None if args.experiment in sweep.MEASUREMENTS else book.chapter_metrics(args.experiment, out / "points")
    rows = sweep.run_sweep(args.experiment, args.params, _overrides(args), grid, record=args.record, note=args.note,
                           measure=measure)
    table = report.sweep_table(rows, list(grid), args.metrics.split(",") if args.metrics else None)
    print(table.to_string())
    out.mkdir(parents=True, exist_ok=True)
    table.to_csv(out / f"{args.experiment}.csv")
    if grid and len(table.columns):
        figure = plots.sweep_figure(table, list(grid)[0])
        paths = viz.savefig(figure, f"sweep_{args.experiment}", out)
        print(f"sweep: {out / (args.experiment + '.csv')}, {paths[0]}")
    if args.record:
        print(f"recorded {len(rows)} point(s) in {args.record}")


def cmd_cache(args: argparse.Namespace) -> None:
    from lsda_core.store import stages
    from lsda_core.store.cache import Cache, CacheError, human_bytes
    if args.action == "lock":
        lines = stages.update_lock(args.bump or [], args.same)
        print("\n".join(lines) if lines else "the lock already records the code of every stage")
        print(f"lock: {stages.LOCK}")
        return
    if args.action == "status":
        for name, s in stages.lock_status().items():
            state = "locked" if s["current"] else f"code changed ({s['locked']} -> {s['live']}): run lsda cache lock"
            print(f"{name:<16} v{s['version']}  {state}")
        return
    cache = Cache(_load(args).runtime.artifacts)
    if args.action == "explain":
        if not args.entry:
            raise CacheError("lsda cache explain: name an entry as stage/key (see lsda cache ls)")
        print("\n".join(cache.explain(args.entry)))
    elif args.action == "ls":
        rows = cache.entries()
        if args.stage:
            rows = [r for r in rows if r["stage"] == args.stage]
        for r in rows:
            print(f"{r['stage']:<20} {r['key']}  {human_bytes(r['bytes']):>10}  {r['seconds']:>8.1f} s  {r['created']}")
        sizes: dict[str, int] = {}
        for r in rows:
            sizes[r["stage"]] = sizes.get(r["stage"], 0) + r["bytes"]
        for stage, size in sorted(sizes.items(), key=lambda kv: -kv[1]):
            print(f"  {stage:<20} {human_bytes(size):>10}")
        total = sum(r["bytes"] for r in rows)
        print(f"{len(rows)} entries, {human_bytes(total)} in {cache.root}")
    else:
        n = cache.clean(args.stage)
        print(f"removed {n} stage folder(s) from {cache.root}")


def _add_build(sp: argparse.ArgumentParser) -> None:
    """The build folder and progress options of `book` and `run`."""
    sp.add_argument("--out", type=Path, default=Path("_build/book"), help="build folder (default _build/book)")
    sp.add_argument("--quiet", action="store_true", help="no per-cell progress bars")


class _Parser(argparse.ArgumentParser):
    """argparse, except that a usage error is one line, like every other error of the command
    (`lsda: error: ...`, exit status 2), pointing at the command's --help."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"lsda: error: {message} (see `{self.prog} --help`)\n")


def parser() -> argparse.ArgumentParser:
    ap = _Parser(prog="lsda", description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="command", required=True)

    sp = sub.add_parser("params", help="print the validated parameters (or the schema)")
    _add_params(sp)
    sp.add_argument("--schema", action="store_true", help="list every key with type, range and help")
    sp.set_defaults(func=cmd_params)

    sp = sub.add_parser("world", help="generate the embedded world (cached) and print its folder")
    _add_params(sp)
    sp.set_defaults(func=cmd_world)

    sp = sub.add_parser("data", help="read and check every dataset the preset uses; print their sizes")
    _add_params(sp)
    sp.add_argument("--check-images", action="store_true",
                    help="also decode every image file of the VOC-layout views completely and compare its "
                         "size with its annotation (slower)")
    sp.set_defaults(func=cmd_data)

    sp = sub.add_parser("book", help="execute every chapter with Papermill and build the HTML book")
    _add_params(sp)
    sp.add_argument("--only", metavar="CHAPTER", help="execute only this chapter (others keep earlier outputs)")
    sp.add_argument("--keep-features", action="store_true",
                    help="keep the cached features and decoded images after a full build (by default removed: every "
                         "result made from them is cached; keep them to re-train detectors with new settings quickly)")
    _add_build(sp)
    sp.set_defaults(func=cmd_book)

    sp = sub.add_parser("run", help="re-run one chapter into the build folder")
    sp.add_argument("chapter", help="chapter name (notebook file stem, e.g. world)")
    _add_params(sp)
    _add_build(sp)
    sp.set_defaults(func=cmd_run)

    sp = sub.add_parser("prepare", help="compute the expensive stages into the cache ahead of the book "
                                        "(also under torchrun, split across processes)")
    _add_params(sp)
    sp.add_argument("--chapter", choices=("rcnn", "lsda"), default="rcnn",
                    help="whose stages: the R-CNN chapter's (default) or the LSDA chapter's")
    sp.add_argument("--stage", choices=("proposals", "finetune", "features"), default="features",
                    help="last stage to prepare; the ones before it are prepared first: proposals, finetune "
                         "(R-CNN: pre-training, then fine-tuning; LSDA: the classification network, the full "
                         "adaptation and the oracle), features (pool5 of those networks; R-CNN also grayscale "
                         "pool5 and HOG); default features")
    sp.set_defaults(func=cmd_prepare)

    sp = sub.add_parser("eval", help="score comp4-format detections, or PNG labellings (--metric segmentation), "
                                     "on a VOC-layout dataset")
    sp.add_argument("--dataset", type=Path, required=True,
                    help="VOC-layout folder (Annotations/, ImageSets/Main/; for segmentation ImageSets/Segmentation/ "
                         "and SegmentationClass/)")
    sp.add_argument("--split", required=True, help="image set, e.g. test")
    sp.add_argument("--results", type=Path, required=True,
                    help="folder of comp4_det_<split>_<class>.txt files (segmentation: <id>.png labellings)")
    sp.add_argument("--metric", choices=("voc07", "area", "ilsvrc", "segmentation"), default="voc07",
                    help="detection AP (voc07, area, ilsvrc) or VOC segmentation accuracy (mean class IoU)")
    sp.add_argument("--out", type=Path, help="write the scores as JSON here")
    sp.set_defaults(func=cmd_eval)

    sp = sub.add_parser("analyze", help="diagnose comp4-format detections (Hoiem et al.: FP types, characteristics)")
    sp.add_argument("--dataset", type=Path, required=True, help="VOC-layout folder (Annotations/, ImageSets/Main/)")
    sp.add_argument("--split", required=True, help="image set, e.g. test")
    sp.add_argument("--results", type=Path, required=True, help="folder of comp4_det_<split>_<class>.txt files")
    sp.add_argument("--groups", type=Path, metavar="FILE",
                    help="similarity groups, YAML or JSON {group: [class, ...]} (default: the objects' "
                         "superclasses, or VOC's groups)")
    sp.add_argument("--out", type=Path, help="write the diagnosis as JSON here (else print a summary)")
    sp.set_defaults(func=cmd_analyze)

    sp = sub.add_parser("bench", help="measure each stage's throughput on this machine (reduced, as the book "
                                      "does, or --full) and store it beside other devices' runs")
    _add_params(sp)
    sp.add_argument("--out", type=Path, metavar="FILE",
                    help="results file (JSON; default <runtime.artifacts>/bench/bench.json)")
    sp.add_argument("--full", action="store_true",
                    help="every stage at full size: 2000 regions per image at the paper size, 100k classes, the "
                         "whole trainval for the SVMs (minutes on a CPU)")
    sp.set_defaults(func=cmd_bench)

    sp = sub.add_parser("sweep", help="measure a named experiment (a premise) over a grid of parameter values, "
                                      "every point cached")
    sp.add_argument("experiment", help="what to measure: pretrain (train / val top-1), proposals (recall), finetune "
                                       "(validation-loss plateau), lsda_headroom (oracle / classification network, "
                                       "held out), rcnn_layers (fc6 - pool5 and the fine-tuning gains), seg_proposals "
                                       "(the mask proposals' coverage of the segmentation eval split), or a chapter "
                                       "that judges claims (rcnn, lsda: its findings and premises, run through "
                                       "Papermill)")
    sp.add_argument("--metrics", default="", help="comma-separated metrics to keep in the table and plot (default all)")
    sp.add_argument("--out", type=Path, default=Path("_build/sweep"), help="folder of the table, plot and chapter runs")
    sp.add_argument("--grid", action="append", default=[], metavar="KEY=V1,V2",
                    help="values of one parameter (repeatable; the grid is every combination)")
    sp.add_argument("--record", type=Path, default=None, metavar="FILE",
                    help="append every point to this JSON-lines log (e.g. calibration/runs.jsonl)")
    sp.add_argument("--note", default="", help="why this sweep was run (kept in the record)")
    _add_params(sp)
    sp.set_defaults(func=cmd_sweep)

    sp = sub.add_parser("cache", help="list, explain or clean the artifact cache; record code changes in the lock",
                        description="ls: entries and size per stage; explain ENTRY: what made an entry's key and "
                                    "how it differs from the stage's other entries; clean [--stage NAME]: remove "
                                    "stage folders; status: is each stage's code the locked one; lock [--bump STAGE] "
                                    "[--same]: record the live code of every stage in the lock file")
    sp.add_argument("action", choices=("ls", "clean", "explain", "status", "lock"))
    sp.add_argument("entry", nargs="?", help="explain: the entry, as stage/key (a key prefix will do)")
    sp.add_argument("--stage", help="ls / clean: only this stage folder (e.g. world, pool5-ft)")
    sp.add_argument("--bump", action="append", metavar="STAGE",
                    help="lock: this stage's results change: raise its version (repeatable)")
    sp.add_argument("--same", action="store_true",
                    help="lock: the other changed stages give the same results: keep their versions")
    _add_params(sp)
    sp.set_defaults(func=cmd_cache)
    return ap


def main(argv: list[str] | None = None) -> int:
    from lsda_core.core.errors import LsdaError
    from lsda_core.store import distributed as D
    from lsda_core.store.runtime import thread_policy
    args = parser().parse_args(argv)
    thread_policy()
    try:
        if D.launched() and args.command != "prepare":
            raise LsdaError(f"`lsda {args.command}` runs in one process; of the commands only `lsda prepare` "
                            "runs under torchrun (WORLD_SIZE > 1)")
        args.func(args)
    except LsdaError as e:
        print(f"lsda: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("lsda: interrupted (cached stages are complete or absent; re-run to resume)", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
