"""The `softtopk` command line: `finetune`, `train`, `demo` and `sweep`.

Every command first checks its input and loads its data, writing nothing; a problem there ends it
with a one-line error on stderr and exit status 2. Then it trains, writing its run folder.
"""

from __future__ import annotations

import argparse
import sys
import textwrap
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import torch

from .distributed import Group, join
from .loss_factory import METHODS, parse_p_k
from .protocols import DEFAULTS, data_spec, load_data, make_config
from .sweep import check_sweep_dir, load_sweep, run_sweep, write_report
from .training import TrainConfig, Trainer, check_fits, check_run_dir

Job = Callable[[], int]


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line: `softtopk CMD: error: ... (see --help)`."""

    def error(self, message: str) -> None:  # type: ignore[override]
        print(f"{self.prog}: error: {message} (see {self.prog} --help)", file=sys.stderr)
        raise SystemExit(2)


def _p_k(text: str) -> tuple[float, ...]:
    try:
        return parse_p_k(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _wrap(text: str) -> str:
    return textwrap.fill(text, 88)


def _positive_int(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number >= 1, got {text!r}")
    return int(text)


def _defaults_help(names: Sequence[str]) -> str:
    lines = ["defaults per data set (options you give override them):"]
    for name in names:
        d = DEFAULTS[name]
        val = ("10% of train, at most 50,000 (100,000 above 5,000 classes)" if d.val_size is None
               else f"{d.val_size:.0%} of train")
        extra = f", width {d.width}" if name in ("glyphs", "cifar100") else ""
        line = (f"{name}: epochs {d.epochs}, batch {d.batch_size}, lr {d.lr:.3g}, validation {val}{extra} "
                f"-- {d.note}")
        lines.append(textwrap.fill(line, 88, initial_indent="  ", subsequent_indent="    "))
    return "\n".join(lines)


def _add_output_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("output and hardware")
    g.add_argument("--out", type=Path, help="run folder (default runs/COMMAND-DATE-TIME)")
    g.add_argument("--resume", action="store_true",
                   help="continue the run in --out from its last finished epoch (same settings needed)")
    g.add_argument("--device", default="auto", help="auto (cuda when there is one), cpu, cuda or cuda:N")
    g.add_argument("--threads", type=_positive_int, help="CPU threads of torch while training (default: 1 "
                   "for finetune on a CPU, whose small products gain nothing from more; else torch's choice)")
    g.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bars on stderr")


def _add_run_options(p: argparse.ArgumentParser, protocol: str) -> None:
    loss = p.add_argument_group("loss")
    loss.add_argument("--method", default="softmax", choices=METHODS,
                      help="softmax cross-entropy, a top-k relaxation, or smooth_topk (default softmax)")
    loss.add_argument("--p-k", type=_p_k, metavar="P1,...,PK",
                      help="P_K, the probabilities of k = 1..K, e.g. .5,0,0,0,.5 (softmax: 1,0,0,0,0)")
    loss.add_argument("--inverse-temperature", type=float, help="steepness of the relaxation (default 1)")
    # not `--m`: torchrun would take it for an abbreviation of its own options
    loss.add_argument("--top-m", dest="m", type=int, metavar="M",
                      help="the loss's m: rank only the true class and the m-1 highest others (paper: 16)")
    loss.add_argument("--distribution", help="comparator sigmoid of the sorting networks (default cauchy)")
    loss.add_argument("--art-lambda", type=float, help="lambda of the logistic_phi sigmoid (default .25)")
    loss.add_argument("--top1-mode", choices=("sm", "smce", "sort"), help="how the k = 1 term is computed")
    loss.add_argument("--tau", type=float, help="smooth_topk temperature (default 1)")
    loss.add_argument("--alpha", type=float, help="smooth_topk margin (default 1)")
    train = p.add_argument_group("training")
    train.add_argument("--epochs", type=int)
    train.add_argument("--batch-size", type=int, help="global batch, split over torchrun's processes")
    train.add_argument("--lr", type=float, help="Adam's learning rate")
    train.add_argument("--val-size", type=float, help="validation part of train: a fraction < 1 or a count")
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--amp", choices=("none", "bf16"), default="none", help="bfloat16 autocast")
    if protocol == "finetune":
        train.add_argument("--data", default="wordnet",
                           help="wordnet (the shipped set) or PATH, an embedding file (.pt/.npz)")
        train.add_argument("--hidden", type=int, help="one hidden ReLU layer of this size (default: linear)")
    else:
        train.add_argument("--data", default="glyphs", help="glyphs (rendered font glyphs) or cifar100")
        train.add_argument("--data-dir", help="folder of the CIFAR-100 files, for --data cifar100")
        train.add_argument("--width", type=int, help="channels of the ResNet's first stage (paper: 64)")
    _add_output_options(p)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="softtopk", description="Differentiable top-k classification learning: the "
                     "experiments of Petersen et al., ICML 2022.")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    finetune = commands.add_parser(
        "finetune", formatter_class=argparse.RawDescriptionHelpFormatter,
        help="ImageNet protocol: a linear probe (or small MLP) on frozen embeddings",
        description=_wrap("The paper's ImageNet protocol: Adam, lr 10^-4.5, batch 500, 20 epochs on frozen "
        "embeddings; top-1/5/10/20 on validation and test after each epoch. The result is the test "
        "accuracy at the epoch with the best validation score, the expected top-k accuracy under P_K "
        "(top-1 for softmax, top-5 for P_K = 0,0,0,0,1, their mean for .5,0,0,0,.5)."),
        epilog=_defaults_help(("embeddings", "wordnet")))
    _add_run_options(finetune, "finetune")
    finetune.set_defaults(setup=_setup_single)
    train = commands.add_parser(
        "train", formatter_class=argparse.RawDescriptionHelpFormatter,
        help="CIFAR-100 protocol: a ResNet-18 from scratch",
        description=_wrap("The paper's CIFAR-100 protocol: a CIFAR ResNet-18 (3x3 stem, no max-pool) from "
        "scratch, Adam lr 1e-3, batch 128, random 4-pixel crops (and horizontal flips on CIFAR-100 only), "
        "5% of train held out for validation; result picked as for finetune. "
        "Runs on several processes with `torchrun --nproc_per_node N -m softtopk train ...`."),
        epilog=_defaults_help(("cifar100", "glyphs")))
    _add_run_options(train, "train")
    train.set_defaults(setup=_setup_single)
    demo = commands.add_parser(
        "demo", help="softmax vs. top-k losses on the shipped WordNet set (a few minutes on a CPU)",
        description="Fine-tunes a linear probe on the shipped WordNet features with softmax cross-entropy "
        "and with bitonic, splitter-selection and NeuralSort top-k losses (P_K = [.5,0,0,0,.5] and "
        "[0,0,0,0,1]), and prints the paper-style table. It runs the shipped sweep 'demo' "
        "(configs/demo.toml): 8 epochs at lr 1e-2 instead of the paper's 20 at 10^-4.5, to finish in "
        "minutes.")
    demo.add_argument("--epochs", type=int, help="epochs per run (default: the demo's 8)")
    _add_output_options(demo)
    demo.set_defaults(setup=_setup_sweep, config="demo", data=None, data_dir=None)
    sweep = commands.add_parser(
        "sweep", help="a grid of runs from a TOML file, reported as the paper's tables",
        description="Runs every cell of a grid (methods x P_K x hyper-parameters) from a TOML file and "
        "writes the table as results.md and results.csv. CONFIG is a path or a shipped config: demo, "
        "wordnet, imagenet1k (needs --data PATH), cifar100 (needs --data-dir PATH).")
    sweep.add_argument("config", metavar="CONFIG")
    sweep.add_argument("--data", help="override the file's data (a data set name or a path)")
    sweep.add_argument("--data-dir", help="override the file's data_dir")
    sweep.add_argument("--epochs", type=int, help="override the epochs of every run")
    _add_output_options(sweep)
    sweep.set_defaults(setup=_setup_sweep)
    return parser


def _device(name: str) -> tuple[str, Group]:
    """The device to use and this process's place in torchrun's process group (if any)."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if not (name == "cpu" or name == "cuda" or (name.startswith("cuda:") and name[5:].isdigit())):
        raise ValueError(f"--device must be auto, cpu, cuda or cuda:N; got {name!r}")
    if name != "cpu" and not torch.cuda.is_available():
        raise ValueError(f"--device {name}: no CUDA device is available")
    group = join(name)
    if name != "cpu" and group.world > 1:
        name = f"cuda:{group.local_rank}"
    if name.startswith("cuda:"):
        torch.cuda.set_device(torch.device(name))
    return name, group


