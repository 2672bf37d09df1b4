import os

# The suite runs in two pytest-xdist workers, each with torch's two threads, and its training tests start
# subprocesses: more threads than cores. OpenMP's default is to spin while it waits for work, which burns the
# core another process needs; a passive wait gives it up. Set before torch (and its OpenMP) loads, and inherited
# by every subprocess the tests start. It changes no result: only how idle threads wait.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import pytest
import torch


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def randomize_bn(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Give every BN non-trivial affine parameters and running statistics, so equality tests mean something."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d | torch.nn.BatchNorm1d):
            n = m.num_features
            with torch.no_grad():
                m.weight.copy_(0.5 + torch.rand(n, generator=g))
                m.bias.copy_(0.1 * torch.randn(n, generator=g))
                m.running_mean.copy_(0.1 * torch.randn(n, generator=g))
                m.running_var.copy_(0.5 + torch.rand(n, generator=g))
    return model


@pytest.fixture(autouse=True, scope="session")
def _computing_process():
    """What the CLI does before every command that runs a network (runtime.configure_process: subnormal floats
    flushed), done for the tests that call the stages in-process too, so they run at the commands' speed."""
    from transfer.runtime import configure_process

    configure_process()
