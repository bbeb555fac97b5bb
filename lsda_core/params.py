"""The one parameter schema of the study: dataclasses loaded from YAML and validated.

The CLI and every notebook (through Papermill) receive the same validated `Params`.
A preset may inherit from another with `base: other.yaml`; an unknown key, a wrong type or
an out-of-range value raises `ParamsError`, whose message names the file, the key and what
is valid.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from lsda_core.errors import LsdaError


class ParamsError(LsdaError, ValueError):
    """A parameter file or override that does not fit the schema."""


def _p(default: Any, help: str, *, lo: float | None = None, hi: float | None = None,
       choices: tuple | None = None, path: bool = False) -> Any:
    """A schema field with its help text and its valid range or choices."""
    meta = {"help": help, "lo": lo, "hi": hi, "choices": choices, "path": path}
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata=meta)
    return field(default=default, metadata=meta)


@dataclass
class Runtime:
    """Where and how things run; none of it changes a result except `seed`."""

    seed: int = _p(0, "master seed for every random draw of the study", lo=0)
    device: str = _p("auto", "auto (CUDA when present, else CPU), cpu, cuda or cuda:N")
    workers: int = _p(2, "worker processes for parallel stages (proposals, rendering)", lo=1, hi=256)
    artifacts: str = _p("artifacts", "cache folder for every expensive stage", path=True)
    progress: bool = _p(True, "show progress bars on long work")


@dataclass
class World:
    """The embedded, procedurally generated world (see lsda_core.world)."""

    seed: int = _p(0, "seed of the world: categories, scenes, every pixel", lo=0)
    n_categories: int = _p(200, "categories in the world (all appear in the classification view)", lo=4, hi=5000)
    n_superclasses: int = _p(20, "superclasses; categories of one superclass share a body template", lo=1, hi=500)
    cls_size: int = _p(64, "side of the square object-centric classification images (px)", lo=16, hi=1024)
    cls_train_per_class: int = _p(40, "classification training images per category", lo=1)
    cls_val_per_class: int = _p(10, "classification validation images per category", lo=1)
    det_width: int = _p(160, "width of detection scene images (px)", lo=32, hi=4096)
    det_height: int = _p(120, "height of detection scene images (px)", lo=32, hi=4096)
    objects_min: int = _p(1, "fewest labelled objects per detection scene", lo=1, hi=50)
    objects_max: int = _p(4, "most labelled objects per detection scene", lo=1, hi=50)
    distractors_max: int = _p(3, "most distractor shapes (no category) per scene", lo=0, hi=50)
    occluders_max: int = _p(2, "most plain occluders per scene", lo=0, hi=50)
    voc_classes: int = _p(20, "categories of the VOC-like detection benchmark", lo=2)
    voc_train: int = _p(300, "VOC-like train images", lo=1)
    voc_val: int = _p(300, "VOC-like val images", lo=1)
    voc_test: int = _p(400, "VOC-like test images", lo=1)
    ilsvrc_classes: int = _p(60, "categories of the ILSVRC-DET-like benchmark (first half alphabetically has boxes)", lo=2)
    ilsvrc_train: int = _p(600, "ILSVRC-like detection train images (boxes for set B only)", lo=1)
    ilsvrc_val: int = _p(300, "ILSVRC-like val images (boxes for all categories)", lo=1)
    ilsvrc_test: int = _p(400, "ILSVRC-like test images (boxes for all categories)", lo=1)
    large_box_fraction: float = _p(0.1, "share of all categories with boxes in the large-scale view", lo=0.0, hi=1.0)
    large_test: int = _p(200, "large-scale view test scenes", lo=1)


@dataclass
class Data:
    """Which data the chapters use: the embedded world or real datasets by path."""

    source: str = _p("embedded", "embedded, or real: voc2007 / ilsvrc2013", choices=("embedded", "voc2007", "ilsvrc2013"))
    voc_root: str | None = _p(None, "real PASCAL VOC root (the folder holding Annotations/, JPEGImages/)", path=True)
    ilsvrc_root: str | None = _p(None, "real ILSVRC2013 DET root (ILSVRC2013_DET_* folders and devkit/)", path=True)
    imagenet_root: str | None = _p(None, "ImageNet-style classification root (one folder per class)", path=True)
    imagenet_weights: str | None = _p(None, "ImageNet AlexNet weights on disk (torchvision cache file)", path=True)


@dataclass
class Params:
    """Every parameter of the study, by section."""

    runtime: Runtime = field(default_factory=Runtime)
    world: World = field(default_factory=World)
    data: Data = field(default_factory=Data)

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dict (YAML/JSON-ready)."""
        return dataclasses.asdict(self)

    def digest(self, *sections: str) -> str:
        """Stable hash of the named sections (all when none): a cache-key ingredient."""
        d = self.to_dict()
        picked = {s: d[s] for s in (sections or tuple(d))}
        return hashlib.sha256(json.dumps(picked, sort_keys=True).encode()).hexdigest()[:16]


# ---------------------------------------------------------------------------------------
# loading and validation

def _describe(cls: type) -> str:
    """One line per key of a section: name, type, default and help (used in errors)."""
    hints = typing.get_type_hints(cls)
    lines = []
    for f in dataclasses.fields(cls):
        if dataclasses.is_dataclass(hints[f.name]):
            lines.append(f"  {f.name}: section")
            continue
        m = f.metadata
        rng = ""
        if m.get("choices"):
            rng = f" one of {list(m['choices'])}"
        elif m.get("lo") is not None or m.get("hi") is not None:
            rng = f" in [{m.get('lo', '')}, {m.get('hi') if m.get('hi') is not None else ''}]"
        lines.append(f"  {f.name} ({_type_name(hints[f.name])}{rng}, default {f.default!r}): {m.get('help', '')}")
    return "\n".join(lines)


