"""The defaults table as text: the epilog of `softtopk finetune/train --help` and the README's table,
both rendered from `defaults.PAPER`, the data set records and the options' generic defaults."""

from __future__ import annotations

import textwrap

from softtopk_experiments.data import records
from softtopk_experiments.settings.losses import METHODS
from softtopk_experiments.settings.options import BY_NAME, applies
from softtopk_experiments.settings.paper_defaults import CONVERGENCE, LR_STEP, PAPER, PAPER_SIZE

METHOD_COLUMNS = ("inverse_temperature", "distribution", "art_lambda", "tau")
RUN_KEYS = ("epochs", "batch_size", "lr", "m", "top1_mode", "eval_every", "val_size", "select")


def _value(key: str, value: object) -> str:
    if key == "lr" and value == 10**-4.5:
        return "10^-4.5"
    if key == "val_size" and value is None:
        return "10% of train, at most 50,000 (100,000 above 5,000 classes)"
    if key == "m" and value is None:
        return "none (every class)"
    if key == "eval_every" and value == 0:
        return "0 (end of each epoch)"
    return f"{value:g}" if isinstance(value, float) else str(value)


def run_defaults(setting: str) -> str:
    """'epochs 20, batch_size 500, ...' of a paper setting."""
    run = PAPER[setting].run
    return ", ".join(f"{key} {_value(key, run[key])}" for key in RUN_KEYS if key in run)


def method_rows(protocol: str) -> list[list[str]]:
    """Per method (but softmax), its defaults in `METHOD_COLUMNS` ('–' where one does not apply);
    a method without a paper setting shows the generic defaults, marked."""
    settings = [s for s in PAPER.values() if s.protocol == protocol]
    rows = []
    for method in METHODS[1:]:
        paper = settings[0].methods.get(method)
        cells = [method if paper is not None else f"{method} (generic)"]
        for key in METHOD_COLUMNS:
            option = BY_NAME[key]
            if not applies(option, method):
                cells.append("–")
                continue
            cells.append(_value(key, (paper or {}).get(key, option.default)))
        rows.append(cells)
    return rows


def _data_lines(protocol: str) -> list[str]:
    lines = []
    for dataset in records.for_protocol(protocol):
        name = f"{dataset.name} (--data PATH)" if dataset.given_as == "path" else dataset.name
        if dataset.paper is None:
            text = (f"{PAPER_SIZE:,} training samples or more: the paper's ImageNet settings (ImageNet-21K-P "
                    f"above 5,000 classes); fewer: ImageNet-1K settings with the lr rule")
        else:
            text = f"{PAPER[dataset.paper].title} settings"
            if protocol == "finetune" and not dataset.paper_data:
                text += " with the lr rule"
            if dataset.overrides:
                text += "; " + ", ".join(f"{k} {_value(k, v)}" for k, v in dataset.overrides.items())
            if dataset.note:
                text += f" ({dataset.note})"
        lines.append(f"{name}: {dataset.summary}. {text}")
    return lines


LR_RULE = (f"lr rule (finetune data that is not the paper's): lr = {LR_STEP:g} / mean |x|_1 of the training "
           "features, so that Adam moves the logits by about the same step on features of any scale. Checked "
           "on wordnet, languages and gcide (softmax and splitter_selection, seed 0): after 10 epochs 3x the "
           "rule's lr leads by 0.4-2.3 points of top-1 and 0.3x trails by 0.2-5.4; run to convergence "
           "(gcide) softmax ends level at 1x and 3x (59.4 / 59.3), splitter_selection 1.6 points higher at "
           "3x (57.3 / 59.0): the rule is softmax's lr, a relaxation may gain from up to 3x (--lr)")
CONVERGENCE_RULE = (f"convergence rule (data that is not the paper's, whose own data keep the paper's "
                    f"fixed schedule): patience {CONVERGENCE['patience']}, a run stops once its last "
                    f"{CONVERGENCE['patience']} epochs brought no better validation top-1 or top-5 than the "
                    f"{CONVERGENCE['patience']} before them; epochs {CONVERGENCE['epochs']} is the cap")
GENERIC = ("A method the paper has no setting for takes the generic defaults: inverse_temperature 1, and for "
           "a sorting network distribution logistic_phi with art_lambda 0.5 (the paper's DSN sigmoid; the "
           "library's own defaults, cauchy and 0.25, are not the paper's).")


def describe(protocol: str, markdown: bool = False) -> str:
    """The defaults of `protocol` ('finetune' or 'train') as wrapped text or as Markdown."""
    settings = [name for name, s in PAPER.items() if s.protocol == protocol]
    rows = method_rows(protocol)
    header = ["method", *METHOD_COLUMNS]
    if markdown:
        out = [f"- **{PAPER[name].title}**: {run_defaults(name)}" for name in settings]
        out += ["", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        out += ["| " + " | ".join(row) + " |" for row in rows]
        out += ["", *[f"- {line}" for line in _data_lines(protocol)]]
        out += [f"- {LR_RULE}."] if protocol == "finetune" else []
        out += [f"- {CONVERGENCE_RULE}."]
        out += ["", GENERIC]
        return "\n".join(out) + "\n"
    wrap = lambda text: textwrap.fill(text, 88, initial_indent="  ", subsequent_indent="    ")  # noqa: E731
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    out = ["defaults: the paper's settings (an option you give overrides them)"]
    out += [wrap(f"{PAPER[name].title}: {run_defaults(name)}") for name in settings]
    out += ["  " + "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
            for row in [header, *rows]]
    out += ["data sets:", *[wrap(line) for line in _data_lines(protocol)]]
    if protocol == "finetune":
        out.append(wrap(LR_RULE))
    out.append(wrap(CONVERGENCE_RULE))
    out.append(wrap(GENERIC))
    return "\n".join(out)
