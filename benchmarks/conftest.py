import os

import pytest

from .workloads import select


def pytest_generate_tests(metafunc):
    if "workload" in metafunc.fixturenames:
        # Heavy sweep points (torchvision takes seconds per call) only with PYDET_BENCH_ALL=1.
        workloads = select(quick=os.environ.get("PYDET_BENCH_ALL", "0") != "1")
        metafunc.parametrize("workload", workloads, ids=[w.name for w in workloads])
    if "side" in metafunc.fixturenames:
        metafunc.parametrize("side", ["torchvision", "pydet_ops"])


@pytest.fixture(autouse=True)
def _fixed_threads():
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(os.cpu_count())
    yield
    torch.set_num_threads(previous)
