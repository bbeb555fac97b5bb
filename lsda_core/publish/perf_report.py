"""The performance chapter's tables and plot, read from `lsda bench`'s results file
(`perf.bench`): every figure beside its share of peak, the papers' speed claims beside ours,
and every speed target met or not."""
from __future__ import annotations

import math
from typing import Any, Callable

import pandas as pd
from IPython.display import Markdown

from lsda_core.perf.bench import (FAST_TARGET, GPU_FAST_MS, GPU_WARP_MS, MEASURED, NET_ALONE, NO_REGION, RCNN_REGIONS,
                                  run_key, speedup_at, speedup_scaling, why_not_gpu, work_floor)
from lsda_core.publish import paper
from lsda_core.publish import status as ST
from lsda_core.publish import viz
from lsda_core.publish.tables import Table, readable


# ------------------------------------------------------------------------------ tables

def machine_name(m: dict[str, Any]) -> str:
    return f"{m['cpu']} ({m['cores']} cores)" + ("" if m["gpu"] == "none" else f", {m['gpu']}")


def summary(run: dict[str, Any], now: bool = True) -> Markdown:
    """One paragraph: where and how this run measured; `now`: by this build, else by the build
    whose cache this one reuses (same code, parameters and machine)."""
    half = [f", {k} {v:.0f} GFLOP/s" for k, v in run["peaks"].items() if k != "float32" and v]
    when = "by this build" if now else (
        "by an earlier build of the same code and parameters on this machine, kept in the cache (stage `perf`; "
        "`lsda bench` measures now)")
    return Markdown(f"Measured {when} on **{machine_name(run['machine'])}**, device `{run['device']}`, "
                    f"{run['threads']} torch threads, {run['mode']} mode, in {run['seconds']} s (finished "
                    f"{run['finished']}, host `{run['machine']['host']}`). Peak of this run: float32 matrix "
                    f"product {run['peaks']['float32']:.0f} GFLOP/s{''.join(half)}.")


def table(doc: dict[str, Any], current: str | None = None) -> Table:
    """Every row of every run in `doc`: the figure, its GFLOP/s and share of peak, status,
    the machine; `current`: the run key measured by this build (the others are labelled
    with when they were measured). Rows are labelled by the figure in words (`short`); shown one
    collapsible table per run (this build's first and open, its device and machine in the
    title), each figure's full description in a collapsed block under it."""
    out = []
    runs = sorted(doc["runs"].items(), key=lambda kr: kr[0] != current)  # this build's run first
    for key, r in runs:
        when = "this build" if key == current else r["finished"]
        for row in r["rows"]:
            out.append({"run": f"{key} ({when})", "figure": short(row["key"]),
                        "value": row["value"], "unit": row["unit"], "GFLOP/s": row["gflop_per_s"],
                        "share of peak": row["of_peak"], "peak": row["peak"] or "", "status": row["status"],
                        "stage": row["stage"], "what": row["what"],
                        "device": row["device"], "machine": machine_name(r["machine"])})
    if not out:
        return pd.DataFrame()
    df = pd.DataFrame(out).set_index(["run", "figure"])
    df = df.round({"value": 3, "GFLOP/s": 1, "share of peak": 3})
    return readable(df.astype(object).where(df.notna(), ""), None, column_digits={"GFLOP/s": 1, "share of peak": 2},
                    main=("value", "unit", "GFLOP/s", "share of peak", "peak", "status"),
                    detail="What each figure measures", across=False, group="run", shared=("device", "machine"))


def _value(r: dict[str, Any], key: str) -> dict[str, Any] | None:
    """Row `key` of run `r` when it was measured (or extrapolated)."""
    row = next((x for x in r["rows"] if x["key"] == key), None)
    return row if row is not None and row["value"] is not None else None


def _extra(*rows: dict[str, Any]) -> str:
    return " (extrapolated)" if any(r["status"] != MEASURED for r in rows) else ""


def _rcnn_per_image(r: dict[str, Any]) -> str:
    """Proposals plus features of 2000 regions at the paper size, seconds per image."""
    prop, feat = _value(r, "proposals.images"), _value(r, "features.paper")
    if prop is None or feat is None:
        return ""
    return f"{1 / prop['value'] + RCNN_REGIONS / feat['value']:.2f}{_extra(prop, feat)}"


def _per_image(key: str) -> Callable[[dict[str, Any]], str]:
    """Seconds per image of detector row `key`."""
    def ours(r: dict[str, Any]) -> str:
        row = _value(r, key)
        return f"{1 / row['value']:.3f}{_extra(row)}" if row else ""
    return ours


