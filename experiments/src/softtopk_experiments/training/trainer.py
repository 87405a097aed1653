"""The training loop of either protocol: epochs of Adam over the training part, evaluations on
validation and test every `eval_every` iterations and at the end of each epoch, a checkpoint after
every epoch that a killed run resumes from, and the summary at the end. With `patience` the run
stops early once it has converged (`summary.converged`, decided from the evaluations stored in the
checkpoint, so a resumed run stops where an uninterrupted one would).

Every random draw of an epoch (order, augmentation, mixing) comes from a generator seeded by
`(seed, epoch)`, so a run resumed from its checkpoint after epoch e replays epochs e+1, ... exactly
as an uninterrupted run would.

Under torchrun the processes split each batch between them (data parallel, the model replicated), or,
with `head` sharded, each holds a block of the head's classes and trains on the whole batch
(`class_sharding`); either way the checkpoints hold the whole model, as one process has it.
"""

from __future__ import annotations

import math
import sys
import time
from contextlib import nullcontext
from pathlib import Path

import torch

from softtopk.metrics import topk_accuracy
from softtopk_experiments.data.mixing import Mixing
from softtopk_experiments.data.splits import Splits, validation_split
from softtopk_experiments.files import (
    load_checkpoint,
    remove_partial_files,
    save_checkpoint,
    write_json,
    write_jsonl,
)
from softtopk_experiments.results.names import BEST, CHECKPOINT, CONFIG, LOG, SUMMARY, on, topk
from softtopk_experiments.results.summary import best_row, converged, score, summarize
from softtopk_experiments.settings.losses import selection_weights
from softtopk_experiments.settings.run_config import RunConfig
from softtopk_experiments.training.class_sharding import load_whole_state, shard_classes, whole_state
from softtopk_experiments.training.distributed import Group
from softtopk_experiments.training.models import build_model
from softtopk_experiments.training.objective import make_objective
from softtopk_experiments.training.progress import Progress

REPORTED_KS = (1, 5, 10, 20)


def _epoch_generator(seed: int, epoch: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed * 1_000_003 + epoch)


