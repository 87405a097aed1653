"""The data sets each protocol runs on, how to load them, and their training defaults.

The paper's ImageNet protocol ('finetune'): Adam, lr 10^-4.5, batch 500, 20 epochs on frozen
embeddings. Its CIFAR-100 protocol ('train'): ResNet-18 from scratch, Adam, lr 1e-3, batch 128,
crop + flip, 5% of train held out. The shipped small sets keep the protocol but change what does not
fit them; each such change is stated in `Defaults.note` (shown by --help).
"""

from __future__ import annotations

import importlib
import inspect
from dataclasses import dataclass, fields
from pathlib import Path

from .augment import AUGMENTATIONS, Augmentation
from .loss_factory import LossSpec, check_p_k, make_loss
from .splits import DataError, Splits
from .training import TrainConfig

# data set name -> (module of softtopk.experiments, loader function)
LOADERS = {"wordnet": ("wordnet", "load_wordnet"), "embeddings": ("embeddings", "load_embeddings"),
           "glyphs": ("glyphs", "load_glyphs"), "cifar100": ("cifar", "load_cifar100")}


@dataclass(frozen=True)
class Defaults:
    """Training defaults of one data set; `val_size` None is the embedding rule of `TrainConfig`."""

    epochs: int
    batch_size: int
    lr: float
    val_size: float | None
    width: int = 64
    note: str = "the paper's settings"


DEFAULTS = {
    "embeddings": Defaults(20, 500, 10**-4.5, None),
    "wordnet": Defaults(20, 500, 1e-2, 0.1, note=(
        "batch, epochs as the paper; lr 1e-2 instead of 10^-4.5, as the probe starts from random "
        "weights on a small set rather than from a pretrained head")),
    "cifar100": Defaults(200, 128, 1e-3, 0.05, note="the paper's settings; 200 epochs"),
    "glyphs": Defaults(20, 128, 1e-3, 0.05, width=16, note=(
        "lr, batch, crop as the paper; width 16 (not 64) and 20 epochs to fit a CPU (a few minutes "
        "an epoch on two cores, seconds on a GPU); no flip (a mirrored glyph is another glyph or none)")),
}


def data_spec(protocol: str, data: str, data_dir: str | None = None) -> dict:
    """The data set a command line names: `{'name': ..., loader options...}`; paths made absolute."""
    if protocol == "finetune":
        if data_dir is not None:
            raise ValueError("--data-dir is only for --data cifar100; give an embedding file as --data PATH")
        if data == "wordnet":
            return {"name": "wordnet"}
        return {"name": "embeddings", "path": str(Path(data).resolve())}
    if data == "glyphs":
        if data_dir is not None:
            raise ValueError("--data-dir is only for --data cifar100")
        return {"name": "glyphs"}
    if data == "cifar100":
        if data_dir is None:
            raise ValueError("--data cifar100 needs --data-dir PATH, the folder holding the CIFAR-100 files")
        return {"name": "cifar100", "folder": str(Path(data_dir).resolve())}
    raise ValueError(f"--data must be glyphs or cifar100 (with --data-dir PATH) for train; got {data!r}")


def defaults(spec: dict) -> Defaults:
    """The training defaults for the data set `spec` names."""
    return DEFAULTS[spec["name"]]


def load_data(spec: dict) -> Splits:
    """Load the data set `spec` names; a bad file or option raises DataError (one line)."""
    name = spec.get("name")
    if name not in LOADERS:
        raise DataError(f"unknown data set {name!r}; known: {', '.join(LOADERS)}")
    module, function = LOADERS[name]
    loader = getattr(importlib.import_module(f"softtopk.experiments.{module}"), function)
    options = {key: value for key, value in spec.items() if key != "name"}
    try:
        inspect.signature(loader).bind(**options)
    except TypeError as error:
        raise DataError(f"bad option for data set {name!r}: {error}") from None
    return loader(**options)


_TYPES: dict[str, tuple[type, ...]] = {
    "epochs": (int,), "batch_size": (int,), "lr": (float, int), "val_size": (float, int), "seed": (int,),
    "hidden": (int,), "width": (int,), "amp": (str,), "method": (str,), "inverse_temperature": (float, int),
    "m": (int,), "distribution": (str,), "art_lambda": (float, int), "top1_mode": (str,),
    "tau": (float, int), "alpha": (float, int), "p_k": (list, tuple)}
_LOSS_KEYS = {f.name for f in fields(LossSpec)}


def make_config(protocol: str, spec: dict, options: dict) -> TrainConfig:
    """A checked `TrainConfig` from option values named as on the command line (with `_`); options
    left out (or None) take the data set's defaults. Builds the loss once to check it: a bad option
    raises ValueError or TypeError naming it."""
    options = {key: value for key, value in options.items() if value is not None}
    if protocol == "finetune" and "width" in options:
        raise ValueError("width is an option of train (the ResNet's width), not of finetune")
    if protocol == "train" and "hidden" in options:
        raise ValueError("hidden is an option of finetune (the probe's hidden layer), not of train")
    unknown = sorted(set(options) - set(_TYPES))
    if unknown:
        raise ValueError(f"unknown option {unknown[0]!r}; known: {', '.join(sorted(_TYPES))}")
    for key, value in options.items():
        if isinstance(value, bool) or not isinstance(value, _TYPES[key]):
            raise TypeError(f"{key} must be of type {_TYPES[key][0].__name__}, got {value!r}")
    if "p_k" in options:
        options["p_k"] = check_p_k(options["p_k"])
    loss = LossSpec(**{key: value for key, value in options.items() if key in _LOSS_KEYS})
    make_loss(loss)
    d = defaults(spec)
    return TrainConfig(
        protocol=protocol, data=spec, loss=loss, epochs=options.get("epochs", d.epochs),
        batch_size=options.get("batch_size", d.batch_size), lr=float(options.get("lr", d.lr)),
        val_size=options.get("val_size", d.val_size), seed=options.get("seed", 0),
        hidden=options.get("hidden"), width=options.get("width", d.width) if protocol == "train" else None,
        amp=options.get("amp", "none"),
        augmentation=AUGMENTATIONS.get(spec["name"], Augmentation()) if protocol == "train"
        else Augmentation())
