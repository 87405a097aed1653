"""GCIDE subject fields as frozen sentence embeddings of a pretrained encoder (the paper's fine-tuning
setting): the 13,488 texts of `load_gcide` in its 70 classes, embedded with all-MiniLM-L6-v2
(sentence-transformers; Apache-2.0) and reduced by PCA to 128 dimensions, shipped precomputed as
float16. Built by experiments/scripts/build_gcide_minilm.py; licences in GCIDE_MINILM_LICENSE.txt."""

from __future__ import annotations

from importlib import resources

import numpy as np

from softtopk_experiments.data.embeddings import load_embeddings
from softtopk_experiments.data.splits import DataError, Splits

DATA_FILE = "gcide_minilm.npz"


def load_gcide_minilm() -> Splits:
    """The shipped embeddings as float32 features `[N, 128]` and int64 labels `[N]` indexing the
    sorted field names (`class_names`, as in `load_gcide`): 10,790 train and 2,698 test senses, the
    split of `load_gcide(test_fraction=0.2, seed=0)`, row for row.

    The features are the training set's 128 principal components (78% of its variance) of the unit
    length 384-dimensional embeddings, so rows have norm below 1. Nothing is derived at load time, so
    nothing is cached; no extra package is needed.
    """
    resource = resources.files("softtopk_experiments.data").joinpath("shipped", DATA_FILE)
    with resources.as_file(resource) as path:
        if not path.is_file():
            raise DataError(f"the data file {DATA_FILE} is missing from the softtopk-experiments package "
                            "(rebuild it with experiments/scripts/build_gcide_minilm.py)")
        splits = load_embeddings(path)
        with np.load(path, allow_pickle=False) as archive:
            if "class_names" not in archive.files or archive["class_names"].dtype.kind != "U":
                raise DataError(f"{path} must hold the array class_names of strings")
            class_names = tuple(str(name) for name in archive["class_names"])
    if splits.num_classes > len(class_names):
        raise DataError(f"{path}: labels reach {splits.num_classes - 1} but there are only "
                        f"{len(class_names)} class_names")
    return Splits(splits.train_x.float(), splits.train_y, splits.test_x.float(), splits.test_y,
                  len(class_names), class_names)
