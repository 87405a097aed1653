"""The class-sharded head's blocks on gloo groups of real processes (the library's tests/process_group.py):
its gathered logits, and the whole model's and Adam's state gathered from the blocks and split into them."""

from __future__ import annotations

import copy
import sys
from pathlib import Path

import torch
from torch import nn

from softtopk_experiments.training.class_sharding import (
    ClassShardedLinear,
    load_whole_state,
    shard_classes,
    whole_state,
)
from softtopk_experiments.training.distributed import Group

sys.path.insert(0, str(Path(__file__).parents[2] / "tests"))
from process_group import run_group  # noqa: E402


def _stepped(model: nn.Module, gradients: list[torch.Tensor], rows: slice) -> torch.optim.Adam:
    """Adam after two steps on `model` with the given gradients (the head's, the last two, cut to `rows`)."""
    optimizer = torch.optim.Adam(model.parameters(), lr=0.1)
    for scale in (1.0, -0.5):
        parameters = list(model.parameters())
        for i, (parameter, gradient) in enumerate(zip(parameters, gradients, strict=True)):
            parameter.grad = scale * (gradient[rows] if i >= len(parameters) - 2 else gradient)
        optimizer.step()
    return optimizer


def _equal_states(state: dict, reference: dict) -> None:
    assert state.keys() == reference.keys()
    for key, value in reference.items():
        assert torch.equal(state[key], value), key


def _blocks(rank: int, world: int, classes: int) -> list[int]:
    """This process's `[start, stop)` of the classes, after checking its block's logits and state."""
    group = Group(rank, world)
    rows = group.block(classes)
    expected = torch.tensor_split(torch.arange(classes), world)[rank]
    torch.manual_seed(0)
    whole = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, classes))
    sharded = shard_classes(copy.deepcopy(whole), group)
    assert isinstance(sharded[2], ClassShardedLinear)
    assert torch.equal(sharded[2].weight, whole[2].weight[expected])
    x = torch.randn(5, 4)
    with torch.no_grad():
        torch.testing.assert_close(sharded(x), whole(x), rtol=0, atol=1e-7)  # every block gathered in order

    gradients = [torch.randn(p.shape) for p in whole.parameters()]
    whole_optimizer = _stepped(whole, gradients, slice(None))
    sharded_optimizer = _stepped(sharded, gradients, rows)
    model_state, optimizer_state = whole_state(sharded, sharded_optimizer)
    if group.is_main:  # Adam is elementwise: the blocks' state is exactly the whole head's
        _equal_states(model_state, whole.state_dict())
        assert optimizer_state["param_groups"] == whole_optimizer.state_dict()["param_groups"]
        for index, moments in whole_optimizer.state_dict()["state"].items():
            _equal_states(optimizer_state["state"][index], moments)
    assert sharded_optimizer.state[sharded[2].weight]["exp_avg"].shape == (rows.stop - rows.start, 3)

    # one process's state restored into blocks: each process takes its rows, and continues as the whole
    restored = shard_classes(nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, classes)), group)
    restored_optimizer = torch.optim.Adam(restored.parameters(), lr=0.1)
    load_whole_state(restored, restored_optimizer, whole.state_dict(), whole_optimizer.state_dict())
    _equal_states(restored.state_dict(), sharded.state_dict())
    for before, after in zip(sharded.parameters(), restored.parameters(), strict=True):
        _equal_states(restored_optimizer.state[after], sharded_optimizer.state[before])
    return [rows.start, rows.stop]


def _both(rank: int, world: int) -> list[list[int]]:
    return [_blocks(rank, world, classes) for classes in (7, 1)]


def test_a_sharded_head_gathers_and_splits_the_whole_state():
    """Two processes with blocks of 4 and 3 classes, or of 1 and none."""
    assert run_group(2, _both, timeout=60) == [[[0, 4], [0, 1]], [[4, 7], [1, 1]]]
