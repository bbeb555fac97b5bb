"""Run-time choices: a device the machine does not have is a user error (one line), not a crash;
the thread-pool policy reaches every BLAS."""
import json
import os
import subprocess
import sys

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


def test_thread_policy_holds_for_blas_loaded_before_and_after():
    """In a fresh process: NumPy's BLAS (loaded before) and SciPy's (loaded after the call) run
    on one thread; torch keeps its own pool; worker processes inherit the setting."""
    code = ("import json, numpy, torch, threadpoolctl\n"
            "n = torch.get_num_threads()\n"
            "from lsda_core.store.runtime import thread_policy\n"
            "thread_policy()\n"
            "import scipy.linalg, os\n"
            "blas = [i['num_threads'] for i in threadpoolctl.threadpool_info() if i['user_api'] == 'blas']\n"
            "print(json.dumps([blas, n, torch.get_num_threads(), os.environ['OPENBLAS_NUM_THREADS']]))\n")
    env = {k: v for k, v in os.environ.items() if k != "OPENBLAS_NUM_THREADS"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    blas, before, after, inherited = json.loads(out.stdout.strip().splitlines()[-1])
    assert blas and set(blas) == {1}, blas
    assert after == before and inherited == "1"
