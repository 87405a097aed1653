"""Tables over seeds with paired differences to softmax, and the plots."""

from __future__ import annotations

import pytest

from softtopk_experiments.results.names import TABLE_METRICS, table_metrics
from softtopk_experiments.results.report import (
    legend,
    markdown_table,
    metric_difference,
    paired_difference,
    plot_bars,
    plot_curves,
    setting_groups,
    shown_settings,
    verdict,
)

PNG = b"\x89PNG\r\n\x1a\n"


def _runs(method, p_k, top1s, top5s, **settings):
    return [{"method": method, "p_k": p_k, **settings, "seed": s, "top1": t1, "top5": t5}
            for s, (t1, t5) in enumerate(zip(top1s, top5s, strict=True))]


def test_table_aggregates_seeds_and_shows_only_varying_settings():
    runs = _runs("Softmax", "[1]", (0.5, 0.7), (0.9, 0.8), lr=0.1)
    runs += [{"method": "NeuralSort", "p_k": "[0, 1]", "lr": 0.1, "seed": 0, "inverse_temperature": beta,
              "m": 16, "top1": 0.25, "top5": None} for beta in (0.5, 1.0)]
    table = markdown_table(runs).splitlines()
    assert table[0] == ("| Method | P_K | inverse_temperature | Top-1 (%) | Top-5 (%) | Δ top-1 | Δ top-5 | "
                        "Seeds |")
    assert table[2] == ("| Softmax | [1] | – | 60.00 ± 14.14 (50.00–70.00) | 85.00 ± 7.07 (80.00–90.00) "
                        "| – | – | 2 |")
    assert table[3] == "| NeuralSort | [0, 1] | 0.5 | 25.00 | – | -25.00 (1 seed) | – | 1 |"
    assert len(table) == 5
    # a setting that only differs between methods (as in the paper's grids) gets no column
    per_method = [{"method": m, "p_k": "[1]", "inverse_temperature": b, "seed": 0, "top1": 0.5, "top5": 0.9}
                  for m, b in (("Bitonic DSN", 1.0), ("NeuralSort", 0.5))]
    assert markdown_table(per_method).splitlines()[0] == "| Method | P_K | Top-1 (%) | Top-5 (%) |"
    with pytest.raises(ValueError, match="at least one run"):
        markdown_table([])


def test_the_table_shows_every_k_the_runs_p_k_weight():
    assert table_metrics([(1.0,), (0.5, 0, 0.5)]) == ("top1", "top3", "top5")
    assert table_metrics([(0.5, 0, 0, 0, 0.5)]) == TABLE_METRICS
    assert table_metrics([(0, 0, 0, 0, 0, 0, 0, 0, 0, 1)]) == ("top1", "top5", "top10")
    runs = _runs("Softmax", "[1]", (0.5, 0.6), (0.9, 0.8)) + _runs("Splitter", "[.5, 0, .5]", (0.5, 0.7),
                                                                    (0.9, 0.9))
    runs = [{**run, "top3": top3} for run, top3 in zip(runs, (0.7, 0.7, 0.75, 0.8), strict=True)]
    table = markdown_table(runs, ("top1", "top3", "top5")).splitlines()
    assert table[0] == ("| Method | P_K | Top-1 (%) | Top-3 (%) | Top-5 (%) | Δ top-1 | Δ top-3 | Δ top-5 | "
                        "Seeds |")
    assert table[3].split(" | ")[2:-1] == ["60.00 ± 14.14 (50.00–70.00)", "77.50 ± 3.54 (75.00–80.00)",
                                           "90.00 ± 0.00 (90.00–90.00)", "+5.00 ± 7.07 (noise)",
                                           "+7.50 ± 3.54 (noise)", "+5.00 ± 7.07 (noise)"]
    assert "top3" not in shown_settings(runs)  # a metric, not a setting


def test_paired_differences_say_which_are_within_noise():
    softmax = _runs("Softmax", "[1]", (0.60, 0.62, 0.61), (0.80, 0.81, 0.82), lr=0.1)
    clear = _runs("Bitonic DSN", "[.5]", (0.65, 0.67, 0.66), (0.80, 0.83, 0.81), lr=0.1)  # +5 every seed
    other_lr = _runs("SoftSort", "[.5]", (0.1, 0.1, 0.1), (0.1, 0.1, 0.1), lr=0.2)  # no softmax at lr 0.2
    rows = markdown_table(softmax + clear + other_lr).splitlines()
    bitonic = rows[3].split(" | ")
    assert bitonic[-3] == "+5.00 ± 0.00" and bitonic[-2] == "+0.33 ± 1.53 (noise)"
    assert rows[4].split(" | ")[-3:-1] == ["–", "–"]  # nothing to pair with
    assert "(noise)" in legend("\n".join(rows)) and "mean ± sd (min–max)" in legend("\n".join(rows))
    assert "Δ" not in legend(markdown_table(clear))


