"""The defaults of a run: the paper's settings per protocol and method, in one table.

`PAPER` holds the settings of the original experiments (difftopk, github.com/Felix-Petersen/difftopk):

- ImageNet-1K fine-tuning (Tables 2, 3): the README's "Tables 2+3 (1K)" command
  (`train_imagenet.py --m 16 --nloglr 4.5`, so lr 10^-4.5) and the defaults of
  `experiments/train_imagenet.py`: 20 epochs, batch 500, top1_mode 'sm', evaluation every 100
  iterations (`--eval_freq 100`), 50,000 validation samples held out of train (100,000 for
  ImageNet-21K-P), the test accuracy of each top-k taken at the evaluation with the best validation
  top-k. Per method, the README's lines: bitonic and splitter_selection with distribution
  logistic_phi, inverse temperature 1, art_lambda .5; neuralsort and softsort with inverse
  temperature .5; smooth_hard_topk with `--inverse_temperature 1.`, which the script passes as tau.
- ImageNet-21K-P (Tables 2, 3): the README's "Tables 2+3 (21K)" command: m 50, lr 10^-4, 40 epochs;
  the rest as ImageNet-1K.
- CIFAR-100 from scratch (Tables 1, 4): the README's "Tables 1+4" lines and the defaults of
  `experiments/train_cifar100.py`: 200 epochs, lr 10^-3, batch 128, every class ranked (m None),
  top1_mode 'smce', 1/20 of train held out, evaluation after every epoch, crop 4 + flip (the data
  set's augmentation); bitonic and splitter_selection with logistic_phi, inverse temperature .5,
  art_lambda .5; neuralsort and softsort with inverse temperature .0625; smooth_hard_topk with tau 1.

A method missing from a table (odd_even, sinkhorn and any method the library adds) takes the options'
generic defaults: inverse temperature 1 and, for a sorting network, logistic_phi with art_lambda .5
(the sigmoid of every DSN setting of the paper). A value is resolved in this order: the user's, the
data set's own (`DataSet.overrides`), the learning-rate rule (below), the paper's per method, the
paper's per protocol, the generic default.

The learning-rate rule. The paper's lr 10^-4.5 suits the embeddings of a large ImageNet network; on
other features it can fail to learn at all (12,000 WordNet texts: 5% top-1 after 20 epochs, against
63% at lr 2e-2). Adam moves each weight by about lr per step, so a probe's logits move by about
lr * |x|_1 per step: the rule fixes that step, `lr = 0.2 / mean |x|_1` over the training features
(two significant digits), which makes the run independent of the features' scale. The constant is
the shipped WordNet features' best (mean |x|_1 = 10.4; 20 epochs of softmax at lr 8e-4, 3e-3, 1e-2,
3e-2 gave top-1 59.2, 63.8, 67.1, 67.4%). It applies to finetune data other than the paper's: an
embedding file with at least 1,000,000 training samples is taken as the paper's and gets its lr.

The convergence rule. The paper's data keep its fixed schedule. On other data a fixed epoch count
compares methods before they converge (at 20 epochs most WordNet runs are still improving, and the
relaxations gain up to 28 points of top-1 from 20 to 60 epochs while softmax hardly moves), so there
a run stops once the last `patience` 5 epochs brought no better selection metric than the 5 before
them (`summary.converged`), with the epochs
as a cap: 100 (a data set's own `epochs`, such as the CPU-sized image sets' 20, stays the cap).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import torch

from softtopk_experiments.settings.options import BY_NAME, Option, applies, options_for

PAPER_SIZE = 1_000_000  # training samples from which an embedding file is taken as the paper's
LR_STEP = 0.2  # the rule's lr * mean |x|_1
CONVERGENCE = {"patience": 5, "epochs": 100}  # the convergence rule's settings, for data not the paper's


@dataclass(frozen=True)
class PaperSetting:
    """One experiment of the paper: its run settings and, per method, its loss settings."""

    title: str
    protocol: str
    run: Mapping[str, object]
    methods: Mapping[str, Mapping[str, object]] = field(default_factory=dict)


_DSN_IMAGENET = {"distribution": "logistic_phi", "inverse_temperature": 1.0, "art_lambda": 0.5}
_DSN_CIFAR = {"distribution": "logistic_phi", "inverse_temperature": 0.5, "art_lambda": 0.5}
_IMAGENET_METHODS = {"bitonic": _DSN_IMAGENET, "splitter_selection": _DSN_IMAGENET,
                     "neuralsort": {"inverse_temperature": 0.5}, "softsort": {"inverse_temperature": 0.5},
                     "smooth_topk": {"tau": 1.0}}
_IMAGENET_RUN = {"epochs": 20, "batch_size": 500, "lr": 10**-4.5, "m": 16, "top1_mode": "sm",
                 "eval_every": 100, "val_size": None, "select": "per-metric"}
PAPER: dict[str, PaperSetting] = {
    "imagenet1k": PaperSetting("ImageNet-1K fine-tuning", "finetune", _IMAGENET_RUN, _IMAGENET_METHODS),
    "imagenet21k": PaperSetting("ImageNet-21K-P fine-tuning", "finetune",
                                {**_IMAGENET_RUN, "epochs": 40, "lr": 1e-4, "m": 50}, _IMAGENET_METHODS),
    "cifar100": PaperSetting(
        "CIFAR-100 from scratch", "train",
        {"epochs": 200, "batch_size": 128, "lr": 1e-3, "m": None, "top1_mode": "smce", "eval_every": 0,
         "val_size": 0.05, "select": "per-metric"},
        {"bitonic": _DSN_CIFAR, "splitter_selection": _DSN_CIFAR,
         "neuralsort": {"inverse_temperature": 0.0625}, "softsort": {"inverse_temperature": 0.0625},
         "smooth_topk": {"tau": 1.0}}),
}
SOFTMAX_P_K = (1.0, 0.0, 0.0, 0.0, 0.0)


def paper_setting(name: str, splits) -> str:
    """The paper setting for data set records that name one; for embedding files (`name` None), the
    setting their size suggests: ImageNet-21K-P above 5,000 classes, else ImageNet-1K."""
    if name is not None:
        return name
    return "imagenet21k" if splits.num_classes > 5000 and _train_count(splits) >= PAPER_SIZE else "imagenet1k"


def is_paper_data(paper_data: bool | None, splits) -> bool:
    """Whether the data are the paper's (`paper_data` None: decide by size); other data get the
    convergence rule, and for finetune the lr rule."""
    return _train_count(splits) >= PAPER_SIZE if paper_data is None else paper_data


def uses_lr_rule(protocol: str, paper_data: bool | None, splits) -> bool:
    """Whether the lr rule replaces the paper's lr: finetune data that is not the paper's."""
    return protocol == "finetune" and not is_paper_data(paper_data, splits)


def rule_lr(features: torch.Tensor, sample: int = 10_000) -> float:
    """`LR_STEP / mean |x|_1` over (at most `sample` evenly spaced) rows of `features [N, D]`."""
    rows = torch.linspace(0, features.shape[0] - 1, min(sample, features.shape[0])).long()
    norm = float(features[rows].float().abs().sum(dim=1).mean())
    if not norm > 0:
        raise ValueError("the lr rule needs features that are not all zero; give `lr`")
    return float(f"{LR_STEP / norm:.2g}")


def _train_count(splits) -> int:
    return int(splits.train_y.shape[0])


def resolve(protocol: str, setting: PaperSetting, given: Mapping[str, object],
            overrides: Mapping[str, object], overrides_source: str,
            lr_rule: float | None, converge: bool = False) -> tuple[dict, dict]:
    """`(settings, sources)`: the value of every option that applies to this protocol and method,
    and where each came from. `given` are the user's checked values, `overrides` the data set's
    (described by `overrides_source`), `lr_rule` the rule's lr (or None where it does not apply),
    `converge` whether the convergence rule applies (data that is not the paper's)."""
    method = given.get("method", BY_NAME["method"].default)
    per_method = setting.methods.get(method, {})
    settings, sources = {}, {}
    for option in options_for(protocol):
        if not applies(option, method):
            continue
        value, source = _default(option, method, setting, per_method, overrides, overrides_source, lr_rule,
                                 converge)
        if option.name in given:
            value, source = given[option.name], "given"
        settings[option.name], sources[option.name] = value, source
    return settings, sources


def _default(option: Option, method: str, setting: PaperSetting, per_method: Mapping, overrides: Mapping,
             overrides_source: str, lr_rule: float | None, converge: bool) -> tuple[object, str]:
    name = option.name
    if name in overrides:
        return overrides[name], overrides_source
    if name == "lr" and lr_rule is not None:
        return lr_rule, f"lr rule ({LR_STEP:g} / mean |x|_1 of the training features)"
    if name in CONVERGENCE and converge:
        return CONVERGENCE[name], "convergence rule (data that is not the paper's)"
    if name in per_method:
        return per_method[name], f"paper: {setting.title}, {method}"
    if name in setting.run:
        return setting.run[name], f"paper: {setting.title}"
    if name == "p_k" and method == "softmax":
        return SOFTMAX_P_K, "softmax"
    return option.default, "generic default"
