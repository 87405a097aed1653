"""The class-sharded loss on real gloo process groups: equal, in float64, to the single-process loss
on the concatenated logits — its value on every rank and each rank's block of the gradient."""

from __future__ import annotations

import pytest
import torch
import torch.distributed as dist
from process_group import run_group

from softtopk import METHODS, linear_topk_cross_entropy, topk_cross_entropy
from softtopk.distributed import (
    count_bytes,
    vocab_parallel_linear_topk_cross_entropy,
    vocab_parallel_topk_cross_entropy,
)

P_K = [0.5, 0, 0, 0, 0.5]


def _case(seed: int, rows: int, blocks: tuple[int, ...], **settings) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits `[N, C]` and targets `[N]`; `settings` may ask for ties, masked classes, targets that all
    fall into block 0 or are all ignored."""
    g = torch.Generator().manual_seed(seed)
    classes = sum(blocks)
    logits = 3 * torch.randn(rows, classes, generator=g, dtype=torch.float64)
    target = torch.randint(0, classes, (rows,), generator=g)
    if settings.get("ties"):
        logits = (logits * 2).round() / 2
    if settings.get("first_block_targets"):
        target = target % blocks[0]
    if settings.get("masked"):  # -inf classes in the last block, targets elsewhere
        logits[:, classes - blocks[-1] :: 2] = -torch.inf
        target = target % (classes - blocks[-1])
    if settings.get("ignored"):
        target[::2] = -100
    if settings.get("all_ignored"):
        target[:] = -100
    return logits, target


CASES = [
    *[dict(method=method, m=8, inverse_temperature=2.0) for method in METHODS],
    dict(method="softmax"),
    dict(method="softmax", label_smoothing=0.2, weighted=True, ignored=True),
    dict(method="splitter_selection", m=8, p_k=[0.2] * 5, top1_mode="sort", distribution="logistic_phi",
         art_lambda=0.5),
    dict(method="bitonic", m=7, p_k=[0.25, 0.75], top1_mode="smce", reduction="sum"),
    dict(method="neuralsort", m=9, label_smoothing=0.1, weighted=True, ignored=True, reduction="none"),
    dict(method="softsort", m=8, first_block_targets=True, eps=0.0),
    dict(method="lapsum", m=8, masked=True, label_smoothing=0.3),
    dict(method="splitter_selection", m=8, masked=True, top1_mode="sort"),
    dict(method="odd_even", m=8, all_ignored=True),
    dict(method="softmax", all_ignored=True, label_smoothing=0.1),
    *[dict(method=method, m=8, ties=True) for method in ("splitter_selection", "bitonic", "neuralsort")],
    dict(method="softmax", ties=True, label_smoothing=0.1),
]


def _split_settings(case: dict) -> tuple[dict, dict]:
    data_keys = ("ties", "first_block_targets", "masked", "ignored", "all_ignored", "weighted")
    data = {k: case[k] for k in data_keys if k in case}
    loss = {k: v for k, v in case.items() if k not in data_keys}
    return data, loss


def _compare(rank: int, world: int, blocks: tuple[int, ...], cases: list[dict]) -> int:
    """Every case on this rank: the sharded loss and gradient block against the whole loss's."""
    offset = sum(blocks[:rank])
    for seed, case in enumerate(cases):
        data, settings = _split_settings(case)
        p_k = settings.pop("p_k", P_K if settings["method"] != "softmax" else [1.0])
        logits, target = _case(seed, 6, blocks, **data)
        if data.get("weighted"):
            settings["weight"] = torch.rand(sum(blocks), generator=torch.Generator().manual_seed(seed),
                                            dtype=torch.float64) + 0.5
        whole = logits.clone().requires_grad_()
        expected = topk_cross_entropy(whole, target, p_k, **settings)
        expected.sum().backward()
        local = logits[:, offset : offset + blocks[rank]].clone().requires_grad_()
        ours = vocab_parallel_topk_cross_entropy(local, target, p_k, **settings)
        ours.sum().backward()
        context = f"case {case}"
        torch.testing.assert_close(ours, expected, rtol=1e-12, atol=1e-12, equal_nan=True, msg=context)
        torch.testing.assert_close(local.grad, whole.grad[:, offset : offset + blocks[rank]], rtol=1e-10,
                                   atol=1e-12, msg=context)
        assert torch.isfinite(local.grad).all(), context
    return len(cases)


@pytest.mark.parametrize("blocks", [(20, 17), (5, 20, 12)])
def test_equal_to_one_process(blocks):
    # (5, 20, 12): rank 0 holds fewer classes than m; uneven blocks throughout.
    assert run_group(len(blocks), _compare, blocks, CASES) == [len(CASES)] * len(blocks)


