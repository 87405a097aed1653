"""One training run of either protocol: validation split, epochs of Adam, evaluation after every
epoch, per-epoch checkpoints that a killed run resumes from, and the result at the best epoch.

Every random draw of an epoch (order, augmentation) comes from a generator seeded by `(seed, epoch)`,
so a run resumed from its checkpoint after epoch e replays epochs e+1, ... exactly as an
uninterrupted run would.
"""

from __future__ import annotations

import json
import math
import sys
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import nn
from tqdm import tqdm

from softtopk.metrics import topk_accuracy

from .augment import Augmentation
from .distributed import Group
from .loss_factory import LossSpec, format_p_k, make_loss, selection_weights
from .models import ResNet18Cifar, embedding_probe
from .runfiles import (
    load_checkpoint,
    read_json,
    remove_partial_files,
    save_checkpoint,
    write_json,
    write_jsonl,
)
from .splits import Splits

PROTOCOLS = ("finetune", "train")
REPORTED_KS = (1, 5, 10, 20)
CONFIG, LOG, SUMMARY = "config.json", "log.jsonl", "summary.json"
CHECKPOINT, BEST = "checkpoint.pt", "best.pt"


@dataclass(frozen=True)
class TrainConfig:
    """Everything that determines a run's numbers.

    `protocol` 'finetune' trains `embedding_probe(hidden)` on features `[N, D]`; 'train' trains
    `ResNet18Cifar(width)` on uint8 images `[N, C, H, W]` with the data set's augmentation.
    `val_size` is a fraction of train (< 1), a count (>= 1) or None for the embedding rule: 10% of
    train, at most 50,000 (100,000 above 5,000 classes), which gives the paper's 50,000 for ImageNet-1K
    and 100,000 for ImageNet-21K-P. `data` names the data set and its
    loader options; `amp` is 'none' or 'bf16'.
    """

    protocol: str
    data: dict
    loss: LossSpec
    epochs: int
    batch_size: int
    lr: float
    val_size: float | None = None
    seed: int = 0
    hidden: int | None = None
    width: int | None = None
    amp: str = "none"
    augmentation: Augmentation = field(default_factory=Augmentation)

    def __post_init__(self) -> None:
        if self.protocol not in PROTOCOLS:
            raise ValueError(f"protocol must be one of {', '.join(PROTOCOLS)}; got {self.protocol!r}")
        for name in ("epochs", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise ValueError(f"lr must be finite and > 0, got {self.lr}")
        size = self.val_size
        if size is not None and (not size > 0 or (size >= 1 and size != int(size))):
            raise ValueError(f"val_size must be a fraction in (0, 1) or a whole count >= 1, got {size}")
        if self.amp not in ("none", "bf16"):
            raise ValueError(f"amp must be 'none' or 'bf16', got {self.amp!r}")

    def to_dict(self) -> dict:
        """JSON-ready form, as stored in config.json."""
        return json.loads(json.dumps(asdict(self)))

    def identity(self) -> dict:
        """What a resumed run must share with the run it continues: all but `epochs`, which may grow."""
        return {key: value for key, value in self.to_dict().items() if key != "epochs"}


def check_run_dir(out: Path, config: TrainConfig, resume: bool) -> None:
    """Refuse to start over a finished or different run: `out` must be new or empty, or hold this
    configuration's run with `resume` set. Raises ValueError with a one-line reason."""
    config_file = Path(out) / CONFIG
    if not config_file.exists():
        return
    if not resume:
        raise ValueError(f"{out} already holds a run; pass --resume to continue it or choose another --out")
    try:
        stored = read_json(config_file)["config"]
    except (ValueError, KeyError, OSError) as error:
        raise ValueError(f"--resume: {config_file} is unreadable ({error})") from None
    mine = config.identity()
    stored.pop("epochs", None)
    if stored != mine:
        diffs = [f"{key}: {stored.get(key)!r} there, {mine.get(key)!r} now"
                 for key in sorted(set(stored) | set(mine)) if stored.get(key) != mine.get(key)]
        raise ValueError(f"--resume: {out} was started with a different configuration ({'; '.join(diffs)})")
    if (Path(out) / CHECKPOINT).exists():
        done = load_checkpoint(Path(out) / CHECKPOINT)["epoch"]
        if done > config.epochs:
            raise ValueError(f"--epochs {config.epochs} is less than the {done} epochs {out} has finished")


def check_fits(config: TrainConfig, splits: Splits) -> None:
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
    k_max = len(config.loss.p_k)
    if k_max >= splits.num_classes:
        raise ValueError(f"P_K has K = {k_max} entries but the data has only {splits.num_classes} classes")
    _validation_count(splits, config.val_size)


def _validation_count(splits: Splits, val_size: float | None) -> int:
    n = splits.train_y.shape[0]
    if val_size is None:
        count = min(round(0.1 * n), 100_000 if splits.num_classes > 5000 else 50_000)
    else:
        count = round(val_size * n) if val_size < 1 else int(val_size)
    if not 1 <= count < n:
        raise ValueError(f"val_size {val_size} gives {count} validation samples out of {n} in train; "
                         f"it must leave at least one sample in each part")
    return count


def validation_split(splits: Splits, val_size: float | None, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices `(train [N - V], val [V])` into `splits.train_*`: a random validation part of V samples
    (see `TrainConfig` for `val_size`). Indices, not copies, so memory-mapped embeddings stay on disk."""
    count = _validation_count(splits, val_size)
    order = torch.randperm(splits.train_y.shape[0], generator=torch.Generator().manual_seed(seed))
    return order[count:], order[:count]


def _epoch_generator(seed: int, epoch: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed * 1_000_003 + epoch)


class Trainer:
    """A prepared run: `Trainer(config, splits, ...)` checks the data against the protocol and builds
    the model and loss (raising ValueError on a mismatch); `run()` trains and returns the summary.

    With `out`, the main process writes `out/config.json`, `log.jsonl` (one line per epoch's
    evaluation), `checkpoint.pt` and `best.pt` every epoch, and `summary.json` at the end.
    """

    def __init__(self, config: TrainConfig, splits: Splits, out: Path | None = None, device: str = "cpu",
                 group: Group | None = None, progress: bool = True, label: str = "",
                 runtime: dict | None = None) -> None:
        self.config, self.out, self.group = config, None if out is None else Path(out), group or Group()
        self.device = torch.device(device)
        self.progress, self.label, self.runtime = progress and self.group.is_main, label, runtime or {}
        check_fits(config, splits)
        self.loss_fn = make_loss(config.loss)
        self.num_classes = splits.num_classes
        k_max = len(config.loss.p_k)
        self.ks = tuple(sorted({k for k in (*REPORTED_KS, *range(1, k_max + 1)) if k <= self.num_classes}))
        self.weights = selection_weights(config.loss)
        self.splits = splits
        self.train_index, self.val_index = validation_split(splits, config.val_size, config.seed)
        self.test_index = torch.arange(splits.test_y.shape[0])
        self.prepare = self._input_transform(config, splits.train_x, self.train_index)
        torch.manual_seed(config.seed)
        if config.protocol == "finetune":
            self.model = embedding_probe(splits.train_x.shape[1], self.num_classes, config.hidden)
        else:
            self.model = ResNet18Cifar(self.num_classes, splits.train_x.shape[1], width=config.width or 64)
        self.model.to(self.device)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=config.lr)
        self.ddp_model: nn.Module = self.model
        if self.group.world > 1:
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.ddp_model = nn.parallel.DistributedDataParallel(self.model, device_ids=ids)

    @staticmethod
    def _input_transform(config: TrainConfig, inputs: torch.Tensor,
                         train_index: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
        """The map from stored inputs to model inputs: features as float, images standardised per
        channel with the statistics of the training part `inputs[train_index]`."""
        if config.protocol == "finetune":
            return lambda x: x.float()
        mean, std = _channel_stats(inputs, train_index)
        return lambda x: (x.float() / 255 - mean.to(x.device)) / std.to(x.device)

    def run(self, resume: bool = False) -> dict:
        """Train the remaining epochs (all, or those after the checkpoint with `resume`); returns the
        summary: test accuracies at the best validation epoch, and what picked it."""
        history, start = [], 0
        checkpoint = self.out / CHECKPOINT if self.out else None
        if resume and checkpoint is not None and checkpoint.exists():
            if self.group.is_main:
                remove_partial_files(self.out)
            history, start = self._restore(load_checkpoint(checkpoint))
        elif self.out is not None and self.group.is_main:
            self.out.mkdir(parents=True, exist_ok=True)
            write_json(self.out / CONFIG, {"config": self.config.to_dict(), "runtime": self.runtime})
        for epoch in range(start + 1, self.config.epochs + 1):
            began = time.perf_counter()
            train_loss = self._train_epoch(epoch)
            row = {"epoch": epoch, "train_loss": train_loss}
            s = self.splits
            for part, x, y, index in (("val", s.train_x, s.train_y, self.val_index),
                                      ("test", s.test_x, s.test_y, self.test_index)):
                row.update({f"{part}_{key}": value for key, value in self._evaluate(x, y, index).items()})
            row["selection"] = sum(w * row[f"val_top{k}"] for k, w in self.weights.items())
            row["seconds"] = time.perf_counter() - began
            history.append(row)
            self._save(epoch, history)
            if self.progress:
                tqdm.write(f"{self.label}epoch {epoch}/{self.config.epochs}: train loss {train_loss:.4f}, "
                           f"val top-1 {row['val_top1']:.2%} top-5 {row.get('val_top5', math.nan):.2%}",
                           file=sys.stderr)
        summary = summarize(self.config, history, self.val_index.shape[0])
        if self.out is not None and self.group.is_main:
            write_json(self.out / SUMMARY, summary)
        return summary

    def _train_epoch(self, epoch: int) -> float:
        """One pass over train in shuffled global batches; returns the mean training loss."""
        generator = _epoch_generator(self.config.seed, epoch)
        order = self.train_index[torch.randperm(self.train_index.shape[0], generator=generator)]
        batches = torch.split(order, self.config.batch_size)
        self.ddp_model.train()
        total, count = torch.zeros((), dtype=torch.float64, device=self.device), 0  # no sync per step
        bar = tqdm(batches, desc=f"{self.label}epoch {epoch}", file=sys.stderr, leave=False,
                   disable=not self.progress, unit="batch")
        for index in bar:
            if index.shape[0] < self.group.world:  # too few samples to give every process one
                break
            x = self.config.augmentation(self.splits.train_x[index], generator)  # the whole global batch
            x, y = self.group.shard(x), self.group.shard(self.splits.train_y[index])
            with self._autocast():
                logits = self.ddp_model(self.prepare(x.to(self.device)))
            loss = self.loss_fn(logits.float(), y.to(self.device))
            # DDP averages gradients over processes; weighting by the shard's share makes the average
            # the gradient of the global batch's mean loss even when shards differ in size.
            share = y.shape[0] * self.group.world / index.shape[0]
            self.optimizer.zero_grad(set_to_none=True)
            (loss * share).backward()
            self.optimizer.step()
            total += loss.detach().double() * y.shape[0]
            count += index.shape[0]
        return float(self.group.sum(total)) / max(count, 1)

    @torch.no_grad()
    def _evaluate(self, x: torch.Tensor, y: torch.Tensor, index: torch.Tensor,
                  batch_size: int = 1000) -> dict[str, float]:
        """Top-k accuracies (`top{k}`) and mean loss (`loss`) on the rows `index` of `x`, `y`, shared
        out over the processes."""
        self.model.eval()
        sums = torch.zeros(len(self.ks) + 1, dtype=torch.float64)  # hits per k, then the loss sum
        for rows in torch.split(self.group.shard(index), batch_size):
            with self._autocast():
                logits = self.model(self.prepare(x[rows].to(self.device))).float()
            target = y[rows].to(self.device)
            accuracy = topk_accuracy(logits, target, self.ks)
            n = rows.shape[0]
            sums[:-1] += torch.tensor([accuracy[k] * n for k in self.ks], dtype=torch.float64)
            sums[-1] += float(self.loss_fn(logits, target)) * n
        sums = self.group.sum(sums.to(self.device)).cpu()
        hits = sums[:-1].round().tolist()
        result = {f"top{k}": hit / index.shape[0] for k, hit in zip(self.ks, hits, strict=True)}
        result["loss"] = float(sums[-1]) / index.shape[0]
        return result

    def _autocast(self):
        if self.config.amp == "bf16":
            return torch.autocast(self.device.type, dtype=torch.bfloat16)
        return nullcontext()

    def _save(self, epoch: int, history: list[dict]) -> None:
        """Checkpoint first, then the log it implies: a run killed between the two rewrites the log
        from the checkpoint on resume, so no finished epoch is lost or logged twice."""
        if self.out is None or not self.group.is_main:
            return
        best = best_epoch(history)
        if best["epoch"] == epoch:
            save_checkpoint(self.out / BEST, {"epoch": epoch, "model": self.model.state_dict()})
        rng = {"torch": torch.get_rng_state()}
        if torch.cuda.is_available():
            rng["cuda"] = torch.cuda.get_rng_state_all()
        save_checkpoint(self.out / CHECKPOINT, {
            "epoch": epoch, "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
            "history": history, "best": best, "rng": rng})
        write_jsonl(self.out / LOG, history)

    def _restore(self, state: dict) -> tuple[list[dict], int]:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        torch.set_rng_state(state["rng"]["torch"])
        if "cuda" in state["rng"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["rng"]["cuda"])
        if self.group.is_main:
            write_jsonl(self.out / LOG, state["history"])
        return list(state["history"]), state["epoch"]


@torch.no_grad()
def _channel_stats(images: torch.Tensor, index: torch.Tensor,
                   chunk: int = 4096) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and standard deviation `[1, C, 1, 1]`, in [0, 1], of the uint8 images
    `images[index]` (`images` is `[N, C, H, W]`)."""
    total = torch.zeros(images.shape[1], dtype=torch.float64)
    squares = torch.zeros_like(total)
    for rows in torch.split(index, chunk):
        part = images[rows].double() / 255
        total += part.sum(dim=(0, 2, 3))
        squares += part.square().sum(dim=(0, 2, 3))
    count = index.shape[0] * images.shape[2] * images.shape[3]
    mean = total / count
    std = (squares / count - mean.square()).clamp_min(1e-12).sqrt()
    return mean.float().view(1, -1, 1, 1), std.float().view(1, -1, 1, 1)


def best_epoch(history: list[dict]) -> dict:
    """The history row with the highest validation selection score (the earliest among equals)."""
    return max(history, key=lambda row: (row["selection"], -row["epoch"]))


def summarize(config: TrainConfig, history: list[dict], val_count: int) -> dict:
    """The run's result: the test accuracies of the best validation epoch."""
    best = best_epoch(history)
    ks = sorted(int(key[len("test_top"):]) for key in best if key.startswith("test_top"))
    return {
        "method": config.loss.method, "p_k": list(config.loss.p_k), "p_k_label": format_p_k(config.loss.p_k),
        "best_epoch": best["epoch"], "epochs": len(history), "val_size": val_count,
        "selection": {f"top{k}": w for k, w in selection_weights(config.loss).items()},
        "test": {f"top{k}": best[f"test_top{k}"] for k in ks},
        "val": {f"top{k}": best[f"val_top{k}"] for k in ks},
        "seconds": sum(row["seconds"] for row in history),
    }
