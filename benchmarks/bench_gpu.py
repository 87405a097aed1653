"""Forward + backward time of the sorting-network losses on a GPU, next to `F.cross_entropy`: torch
eager, torch compiled (`mode="reduce-overhead"`, CUDA graphs) and the Triton kernel, at the paper's
three settings, in float32 and under bf16 autocast, with the aten ops each dispatches per step.

    python benchmarks/bench_gpu.py [--device cuda] [--settings ImageNet-1K,...] [--methods bitonic,...]
                                   [--no-compile] [--repeats 50] [--warmup 10] [--json results.json]

Times are medians of CUDA-event timings of single steps (each step synchronised) after warm-up; the
ratio is to cross-entropy on the same logits in the same run. `--device cpu` runs the same table on the
CPU as a smoke test (wall-clock timing; the Triton backend is skipped there).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from _dispatch import dispatch_stats
from bench_losses import SETTINGS

import softtopk

BACKENDS = ("cross-entropy", "torch eager", "torch compiled", "triton")


def median_ms(step: Callable[[], None], device: torch.device, repeats: int, warmup: int) -> float:
    for _ in range(warmup):
        step()
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            torch.cuda.synchronize(device)
            start.record()
            step()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end))
        else:
            begin = time.perf_counter()
            step()
            times.append(1e3 * (time.perf_counter() - begin))
    return statistics.median(times)


@contextlib.contextmanager
def backend(name: str):
    """SOFTTOPK_BACKEND for one method (read by the library on every call)."""
    previous = os.environ.get("SOFTTOPK_BACKEND")
    os.environ["SOFTTOPK_BACKEND"] = "triton" if name == "triton" else "torch"
    try:
        yield
    finally:
        if previous is None:
            del os.environ["SOFTTOPK_BACKEND"]
        else:
            os.environ["SOFTTOPK_BACKEND"] = previous


def triton_available() -> bool:
    try:
        import triton  # noqa: F401
    except ImportError:
        return False
    return True


def make_step(loss_fn, logits: torch.Tensor, target: torch.Tensor, bf16: bool) -> Callable[[], None]:
    autocast = torch.autocast(logits.device.type, dtype=torch.bfloat16, enabled=bf16)

    def step() -> None:
        logits.grad = None
        with autocast:
            loss = loss_fn(logits, target)
        loss.backward()

    return step


def run_case(loss_fn, method: str, logits, target, bf16: bool, args) -> tuple[float, int | None]:
    """Median ms of one method, and the aten ops of one step (None for a compiled graph)."""
    with backend(method):
        step = make_step(loss_fn, logits, target, bf16)
        ms = median_ms(step, logits.device, args.repeats, args.warmup)
        if method == "torch compiled":
            return ms, None
        return ms, dispatch_stats(step)[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--settings", default=",".join(s[0] for s in SETTINGS),
                        help="comma-separated names of the settings")
    parser.add_argument("--methods", default="bitonic,splitter_selection",
                        help="comma-separated sorting networks")
    parser.add_argument("--no-compile", action="store_true", help="skip torch.compile (slow to compile)")
    parser.add_argument("--repeats", type=int, default=50)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--json", help="also write the rows to this file (rewritten atomically per row)")
    args = parser.parse_args()
    device = torch.device(args.device)
    names = {s[0] for s in SETTINGS}
    chosen = args.settings.split(",")
    if unknown := [name for name in chosen if name not in names]:
        parser.error(f"--settings: unknown {unknown}; expected names from {sorted(names)}")
    methods = args.methods.split(",")
    if bad := [m for m in methods if m not in ("bitonic", "splitter_selection", "odd_even")]:
        parser.error(f"--methods: {bad} are not sorting networks (bitonic, splitter_selection, odd_even)")
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device is available (use --device cpu for a smoke test)")
    backends = [b for b in BACKENDS if not (b == "torch compiled" and args.no_compile)
                and not (b == "triton" and (device.type != "cuda" or not triton_available()))]
    torch.manual_seed(0)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    print(f"torch {torch.__version__}, {name}; median ms of forward+backward, aten ops per step "
          f"(views excluded)")
    print("| setting | dtype | network | method | ms | × cross-entropy | aten ops |")
    print("|---|---|---|---|---|---|---|")
    rows = []

    def report(setting: str, dtype: str, network: str, method: str, ms: float, base: float, ops: int | None):
        print(f"| {setting} | {dtype} | {network} | {method} | {ms:.3f} | {ms / base:.2f} | "
              f"{'graph' if ops is None else ops} |", flush=True)
        rows.append({"setting": setting, "dtype": dtype, "network": network, "method": method, "ms": ms,
                     "ratio_to_cross_entropy": ms / base, "aten_ops": ops})
        if args.json:
            draft = Path(f"{args.json}.tmp")  # complete before it replaces the file
            draft.write_text(json.dumps({"device": name, "torch": torch.__version__, "rows": rows}, indent=2))
            os.replace(draft, args.json)

    for setting, batch, classes, m, p_k in SETTINGS:
        if setting not in chosen:
            continue
        for dtype in ("float32", "bf16 autocast"):
            bf16 = dtype != "float32"
            # under autocast a head's logits are bf16; the losses compute in float32 from them
            logits_dtype = torch.bfloat16 if bf16 else torch.float32
            logits = torch.randn(batch, classes, device=device, dtype=logits_dtype, requires_grad=True)
            target = torch.randint(0, classes, (batch,), device=device)
            base, ops = run_case(F.cross_entropy, "cross-entropy", logits, target, bf16, args)
            report(setting, dtype, "–", "cross-entropy", base, base, ops)
            for method in methods:
                loss_fn = softtopk.TopKCrossEntropyLoss(p_k, method=method, m=m, distribution="logistic_phi")
                for method_backend in backends[1:]:
                    compiled = method_backend == "torch compiled"
                    fn = torch.compile(loss_fn, mode="reduce-overhead") if compiled else loss_fn
                    try:
                        ms, ops = run_case(fn, method_backend, logits, target, bf16, args)
                    except Exception as error:  # report and go on: one failing method must not end the run
                        print(f"| {setting} | {dtype} | {method} | {method_backend} | failed: "
                              f"{type(error).__name__}: {str(error).splitlines()[0][:80]} | | |", flush=True)
                        continue
                    report(setting, dtype, method, method_backend, ms, base, ops)

if __name__ == "__main__":
    main()