def _work_ratio(r: dict[str, Any], prefix: str) -> str:
    """Why a bench speed-up is what it is (`_work`), from the run's two detector rows."""
    warp, fast = _value(r, f"{prefix}.warp"), _value(r, f"{prefix}.fast")
    if not (warp and fast and warp.get("gflop") and fast.get("gflop") and fast.get("gflop_per_s")):
        return ""
    return _work(warp["gflop"], fast["gflop"], warp["gflop_per_s"], fast["gflop_per_s"])


def _work(warp_gflop: float, fast_gflop: float, warp_rate: float, fast_rate: float) -> str:
    """The ratio of the two detectors' arithmetic per image, the speed-up they would show at
    equal FLOP rates, and each one's rate."""
    ratio = warp_gflop / fast_gflop
    return (f"; work ratio {ratio:.1f}x ({warp_gflop:.2f} vs {fast_gflop:.3f} GFLOP per image), "
            f"FLOP rates {warp_rate:.0f} vs {fast_rate:.0f} GFLOP/s"
            + (f": {FAST_TARGET:.0f}x needs the fast one at {FAST_TARGET / ratio:.2f} of warping's rate or more"
               if ratio < 2 * FAST_TARGET else ""))


def _scaling(t: dict[str, float]) -> str:
    """Where the chapter's speed-up comes from (`bench.speedup_scaling`): each detector's fixed
    part per image and the proposals per image the target needs."""
    s = speedup_scaling(t)
    need = s["proposals for target"]
    return (f"; fixed part per image (no proposal) fast {1000 * s['fast fixed']:.1f} vs warping "
            f"{1000 * s['warping fixed']:.1f} ms, per proposal {1000 * s['fast per proposal']:.3f} vs "
            f"{1000 * s['warping per proposal']:.3f} ms: {FAST_TARGET:.0f}x "
            + (f"from {need:.0f} proposals per image" if math.isfinite(need) else "at no number of proposals")
            + f", {speedup_at(s, RCNN_REGIONS):.1f}x at {RCNN_REGIONS}")


def _timing(t: dict[str, float], how: str = "") -> str:
    """The LSDA chapter's warping vs fast timing (`lsda.time_variants`), open-ended: "7.0x
    (12 vs 86 ms / image"."""
    spread = (f"; rounds {t['speed-up, lowest round']:.1f}x to {t['speed-up, highest round']:.1f}x"
              if "speed-up, lowest round" in t else "")
    return (f"{t['speed-up']:.1f}x{' ' + how if how else ''} ({1000 * t['fast']:.0f} vs "
            f"{1000 * t['warping']:.0f} ms / image{spread}")


def _speedup(r: dict[str, Any]) -> str:
    row = _value(r, "detector.paper.speedup")
    return f"{row['value']:.1f}{_extra(row)}" if row else ""


def _scoring_seconds(r: dict[str, Any]) -> str:
    row = _value(r, "scoring.100k")
    return f"{row['value']:.2f} on {row['device']}{_extra(row)}" if row else ""


def paper_table(doc: dict[str, Any]) -> Table:
    """The papers' speed claims beside ours, one column per run of `doc` (device kind and
    mode), at the paper size (227 px, fc 4096, 2000 regions per image); blank where a run
    has no such figure (R-CNN's CPU and GPU claims go beside runs on that device only)."""
    lsda_s = paper.LSDA_SECONDS_PER_IMAGE
    claims: list[tuple[str, float, str | None, Callable[[dict[str, Any]], str]]] = [
        ("R-CNN: proposals + features, s / image, CPU", paper.RCNN_SECONDS_PER_IMAGE["cpu"], "cpu", _rcnn_per_image),
        ("R-CNN: proposals + features, s / image, GPU", paper.RCNN_SECONDS_PER_IMAGE["gpu"], "cuda", _rcnn_per_image),
        ("LSDA: warping detector, s / image", lsda_s["warp"], None, _per_image("detector.paper.warp")),
        ("LSDA: fast (SPP) detector, s / image", lsda_s["spp"], None, _per_image("detector.paper.fast")),
        ("LSDA: speed-up of the fast detector", lsda_s["warp"] / lsda_s["spp"], None, _speedup),
        ("R-CNN: 2000 x 4096 by 4096 x 100k scoring product, s (multi-core CPU)",
         paper.RCNN_100K_CLASSES_SECONDS, None, _scoring_seconds),
    ]
    rows = []
    for claim, theirs, device, ours in claims:
        row: dict[str, Any] = {"claim": claim, "paper": theirs}
        row.update({key: ours(r) for key, r in doc["runs"].items() if device in (None, r["device"])})
        rows.append(row)
    return readable(pd.DataFrame(rows).set_index("claim").fillna(""), None)