def test_the_verdict_line_names_what_beats_ties_and_falls_below_softmax_beyond_noise():
    softmax = _runs("Softmax", "[1]", (0.60, 0.62, 0.61), (0.80, 0.81, 0.82))
    better = _runs("Bitonic DSN", "[.5]", (0.65, 0.67, 0.66), (0.80, 0.83, 0.81))  # top-1 +5, top-5 noise
    worse = _runs("SoftSort", "[.5]", (0.50, 0.53, 0.51), (0.70, 0.70, 0.71))  # both lower
    tied = _runs("LapSum", "[.5]", (0.61, 0.61, 0.62), (0.81, 0.80, 0.82))
    stopped = [{**run, "stopped": reason} for run, reason in zip(
        softmax + better + worse + tied, ["converged"] * 11 + ["cap"], strict=True)]
    assert verdict(stopped) == (
        "Beat softmax beyond noise on top-1: Bitonic DSN [.5]; beat softmax beyond noise on top-5: none; "
        "below it on top-1: SoftSort [.5]; below it on top-5: SoftSort [.5]; within noise of it on both: "
        "LapSum [.5] (11 of 12 runs converged, 1 stopped at the epoch cap).")
    assert verdict(softmax + tied).endswith("within noise of it on both: LapSum [.5].")
    assert verdict(softmax) is None  # nothing to compare
    assert verdict(softmax[:1] + better[:1]) is None  # one seed: no estimate of the noise


def test_paired_difference_pairs_by_seed():
    diffs, significant = paired_difference({0: 0.5, 1: 0.6, 2: 0.7}, {1: 0.5, 2: 0.6, 3: 0.0})
    assert diffs == pytest.approx([0.1, 0.1]) and significant  # seeds 1 and 2, identical differences
    assert paired_difference({0: 0.5}, {0: 0.4})[1] is None  # one seed: no estimate
    assert paired_difference({0: 0.5, 1: 0.5}, {0: 0.5, 1: 0.5}) == ([0.0, 0.0], False)
    # t = mean / (sd / sqrt n) = 0.02 / (0.02 / sqrt 3) = 1.73 < 4.30, the 95% quantile at 2 df
    _, significant = paired_difference({0: 0.02, 1: 0.04, 2: 0.0}, {0: 0.0, 1: 0.0, 2: 0.0})
    assert significant is False


def test_plots_are_pngs_with_error_bars_over_seeds(tmp_path):
    rows = [{"epoch": e, "step": 10 * e, "val_top1": 0.1 * e + s, "val_top5": 0.2 * e} for e in (1, 2)
            for s in (0.0,)]
    seeds = [[{**r, "val_top1": r["val_top1"] + 0.01 * s} for r in rows] for s in range(3)]
    plot_curves({"Softmax [1]": seeds, "Bitonic [.5]": seeds[:1]}, tmp_path / "curves.png")
    plot_bars({"Softmax [1]": [{"top1": 0.5, "top5": 0.8}, {"top1": 0.6, "top5": 0.9}],
               "Bitonic [.5]": [{"top1": 0.4, "top5": 0.7}]}, tmp_path / "bars.png")
    for name in ("curves.png", "bars.png"):
        assert (tmp_path / name).read_bytes()[:8] == PNG


def test_each_setting_is_paired_with_the_softmax_of_its_other_settings():
    plain = _runs("Softmax", "[1]", (0.60, 0.62), (0.8, 0.8), label_smoothing=0.0)
    smoothed = _runs("Softmax", "[1]", (0.70, 0.72), (0.9, 0.9), label_smoothing=0.1)
    bitonic = _runs("Bitonic DSN", "[.5]", (0.71, 0.73), (0.9, 0.9), label_smoothing=0.1)
    groups = setting_groups(plain + smoothed + bitonic)
    assert [(len(group), baseline) for group, baseline in groups[:2]] == [(2, None), (2, None)]
    assert groups[2] == (bitonic, smoothed)
    diffs, _ = metric_difference(bitonic, smoothed, "top1")
    assert diffs == pytest.approx([0.01, 0.01])