def _threads(threads: int | None, protocol: str, device: str) -> None:
    """Set torch's CPU threads for training (after loading, which may use more)."""
    if threads is not None or (protocol == "finetune" and device == "cpu"):
        torch.set_num_threads(threads or 1)


def _out(args: argparse.Namespace, stem: str) -> Path:
    return args.out or Path("runs") / f"{stem}-{time.strftime('%Y%m%d-%H%M%S')}"


def _setup_single(args: argparse.Namespace) -> Job:
    options = {key: getattr(args, key, None) for key in (
        "method", "p_k", "inverse_temperature", "m", "distribution", "art_lambda", "top1_mode", "tau",
        "alpha", "epochs", "batch_size", "lr", "val_size", "seed", "amp", "hidden", "width")}
    if options["p_k"] is None:
        if args.method != "softmax":
            raise ValueError(f"--method {args.method} needs --p-k, e.g. --p-k .5,0,0,0,.5")
        options["p_k"] = (1.0, 0.0, 0.0, 0.0, 0.0)
    if options["val_size"] is not None and options["val_size"] >= 1 and options["val_size"].is_integer():
        options["val_size"] = int(options["val_size"])
    spec = data_spec(args.command, args.data, getattr(args, "data_dir", None))
    config: TrainConfig = make_config(args.command, spec, options)
    out = _out(args, args.command)
    check_run_dir(out, config, args.resume)
    device, group = _device(args.device)
    splits = load_data(spec)
    _threads(args.threads, args.command, device)
    runtime = {"argv": ["softtopk", *args.argv], "device": device, "processes": group.world,
               "torch": torch.__version__}
    trainer = Trainer(config, splits, out, device=device, group=group, progress=args.progress,
                      runtime=runtime)

    def job() -> int:
        trainer.run(resume=args.resume)
        if group.is_main:
            table = write_report(out, [(out, config)])
            print(table + f"\nrun folder: {out}")
        return 0

    return job