def targets_table(doc: dict[str, Any], log: dict[str, Any] | None = None) -> Table:
    """Every target of issue 6 with the measured value beside it, met or not: the book's
    build budgets from the run log (`log`, as `status.read_run_log`; the latest builds on
    record), the speed targets from the runs of `doc`."""
    out = []
    builds = ST.build_table(log or {"chapters": {}})
    for kind, what in (("cold", "the book on the embedded default, from an empty cache"),
                       ("warm", "the book on the embedded default, warm cache")):
        b = builds.loc[kind]
        goal = f"<= {ST.BUDGET_SECONDS[kind] / 60:.0f} min on the 2-core CPU"
        if b["seconds"] is None or pd.isna(b["seconds"]):
            out.append({"target": what, "goal": goal, "measured": "no full build on record yet (the Status page "
                        "shows this build's)", "met": "not measured", "where": ""})
        else:
            out.append({"target": what, "goal": goal, "measured": f"{b['seconds'] / 60:.1f} min",
                        "met": b["met"], "where": f"{b['machine']}, {b['finished']}"})
    out.extend(_floor_rows(doc, (log or {}).get("builds", [])))
    out.append({"target": "make test", "goal": "<= 15 min", "measured": "not recorded by the book build",
                "met": "not measured", "where": ""})
    out.append(_artifacts_target((log or {}).get("builds", [])))
    for key, r in doc["runs"].items():
        where = f"{key}: {machine_name(r['machine'])}"
        for stage, what in STAGE_TARGETS:
            row = _value(r, stage)
            if row is None or row.get("of_peak") is None:
                continue
            out.append({"target": f"{what} at half the matrix-product peak or more", "goal": f">= {PEAK_SHARE:.1f}",
                        "measured": f"{row['of_peak']:.2f} ({row['gflop_per_s']:.0f} of "
                                    f"{r['peaks'][row['peak']]:.0f} GFLOP/s){_extra(row)}"
                                    + _why_below(row, _value(r, stage + NET_ALONE)),
                        "met": _met(row["of_peak"] >= PEAK_SHARE, row), "where": where})
        svm = _value(r, "svm")
        if svm is not None:
            out.append({"target": "SVM training at half the matrix-product peak or more", "goal": f">= {PEAK_SHARE:.1f}",
                        "measured": f"not measured: liblinear's dual coordinate descent does a dot product and "
                                    f"an update per sample (matrix-vector work, bound by memory bandwidth, not by "
                                    f"the matrix-product peak); batched primal solvers in torch were 5-20x slower "
                                    f"on the same problems (detection.svm). {svm['value']:.1f} s for the run's "
                                    f"SVM row", "met": "not measured",
                        "where": where})
        for prefix, size in (("detector.embedded", f"embedded size, {r['threads']} torch threads"),
                             ("detector.embedded.one_thread", "embedded size, one torch thread"),
                             ("detector.paper", "paper size, 2000 regions")):
            row = _value(r, f"{prefix}.speedup")
            if row:
                out.append({"target": f"fast detector vs warping, same machine and proposals ({size})",
                            "goal": f">= {FAST_TARGET:.0f}x",
                            "measured": f"{row['value']:.1f}x{_extra(row)}{_work_ratio(r, prefix)}",
                            "met": _met(row["value"] >= FAST_TARGET, row), "where": where})
    acc = doc.get("fast_vs_warping")
    target = "fast detector within 2 mAP points of the warping one (LSDA chapter, trained networks)"
    if acc is None:
        out.append({"target": target, "goal": "<= 2 points", "measured": "the LSDA chapter has not run",
                    "met": "not measured", "where": ""})
    else:
        d = acc["warping_map"] - acc["fast_map"]
        t = acc["timing"]
        out.append({"target": target, "goal": "<= 2 points",
                    "measured": f"fast {acc['fast_map']:.1f} vs warping {acc['warping_map']:.1f} mAP "
                                f"({-d:+.1f} points); {_timing(t, 'faster')})", "met": "yes" if d <= 2 else "no",
                    "where": f"{machine_name(acc['machine'])}, {acc['measured']}"})
        out.append({"target": "fast detector vs warping in the LSDA chapter's own measurement (embedded, "
                              "trained networks)", "goal": f">= {FAST_TARGET:.0f}x",
                    "measured": f"{_timing(t)}, {t.get('proposals / image', float('nan')):.0f} proposals / image)"
                                + (_work(t["warping GFLOP"], t["fast GFLOP"], t["warping GFLOP"] / t["warping"],
                                         t["fast GFLOP"] / t["fast"]) if "fast GFLOP" in t else "")
                                + (_scaling(t) if "fast" + NO_REGION in t else ""),
                    "met": "yes" if t["speed-up"] >= FAST_TARGET else "no",
                    "where": f"{machine_name(acc['machine'])}, {acc['measured']}"})
    gpu = {k: r for k, r in doc["runs"].items() if r["device"] == "cuda"}
    for name, goal in (("warp", GPU_WARP_MS), ("fast", GPU_FAST_MS)):
        label = "warping" if name == "warp" else "fast"
        target = f"{label} detector on a GPU, paper size (227 px, fc 4096, 2000 proposals)"
        rows = [(k, r, _value(r, f"detector.paper.{name}")) for k, r in gpu.items()]
        rows = [(k, r, row) for k, r, row in rows if row is not None]
        if not rows:
            out.append({"target": target, "goal": f"<= {goal:.0f} ms / image", "measured": why_not_gpu(),
                        "met": "not measured", "where": ""})
        for k, r, row in rows:
            ms = 1000 / row["value"]
            out.append({"target": target, "goal": f"<= {goal:.0f} ms / image", "measured": f"{ms:.1f} ms{_extra(row)}",
                        "met": _met(ms <= goal, row), "where": f"{k}: {machine_name(r['machine'])}"})
    return readable(pd.DataFrame(out).set_index("target"))


