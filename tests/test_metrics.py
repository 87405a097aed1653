from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from softtopk.metrics import topk_accuracy


def test_known_example():
    logits = torch.tensor([[1.0, 8.0, -1.0, 9.0, 5.0],   # ranks: 3, 1, 4, 0, 2
                           [0.0, 1.0, 2.0, 3.0, 4.0]])
    target = torch.tensor([4, 0])  # rank 2 in row 0, rank 4 (last) in row 1
    assert topk_accuracy(logits, target, ks=(1, 2, 3, 5)) == {1: 0.0, 2: 0.0, 3: 0.5, 5: 1.0}


def test_ties_follow_torch_topk():
    logits = torch.zeros(3, 6)  # all tied: whatever torch.topk ranks first counts as the top
    first = logits.topk(2, dim=1).indices
    assert topk_accuracy(logits, first[:, 0], ks=(1,)) == {1: 1.0}
    assert topk_accuracy(logits, first[:, 1], ks=(1, 2)) == {1: 0.0, 2: 1.0}


@settings(max_examples=40, deadline=None)
@given(n=st.integers(1, 12), c=st.integers(1, 9), seed=st.integers(0, 2**31 - 1),
       integer_scores=st.booleans())
def test_agrees_with_definition(n, c, seed, integer_scores):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(n, c, generator=g)
    if integer_scores:  # many ties
        logits = logits.round()
    target = torch.randint(0, c, (n,), generator=g)
    ks = list(range(1, c + 1))
    result = topk_accuracy(logits, target, ks)
    assert list(result) == ks
    for k in ks:
        expected = sum(int(target[i]) in logits[i].topk(k).indices.tolist() for i in range(n)) / n
        assert result[k] == pytest.approx(expected)
    assert result[c] == 1.0
    if not integer_scores:  # without ties, top-k accuracy grows with k
        values = [result[k] for k in ks]
        assert values == sorted(values)


def test_bad_input_is_rejected_clearly():
    logits, target = torch.randn(4, 3), torch.tensor([0, 1, 2, 0])
    with pytest.raises(ValueError, match=r"ks must lie in \[1, C\] = \[1, 3\].*k = 5"):
        topk_accuracy(logits, target, ks=(1, 5))
    with pytest.raises(ValueError, match="k = 0"):
        topk_accuracy(logits, target, ks=(0,))
    with pytest.raises(TypeError, match="each k of ks must be an int"):
        topk_accuracy(logits, target, ks=(1.0,))
    with pytest.raises(ValueError, match="target values must lie in"):
        topk_accuracy(logits, torch.tensor([0, 1, 2, 3]))
    with pytest.raises(ValueError, match="target must have shape"):
        topk_accuracy(logits, torch.tensor([0, 1]))
    with pytest.raises(ValueError, match=r"logits must have shape \[N, C\]"):
        topk_accuracy(torch.randn(3), torch.tensor(0))
    with pytest.raises(TypeError, match="floating-point"):
        topk_accuracy(torch.ones(4, 3, dtype=torch.long), target)


def test_multi_label_hit_when_any_true_class_is_in_the_top_k():
    logits = torch.tensor([[0.9, 0.5, 0.1, 0.0], [0.1, 0.2, 0.3, 0.4], [0.4, 0.3, 0.2, 0.1]])
    target = torch.tensor([[False, True, True, False], [True, False, False, False],
                           [False, False, False, False]])  # the last row has no true class: left out
    assert topk_accuracy(logits, target, ks=(1, 2, 4)) == {1: 0.0, 2: 0.5, 4: 1.0}


@settings(max_examples=30, deadline=None)
@given(n=st.integers(1, 6), c=st.integers(1, 8), seed=st.integers(0, 10**6))
def test_multi_label_with_one_true_class_equals_class_indices(n, c, seed):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(n, c, generator=g)
    target = torch.randint(0, c, (n,), generator=g)
    ks = list(range(1, c + 1))
    one_hot = torch.nn.functional.one_hot(target, c).bool()
    assert topk_accuracy(logits, one_hot, ks) == topk_accuracy(logits, target, ks)


def test_multi_label_bad_shape_and_empty():
    with pytest.raises(ValueError, match="shape"):
        topk_accuracy(torch.randn(3, 4), torch.zeros(3, 5, dtype=torch.bool))
    assert math.isnan(topk_accuracy(torch.randn(2, 4), torch.zeros(2, 4, dtype=torch.bool), ks=(1,))[1])


def test_a_row_with_a_nan_score_is_never_a_hit():
    logits = torch.tensor([[float("nan"), 0.0, 1.0], [0.0, 2.0, 1.0]])
    assert topk_accuracy(logits, torch.tensor([0, 1]), ks=(1, 3)) == {1: 0.5, 3: 0.5}
    labels = torch.tensor([[True, False, False], [False, True, False]])
    assert topk_accuracy(logits, labels, ks=(1, 3)) == {1: 0.5, 3: 0.5}