def _setup_sweep(args: argparse.Namespace) -> Job:
    began = time.perf_counter()
    sweep = load_sweep(args.config, data=args.data, data_dir=args.data_dir, epochs=args.epochs)
    out = _out(args, args.command if args.command == "demo" else f"sweep-{Path(args.config).stem}")
    check_sweep_dir(out, sweep, args.resume)
    device, group = _device(args.device)
    splits = load_data(sweep.data)
    _threads(args.threads, sweep.protocol, device)
    for config in sweep.configs:
        check_fits(config, splits)

    def job() -> int:
        table = run_sweep(sweep, splits, out, resume=args.resume, device=device, group=group,
                          progress=args.progress)
        if group.is_main:
            print(table + f"\n{len(sweep.configs)} runs in {time.perf_counter() - began:.0f} s "
                  f"(data included); run folder: {out}")
        return 0

    return job


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line `argv` (default: sys.argv[1:]); returns the exit status."""
    args = build_parser().parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    try:
        job = args.setup(args)
    except (ValueError, TypeError) as error:  # bad input, including softtopk's DataError
        message = " ".join(str(error).split())
        print(f"softtopk {args.command}: error: {message}", file=sys.stderr)
        return 2
    try:
        return job()
    except KeyboardInterrupt:
        print(f"softtopk {args.command}: interrupted; continue with --resume", file=sys.stderr)
        return 130