# compute-bound stages held against PEAK_SHARE of their run's peak (issue 12)
PEAK_SHARE = 0.5
STAGE_TARGETS = (("training.pretrain", "pre-training (SGD step)"), ("training.finetune", "fine-tuning (SGD step)"),
                 ("features.embedded", "feature extraction, embedded net"),
                 ("features.paper", "feature extraction, paper net"), ("scoring.100k", "scoring 100k classes"))
ARTIFACT_BYTES = 10 ** 9  # artifacts/ after a full embedded build (issue 12)


def _floor_rows(doc: dict[str, Any], builds: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Could the latest cold build meet its budget on this machine at all? Its peak-bound stages
    (training, features) at the matrix-product peak of each CPU run, the rest as recorded
    (`bench.work_floor`): a floor above the budget means no tuning of those stages can."""
    cold = [b for b in builds if b.get("cache") == "cold" and b.get("stages")]
    if not cold:
        return []
    b, budget = cold[-1], ST.BUDGET_SECONDS["cold"]
    out = []
    for key, r in doc["runs"].items():
        if r["device"] != "cpu":
            continue
        f = work_floor(b, r)
        if f["floor"] is None:
            continue
        parts = ", ".join(f"{st} {v['seconds'] / 60:.0f} -> {v['at_peak'] / 60:.0f} min" for st, v in f["stages"].items())
        out.append({"target": "the cold build with training and features at the matrix-product peak (work floor)",
                    "goal": f"<= {budget / 60:.0f} min (else the budget is out of reach on this machine)",
                    "measured": f"{f['floor'] / 60:.1f} min of the build's {f['seconds'] / 60:.1f} ({parts}; "
                                f"the other {f['other'] / 60:.0f} min as recorded)",
                    "met": "yes" if f["floor"] <= budget else "no", "where": f"{key}: {machine_name(r['machine'])}"})
    return out


def _artifacts_target(builds: list[dict[str, Any]]) -> dict[str, Any]:
    """The artifact folder's size after the latest full build that recorded it."""
    target, goal = "artifacts/ after a full build (every cached stage)", "<= 1 GB"
    sized = [b for b in builds if "artifacts_bytes" in b]
    if not sized:
        return {"target": target, "goal": goal, "measured": "no full build on record with its size yet",
                "met": "not measured", "where": ""}
    b = sized[-1]
    return {"target": target, "goal": goal, "measured": f"{b['artifacts_bytes'] / 1e9:.2f} GB",
            "met": "yes" if b["artifacts_bytes"] <= ARTIFACT_BYTES else "no",
            "where": f"{b['cache']} build, {machine_name(b['machine'])}, {b['finished']}"}


def _why_below(row: dict[str, Any], net: dict[str, Any] | None) -> str:
    """What a stage's network alone (`bench._net_alone`) says of its share of peak: below half
    too, the network's own layers at this size and batch are why the stage cannot reach it."""
    if net is None or net.get("of_peak") is None:
        return ""
    said = f"; its network alone, on an input made beforehand: {net['of_peak']:.2f}"
    if row["of_peak"] >= PEAK_SHARE:
        return said
    if net["of_peak"] < PEAK_SHARE:
        return said + (", below half as well: the network's own layers at this size and batch run so in PyTorch's "
                       "kernels on this machine, so the stage cannot reach half with free input preparation either")
    return said + ": preparing the input (decoding, warping, augmenting) holds the stage below half"


def _met(ok: bool, row: dict[str, Any]) -> str:
    return ("yes" if ok else "no") + _extra(row)


WORDS = {"features": "warped features", "embedded": "embedded net", "paper": "paper net", "one_thread": "one thread",
         "fp32": "GPU path off", "scoring": "scoring", "100k": "100k classes", "warp": "warping detector",
         "fast": "fast detector", "speedup": "speed-up", "svm": "SVM training",
         "threads": "detection loop", "net": "network alone", "pretrain": "pre-training", "finetune": "fine-tuning",
         "blas_all": "NumPy's BLAS on every core", "blas_one": "NumPy's BLAS on one thread"}


def short(key: str) -> str:
    """A row key in words, e.g. detector.embedded.one_thread.fast -> fast detector, embedded
    net, one thread."""
    parts = key.split(".")
    if parts[0] == "detector":
        parts = parts[-1:] + parts[1:-1]
    return ", ".join(WORDS.get(x, x) for x in parts)


def plot_of_peak(ax: Any, doc: dict[str, Any]) -> None:
    """Horizontal bars: each compute-bound figure's share of its run's peak, one colour per run."""
    labels: list[str] = []
    for i, (key, r) in enumerate(doc["runs"].items()):
        rows = [x for x in r["rows"] if x["of_peak"] is not None and x["stage"] != "peak"]
        ax.barh(range(len(labels), len(labels) + len(rows)), [x["of_peak"] for x in rows],
                color=viz.PALETTE[i % len(viz.PALETTE)], label=key)
        labels += [short(x["key"]) for x in rows]
    ax.set_yticks(range(len(labels)), labels, fontsize=7)
    ax.set_ylim(len(labels) - 0.5, -0.5)
    ax.axvline(1.0, color="black", linewidth=0.8)
    ax.set_xlabel("share of the run's peak in the figure's arithmetic (matrix product, same device)")
    ax.legend(loc="lower right")


def text(run: dict[str, Any]) -> str:
    """The run as plain text, for the terminal (the file has the full descriptions)."""
    df = pd.DataFrame([{"figure": short(r["key"]), "value": r["value"], "unit": r["unit"],
                        "GFLOP/s": r["gflop_per_s"], "share of peak": r["of_peak"], "status": r["status"]}
                       for r in run["rows"]])
    df = df.round({"value": 3, "GFLOP/s": 1, "share of peak": 3})
    df = df.astype(object).where(df.notna(), "")
    head = (f"{run_key(run)} on {machine_name(run['machine'])}, {run['threads']} torch threads, "
            f"{run['seconds']} s")
    return head + "\n" + df.to_string(index=False)


def of_peak_figure(doc: dict[str, Any]) -> viz.Captioned:
    """`plot_of_peak` in a figure tall enough for every compute-bound row of every run, with a
    caption saying how many rows reach the target share (`PEAK_SHARE`) and which is highest."""
    rows = [(key, x) for key, r in doc["runs"].items() for x in r["rows"]
            if x["of_peak"] is not None and x["stage"] != "peak"]
    fig, ax = viz.figure(width=7, height=0.22 * len(rows) + 0.8)
    plot_of_peak(ax, doc)
    text = ("Each compute-bound figure's share of its run's peak (a large matrix product on the same device, in the "
            "arithmetic the figure ran in: the table's peak column), "
            "one colour per run; the line marks the peak.")
    if rows:
        key, best = max(rows, key=lambda kx: kx[1]["of_peak"])
        met = sum(x["of_peak"] >= PEAK_SHARE for _, x in rows)
        text += (f" {met} of {len(rows)} reach half the peak or more; the highest is {short(best['key'])} "
                 f"({key}) at {best['of_peak']:.2f}.")
    return viz.Captioned(fig, text)
