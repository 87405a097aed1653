"""The `softtopk` command line: `finetune`, `train`, `demo` and `sweep`.

Every command first checks its input, its run folder and loads its data, writing nothing; a problem
there ends it with a one-line error on stderr and exit status 2. Then it takes the run folder's
lock and trains, writing the folder. The layers below name settings by their names (`p_k`, as the
library and the sweep files do); here, and only here, they become flags (`--p-k`): see `FLAGS`.
"""

from __future__ import annotations

import argparse
import re
import sys
import textwrap
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import torch

import softtopk
from softtopk_experiments.data.records import data_spec, for_protocol, load_data
from softtopk_experiments.data.splits import Splits
from softtopk_experiments.results.run_folder import LockError, RunLock, check_out, check_same_run
from softtopk_experiments.settings.defaults_table import describe
from softtopk_experiments.settings.losses import METHODS
from softtopk_experiments.settings.options import (
    BY_NAME,
    GROUPS,
    OPTIONS,
    PROTOCOLS,
    Option,
    check_value,
    options_for,
    parse_text,
)
from softtopk_experiments.settings.paper_defaults import PAPER
from softtopk_experiments.settings.run_config import make_config
from softtopk_experiments.sweep import (
    SweepError,
    cell_names,
    check_resumable,
    checkpoint_epoch,
    load_sweep,
    run_sweep,
    sweep_configs,
    write_report,
)
from softtopk_experiments.training.class_sharding import check_world
from softtopk_experiments.training.distributed import Group, join, leave
from softtopk_experiments.training.progress import Progress
from softtopk_experiments.training.trainer import Trainer

Job = Callable[[], int]
DISTRIBUTION = "softtopk-experiments"
# The flags of settings whose flag is not `--name-with-dashes`: not `--m`, which torchrun would take
# for an abbreviation of one of its own options; `--seeds` reads better for several.
FLAGS = {"m": ("--top-m",), "seed": ("--seed", "--seeds")}
_NAMED = (*BY_NAME, "out", "resume", "data", "data_dir")  # the names in messages of the layers below
_LEADING_NAME = re.compile(r"^(\w+)(?:='([^']*)')?(?= )")  # how the library's messages start


def flags(name: str) -> tuple[str, ...]:
    """The command-line flags of setting `name`, the first the one that messages use."""
    return FLAGS.get(name, ("--" + name.replace("_", "-"),))


def in_flags(message: str) -> str:
    """A message of the layers below in the command line's words: each setting they name in
    backquotes (`p_k`), and the argument that starts a message of the library ("m must be ...",
    "method='softmax' is ..."), as its flag ("--top-m must be ...", "--method softmax is ...")."""
    message = re.sub(r"`(\w+)`", lambda m: flags(m[1])[0] if m[1] in _NAMED else m[0], message)
    leading = _LEADING_NAME.match(message)
    if leading and leading[1] in BY_NAME:
        value = f" {leading[2]}" if leading[2] is not None else ""
        message = flags(leading[1])[0] + value + message[leading.end():]
    return message


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line: `softtopk CMD: error: ... (see --help)`."""

    def error(self, message: str) -> None:  # type: ignore[override]
        print(f"{self.prog}: error: {message} (see {self.prog} --help)", file=sys.stderr)
        raise SystemExit(2)


def _wrap(text: str) -> str:
    return textwrap.fill(text, 88)


def _positive_int(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number >= 1, got {text!r}")
    return int(text)


def _table_driven(protocol: str) -> set[str]:
    """Options whose default comes from the paper's table or a data set (shown in the epilog)."""
    names = {"lr", "patience"}
    for setting in PAPER.values():
        if setting.protocol == protocol:
            names |= set(setting.run) | {key for values in setting.methods.values() for key in values}
    for dataset in for_protocol(protocol):
        names |= set(dataset.overrides)
    return names


def _argument_type(option: Option) -> Callable[[str], object]:
    def parse(text: str) -> object:
        try:
            value = parse_text(option, text)
            if option.name == "seed":
                return tuple(check_value("seed", seed) for seed in value)
            return check_value(option.name, value)
        except (ValueError, TypeError) as error:
            raise argparse.ArgumentTypeError(str(error).removeprefix(f"`{option.name}` ")) from None

    parse.__name__ = option.name  # argparse names the type in some messages
    return parse


