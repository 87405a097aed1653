"""The probe's head sharded by classes over torchrun's processes (`--head sharded`): process r holds
the r-th contiguous block of the head's rows (W and b) and the Adam moments of that block, the body
(the hidden layer, if any) is replicated, and every process trains on the whole batch with the
class-sharded loss (`softtopk.distributed.vocab_parallel_linear_topk_cross_entropy`).

Checkpoints hold the whole model and optimizer as one process has them (`whole_state`), so that a
run resumes on any number of processes, sharded or not; each process takes its block of a whole
state on restore (`load_whole_state`).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from softtopk_experiments.training.distributed import Group
from softtopk_experiments.training.models import split_head


def check_world(head: str | None, world: int) -> None:
    """ValueError unless a class-sharded head has several processes to shard over."""
    if head == "sharded" and world < 2:
        raise ValueError("`head` sharded splits the head's classes over the processes of torchrun: run "
                         "torchrun --nproc_per_node N -m softtopk finetune --head sharded ... with N >= 2 "
                         "(this is one process)")


class ClassShardedLinear(nn.Module):
    """This process's block of a linear layer's output features (the classes): `weight [C_r, H]`,
    `bias [C_r]`, rows `group.block(C)` of the whole layer's. `forward` gives the whole layer's
    output `[N, H] -> [N, C]`, gathered from every process's block (for evaluation; training takes
    the block itself into the sharded loss)."""

    def __init__(self, whole: nn.Linear, group: Group) -> None:
        super().__init__()
        self.group, self.classes = group, whole.out_features
        rows = group.block(self.classes)
        self.weight = nn.Parameter(whole.weight.detach()[rows].clone())
        self.bias = None if whole.bias is None else nn.Parameter(whole.bias.detach()[rows].clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.group.gather_blocks(nn.functional.linear(x, self.weight, self.bias), self.classes)


def shard_classes(model: nn.Module, group: Group) -> nn.Module:
    """A probe (`models.embedding_probe`) with its last layer, the linear head, replaced by this
    process's block of it (`ClassShardedLinear`); the body is kept as it is."""
    check_world("sharded", group.world)
    body, head = split_head(model)
    if not isinstance(head, nn.Linear):
        raise ValueError(f"a sharded head needs a model that ends in a linear layer, got "
                         f"{type(head).__name__}")
    sharded = ClassShardedLinear(head, group)
    return nn.Sequential(*body, sharded) if isinstance(model, nn.Sequential) else sharded


def _sharded(model: nn.Module) -> dict[str, tuple[nn.Parameter, ClassShardedLinear]]:
    """The parameters of the class-sharded layers of `model` by name, with their layer."""
    return {f"{prefix}.{name}".lstrip("."): (parameter, layer)
            for prefix, layer in model.named_modules() if isinstance(layer, ClassShardedLinear)
            for name, parameter in layer.named_parameters(recurse=False)}


Change = Callable[[torch.Tensor, ClassShardedLinear], torch.Tensor]


def _map_blocks(model: nn.Module, change: Change, model_state: dict,
                optimizer: torch.optim.Optimizer | None = None,
                optimizer_state: dict | None = None) -> tuple[dict, dict | None]:
    """The state dicts with `change(tensor, layer)` applied to the parameters of each class-sharded
    layer and (with `optimizer`) to their optimizer state of one row per class (Adam's moments, not its
    step), in the same order on every process; new dicts, the live state untouched."""
    sharded = _sharded(model)
    if not sharded:
        return model_state, optimizer_state
    model_state = dict(model_state)
    for name, (_, layer) in sharded.items():
        model_state[name] = change(model_state[name], layer)
    if optimizer is None:
        return model_state, optimizer_state
    parameters = [p for group in optimizer.param_groups for p in group["params"]]
    index = {id(p): i for i, p in enumerate(parameters)}  # the keys of the optimizer's state dict
    states = dict(optimizer_state["state"])
    for parameter, layer in sharded.values():
        i = index[id(parameter)]
        if i in states:
            states[i] = {key: change(value, layer) if _per_class(value, parameter) else value
                         for key, value in states[i].items()}
    return model_state, {**optimizer_state, "state": states}


def _per_class(value: object, parameter: torch.Tensor) -> bool:
    """Whether an optimizer state `value` of `parameter` has a row per class, as the parameter has."""
    return (isinstance(value, torch.Tensor) and value.dim() == parameter.dim()
            and value.shape[1:] == parameter.shape[1:])


def whole_state(model: nn.Module, optimizer: torch.optim.Optimizer | None = None) -> tuple[dict, dict | None]:
    """`(model.state_dict(), optimizer.state_dict())` of the whole model, as one process holds them,
    on the main process: the blocks of the class-sharded layers (and with `optimizer`, their state:
    Adam's moments) gathered in rank order, on its CPU; the other processes get their own state back,
    and without `optimizer`, None for its state. Every process must call it. A model without sharded
    layers: its state dicts as they are."""

    def gather(block: torch.Tensor, layer: ClassShardedLinear) -> torch.Tensor:
        whole = layer.group.gather_rows(block, layer.classes)
        return block if whole is None else whole

    return _map_blocks(model, gather, model.state_dict(), optimizer,
                       None if optimizer is None else optimizer.state_dict())


def load_whole_state(model: nn.Module, optimizer: torch.optim.Optimizer, model_state: dict,
                     optimizer_state: dict) -> None:
    """Load the state of the whole model and its optimizer, as `whole_state` or one process gives
    them: each class-sharded layer takes its block of the rows (a copy, which does not keep the whole
    tensor alive)."""

    def block(whole: torch.Tensor, layer: ClassShardedLinear) -> torch.Tensor:
        return whole[layer.group.block(layer.classes)].clone()

    model_state, optimizer_state = _map_blocks(model, block, model_state, optimizer, optimizer_state)
    model.load_state_dict(model_state)
    optimizer.load_state_dict(optimizer_state)
