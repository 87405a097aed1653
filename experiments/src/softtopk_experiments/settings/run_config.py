"""A run's configuration: the checked settings of one training run, built from what the user gave,
the data set and the paper's defaults, and checked against the loaded data."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field

import torch

from softtopk_experiments.data import records
from softtopk_experiments.data.augmentation import Augmentation
from softtopk_experiments.data.splits import Splits, validation_count
from softtopk_experiments.results.run_folder import identity_of
from softtopk_experiments.settings.losses import (
    METHODS,
    NETWORK_METHODS,
    check_targets,
    display_name,
    format_p_k,
    make_loss,
)
from softtopk_experiments.settings.options import BY_NAME, PROTOCOLS, applies, check_value
from softtopk_experiments.settings.paper_defaults import PAPER, paper_setting, resolve, rule_lr, uses_lr_rule


@dataclass(frozen=True)
class RunConfig:
    """Everything that determines a run's numbers.

    `settings` maps every option that applies to the protocol and loss method to its value
    (`config.lr`, `config.method`, ...; an option that does not apply reads as None). `data` names
    the data set and its loader options; `augmentation` is the data set's. `sources` says where each
    value came from ('given', 'paper: ...', ...); it is recorded but not part of the run's identity.
    """

    protocol: str
    data: dict
    settings: dict
    augmentation: Augmentation = field(default_factory=Augmentation)
    sources: dict = field(default_factory=dict, compare=False)

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
        """What a resumed run must share with the run it continues (`runfolder.identity_of`)."""
        return identity_of(self.to_dict())


def check_given(protocol: str, given: Mapping[str, object], cli: bool = False) -> dict:
    """The user's option values checked: known keys, options of `protocol`, values of the right
    type and range (whole-number val_size as an int). Raises ValueError/TypeError naming each
    option by its key, or by its flag with `cli`."""
    if protocol not in PROTOCOLS:
        raise ValueError(f"command must be one of {', '.join(PROTOCOLS)}; got {protocol!r}")
    checked = {}
    for key, value in given.items():
        option = BY_NAME.get(key)
        if option is None:
            raise ValueError(f"unknown option {key!r}; known: {', '.join(sorted(BY_NAME))}")
        label = option.flag if cli else key
        if protocol not in option.protocols:
            raise ValueError(f"{label} is an option of {' and '.join(option.protocols)}, not of {protocol}")
        value = check_value(key, value, label)
        if key == "val_size" and value is not None and value >= 1:
            value = int(value)
        checked[key] = value
    method = checked.get("method", BY_NAME["method"].default)
    if method not in METHODS:
        raise ValueError(f"{BY_NAME['method'].flag if cli else 'method'} must be one of "
                         f"{', '.join(METHODS)}; got {method!r}")
    return checked


def make_config(protocol: str, spec: dict, splits: Splits, given: Mapping[str, object],
                cli: bool = False) -> RunConfig:
    """The run configuration for checked options `given` (see `check_given`) on the loaded data set
    `spec`. An option that does not apply to the method is an error, except a method setting of a
    sweep file (`cli` False), which applies only to the methods that use it. Checks the settings
    against the data and builds the loss once; raises ValueError/TypeError."""
    dataset = records.BY_NAME[spec["name"]]
    given = dict(given)
    method = given.get("method", BY_NAME["method"].default)
    for key in list(given):
        option = BY_NAME[key]
        if applies(option, method, NETWORK_METHODS):
            continue
        if (option.group == "loss" and not cli) or given[key] == option.default:
            del given[key]
        else:
            label = f"{option.flag} does not apply to --method {method}" if cli else \
                f"{key} does not apply to method {method!r}"
            raise ValueError(f"{label} (it is a setting of {_scope_text(option.scope)})")
    setting = PAPER[paper_setting(dataset.paper, splits)]
    rule = None
    chosen = "lr" in given or "lr" in dataset.overrides
    if not chosen and uses_lr_rule(protocol, dataset.paper_data, splits):
        rule = rule_lr(splits.train_x)
    described = f"data set {dataset.name}" + (f": {dataset.note}" if dataset.note else "")
    settings, sources = resolve(protocol, setting, given, dataset.overrides, described, rule, NETWORK_METHODS)
    if settings["p_k"] is None:
        raise ValueError(f"method {method} needs p_k, e.g. .5,0,0,0,.5 for half top-1, half top-5")
    config = RunConfig(protocol, dict(spec), settings, dataset.augmentation if protocol == "train"
                       else Augmentation(), sources)
    check_fits(config, splits)
    check_targets(make_loss(settings), splits.num_classes, config.mixes)
    return config


def _scope_text(scope: str) -> str:
    return {"ce": "softmax and the relaxations", "relaxation": "the relaxations",
            "network": f"the sorting networks ({', '.join(NETWORK_METHODS)})",
            "smooth_topk": "smooth_topk"}[scope]


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
        raise ValueError(f"p_k has K = {k_max} entries but the data has only {splits.num_classes} classes")
    validation_count(splits, config.val_size)
