"""A tiny world, generated once per test session (a few seconds), in three variants."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from lsda_core.core.params import World
from lsda_core.world import WorldLayout
from lsda_core.world import generate

TINY = World(n_categories=12, n_superclasses=3, cls_size=32, cls_train_per_class=3, cls_val_per_class=2,
             voc_classes=6, voc_train=5, voc_val=5, voc_test=6, ilsvrc_classes=8, ilsvrc_train=12,
             ilsvrc_val=10, large_box_fraction=0.25, large_train=5, large_test=5)


@pytest.fixture(scope="session")
def tiny() -> World:
    return TINY


@pytest.fixture(scope="session")
def world(tmp_path_factory: pytest.TempPathFactory) -> WorldLayout:
    """The tiny world drawn by one process."""
    out = tmp_path_factory.mktemp("world1")
    generate(TINY, out, workers=1)
    return WorldLayout(out)


@pytest.fixture(scope="session")
def world_parallel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The same world drawn by two worker processes."""
    out = tmp_path_factory.mktemp("world2")
    generate(TINY, out, workers=2)
    return out


@pytest.fixture(scope="session")
def world_other_seed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("world3")
    generate(dataclasses.replace(TINY, seed=1), out, workers=1)
    return out
