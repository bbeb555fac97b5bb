"""Fixtures shared by the training and feature tests (data makers: tests/synthetic.py)."""
import pytest
import torch

from lsda_core.models import pretrain as PT
from lsda_core.store.cache import Cache
from lsda_core.store.runtime import thread_policy
from synthetic import make_classification, params


@pytest.fixture(scope="session", autouse=True)
def study_thread_policy():
    """The tests run under the thread-pool policy of the CLI and the chapters."""
    thread_policy()


@pytest.fixture(scope="module")
def one_thread():
    """Tiny nets: one thread is faster than two and immune to a busy machine's scheduling."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def cls_data(tmp_path_factory):
    """Synthetic classification train (24 per class) and val (8 per class) splits."""
    root = tmp_path_factory.mktemp("cls")
    return make_classification(root, 24, 0, "train"), make_classification(root, 8, 1, "val")


@pytest.fixture(scope="module")
def pretrained(cls_data, tmp_path_factory):
    """A small network pre-trained on `cls_data`: (model, history, its cache)."""
    cache = Cache(tmp_path_factory.mktemp("cache"))
    model, history = PT.pretrain(params(), *cls_data, cache)
    return model, history, cache