def _add_option(group: argparse._ArgumentGroup, option: Option, default_text: str) -> None:
    help_text = f"{option.help} (default: {default_text})"
    choices = METHODS if option.name == "method" else option.choices
    group.add_argument(*flags(option.name), dest=option.name, type=_argument_type(option),
                       choices=choices, metavar=option.metavar or (None if choices else option.name.upper()),
                       default=argparse.SUPPRESS, help=help_text.replace("%", "%%"))


def _generic(option: Option) -> str:
    if option.default_help:
        return option.default_help
    if option.default is None:
        return "none"
    return f"{option.default:g}" if isinstance(option.default, float) else str(option.default)


def _add_run_options(p: argparse.ArgumentParser, protocol: str) -> None:
    table = _table_driven(protocol)
    groups = {name: p.add_argument_group(title) for name, title in GROUPS.items()}
    for option in options_for(protocol):
        _add_option(groups[option.group], option, "the paper's, see below" if option.name in table
                    else _generic(option))
    data = groups["training"]
    names = [d.name for d in for_protocol(protocol) if d.given_as != "path"]
    by_path = any(d.given_as == "path" for d in for_protocol(protocol))
    paths = ", or PATH, an embedding file (.pt/.npz)" if by_path else ""
    data.add_argument("--data", default=names[0],
                      help=f"the data set: {', '.join(names)}{paths} (default: {names[0]})")
    if any(d.given_as == "folder" for d in for_protocol(protocol)):
        data.add_argument("--data-dir", help="the folder of a data set's files, e.g. for --data cifar100 "
                          "(default: none)")
    _add_output_options(p)


def _add_overrides(p: argparse.ArgumentParser, protocols: tuple[str, ...] = PROTOCOLS) -> None:
    """The training and target options of `protocols`, overriding a sweep file's."""
    group = p.add_argument_group("overrides of the sweep file's settings (for every run)")
    seen = set()
    for protocol in protocols:
        for option in options_for(protocol):
            if option.group != "loss" and option.name not in seen:
                seen.add(option.name)
                _add_option(group, option, "the file's")
    _add_output_options(p)


def _add_output_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("output and hardware")
    g.add_argument("--out", type=Path, help="run folder (default: runs/COMMAND-DATE-TIME); new, empty or "
                   "holding a run of the same command")
    g.add_argument("--resume", action="store_true", help="continue the run in --out from its last finished "
                   "epoch (same settings; --epochs may grow); a killed run ends with the same numbers "
                   "(default: off, a new run)")
    g.add_argument("--device", default="auto", help="auto (cuda when there is one), cpu, cuda or cuda:N "
                   "(default: auto)")
    g.add_argument("--threads", type=_positive_int, help="CPU threads of torch while training (default: 1 "
                   "for finetune on a CPU, whose small products gain nothing from more; else torch's choice)")
    g.add_argument("--no-progress", dest="progress", action="store_false", help="nothing per epoch on "
                   "stderr (default: a bar on a terminal, else one line per epoch)")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="softtopk", description="Differentiable top-k classification learning: the "
                     "experiments of Petersen et al., ICML 2022.")
    parser.add_argument("--version", action="version", version=f"softtopk {softtopk.__version__}")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    descriptions = {
        "finetune": ("ImageNet protocol: a linear probe (or small MLP) on frozen embeddings",
                     "The paper's ImageNet protocol: Adam on a linear layer over frozen embeddings, with "
                     "validation and test top-1/5/10/20 evaluated every --eval-every iterations and at the "
                     "end of each epoch. The result is the test accuracy at the best validation evaluation "
                     "(--select). With --seeds 0,1,2 the runs go to --out/cells/ and are reported as mean "
                     "+- sd. Runs on several processes with `torchrun --nproc_per_node N -m softtopk "
                     "finetune ...`: each trains on a slice of every batch, or with --head sharded on the "
                     "whole batch with its block of the head's classes."),
        "train": ("CIFAR-100 protocol: a ResNet-18 from scratch",
                  "The paper's CIFAR-100 protocol: a CIFAR ResNet-18 (3x3 stem, no max-pool) from scratch, "
                  "Adam, random 4-pixel crops (and horizontal flips on CIFAR-100), evaluated after every "
                  "epoch; result picked as for finetune. Runs on several processes with `torchrun "
                  "--nproc_per_node N -m softtopk train ...`."),
    }
    for protocol in PROTOCOLS:
        summary, description = descriptions[protocol]
        p = commands.add_parser(protocol, formatter_class=argparse.RawDescriptionHelpFormatter, help=summary,
                                description=_wrap(description), epilog=describe(protocol))
        _add_run_options(p, protocol)
        p.set_defaults(setup=_setup_run)
    demo = commands.add_parser(
        "demo", help="softmax vs. top-k losses on the shipped GCIDE MiniLM embeddings, 3 seeds, each run "
        "to convergence (minutes on a CPU)",
        description=_wrap("Fine-tunes a linear probe on the shipped gcide_minilm embeddings (frozen sentence "
                          "embeddings: the paper's setting in small) with softmax cross-entropy and the "
                          "bitonic and splitter selection networks and SoftSort with P_K = [.5,0,0,0,.5], "
                          "three seeds each, with the paper's loss settings, each run until it has "
                          "converged (--patience 5, at most 100 epochs), and prints the table with the "
                          "paired differences to softmax and one line on what it shows. It runs the "
                          "shipped sweep 'demo' (configs/demo.toml)."))
    _add_overrides(demo, ("finetune",))
    demo.set_defaults(setup=_setup_sweep, config="demo", data=None, data_dir=None)
    sweep = commands.add_parser(
        "sweep", help="a grid of runs from a TOML file, reported as the paper's tables",
        description=_wrap("Runs every cell of a grid (methods x P_K x settings x seeds) from a TOML file and "
                          "writes the table as results.md and results.csv. CONFIG is a path or a shipped "
                          "config: demo, wordnet, imagenet1k (needs --data PATH), cifar100 (needs --data-dir "
                          "PATH)."))
    sweep.add_argument("config", metavar="CONFIG")
    sweep.add_argument("--data", help="override the file's data (a data set name or a path)")
    sweep.add_argument("--data-dir", help="override the file's data_dir")
    _add_overrides(sweep)
    sweep.set_defaults(setup=_setup_sweep)
    return parser