class Trainer:
    """A prepared run: `Trainer(config, splits, ...)` builds the model for `config` (from
    `run_config.make_config` on the same `splits`, which checked them and built the loss);
    `run()` trains and returns the summary.

    With `out`, the main process writes `out/config.json`, `log.jsonl` (one line per evaluation),
    `checkpoint.pt` after every epoch, `best.pt` (the model of the best P_K-weighted validation
    score so far) and `summary.json` at the end.
    """

    def __init__(self, config: RunConfig, splits: Splits, out: Path | None = None, device: str = "cpu",
                 group: Group | None = None, progress: Progress | bool = True, label: str = "",
                 runtime: dict | None = None) -> None:
        self.config, self.out, self.group = config, None if out is None else Path(out), group or Group()
        self.device = torch.device(device)
        if not isinstance(progress, Progress):
            progress = Progress(progress)
        self.progress = progress if self.group.is_main else Progress(False)
        self.label, self.runtime = label, runtime or {}
        self.loss_fn = config.loss
        self.mixing = Mixing(config.mixup, config.cutmix) if config.mixes else None
        self.splits, self.num_classes = splits, splits.num_classes
        k_max = len(config.p_k)
        self.ks = tuple(sorted({k for k in (*REPORTED_KS, *range(1, k_max + 1)) if k <= self.num_classes}))
        self.weights = selection_weights(config.p_k)
        self.train_index, self.val_index = validation_split(splits, config.val_size, config.seed)
        self.test_index = torch.arange(splits.test_y.shape[0])
        self.prepare = self._input_transform(config.protocol, splits.train_x, self.train_index)
        torch.manual_seed(config.seed)
        model = build_model(config.protocol, tuple(splits.train_x.shape[1:]), self.num_classes,
                            hidden=config.hidden, width=config.width)
        # `data`: the processes each batch is split over. Class-sharded, every process keeps its block
        # of the head (initialised as one process's) and trains on the whole batch, whose loss it holds.
        sharded = config.head == "sharded"
        self.data = Group() if sharded else self.group
        self.model = (shard_classes(model, self.group) if sharded else model).to(self.device)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=config.lr)
        self.objective = make_objective(config, self.model, self._autocast, self.data, self.device)

    @staticmethod
    def _input_transform(protocol: str, inputs: torch.Tensor, train_index: torch.Tensor):
        """The map from stored inputs to model inputs: features as float, images (uint8, or float in
        [0, 255] when mixed) standardised per channel with the statistics of `inputs[train_index]`."""
        if protocol == "finetune":
            return lambda x: x.float()
        mean, std = _channel_stats(inputs, train_index)
        return lambda x: (x.float() / 255 - mean.to(x.device)) / std.to(x.device)

    def run(self, resume: bool = False) -> dict:
        """Train the remaining epochs (all, or those after the checkpoint with `resume`); returns the
        summary (see `summary.summarize`)."""
        history, start = [], 0
        checkpoint = self.out / CHECKPOINT if self.out else None
        if resume and checkpoint is not None and checkpoint.exists():
            if self.group.is_main:
                remove_partial_files(self.out)
            history, start = self._restore(load_checkpoint(checkpoint))
            self._announce(f"resuming {self.out} after epoch {start} of {self.config.epochs}")
        else:
            if resume:
                self._announce(f"resuming {self.out}: no epoch had finished, starting at epoch 1")
            if self.out is not None and self.group.is_main:
                self.out.mkdir(parents=True, exist_ok=True)
                write_json(self.out / CONFIG, {"config": self.config.to_dict(), "runtime": self.runtime})
        for epoch in range(start + 1, self.config.epochs + 1):
            if converged(self.config, history):  # also a resumed run that had converged
                break
            began = time.perf_counter()
            mean_loss = self._train_epoch(epoch, history)
            self._save(epoch, history)
            top1, top5 = (history[-1].get(on("val", topk(k)), math.nan) for k in (1, 5))
            self.progress.line(f"{self.label}epoch {epoch}/{self.config.epochs}: train loss {mean_loss:.4f}, "
                               f"val top-1 {top1:.2%} top-5 {top5:.2%} "
                               f"({time.perf_counter() - began:.1f} s)")
        summary = summarize(self.config, history, self.val_index.shape[0])
        if self.config.patience:
            self.progress.line(f"{self.label}{summary['stopped']['text']}")
        if self.out is not None and self.group.is_main:
            write_json(self.out / SUMMARY, summary)
        return summary

    def _announce(self, text: str) -> None:
        if self.group.is_main:
            print(f"{self.label}{text}", file=sys.stderr, flush=True)

    def _train_epoch(self, epoch: int, history: list[dict]) -> float:
        """One pass over train in shuffled global batches, appending an evaluation row to `history`
        every `eval_every` iterations and at the end; returns the epoch's mean training loss."""
        generator = _epoch_generator(self.config.seed, epoch)
        order = self.train_index[torch.randperm(self.train_index.shape[0], generator=generator)]
        # a last batch too small to give every process a sample is dropped
        batches = [index for index in torch.split(order, self.config.batch_size)
                   if index.shape[0] >= self.data.world]
        self.objective.train()
        # loss sums stay on the device: no synchronisation per step
        zero = torch.zeros((), dtype=torch.float64, device=self.device)
        total, count, epoch_total, epoch_count = zero.clone(), 0, zero.clone(), 0
        since = time.perf_counter()
        every = self.config.eval_every or len(batches)
        shown = self.progress.batches(batches, len(batches), f"{self.label}epoch {epoch}")
        for i, index in enumerate(shown, start=1):
            summed = self._step(index, generator)
            total, count = total + summed, count + index.shape[0]
            if i % every == 0 or i == len(batches):
                epoch_total, epoch_count = epoch_total + total, epoch_count + count
                row = {"epoch": epoch, "iteration": i, "step": (epoch - 1) * len(batches) + i,
                       "train_loss": float(self.data.sum(total)) / max(count, 1)}
                s = self.splits
                for part, x, y, rows in (("val", s.train_x, s.train_y, self.val_index),
                                         ("test", s.test_x, s.test_y, self.test_index)):
                    row.update({on(part, key): value for key, value in self._evaluate(x, y, rows).items()})
                row["score"] = score(row, self.weights)
                row["seconds"] = time.perf_counter() - since
                history.append(row)
                if best_row(history, "score") is row:
                    self._save_best(epoch)
                self.objective.train()
                total, count, since = zero.clone(), 0, time.perf_counter()
        return float(self.data.sum(epoch_total)) / max(epoch_count, 1)

    def _step(self, index: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """One optimiser step on the global batch `index`; returns this process's loss sum."""
        x = self.config.augmentation(self.splits.train_x[index], generator)  # the whole global batch
        y = self.splits.train_y[index]
        if self.mixing is not None:
            x, y = self.mixing(x, y, self.num_classes, generator)
        x, y = self.data.shard(x), self.data.shard(y)
        loss = self.objective(self.prepare(x.to(self.device)), y.to(self.device))
        # DDP averages gradients over processes; weighting by the shard's share makes the average
        # the gradient of the global batch's mean loss even when shards differ in size.
        share = y.shape[0] * self.data.world / index.shape[0]
        self.optimizer.zero_grad(set_to_none=True)
        (loss * share).backward()
        self.optimizer.step()
        return loss.detach().double() * y.shape[0]

    @torch.no_grad()
    def _evaluate(self, x: torch.Tensor, y: torch.Tensor, index: torch.Tensor,
                  batch_size: int = 1000) -> dict[str, float]:
        """Top-k accuracies (`top{k}`, by `softtopk.metrics.topk_accuracy`, ties included) and mean loss
        (`loss`) on the rows `index` of `x`, `y`, shared out over the `data` processes (a class-sharded
        head's logits are gathered from every process: each evaluates every row)."""
        self.model.eval()
        sums = torch.zeros(len(self.ks) + 1, dtype=torch.float64)  # hits per k, then the loss sum
        for rows in torch.split(self.data.shard(index), batch_size):
            with self._autocast():
                logits = self.model(self.prepare(x[rows].to(self.device))).float()
            target = y[rows].to(self.device)
            accuracy = topk_accuracy(logits, target, self.ks)
            sums[:-1] += torch.tensor([accuracy[k] * rows.shape[0] for k in self.ks], dtype=torch.float64)
            sums[-1] += float(self.loss_fn(logits, target)) * rows.shape[0]
        sums = self.data.sum(sums.to(self.device)).cpu()
        hits = sums[:-1].round().tolist()
        result = {topk(k): hit / index.shape[0] for k, hit in zip(self.ks, hits, strict=True)}
        result["loss"] = float(sums[-1]) / index.shape[0]
        return result

    def _autocast(self):
        if self.config.amp == "bf16":
            return torch.autocast(self.device.type, dtype=torch.bfloat16)
        return nullcontext()

    def _save_best(self, epoch: int) -> None:
        if self.out is not None:
            model, _ = whole_state(self.model)  # on every process: it may gather
            if self.group.is_main:
                save_checkpoint(self.out / BEST, {"epoch": epoch, "model": model})

    def _save(self, epoch: int, history: list[dict]) -> None:
        """Checkpoint first, then the log it implies: a run killed between the two rewrites the log
        from the checkpoint on resume, so no finished epoch is lost or logged twice."""
        if self.out is None:
            return
        model, optimizer = whole_state(self.model, self.optimizer)  # on every process: it may gather
        if not self.group.is_main:
            return
        rng = {"torch": torch.get_rng_state()}
        if torch.cuda.is_available():
            rng["cuda"] = torch.cuda.get_rng_state_all()
        save_checkpoint(self.out / CHECKPOINT, {"epoch": epoch, "model": model, "optimizer": optimizer,
                                                "history": history, "rng": rng})
        write_jsonl(self.out / LOG, history)

    def _restore(self, state: dict) -> tuple[list[dict], int]:
        load_whole_state(self.model, self.optimizer, state["model"], state["optimizer"])
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
