"""GCIDE subject fields: 13,488 senses of the GNU Collaborative International Dictionary of English
(Webster's 1913 and later additions) labelled with the field their definition names, in 70 classes
(Zool., Bot., Law, Naut., Mus., Her., Scots Law, Card Playing, ...), as TF-IDF + truncated-SVD
features. Built by experiments/scripts/build_gcide.py; licence (GPL-2+) in GCIDE_LICENSE.txt beside the data.

Many fields overlap (Anat./Physiol./Med./Surg., Chem./Min./Old Chem./Physiol. Chem., Law/Eng. Law/
O. Eng. Law/Scots Law, Eccl./Eccl. Hist./R. C. Ch./Theol., Zool./Paleon./Biol.), so top-1 accuracy
is capped well below 1 while top-5 accuracy is not. Each field keeps at most 500 senses.
`load_gcide_minilm` (module `gcide_minilm`) gives the same texts as pretrained sentence embeddings.
"""

from __future__ import annotations

from pathlib import Path

from softtopk_experiments.data.splits import DataError, Splits
from softtopk_experiments.data.text_sets import load_tfidf_set, read_table

DATA_FILE = "gcide_fields.tsv.gz"
NUM_CLASSES = 70
_FORMAT = 1  # bump when the features change, so old cache files are not reused


def read_gcide_table(data: bytes) -> tuple[list[str], list[str]]:
    """(fields, "headword: definition" texts) from the gzipped `label<TAB>text` table."""
    labels, texts = read_table(data, DATA_FILE)
    if len(set(labels)) != NUM_CLASSES:
        raise DataError(f"{DATA_FILE} must hold {NUM_CLASSES} fields, found {len(set(labels))} "
                        "(rebuild it with experiments/scripts/build_gcide.py)")
    return labels, texts


def load_gcide(cache_dir: Path | None = None, dim: int = 256, test_fraction: float = 0.2,
               seed: int = 0) -> Splits:
    """The shipped GCIDE field set as float32 features `[N, dim]` (L2-normalised rows) and int64
    labels `[N]` indexing the sorted field names (`class_names`), with a stratified train/test split
    (10,790 / 2,698 senses at the default `test_fraction`).

    Features: TF-IDF of words (sublinear tf, words in >= 2 training texts) fitted on the training
    texts, then a truncated SVD to `dim` dimensions fitted on the training set. Cached under
    `cache_dir` (default `$SOFTTOPK_CACHE` or `~/.cache/softtopk`), keyed by the arguments and the
    data file's hash. Needs scikit-learn (`pip install ./experiments`).
    """
    return load_tfidf_set("gcide", DATA_FILE, "experiments/scripts/build_gcide.py", _FORMAT, read_gcide_table,
                          cache_dir, dim, test_fraction, seed)