def _check_device(name: str) -> str:
    """The device `name` names (auto: cuda when there is one), checked."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if not (name == "cpu" or name == "cuda" or (name.startswith("cuda:") and name[5:].isdigit())):
        raise ValueError(f"--device must be auto, cpu, cuda or cuda:N; got {name!r}")
    if name != "cpu" and not torch.cuda.is_available():
        raise ValueError(f"--device {name}: no CUDA device is available")
    return name


def _join(name: str) -> tuple[str, Group]:
    """This process's device and its place in torchrun's process group (if any)."""
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
    if args.out is None and args.resume:
        raise ValueError("--resume needs --out, the folder of the run to continue")
    return args.out or Path("runs") / f"{stem}-{time.strftime('%Y%m%d-%H%M%S')}"


def _given(args: argparse.Namespace, names) -> dict:
    return {name: getattr(args, name) for name in names if hasattr(args, name)}


def _setup_run(args: argparse.Namespace) -> Job:
    protocol = args.command
    given = _given(args, (o.name for o in options_for(protocol)))  # each checked as it was parsed
    seeds = given.pop("seed", (0,))
    spec = data_spec(protocol, args.data, getattr(args, "data_dir", None))
    out = _out(args, protocol)
    kind = "run" if len(seeds) == 1 else "sweep"

    def configs(splits: Splits):
        made = [make_config(protocol, spec, splits, {**given, "seed": seed}) for seed in seeds]
        return made, cell_names(made)

    return _plan(args, protocol, spec, out, kind, configs)


def _setup_sweep(args: argparse.Namespace) -> Job:
    overrides = _given(args, (o.name for o in BY_NAME.values() if o.group != "loss"))
    sweep = load_sweep(args.config, data=args.data, data_dir=args.data_dir, overrides=overrides)
    stem = args.command if args.command == "demo" else f"sweep-{Path(args.config).stem}"
    return _plan(args, sweep.protocol, sweep.data, _out(args, stem), "sweep",
                 lambda splits: sweep_configs(sweep, splits))


def _plan(args: argparse.Namespace, protocol: str, spec: dict, out: Path, kind: str,
          make_configs: Callable[[Splits], tuple[list, list[str]]]) -> Job:
    """Check the run folder, load the data, build and check the configs; returns the job that trains."""
    began = time.perf_counter()
    exists = check_out(out, kind, args.resume)
    RunLock(out).check()
    device = _check_device(args.device)
    splits = load_data(spec)
    configs, names = make_configs(splits)
    if exists and kind == "run":
        check_same_run(out, configs[0].identity(), configs[0].epochs, checkpoint_epoch(out))
    elif exists:
        check_resumable(out, configs, names)
    device, group = _join(device)
    for config in configs:
        check_world(config.head, group.world)
    _threads(args.threads, protocol, device)
    runtime = {"argv": ["softtopk", *args.argv], "device": device, "processes": group.world,
               "torch": torch.__version__, "softtopk": softtopk.__version__}
    progress = Progress(args.progress)

    def job() -> int:
        lock, held, failure = RunLock(out), False, None
        if group.is_main:
            try:
                lock.__enter__()
                held = True
            except LockError as error:  # taken by another process since the check
                failure = error
        if not group.all_agree(held or not group.is_main):
            if failure is not None:
                raise failure
            return 2
        try:
            if kind == "run":
                Trainer(configs[0], splits, out, device=device, group=group, progress=progress,
                        runtime=runtime).run(resume=exists)
                table, warnings = write_report(out, [(out, configs[0])]) if group.is_main else ("", [])
                footer = f"run folder: {out}"
            else:
                table, warnings = run_sweep(configs, names, splits, out, resume=exists, device=device,
                                            group=group, progress=progress, runtime=runtime)
                footer = (f"{len(configs)} runs in {time.perf_counter() - began:.0f} s (data included); run "
                          f"folder: {out}")
            if group.is_main:
                print(table + "\n" + footer)
                for warning in warnings:
                    print(f"softtopk {args.command}: warning: {in_flags(warning)}", file=sys.stderr)
            return 0
        finally:
            if held:
                lock.__exit__()

    return job


def _elsewhere(command: str, unknown: Sequence[str]) -> str:
    """'; --mixup is an option of train, not of finetune' for the flags among `unknown` that another
    command takes."""
    takers = {flag: o.protocols for o in OPTIONS for flag in flags(o.name) if command not in o.protocols}
    notes = [f"{flag} is an option of {' and '.join(takers[flag])}, not of {command}"
             for flag in dict.fromkeys(text.split("=")[0] for text in unknown) if flag in takers]
    return "".join(f"; {note}" for note in notes)


def _missing_dependencies() -> list[str]:
    """The dependencies of softtopk-experiments that are not installed (per its metadata)."""
    from importlib import metadata

    try:
        requirements = metadata.requires(DISTRIBUTION) or []
    except metadata.PackageNotFoundError:  # run from a source tree: nothing to check against
        return []
    missing = []
    for requirement in requirements:
        name, _, marker = requirement.partition(";")
        if "extra ==" in marker:
            continue
        name = re.split(r"[<>=!~ (\[]", name.strip())[0]
        try:
            metadata.version(name)
        except metadata.PackageNotFoundError:
            missing.append(name)
    return missing


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line `argv` (default: sys.argv[1:]); returns the exit status."""
    missing = _missing_dependencies()
    if missing:
        print(f"softtopk: error: the command line needs {', '.join(missing)} (dependencies of "
              f"{DISTRIBUTION}); install them with: pip install {' '.join(missing)}", file=sys.stderr)
        return 2
    parser = build_parser()
    args, unknown = parser.parse_known_args(argv)
    if unknown:
        parser.error(f"unrecognized arguments: {' '.join(unknown)}{_elsewhere(args.command, unknown)}")
    args.argv = list(sys.argv[1:] if argv is None else argv)
    try:
        job = args.setup(args)
    except (ValueError, TypeError) as error:  # bad input, including the data's DataError
        message = " ".join(str(error).split())
        message = message if isinstance(error, SweepError) else in_flags(message)
        print(f"softtopk {args.command}: error: {message}", file=sys.stderr)
        return 2
    status = None  # stays None when the command fails: then the other processes are not waited for
    try:
        status = job()
    except LockError as error:  # the run folder's lock was taken meanwhile
        print(f"softtopk {args.command}: error: {in_flags(' '.join(str(error).split()))}", file=sys.stderr)
        status = 2
    except KeyboardInterrupt:
        print(f"softtopk {args.command}: interrupted; continue with --resume", file=sys.stderr)
        return 130
    finally:
        leave(finished=status is not None)
    return status
