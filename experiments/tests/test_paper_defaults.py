"""The paper's settings table, the order in which defaults are resolved, and the learning-rate rule."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from softtopk_experiments.data.splits import Splits
from softtopk_experiments.settings import options
from softtopk_experiments.settings.losses import METHODS
from softtopk_experiments.settings.options import BY_NAME, applies, options_for
from softtopk_experiments.settings.paper_defaults import (
    PAPER,
    paper_setting,
    resolve,
    rule_lr,
    uses_lr_rule,
)


def _resolve(protocol="finetune", setting="imagenet1k", given=None, overrides=None, rule=None):
    return resolve(protocol, PAPER[setting], given or {}, overrides or {}, "data set x", rule)


def test_the_papers_settings():
    """The numbers of the original's README and scripts (see the module docstring)."""
    one_k, cifar = PAPER["imagenet1k"], PAPER["cifar100"]
    assert {k: one_k.run[k] for k in ("epochs", "batch_size", "lr", "m", "top1_mode", "eval_every")} == {
        "epochs": 20, "batch_size": 500, "lr": 10**-4.5, "m": 16, "top1_mode": "sm", "eval_every": 100}
    assert [PAPER["imagenet21k"].run[k] for k in ("epochs", "lr", "m")] == [40, 1e-4, 50]
    assert {k: cifar.run[k] for k in ("epochs", "batch_size", "lr", "m", "top1_mode", "val_size")} == {
        "epochs": 200, "batch_size": 128, "lr": 1e-3, "m": None, "top1_mode": "smce", "val_size": 0.05}
    for network in ("bitonic", "splitter_selection"):
        assert one_k.methods[network] == {"distribution": "logistic_phi", "inverse_temperature": 1.0,
                                          "art_lambda": 0.5}
        assert cifar.methods[network] == {"distribution": "logistic_phi", "inverse_temperature": 0.5,
                                          "art_lambda": 0.5}
    for other in ("neuralsort", "softsort"):
        assert one_k.methods[other] == {"inverse_temperature": 0.5}
        assert cifar.methods[other] == {"inverse_temperature": 0.0625}
    assert {s.run["select"] for s in PAPER.values()} == {"per-metric"}
    for setting in PAPER.values():  # every value is a valid value of its option
        for values in (setting.run, *setting.methods.values()):
            for key, value in values.items():
                BY_NAME[key].problem(value) is None or pytest.fail(f"{setting.title}: {key} = {value}")


@pytest.mark.parametrize("method", METHODS)
def test_every_method_resolves_to_a_complete_setting(method):
    for protocol, setting in (("finetune", "imagenet1k"), ("train", "cifar100")):
        p_k = {} if method == "softmax" else {"p_k": (0.0, 0.0, 0.0, 0.0, 1.0)}
        values, sources = _resolve(protocol, setting, {"method": method, **p_k})
        expected = {o.name for o in options_for(protocol) if applies(o, method)}
        assert set(values) == set(sources) == expected
        for key, value in values.items():
            assert BY_NAME[key].problem(value) is None, (key, value)


def test_a_method_without_a_paper_setting_takes_the_generic_defaults(monkeypatch):
    """A relaxation the library adds later (here a network and a non-network) needs no edit."""
    monkeypatch.setattr(options, "NETWORK_METHODS", (*options.NETWORK_METHODS, "new_net"))
    values, sources = resolve("finetune", PAPER["imagenet1k"], {"method": "new_net", "p_k": (1.0,)}, {}, "",
                              None)
    assert [values[k] for k in ("inverse_temperature", "distribution", "art_lambda")] == [1.0, "logistic_phi",
                                                                                          0.5]
    assert sources["inverse_temperature"] == "generic default"
    assert values["m"] == 16 and sources["m"] == "paper: ImageNet-1K fine-tuning"  # the protocol's apply
    values, _ = resolve("finetune", PAPER["imagenet1k"], {"method": "new_rank", "p_k": (1.0,)}, {}, "", None)
    assert values["inverse_temperature"] == 1.0 and "distribution" not in values


def test_resolution_order():
    base, sources = _resolve(given={"method": "neuralsort", "p_k": (1.0,)})
    assert base["inverse_temperature"] == 0.5 and sources["inverse_temperature"].endswith("neuralsort")
    assert base["lr"] == 10**-4.5 and sources["lr"] == "paper: ImageNet-1K fine-tuning"
    ruled, sources = _resolve(given={"method": "neuralsort", "p_k": (1.0,)}, rule=0.02)
    assert ruled["lr"] == 0.02 and sources["lr"].startswith("lr rule")
    data, sources = _resolve(given={"method": "neuralsort", "p_k": (1.0,)},
                             overrides={"lr": 0.1, "epochs": 3}, rule=0.02)
    assert (data["lr"], data["epochs"]) == (0.1, 3) and sources["lr"] == "data set x"
    given = {"method": "neuralsort", "p_k": (1.0,), "lr": 0.5, "inverse_temperature": 2.0}
    mine, sources = _resolve(given=given, overrides={"lr": 0.1}, rule=0.02)
    assert (mine["lr"], mine["inverse_temperature"]) == (0.5, 2.0) and sources["lr"] == "given"
    softmax, _ = _resolve(given={})
    assert softmax["p_k"] == (1.0, 0.0, 0.0, 0.0, 0.0) and "m" not in softmax


def _features(n: int, classes: int, scale: float = 1.0) -> Splits:
    x = scale * torch.randn(n, 4, generator=torch.Generator().manual_seed(0))
    y = torch.arange(n) % classes
    return Splits(x, y, x[:2], y[:2], classes)


def test_which_setting_and_lr_an_embedding_file_gets():
    class Sized:  # only the sizes matter
        def __init__(self, n, classes):
            self.train_y, self.num_classes = torch.empty(n, dtype=torch.int8), classes

    imagenet, imagenet21k, small = Sized(1_281_167, 1000), Sized(11_060_223, 10_450), Sized(12_000, 20)
    assert paper_setting(None, imagenet) == "imagenet1k" and not uses_lr_rule("finetune", None, imagenet)
    assert paper_setting(None, imagenet21k) == "imagenet21k"
    assert not uses_lr_rule("finetune", None, imagenet21k)
    assert paper_setting(None, Sized(12_000, 10_450)) == "imagenet1k"
    assert uses_lr_rule("finetune", None, small) and uses_lr_rule("finetune", False, imagenet)
    assert not uses_lr_rule("finetune", True, small) and not uses_lr_rule("train", False, small)
    assert paper_setting("cifar100", small) == "cifar100"


@settings(max_examples=25, deadline=None)
@given(st.floats(1e-3, 1e3))
def test_the_lr_rule_follows_the_scale_of_the_features(scale):
    """Adam's steps are about lr in every weight, so logits move by lr * |x|_1: the rule keeps
    lr * mean |x|_1 at 0.2, whatever the features' scale."""
    features = _features(50, 3, scale).train_x
    lr = rule_lr(features)
    assert lr * float(features.abs().sum(dim=1).mean()) == pytest.approx(0.2, rel=0.05)  # 2 digits
    assert rule_lr(features * 10) == pytest.approx(lr / 10, rel=0.1)


def test_the_lr_rule_refuses_zero_features():
    with pytest.raises(ValueError, match="give `lr`"):
        rule_lr(torch.zeros(5, 3))
