"""The data sets the commands run on: one `DataSet` record each.

A shipped data set is a module `softtopk_experiments.data.<name>` with a loader `load_<name>(cache_dir=None,
..., seed=0) -> Splits` and one record in `DATASETS`, which gives its protocol, the paper setting
whose defaults it takes, what differs from them and why, and its augmentation. Loaders are imported
only when their data set is loaded.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from softtopk_experiments.data.augmentation import Augmentation
from softtopk_experiments.data.splits import DataError, Splits


@dataclass(frozen=True)
class DataSet:
    """A data set of the command line.

    `protocol`: 'finetune' (float features `[N, D]`) or 'train' (uint8 images `[N, C, H, W]`).
    `paper`: the `defaults.PAPER` setting whose defaults it takes (None: chosen by the data's size,
    for embedding files). `paper_data`: whether it is the paper's own data, whose lr stands (None:
    decided by size); other finetune data gets the lr rule. `overrides`: settings that differ from
    the paper's, with the reason in `note`. `given_as`: how the command line names it: 'name'
    (`--data NAME`), 'path' (`--data PATH`, the loader's `path`) or 'folder' (`--data NAME
    --data-dir PATH`, the loader's `folder`).
    """

    name: str
    protocol: str
    summary: str
    paper: str | None = "imagenet1k"
    paper_data: bool | None = False
    overrides: Mapping[str, object] = field(default_factory=dict)
    note: str = ""
    augmentation: Augmentation = field(default_factory=Augmentation)
    given_as: str = "name"
    loader: str = ""

    @property
    def load_function(self) -> str:
        """'module:function' of the loader, by default `<name>:load_<name>`."""
        return self.loader or f"{self.name}:load_{self.name}"


DATASETS: tuple[DataSet, ...] = (
    DataSet("wordnet", "finetune", "WordNet noun glosses, 148 classes, TF-IDF + SVD features (shipped)"),
    DataSet("languages", "finetune", "the language of a word, 66 languages from Debian's Hunspell "
            "dictionaries, character n-gram TF-IDF + SVD features (shipped)"),
    DataSet("gcide", "finetune", "the subject field of a GCIDE dictionary sense, 70 fields, TF-IDF + SVD "
            "features (shipped)"),
    DataSet("gcide_minilm", "finetune", "the GCIDE subject fields as frozen all-MiniLM-L6-v2 sentence "
            "embeddings (PCA 128-d, shipped): a pretrained encoder's features, the paper's setting"),
    DataSet("nextword", "finetune", "the next word of a GCIDE dictionary sentence from the 3 words before "
            "it, 20,000 words, PPMI + SVD word vectors (derived from shipped word ids)", paper="imagenet21k"),
    DataSet("embeddings", "finetune", "an embedding file (.pt/.npz), e.g. the paper's ImageNet embeddings",
            paper=None, paper_data=None, given_as="path"),
    DataSet("glyphs", "train", "rendered letters and digits of several scripts, 182 classes (built on "
            "first use)", paper="cifar100", overrides={"epochs": 20, "width": 16},
            note="to fit a CPU, where the paper trains width 64 for 200 epochs; no flip, since a mirrored "
            "glyph is another glyph or none", augmentation=Augmentation(crop_padding=4, hflip=False)),
    DataSet("radicals", "train", "the Kangxi radical of a CJK character image, 104 radicals, 32x32 "
            "renderings in three Debian fonts, train and test by character (shipped)", paper="cifar100",
            overrides={"epochs": 20, "width": 16},
            note="to fit a CPU, where the paper trains width 64 for 200 epochs; no flip, since a mirrored "
            "character is another character or none", augmentation=Augmentation(crop_padding=4, hflip=False)),
    DataSet("cifar100", "train", "CIFAR-100 from a local cifar-100-python folder", paper="cifar100",
            paper_data=True, augmentation=Augmentation(crop_padding=4, hflip=True), given_as="folder",
            loader="cifar:load_cifar100"),
)
BY_NAME = {dataset.name: dataset for dataset in DATASETS}


def for_protocol(protocol: str) -> tuple[DataSet, ...]:
    return tuple(d for d in DATASETS if d.protocol == protocol)


def data_spec(protocol: str, data: str, data_dir: str | None = None) -> dict:
    """The data set a command line names: `{'name': ..., loader options...}`, paths made absolute.
    Raises ValueError naming `data` or `data_dir`."""
    named = [d for d in for_protocol(protocol) if d.given_as != "path"]
    dataset = next((d for d in named if d.name == data), None)
    by_path = next((d for d in for_protocol(protocol) if d.given_as == "path"), None)
    folders = f"`data_dir` is only for {_names(d for d in DATASETS if d.given_as == 'folder')}"
    if dataset is None and by_path is not None:
        if data_dir is not None:
            raise ValueError(f"{folders}; give an embedding file as `data` PATH")
        return {"name": by_path.name, "path": str(Path(data).resolve())}
    if dataset is None:
        raise ValueError(f"`data` must be {_names(named)} for {protocol}; got {data!r}")
    if dataset.given_as == "folder":
        if data_dir is None:
            raise ValueError(f"`data` {data} needs `data_dir` PATH, the folder holding its files")
        return {"name": dataset.name, "folder": str(Path(data_dir).resolve())}
    if data_dir is not None:
        raise ValueError(folders)
    return {"name": dataset.name}


def _names(datasets) -> str:
    names = [d.name for d in datasets]
    return " or ".join(names) if len(names) < 3 else ", ".join(names[:-1]) + " or " + names[-1]


def load_data(spec: dict) -> Splits:
    """Load the data set `spec` names; a bad file or option raises DataError (one line)."""
    dataset = BY_NAME.get(spec.get("name"))
    if dataset is None:
        raise DataError(f"unknown data set {spec.get('name')!r}; known: {', '.join(BY_NAME)}")
    if dataset.given_as == "path" and "path" in spec and not Path(spec["path"]).exists():
        named = [d for d in for_protocol(dataset.protocol) if d.given_as != "path"]
        raise DataError(f"`data` {spec['path']} is neither a data set of {dataset.protocol} "
                        f"({_names(named)}) nor an existing embedding file")
    module, function = dataset.load_function.split(":")
    loader = getattr(importlib.import_module(f"softtopk_experiments.data.{module}"), function)
    options = {key: value for key, value in spec.items() if key != "name"}
    try:
        inspect.signature(loader).bind(**options)
    except TypeError as error:
        raise DataError(f"bad option for data set {dataset.name!r}: {error}") from None
    return loader(**options)
