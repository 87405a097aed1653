"""Every setting of a training run, defined once.

An `Option` is a run setting: its key in sweep files and in `config.json` (`name`), its type, its
help, and the protocols and loss methods it applies to. The command line (which names each option by
its flag), the sweep files, the run config and the defaults table are all built from `OPTIONS`; the
defaults themselves come from `paper_defaults.py`. Messages name an option by its name in backquotes
(`p_k`), which the command line shows as its flag. The values that go to the loss are checked by the
library when the run's loss is built (`losses.make_loss`), in its words; the others here.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

from softtopk.relax import DISTRIBUTIONS, NETWORK_METHODS

PROTOCOLS = ("finetune", "train")
SELECTIONS = ("per-metric", "score")
HEADS = ("auto", "logits", "fused", "sharded")
# which methods an option applies to (see `applies`): every method; softmax and the library's
# relaxations (the losses that take label smoothing and probability targets); the relaxations; the
# sorting networks among them; the smooth top-k SVM
SCOPE_TEXTS = {"all": "every method", "ce": "softmax and the relaxations", "relaxation": "the relaxations",
               "network": f"the sorting networks ({', '.join(NETWORK_METHODS)})",
               "smooth_topk": "smooth_topk"}


@dataclass(frozen=True)
class Option:
    """One run setting. `kind` is the type of its value (int, float, str, or tuple for P_K);
    `nullable` options also take None ('none' on the command line). `check(value)` returns what is
    wrong with a value of the right type (e.g. 'must be >= 1'), or None. `default` is the generic
    default, used where neither the data set nor the paper's table sets one (`default_help`
    describes it where the value alone would not). `library`: the value is an argument of the
    library's loss, which checks it when the run's loss is built, and not here."""

    name: str
    kind: type
    help: str
    group: str = "training"
    scope: str = "all"
    protocols: tuple[str, ...] = PROTOCOLS
    default: object = None
    nullable: bool = False
    choices: tuple[str, ...] | None = None
    check: Callable[[object], str | None] | None = None
    metavar: str | None = None
    default_help: str = ""
    library: bool = False

    def problem(self, value: object) -> str | None:
        """What is wrong with `value` for this option (without the option's name), or None."""
        if self.library:
            return None
        if value is None:
            return None if self.nullable else "must be given (None is not allowed)"
        if self.kind is tuple:
            if not isinstance(value, (list, tuple)):
                return f"must be a list, got {value!r}"
        elif self.kind is float:
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                return f"must be a number, got {value!r}"
            if not math.isfinite(value):
                return f"must be finite, got {value!r}"
        elif isinstance(value, bool) or not isinstance(value, self.kind):
            return f"must be of type {self.kind.__name__}, got {value!r}"
        if self.choices is not None and value not in self.choices:
            return f"must be one of {', '.join(self.choices)}; got {value!r}"
        return self.check(value) if self.check else None


def _at_least(low: int) -> Callable[[object], str | None]:
    return lambda value: None if value >= low else f"must be >= {low}, got {value}"


def _positive(value: object) -> str | None:
    return None if value > 0 else f"must be > 0, got {value}"


def _non_negative(value: object) -> str | None:
    return None if value >= 0 else f"must be >= 0, got {value}"


def _val_size(value: object) -> str | None:
    if 0 < value < 1 or (value >= 1 and float(value).is_integer()):
        return None
    return f"must be a fraction in (0, 1) or a whole count >= 1, got {value:g}"


OPTIONS: tuple[Option, ...] = (
    # the loss
    Option("method", str, "the loss: softmax cross-entropy, a top-k relaxation of softtopk, or the smooth "
           "top-k SVM", group="loss", default="softmax"),
    Option("p_k", tuple, "P_K, the probabilities of k = 1..K, e.g. .5,0,0,0,.5 (smooth_topk: one-hot, the k "
           "it optimises)", group="loss",
           metavar="P1,...,PK", default_help="1,0,0,0,0 for softmax, none for the others", library=True),
    Option("inverse_temperature", float, "steepness beta of the relaxation (NeuralSort/SoftSort: tau = "
           "1/beta)", group="loss", scope="relaxation", default=1.0, library=True),
    Option("m", int, "top-m preselection: rank only the true class and the m-1 highest others; none "
           "ranks every class", group="loss", scope="relaxation", nullable=True, metavar="M", library=True),
    Option("distribution", str, f"comparator sigmoid of the sorting networks: {', '.join(DISTRIBUTIONS)} "
           "(the paper's setting, also the library's default)", group="loss", scope="network",
           default="logistic_phi", library=True),
    Option("art_lambda", float, "lambda of the logistic_phi sigmoid (the paper's setting, also the "
           "library's default)", group="loss", scope="network", default=0.5, library=True),
    Option("top1_mode", str, "how the k = 1 term is computed: sm (softmax probability), smce (a "
           "cross-entropy term), sort (the relaxation)", group="loss", scope="relaxation",
           default="sm", library=True),
    Option("tau", float, "temperature of the smooth top-k SVM", group="loss", scope="smooth_topk",
           default=1.0, library=True),
    Option("alpha", float, "margin of the smooth top-k SVM", group="loss", scope="smooth_topk", default=1.0,
           library=True),
    # the targets
    Option("label_smoothing", float, "label smoothing epsilon, as in torch.nn.CrossEntropyLoss",
           group="targets", scope="ce", default=0.0, metavar="EPS", library=True),
    Option("mixup", float, "mixup with mixing weights drawn from Beta(alpha, alpha) per batch; 0 is off",
           group="targets", scope="ce", protocols=("train",), default=0.0, check=_non_negative,
           metavar="ALPHA"),
    Option("cutmix", float, "CutMix with the pasted area drawn from Beta(alpha, alpha) per batch; 0 is "
           "off (with --mixup too, each batch takes one of the two at random)", group="targets",
           scope="ce", protocols=("train",), default=0.0, check=_non_negative, metavar="ALPHA"),
    # training
    Option("epochs", int, "passes over the training part; with --patience, the most of them",
           check=_at_least(1)),
    Option("patience", int, "stop once the last E epochs brought no better validation metric the run "
           "selects by (top-1 and top-5; with --select score the P_K-weighted score) than the E epochs "
           "before them; 0 or none: all --epochs (a fixed schedule)", nullable=True, check=_at_least(0),
           metavar="E"),
    Option("batch_size", int, "global batch, split over torchrun's processes (with --head sharded each "
           "trains on all of it)", check=_at_least(1)),
    Option("lr", float, "Adam's learning rate", check=_positive),
    Option("val_size", float, "validation part held out of train: a fraction in (0, 1) or a count >= 1",
           nullable=True, check=_val_size),
    Option("seed", int, "seed of the initialisation, the validation split and the batch order; several "
           "(0,1,2) run one after another and are reported as mean +- sd", default=0,
           check=_at_least(0), metavar="S[,S...]"),
    Option("eval_every", int, "evaluate validation and test after every N iterations of an epoch and at "
           "its end; 0: at the end of each epoch only", check=_at_least(0), metavar="N"),
    Option("select", str, "how the result is picked: per-metric (top-k test accuracy at the evaluation "
           "with the best validation top-k, for each k; the paper's) or score (one evaluation, the best "
           "expected top-k accuracy under P_K)", choices=SELECTIONS, default="per-metric"),
    Option("amp", str, "bfloat16 autocast", choices=("none", "bf16"), default="none"),
    Option("hidden", int, "one hidden ReLU layer of this size; none: a linear probe", protocols=("finetune",),
           nullable=True, check=_at_least(1)),
    Option("head", str, "how the linear head's loss is computed: logits (the batch's [N, C] logits, then "
           "the loss), fused (softtopk.LinearTopKCrossEntropyLoss: the head and the loss together in row "
           "chunks, never holding a batch's logits; softmax and the relaxations), sharded (the head's "
           "classes split over torchrun's processes, each holding its block of W, b and their Adam moments "
           "and training on the whole batch; run as torchrun --nproc_per_node N -m softtopk finetune --head "
           "sharded ...; softmax and the relaxations with --top-m), auto: fused from 10,000 classes on (as "
           "nextword's 20,000), where the logits dominate the step's memory",
           protocols=("finetune",), choices=HEADS, default="auto"),
    Option("width", int, "channels of the ResNet's first stage", protocols=("train",), default=64,
           check=_at_least(1)),
)
BY_NAME = {option.name: option for option in OPTIONS}
GROUPS = {"loss": "loss", "targets": "targets and regularisation", "training": "training"}


def options_for(protocol: str) -> tuple[Option, ...]:
    return tuple(option for option in OPTIONS if protocol in option.protocols)


def check_value(name: str, value: object) -> object:
    """`value` checked for option `name` (ints accepted for floats, lists stored as tuples, a whole
    val_size as an int, the string 'none' as None for nullable options, since TOML has no null);
    raises TypeError or ValueError naming the option."""
    option = BY_NAME[name]
    if option.nullable and isinstance(value, str) and value.lower() == "none":
        value = None
    problem = option.problem(value)
    if problem:
        error = TypeError if problem.startswith(("must be of type", "must be a number", "must be a list")) \
            else ValueError
        raise error(f"`{name}` {problem}")
    if option.kind is tuple and isinstance(value, (list, tuple)):
        return tuple(float(v) if _is_number(v) else v for v in value)
    if option.kind is float and _is_number(value):
        return int(value) if name == "val_size" and value >= 1 else float(value)
    return value


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def parse_text(option: Option, text: str) -> object:
    """The value of a command-line argument: 'none' for nullable options, comma lists for P_K and
    seeds (a tuple of ints), else the option's type. Raises ValueError with a short reason."""
    text = text.strip()
    if option.nullable and text.lower() == "none":
        return None
    if option.kind is tuple:
        try:
            return tuple(float(part) for part in text.split(","))
        except ValueError:
            raise ValueError("must be comma-separated probabilities such as .5,0,0,0,.5") from None
    if option.name == "seed":
        parts = text.split(",")
        if not all(part.strip().isdigit() for part in parts):
            raise ValueError("must be whole numbers >= 0, such as 0 or 0,1,2")
        seeds = tuple(int(part) for part in parts)
        if len(set(seeds)) != len(seeds):
            raise ValueError("must not repeat a seed")
        return seeds
    try:
        return option.kind(text)
    except ValueError:
        raise ValueError(f"must be {'a whole number' if option.kind is int else 'a number'}") from None


def applies(option: Option, method: str) -> bool:
    """Whether `option` is a setting of a run with loss `method`."""
    relaxation = method not in ("softmax", "smooth_topk")
    return {"all": True, "ce": method != "smooth_topk", "relaxation": relaxation,
            "network": method in NETWORK_METHODS, "smooth_topk": method == "smooth_topk"}[option.scope]
