"""The Triton backend of the sorting networks against the torch path: with CUDA, the compiled kernels
on CUDA tensors; without, Triton's interpreter on CPU tensors.

The interpreter runs the kernels slowly, so the cases are small: every kind x
sigmoid on a few items, and a handful of cases at the paper's sizes. The reference is the torch path
in float64, and the kernel (float32) must agree with it to 1e-5, or where the torch path's own float32
result is further off (ill-conditioned comparators: close scores, logistic_phi, large log masses), to
within 1.5 times that error: never less accurate than the torch path.
"""

from __future__ import annotations

import collections
import contextlib
import importlib
from types import SimpleNamespace

import pytest
import torch

pytest.importorskip("triton", exc_type=ImportError)  # absent, or an install that cannot load
from torch.utils._python_dispatch import TorchDispatchMode, _disable_current_modes  # noqa: E402
from triton.runtime import interpreter  # noqa: E402

import softtopk  # noqa: E402
from softtopk import _checks  # noqa: E402
from softtopk.relax import networks  # noqa: E402
from softtopk.relax.networks import backend, torch_path  # noqa: E402
from softtopk.relax.networks.sigmoids import DISTRIBUTIONS  # noqa: E402

# Branchless kernels evaluate log and division where the other branch is taken; numpy warns.
pytestmark = pytest.mark.filterwarnings("ignore:.*encountered in:RuntimeWarning")

KINDS = ("bitonic", "odd_even", "splitter_selection")
DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")
TOL = {"rtol": 1e-5, "atol": 1e-5}


@pytest.fixture(scope="module")
def launch():
    """The Triton backend's module `triton_launch`, imported under the interpreter on a CPU-only
    machine; both variables are restored afterwards."""
    with pytest.MonkeyPatch.context() as mp:
        if DEVICE.type == "cpu":
            mp.setenv("TRITON_INTERPRET", "1")
        mp.setenv("SOFTTOPK_BACKEND", "triton")
        module = importlib.import_module("softtopk.relax.networks.triton_launch")
        if DEVICE.type == "cpu":
            assert module.kernels.INTERPRETED, "the kernels were imported before TRITON_INTERPRET=1 was set"
        yield module


@pytest.fixture
def launches(launch, monkeypatch):
    """How often the forward and backward of each of the backend's autograd Functions ran
    ('linear_forward', 'log_backward', 'item_forward': `ItemRanks`, ...)."""
    counts = collections.Counter()

    def spy(name: str, run):
        def counted(*args):
            counts[name] += 1
            return run(*args)

        return counted

    for prefix, function in (("linear", launch.LinearNetwork), ("log", launch.LogNetwork),
                             ("item", launch.ItemRanks)):
        for step in ("forward", "backward"):
            run = getattr(function, step)
            monkeypatch.setattr(function, step, staticmethod(spy(f"{prefix}_{step}", run)))
    return counts