def _bytes(rank: int, world: int, widths: tuple[int, ...]) -> list[int]:
    sent = []
    for width in widths:
        logits = torch.randn(16, width, dtype=torch.float64, requires_grad=True)
        target = torch.randint(0, width * world, (16,))
        with count_bytes() as counter:
            vocab_parallel_topk_cross_entropy(logits, target, P_K, method="splitter_selection", m=8,
                                              label_smoothing=0.1).backward()
        sent.append(counter[0])
    return sent


def test_bytes_sent_do_not_grow_with_the_classes():
    sent = run_group(2, _bytes, (10, 1000, 20000))
    assert sent[0] == sent[1]
    assert len(set(sent[0])) == 1 and sent[0][0] > 0
    # values and indices of [world, N, m], and a few numbers per row: N (m (8 + 8) + 5 * 8) + header
    assert sent[0][0] <= 16 * (8 * 16 + 5 * 8) + 3 * 8


def _errors(rank: int, world: int) -> int:
    logits = torch.randn(4, 10 + rank)
    target = torch.zeros(4, dtype=torch.long)
    with pytest.raises(ValueError, match="m is required"):
        vocab_parallel_topk_cross_entropy(logits, target, P_K, method="bitonic")
    with pytest.raises(ValueError, match="label_smoothing must lie in"):
        vocab_parallel_topk_cross_entropy(logits, target, [1.0], method="softmax", label_smoothing=1.5)
    with pytest.raises(ValueError, match="needs p_k = "):
        vocab_parallel_topk_cross_entropy(logits, target, P_K, method="softmax")
    with pytest.raises(ValueError, match="m must be smaller than the number of classes C = 21"):
        vocab_parallel_topk_cross_entropy(logits, target, P_K, method="bitonic", m=21)
    with pytest.raises(ValueError, match="same number of rows N on every rank"):
        vocab_parallel_topk_cross_entropy(torch.randn(4 + rank, 10), target, P_K, method="bitonic", m=8)
    dist.barrier()
    return 0


def test_bad_input_fails_on_every_rank():
    assert run_group(2, _errors) == [0, 0]


HEAD_CASES = [
    dict(method="splitter_selection", m=8, label_smoothing=0.1, weighted=True, ignored=True),
    dict(method="softmax", p_k=[1.0], reduction="sum"),
    dict(method="neuralsort", m=6, p_k=[0.25, 0.75], reduction="none"),
]


def _compare_heads(rank: int, world: int, blocks: tuple[int, ...]) -> int:
    """The sharded head against the whole fused head: loss, input gradient (summed over the ranks),
    and this rank's block of the weight and bias gradients."""
    offset, width = sum(blocks[:rank]), blocks[rank]
    for seed, case in enumerate(HEAD_CASES):
        settings = dict(case)
        p_k = settings.pop("p_k", P_K)
        g = torch.Generator().manual_seed(seed)
        x = torch.randn(11, 5, generator=g, dtype=torch.float64)
        weight = torch.randn(sum(blocks), 5, generator=g, dtype=torch.float64)
        bias = torch.randn(sum(blocks), generator=g, dtype=torch.float64)
        target = torch.randint(0, sum(blocks), (11,), generator=g)
        if settings.pop("ignored", False):
            target[::3] = -100
        if settings.pop("weighted", False):
            settings["class_weight"] = torch.rand(sum(blocks), generator=g, dtype=torch.float64) + 0.5
        per_row = settings.get("reduction") == "none"
        outer = torch.rand(11, generator=g, dtype=torch.float64) if per_row else 3.0
        whole = [t.clone().requires_grad_() for t in (x, weight, bias)]
        expected = linear_topk_cross_entropy(whole[0], whole[1], target, p_k, whole[2], chunk_size=4,
                                             **settings)
        (expected * outer).sum().backward()
        mine = [x.clone().requires_grad_(), weight[offset : offset + width].clone().requires_grad_(),
                bias[offset : offset + width].clone().requires_grad_()]
        ours = vocab_parallel_linear_topk_cross_entropy(mine[0], mine[1], target, p_k, mine[2], chunk_size=4,
                                                        **settings)
        (ours * outer).sum().backward()
        context = f"case {case}"
        torch.testing.assert_close(ours, expected, rtol=1e-12, atol=1e-12, msg=context)
        torch.testing.assert_close(mine[0].grad, whole[0].grad, rtol=1e-10, atol=1e-12, msg=context)
        for ours_grad, whole_grad in zip(mine[1:], whole[1:], strict=True):
            torch.testing.assert_close(ours_grad.grad, whole_grad.grad[offset : offset + width], rtol=1e-10,
                                       atol=1e-12, msg=context)
    return len(HEAD_CASES)


def test_the_sharded_head_equals_the_whole_fused_head():
    assert run_group(3, _compare_heads, (9, 14, 6)) == [len(HEAD_CASES)] * 3
