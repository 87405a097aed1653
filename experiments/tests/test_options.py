"""The option records: parsing, checks, which methods they apply to."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

import softtopk
from softtopk.relax import NETWORK_METHODS
from softtopk_experiments.settings.losses import METHODS
from softtopk_experiments.settings.options import (
    BY_NAME,
    GROUPS,
    OPTIONS,
    SCOPE_TEXTS,
    applies,
    check_value,
    parse_text,
)


def test_every_option_has_a_help_and_a_valid_scope():
    for option in OPTIONS:
        assert option.help and option.group in GROUPS and option.scope in SCOPE_TEXTS
        if option.default is not None:  # the generic default passes the option's own check
            assert check_value(option.name, option.default) == option.default


@pytest.mark.parametrize(("name", "text", "value"), [
    ("p_k", ".5,0,0,0,.5", (0.5, 0.0, 0.0, 0.0, 0.5)), ("m", "none", None), ("m", "16", 16),
    ("seed", "0,1,2", (0, 1, 2)), ("seed", "3", (3,)), ("lr", "1e-3", 1e-3), ("hidden", "None", None),
    ("val_size", "0.1", 0.1)])
def test_parse_text(name, text, value):
    assert parse_text(BY_NAME[name], text) == value


@pytest.mark.parametrize(("name", "text", "message"), [
    ("p_k", ".5,x", "comma-separated probabilities"), ("seed", "0,-1", "whole numbers >= 0"),
    ("seed", "1,1", "must not repeat"), ("epochs", "2.5", "a whole number"), ("lr", "fast", "a number"),
    ("epochs", "none", "a whole number")])
def test_parse_text_rejects(name, text, message):
    with pytest.raises(ValueError, match=message):
        parse_text(BY_NAME[name], text)


@pytest.mark.parametrize(("name", "value", "error", "message"), [
    ("epochs", 0, ValueError, "must be >= 1, got 0"),
    ("lr", -1.0, ValueError, "must be > 0"), ("lr", float("nan"), ValueError, "must be finite"),
    ("lr", "fast", TypeError, "must be a number"), ("epochs", True, TypeError, "must be of type int"),
    ("val_size", 0.0, ValueError, "fraction in (0, 1) or a whole count >= 1, got 0"),
    ("val_size", -3, ValueError, "got -3"), ("val_size", 1.5, ValueError, "got 1.5"),
    ("val_size", 1e9 + 0.5, ValueError, "whole count"),
    ("width", 1.5, TypeError, "must be of type int"),
    ("mixup", -0.1, ValueError, "must be >= 0"), ("select", "best", ValueError, "per-metric, score"),
    ("epochs", None, ValueError, "must be given")])
def test_check_value_names_the_option(name, value, error, message):
    with pytest.raises(error, match=f"^`{name}` .*" + message.replace("(", r"\(").replace(")", r"\)")):
        check_value(name, value)


@given(st.floats(0.0, 0.999), st.integers(1, 10**7))
def test_val_size_takes_fractions_and_counts(fraction, count):
    if fraction > 0:
        assert check_value("val_size", fraction) == fraction
    assert check_value("val_size", count) == count
    assert check_value("val_size", float(count)) == count


def test_the_values_of_the_loss_are_left_to_the_library():
    """The library checks them when the run's loss is built (see test_run_config); here they are
    only brought into form: numbers as floats, lists as tuples, 'none' as None."""
    library = {o.name for o in OPTIONS if o.library}
    assert library == {"p_k", "inverse_temperature", "m", "distribution", "art_lambda", "top1_mode", "tau",
                       "alpha", "label_smoothing"}
    assert check_value("inverse_temperature", -1) == -1.0 and check_value("p_k", [0.5, 2]) == (0.5, 2.0)
    assert check_value("m", "none") is None and check_value("m", 1) == 1 and check_value("tau", "x") == "x"


def test_which_methods_an_option_applies_to():
    for method in METHODS:
        used = {option.name for option in OPTIONS if applies(option, method)}
        assert {"method", "p_k", "lr", "epochs", "seed"} <= used
        assert ("distribution" in used) == (method in NETWORK_METHODS)
        assert ("inverse_temperature" in used) == (method not in ("softmax", "smooth_topk"))
        assert ("tau" in used) == (method == "smooth_topk")
        # label smoothing and mixed (probability) targets: every loss but the smooth top-k SVM
        assert ("label_smoothing" in used) == ("mixup" in used) == (method != "smooth_topk")


def test_the_loss_options_default_to_the_librarys_defaults():
    loss_fn = softtopk.TopKCrossEntropyLoss([0.5, 0, 0, 0, 0.5])
    for name in ("distribution", "art_lambda", "inverse_temperature", "top1_mode"):
        assert getattr(loss_fn, name) == BY_NAME[name].default, name