def _scores(batch: int, n: int, masked: bool, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    scores = 2 * torch.randn(batch, n, generator=g, dtype=torch.float64)
    if masked:  # a masked item in every row, and a second one in row 0
        scores[torch.arange(batch), torch.randint(0, n, (batch,), generator=g)] = -torch.inf
        scores[0, n // 2] = -torch.inf
    return scores.to(DEVICE)


def _index(batch: int, n: int, j: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed + 1)
    return torch.stack([torch.randperm(n, generator=g)[:j] for _ in range(batch)]).to(DEVICE)


def _value_and_grad(fn, scores: torch.Tensor, dtype: torch.dtype, seed: int):
    """fn(scores) and the gradient of a random weighting of its finite entries, on the CPU."""
    x = scores.to(dtype, copy=True).requires_grad_()
    out = fn(x)
    weights = torch.randn(out.shape, generator=torch.Generator().manual_seed(seed + 2), dtype=torch.float64)
    finite = torch.isfinite(out)
    (out.masked_fill(~finite, 0) * weights.to(out)).sum().backward()
    return out.detach().cpu(), x.grad.cpu()


def _assert_close(actual: torch.Tensor, expected: torch.Tensor, torch_float32: torch.Tensor) -> None:
    """actual (the kernel's) within 1e-5 of expected, or within 1.5x the torch path's float32 error."""
    finite = torch.isfinite(expected)
    torch_error = (torch_float32.double() - expected)[finite].abs().max().item() if finite.any() else 0.0
    atol = max(TOL["atol"], 1.5 * torch_error)
    torch.testing.assert_close(actual, expected.float(), rtol=TOL["rtol"], atol=atol)


def _assert_matches_torch(fn, scores: torch.Tensor, seed: int = 0) -> None:
    expected = _value_and_grad(fn, scores, torch.float64, seed)  # float64: the torch path
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SOFTTOPK_BACKEND", "torch")
        torch_float32 = _value_and_grad(fn, scores, torch.float32, seed)
    actual = _value_and_grad(fn, scores, torch.float32, seed)
    for a, e, t in zip(actual, expected, torch_float32, strict=True):
        _assert_close(a, e, t)


def _item_case(kind: str, distribution: str, n: int, k: int, batch: int, j: int, masked: bool, log: bool,
               launches, seed: int = 0, beta: float = 1.0) -> None:
    scores, index = _scores(batch, n, masked, seed), _index(batch, n, j, seed)

    def fn(x):
        return networks.item_ranks(x, index, k, kind, beta, distribution, 0.4, log=log)

    _assert_matches_torch(fn, scores, seed)
    assert launches["item_forward"] == 1 and launches["item_backward"] == 1


@pytest.mark.parametrize("log", [False, True], ids=["linear", "log"])
@pytest.mark.parametrize("distribution", list(DISTRIBUTIONS))
@pytest.mark.parametrize("kind", KINDS)
def test_item_ranks_every_kind_and_sigmoid(kind: str, distribution: str, log: bool, launches) -> None:
    """n = 5, two items per row; masked items in every other case, so that each (kind, domain)
    runs with and without them."""
    masked = (list(DISTRIBUTIONS).index(distribution) + log) % 2 == 1
    _item_case(kind, distribution, n=5, k=3, batch=3, j=2, masked=masked, log=log, launches=launches)


@pytest.mark.parametrize(("kind", "n", "k", "batch", "j", "masked", "log"), [
    ("bitonic", 16, 5, 1, 1, False, False),
    ("splitter_selection", 16, 5, 70, 1, True, False),
    ("odd_even", 20, 20, 1, 2, True, True),
    ("bitonic", 20, 5, 64, 1, False, True),
    ("splitter_selection", 50, 5, 2, 2, True, False),
    ("bitonic", 100, 5, 2, 1, True, False),
    ("splitter_selection", 100, 5, 1, 1, False, True),
])
def test_item_ranks_sizes_and_batches(kind, n, k, batch, j, masked, log, launches) -> None:
    """The paper's sizes, batch 1 and >= 64 (several programs, the last one partly filled)."""
    _item_case(kind, "logistic_phi", n, k, batch, j, masked, log, launches, seed=n, beta=2.0)


@pytest.mark.parametrize("masked", [False, True])
def test_rank_matrix_and_sorted_values(masked: bool, launches) -> None:
    """The full matrix (12 mass channels) and the values alone (none)."""
    scores = _scores(3, 12, masked, seed=3)
    _assert_matches_torch(lambda x: networks.rank_matrix(x, 7, "bitonic", 1.0, "cauchy", 0.25), scores)
    _assert_matches_torch(lambda x: networks.sorted_values(x, "odd_even", 1.0, "gaussian", 0.25),
                          scores[:, :9])
    assert launches["linear_forward"] == 2 and launches["linear_backward"] == 2


def test_forward_without_gradient(launches) -> None:
    scores = _scores(2, 9, True, seed=4)
    expected = networks.sorted_values(scores, "bitonic", 1.0, "logistic", 0.25)
    with torch.no_grad():
        actual = networks.sorted_values(scores.float(), "bitonic", 1.0, "logistic", 0.25)
    torch.testing.assert_close(actual, expected.float(), **TOL)
    assert launches["linear_forward"] == 1


@pytest.mark.parametrize("masked", [False, True])
@pytest.mark.parametrize("log", [False, True], ids=["linear", "log"])
def test_functions_gradients_of_every_channel(log: bool, masked: bool, launch, launches) -> None:
    """The autograd Functions of both backends on a random state: the gradients of the mass channels too."""
    n, batch, mass_channels = 9, 4, 3
    g = torch.Generator().manual_seed(5)
    linear, _ = torch_path.linear_channels(_scores(batch, n, masked, seed=5))
    mass = torch.randn(n, mass_channels, batch, generator=g, dtype=torch.float64).to(DEVICE)
    key = ("splitter_selection", n, 4)
    dist = DISTRIBUTIONS["reciprocal"]

    def run(dtype: torch.dtype, path=launch):
        network = torch_path.cached_plan(*key, DEVICE) if path is torch_path else key  # the plan, or the key
        inputs = [linear.to(dtype, copy=True).requires_grad_(), mass.to(dtype, copy=True).requires_grad_()]
        if log:
            outs = path.LogNetwork.apply(*inputs, network, dist, 1.5, 0.0, masked)
        else:
            outs = (path.LinearNetwork.apply(torch.cat(inputs, 1), network, dist, 1.5, 0.0, masked),)
        g = torch.Generator().manual_seed(6)
        weights = [torch.randn(o.shape, generator=g, dtype=torch.float64).to(o) for o in outs]
        sum((o * w).sum() for o, w in zip(outs, weights, strict=True)).backward()
        return [o.detach().cpu() for o in outs], [x.grad.cpu() for x in inputs]

    expected, torch_float32 = run(torch.float64, torch_path), run(torch.float32, torch_path)
    actual = run(torch.float32)
    for a, e, t in zip(sum(actual, []), sum(expected, []), sum(torch_float32, []), strict=True):
        _assert_close(a, e, t)
    assert launches["log_backward" if log else "linear_backward"] == 1


class _AtenOps(TorchDispatchMode):
    """Counts the aten ops that are not views."""

    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.count += not func.is_view
        return func(*args, **(kwargs or {}))


@pytest.fixture
def aten_ops(launch, monkeypatch):
    """`_AtenOps`, with the interpreter's own copies of a launch's arguments left out (a launch on a
    GPU dispatches no aten op)."""
    run = interpreter.GridExecutor.__call__

    def launch(*args, **kwargs):
        with _disable_current_modes():
            return run(*args, **kwargs)

    monkeypatch.setattr(interpreter.GridExecutor, "__call__", launch)
    return _AtenOps


def test_network_dispatches_four_ops(launch, aten_ops) -> None:
    """Forward + backward of a network: three buffers and one gradient, against ~30 ops per layer on
    the torch path."""
    state = torch.randn(16, 2, 40, device=DEVICE, requires_grad=True)
    grad_out = torch.randn(5, 2, 40, device=DEVICE)
    dist = DISTRIBUTIONS["logistic_phi"]
    with aten_ops() as ops:
        launch.linear_network(state, ("splitter_selection", 16, 5), dist, 1.0, 0.25, False).backward(grad_out)
    assert ops.count <= 4


def test_loss_at_imagenet_1k(aten_ops, monkeypatch, capsys) -> None:
    """The whole loss at the ImageNet-1K setting equals the torch path's; on the CUDA path
    (`device_path`: no CPU-only checks or fast paths) it dispatches at most 40 ops."""
    g = torch.Generator().manual_seed(7)
    logits = torch.randn(500, 1000, generator=g).to(DEVICE)
    target = torch.randint(0, 1000, (500,), generator=g).to(DEVICE)
    loss_fn = softtopk.TopKCrossEntropyLoss([0.2] * 5, "splitter_selection", m=16,
                                            distribution="logistic_phi")
    results = {}
    for choice in ("torch", "triton", "triton on the CUDA path"):
        monkeypatch.setenv("SOFTTOPK_BACKEND", choice.split()[0])
        path = _checks.device_path() if choice.endswith("CUDA path") else contextlib.nullcontext()
        x = logits.clone().requires_grad_()
        with path, aten_ops() as ops:
            loss = loss_fn(x, target)
            loss.backward()
        results[choice] = loss.detach(), x.grad, ops.count
    for choice in ("triton", "triton on the CUDA path"):
        torch.testing.assert_close(results[choice][0], results["torch"][0], **TOL)
        torch.testing.assert_close(results[choice][1], results["torch"][1], **TOL)
    assert results["triton"][2] < results["torch"][2] - 200
    assert results["triton on the CUDA path"][2] <= 40
    with capsys.disabled():
        print("\naten ops per forward+backward at ImageNet-1K: "
              + ", ".join(f"{choice} {count}" for choice, (_, _, count) in results.items()))


def test_backend_choice_is_made_once_at_the_entry_point(launch, launches, monkeypatch) -> None:
    """`SOFTTOPK_BACKEND` picks the autograd Functions of one backend for every path: with 'torch' (and
    'auto' on CPU tensors, and float64 under 'triton') no Triton Function runs; with 'triton' each path
    runs its Triton Function once each way. A bad value is an error that names the variable."""
    scores = _scores(2, 6, False, seed=8).float()
    index = _index(2, 6, 1, seed=8)
    paths = [  # each entry point, and the Triton Function it runs
        ("linear", lambda x: networks.rank_matrix(x, 3, "bitonic", 1.0, "cauchy", 0.25)),
        ("item", lambda x: networks.item_ranks(x, index, 3, "bitonic", 1.0, "cauchy", 0.25, log=True)),
        ("item", lambda x: softtopk.topk_cross_entropy(x, index[:, 0], [0.5, 0.5], "odd_even")),
        ("linear", lambda x: softtopk.soft_sort(x, "splitter_selection")),
    ]

    def runs(setting: str, x: torch.Tensor = scores) -> list[int]:
        """How often the Triton Functions ran (forward, backward) for one call of each path."""
        monkeypatch.setenv("SOFTTOPK_BACKEND", setting)
        counts = []
        for function, path in paths:
            launches.clear()
            path(x.clone().requires_grad_()).sum().backward()
            counts.append((launches[f"{function}_forward"], launches[f"{function}_backward"]))
            assert sum(launches.values()) == sum(counts[-1])  # no other Triton Function
        return counts

    assert runs("torch") == [(0, 0)] * 4
    assert runs("auto") == [(int(DEVICE.type == "cuda" and backend.VERIFIED_ON_GPU),) * 2] * 4
    assert runs("triton", scores.double()) == [(0, 0)] * 4  # float64: the torch path
    assert runs("triton") == [(1, 1)] * 4
    with pytest.raises(ValueError, match="SOFTTOPK_BACKEND must be one of 'auto', 'torch', 'triton'"):
        runs("Triton")


def test_backend_selection_rules(launch, monkeypatch) -> None:
    def scores(device: str, dtype: torch.dtype = torch.float32) -> SimpleNamespace:
        return SimpleNamespace(device=torch.device(device), dtype=dtype)

    monkeypatch.setenv("SOFTTOPK_BACKEND", "auto")
    assert (backend.choose(scores("cuda")) is launch) is backend.VERIFIED_ON_GPU
    monkeypatch.setattr(backend, "VERIFIED_ON_GPU", True)
    assert backend.choose(scores("cuda")) is launch
    assert backend.choose(scores("cuda", torch.float64)) is torch_path
    assert backend.choose(scores("cpu")) is torch_path
    monkeypatch.setenv("SOFTTOPK_BACKEND", "triton")
    assert backend.choose(scores("cuda")) is launch
    assert backend.choose(scores("cuda", torch.bfloat16)) is torch_path
    with pytest.raises(RuntimeError, match="runs on CUDA tensors"):
        backend.choose(scores("mps"))
    monkeypatch.setattr(launch.kernels, "INTERPRETED", False)
    with pytest.raises(RuntimeError, match="TRITON_INTERPRET=1"):
        backend.choose(scores("cpu"))
    monkeypatch.setattr(backend, "_triton_launch", lambda: None)  # as if triton did not import
    with pytest.raises(ImportError, match="needs the triton package"):
        backend.choose(scores("cuda"))
    monkeypatch.setenv("SOFTTOPK_BACKEND", "auto")
    assert backend.choose(scores("cuda")) is torch_path
