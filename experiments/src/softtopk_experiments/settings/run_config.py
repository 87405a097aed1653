"""A run's configuration: the checked settings of one training run, built from what the user gave,
the data set and the paper's defaults, and checked against the loaded data."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field

import torch
from torch import nn

from softtopk_experiments.data import records
from softtopk_experiments.data.augmentation import Augmentation
from softtopk_experiments.data.splits import Splits, validation_count
from softtopk_experiments.settings.losses import (
    METHODS,
    check_targets,
    choose_head,
    display_name,
    format_p_k,
    make_loss,
)
from softtopk_experiments.settings.options import BY_NAME, PROTOCOLS, SCOPE_TEXTS, applies, check_value
from softtopk_experiments.settings.paper_defaults import (
    PAPER,
    is_paper_data,
    paper_setting,
    resolve,
    rule_lr,
    uses_lr_rule,
)


@dataclass(frozen=True)
class RunConfig:
    """Everything that determines a run's numbers.

    `settings` maps every option that applies to the protocol and loss method to its value
    (`config.lr`, `config.method`, ...; an option that does not apply reads as None). `data` names
    the data set and its loader options; `augmentation` is the data set's. `sources` says where each
    value came from ('given', 'paper: ...', ...); it is recorded but not part of the run's identity.
    `loss` is the run's loss module, built once from the settings by `make_config`.
    """

    protocol: str
    data: dict
    settings: dict
    augmentation: Augmentation = field(default_factory=Augmentation)
    sources: dict = field(default_factory=dict, compare=False)
    loss: nn.Module | None = field(default=None, compare=False, repr=False)

    def __getattr__(self, name: str) -> object:
        settings = self.__dict__.get("settings", {})
        if name in settings:
            return settings[name]
        if name in BY_NAME:
            return None
        raise AttributeError(f"{type(self).__name__} has no attribute {name!r}")

    @property
    def label(self) -> str:
        """'Method [P_K]', as tables and progress lines name the run."""
        return f"{display_name(self.method)} {format_p_k(self.p_k)}"

    @property
    def mixes(self) -> bool:
        """Whether batches are mixed (mixup or CutMix), with probability targets."""
        return bool(self.mixup or self.cutmix)

    def to_dict(self) -> dict:
        """JSON-ready form, as stored in config.json."""
        return json.loads(json.dumps({"protocol": self.protocol, "data": self.data, "settings": self.settings,
                                      "augmentation": asdict(self.augmentation), "sources": self.sources}))

    def identity(self) -> dict:
        """What a resumed run must share with the run it continues (see `identity_of`)."""
        return identity_of(self.to_dict())


def identity_of(config: dict) -> dict:
    """What a resumed run must share with the run it continues, from a stored config: all but
    `settings.epochs` (which may grow), `settings.head` (how the loss is computed, the same up to
    float rounding) and `sources`."""
    identity = {key: value for key, value in config.items() if key != "sources"}
    if isinstance(identity.get("settings"), dict):
        identity["settings"] = {key: v for key, v in identity["settings"].items()
                                if key not in ("epochs", "head")}
    return identity


def check_given(protocol: str, given: Mapping[str, object]) -> dict:
    """The option values of a sweep file's run checked: known keys, options of `protocol`, values of
    the right type and range (see `options.check_value`), a known method. Raises ValueError or
    TypeError naming each option. (The command line checks each value as it parses it.)"""
    if protocol not in PROTOCOLS:
        raise ValueError(f"command must be one of {', '.join(PROTOCOLS)}; got {protocol!r}")
    checked = {}
    for key, value in given.items():
        option = BY_NAME.get(key)
        if option is None:
            raise ValueError(f"unknown option {key!r}; known: {', '.join(sorted(BY_NAME))}")
        if protocol not in option.protocols:
            raise ValueError(f"`{key}` is an option of {' and '.join(option.protocols)}, not of {protocol}")
        checked[key] = check_value(key, value)
    method = checked.get("method", BY_NAME["method"].default)
    if method not in METHODS:
        raise ValueError(f"`method` must be one of {', '.join(METHODS)}; got {method!r}")
    return checked


def applying(given: Mapping[str, object]) -> dict:
    """`given` without the loss settings that do not apply to its method: in a sweep file, a method's
    setting applies to the methods that use it."""
    method = given.get("method", BY_NAME["method"].default)
    return {key: value for key, value in given.items()
            if BY_NAME[key].group != "loss" or applies(BY_NAME[key], method)}


def make_config(protocol: str, spec: dict, splits: Splits, given: Mapping[str, object]) -> RunConfig:
    """The run configuration for checked options `given` on the loaded data set `spec`, with its
    loss. An option that does not apply to the method is an error (unless it has its default). Builds
    the loss once (the library checks the loss's values) and checks the settings against the data;
    raises ValueError/TypeError."""
    dataset = records.BY_NAME[spec["name"]]
    method = given.get("method", BY_NAME["method"].default)
    for key, value in given.items():
        option = BY_NAME[key]
        if not applies(option, method) and value != option.default:
            raise ValueError(f"`{key}` does not apply to `method` {method} (it is a setting of "
                             f"{SCOPE_TEXTS[option.scope]})")
    given = {key: value for key, value in given.items() if applies(BY_NAME[key], method)}
    setting = PAPER[paper_setting(dataset.paper, splits)]
    rule = None
    chosen = "lr" in given or "lr" in dataset.overrides
    if not chosen and uses_lr_rule(protocol, dataset.paper_data, splits):
        rule = rule_lr(splits.train_x)
    described = f"data set {dataset.name}" + (f": {dataset.note}" if dataset.note else "")
    converge = not is_paper_data(dataset.paper_data, splits)
    settings, sources = resolve(protocol, setting, given, dataset.overrides, described, rule, converge)
    if protocol == "finetune":
        settings["head"], sources["head"] = choose_head(settings["head"], method, splits.num_classes,
                                                        settings.get("m"))
    if settings["p_k"] is None:
        raise ValueError(f"`method` {method} needs `p_k`, e.g. .5,0,0,0,.5 for half top-1, half top-5")
    config = RunConfig(protocol, dict(spec), settings, dataset.augmentation if protocol == "train"
                       else Augmentation(), sources, make_loss(settings))
    check_fits(config, splits)
    check_targets(config.loss, splits.num_classes, config.mixes)
    return config


def check_fits(config: RunConfig, splits: Splits) -> None:
    """Raise ValueError unless `splits` suit `config`: the protocol's kind of input, more classes
    than K, and a validation part that leaves training samples."""
    train_x, test_x = splits.train_x, splits.test_x
    if config.protocol == "finetune":
        if train_x.dim() != 2 or not train_x.is_floating_point() or test_x.shape[1:] != train_x.shape[1:]:
            raise ValueError(f"finetune needs float features [N, D] for train and test; got "
                             f"{train_x.dtype} {tuple(train_x.shape)} and {tuple(test_x.shape)}")
    elif train_x.dim() != 4 or train_x.dtype != torch.uint8 or test_x.shape[1:] != train_x.shape[1:]:
        raise ValueError(f"train needs uint8 images [N, C, H, W] for train and test; got "
                         f"{train_x.dtype} {tuple(train_x.shape)} and {tuple(test_x.shape)}")
    k_max = len(config.p_k)
    if k_max >= splits.num_classes:
        raise ValueError(f"`p_k` has K = {k_max} entries but the data has only {splits.num_classes} classes")
    validation_count(splits, config.val_size)
