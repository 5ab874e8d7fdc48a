import pytest

from .workloads import all_workloads


def pytest_generate_tests(metafunc):
    if "workload" in metafunc.fixturenames:
        workloads = all_workloads()
        metafunc.parametrize("workload", workloads, ids=[w.name for w in workloads])
    if "side" in metafunc.fixturenames:
        metafunc.parametrize("side", ["torchvision", "pydet_ops"])


@pytest.fixture(autouse=True)
def _fixed_threads():
    import os

    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(os.cpu_count())
    yield
    torch.set_num_threads(previous)
