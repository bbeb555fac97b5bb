"""Run-time choices: a device the machine does not have is a user error (one line), not a crash."""
import pytest
import torch

from lsda_core.core.errors import LsdaError
from lsda_core.store.runtime import pick_device


def test_cpu_and_auto():
    assert pick_device("cpu") == torch.device("cpu")
    assert pick_device("auto").type in ("cpu", "cuda")


def test_cuda_without_a_gpu_is_a_user_error(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    for choice in ("cuda", "cuda:0"):
        with pytest.raises(LsdaError, match=rf"runtime.device is '{choice}' but this machine has no CUDA device"):
            pick_device(choice)


def test_gpu_index_beyond_the_machine(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with pytest.raises(LsdaError, match=r"'cuda:3' but this machine has 1 CUDA device\(s\), cuda:0 to cuda:0"):
        pick_device("cuda:3")