def _type_name(tp: Any) -> str:
    if isinstance(tp, types.UnionType) or typing.get_origin(tp) is typing.Union:
        return " or ".join(_type_name(a) for a in typing.get_args(tp))
    return "null" if tp is type(None) else getattr(tp, "__name__", str(tp))


def _coerce(value: Any, tp: Any, where: str) -> Any:
    """Check `value` against type `tp`; ints are accepted where floats are expected."""
    if isinstance(tp, types.UnionType) or typing.get_origin(tp) is typing.Union:
        for arg in typing.get_args(tp):
            try:
                return _coerce(value, arg, where)
            except ParamsError:
                pass
        raise ParamsError(f"{where}: expected {_type_name(tp)}, got {value!r}")
    if tp is type(None):
        if value is None:
            return None
    elif typing.get_origin(tp) is list:
        if isinstance(value, list):
            (item,) = typing.get_args(tp)
            return [_coerce(v, item, f"{where}[{i}]") for i, v in enumerate(value)]
    elif tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif tp is str:
        if isinstance(value, str):
            return value
    raise ParamsError(f"{where}: expected {_type_name(tp)}, got {value!r}")


def _build(cls: type, data: Any, where: str) -> Any:
    """Build dataclass `cls` from a mapping, validating every key and value."""
    if not isinstance(data, dict):
        raise ParamsError(f"{where}: expected a mapping of keys, got {data!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        valid = ", ".join(fields)
        raise ParamsError(f"{where or 'top level'}: unknown key {unknown[0]!r} (valid: {valid}; "
                          f"'lsda params --schema' explains each)")
    kwargs = {}
    for name, value in data.items():
        f, tp, key = fields[name], hints[name], f"{where}.{name}" if where else name
        if dataclasses.is_dataclass(tp):
            kwargs[name] = _build(tp, value, key)
            continue
        value = _coerce(value, tp, key)
        m = f.metadata
        if m.get("choices") and value not in m["choices"]:
            raise ParamsError(f"{key}: {value!r} is not one of {list(m['choices'])}")
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            if m.get("lo") is not None and value < m["lo"] or m.get("hi") is not None and value > m["hi"]:
                lo, hi = m.get("lo"), m.get("hi")
                rule = f"in [{lo}, {hi}]" if lo is not None and hi is not None else (
                    f">= {lo}" if lo is not None else f"<= {hi}")
                raise ParamsError(f"{key}: {value!r} is out of range (must be {rule})")
        if m.get("path") and isinstance(value, str):
            value = os.path.expanduser(os.path.expandvars(value))
        kwargs[name] = value
    return cls(**kwargs)


def _check(p: Params) -> None:
    """Cross-field rules that a single field's range cannot say."""
    w = p.world
    if w.objects_min > w.objects_max:
        raise ParamsError(f"world.objects_min ({w.objects_min}) exceeds world.objects_max ({w.objects_max})")
    for key in ("voc_classes", "ilsvrc_classes", "n_superclasses"):
        if getattr(w, key) > w.n_categories:
            raise ParamsError(f"world.{key} ({getattr(w, key)}) exceeds world.n_categories ({w.n_categories})")
    dev = p.runtime.device
    if dev not in ("auto", "cpu", "cuda") and not (dev.startswith("cuda:") and dev[5:].isdigit()):
        raise ParamsError(f"runtime.device: {dev!r} is not auto, cpu, cuda or cuda:N")


def _merge(base: dict, over: dict) -> dict:
    """Deep-merge `over` into a copy of `base` (mappings merge, anything else replaces)."""
    out = dict(base)
    for k, v in over.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def read_yaml(path: str | Path, _seen: tuple[Path, ...] = ()) -> dict:
    """Read a preset, resolving its `base:` chain (relative to the preset's folder)."""
    path = Path(path).resolve()
    if path in _seen:
        raise ParamsError(f"{path}: circular 'base:' chain")
    if not path.is_file():
        raise ParamsError(f"{path}: parameter file not found")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise ParamsError(f"{path}: not valid YAML ({e})".replace("\n", " ")) from None
    if not isinstance(data, dict):
        raise ParamsError(f"{path}: expected a mapping of sections at the top level")
    base = data.pop("base", None)
    if base is not None:
        data = _merge(read_yaml(path.parent / base, _seen + (path,)), data)
    return data


def parse_overrides(pairs: list[tuple[str, str]] | dict[str, Any] | None) -> dict:
    """Turn dotted overrides (`world.seed 3`, values parsed as YAML) into a nested dict."""
    if not pairs:
        return {}
    items = pairs.items() if isinstance(pairs, dict) else pairs
    nested: dict = {}
    for key, value in items:
        if isinstance(value, str):
            value = yaml.safe_load(value) if value.strip() else value
        parts = key.split(".")
        d = nested
        for part in parts[:-1]:
            d = d.setdefault(part, {})
        d[parts[-1]] = value
    return nested


def load(path: str | Path | None = None, overrides: list[tuple[str, str]] | dict | None = None) -> Params:
    """Load and validate a preset (None: the schema defaults) with dotted overrides on top."""
    data = read_yaml(path) if path is not None else {}
    data = _merge(data, parse_overrides(overrides))
    where = str(path) if path is not None else "params"
    try:
        p = _build(Params, data, "")
        _check(p)
    except ParamsError as e:
        raise ParamsError(f"{where}: {e}") from None
    return p


def schema_help() -> str:
    """Every section and key with type, default and help, for `lsda params`."""
    out = []
    for f in dataclasses.fields(Params):
        out.append(f"{f.name}:")
        out.append(_describe(typing.get_type_hints(Params)[f.name]))
    return "\n".join(out)
