"""SGD conventions and cache identities shared by the training stages."""
import dataclasses

import numpy as np
import pytest

from lsda_core.models import solver as sgd
from lsda_core.models.nets import CaffeNet, resolve_precision
from lsda_core.store.identity import dataset_identity
from synthetic import make_classification, make_detection, params


@pytest.fixture(scope="module")
def cls_data(tmp_path_factory):
    return make_classification(tmp_path_factory.mktemp("cls"), 4, 0, "train"), None


@pytest.fixture(scope="module")
def det_data(tmp_path_factory):
    return make_detection(tmp_path_factory.mktemp("det"), 4, 2)


def test_lr_multipliers_follow_caffe():
    m = CaffeNet(params(**{"net.batch_norm": True}).net, 3)
    groups = {g["name"]: g for g in sgd.param_groups(m, 0.001, 5e-4, head_mult=10.0, frozen={"conv1"})}
    assert "conv1.weight" not in groups and not m.conv1.weight.requires_grad
    assert groups["conv2.weight"]["lr"] == pytest.approx(0.001) and groups["conv2.weight"]["weight_decay"] == 5e-4
    assert groups["conv2.bias"]["lr"] == pytest.approx(0.002) and groups["conv2.bias"]["weight_decay"] == 0
    assert groups["head.weight"]["lr"] == pytest.approx(0.01) and groups["head.bias"]["lr"] == pytest.approx(0.02)
    assert groups["conv2.bn.weight"]["weight_decay"] == 0 and groups["conv2.bn.bias"]["lr"] == pytest.approx(0.001)
    assert "conv1.bn.weight" not in groups and not m.bn[0].weight.requires_grad


def test_identity_changes_with_content(cls_data, det_data):
    train, _ = cls_data
    ds, _ = det_data
    a = dataset_identity(train)
    b = dataset_identity(dataclasses.replace(train, labels=np.roll(train.labels, 1)))
    assert a["n"] == b["n"] and a["content"] != b["content"]
    c = dataset_identity(ds)
    d = dataset_identity(dataclasses.replace(ds, images=ds.images[:-1]))
    assert c != d


def test_net_config_keys_the_precision_as_it_runs_here():
    """A cache key names the arithmetic, never "auto": a bfloat16 entry is not served to a float32 build."""
    auto = sgd.net_config(params(), with_context=False)
    assert auto["precision"] == resolve_precision("auto") != "auto" and "context" not in auto
    exact = sgd.net_config(params(**{"net.precision": "float32"}), with_context=True)
    mixed = sgd.net_config(params(**{"net.precision": "bfloat16"}), with_context=True)
    assert exact["precision"] == "float32" and mixed["precision"] == "bfloat16"
    assert {k: v for k, v in exact.items() if k != "precision"} == {k: v for k, v in mixed.items() if k != "precision"}
