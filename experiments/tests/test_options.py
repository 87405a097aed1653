"""The option records: parsing, checks, which methods they apply to, library messages with flags."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from softtopk_experiments.settings.losses import METHODS, NETWORK_METHODS
from softtopk_experiments.settings.options import (
    BY_NAME,
    GROUPS,
    OPTIONS,
    SCOPES,
    applies,
    check_value,
    parse_text,
    with_flags,
)


def test_every_option_has_a_unique_flag_a_help_and_a_valid_scope():
    flags = [flag for option in OPTIONS for flag in (option.flags or (option.flag,))]
    assert len(flags) == len(set(flags))
    for option in OPTIONS:
        assert option.help and option.group in GROUPS and option.scope in SCOPES
        if option.default is not None:  # the generic default passes the option's own check
            assert check_value(option.name, option.default) == option.default
    assert BY_NAME["m"].flag == "--top-m"  # not --m: torchrun would take it for one of its own
    assert BY_NAME["seed"].flags == ("--seed", "--seeds")


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
    ("epochs", 0, ValueError, "epochs must be >= 1, got 0"),
    ("lr", -1.0, ValueError, "lr must be > 0"), ("lr", float("nan"), ValueError, "lr must be finite"),
    ("lr", "fast", TypeError, "lr must be a number"), ("epochs", True, TypeError, "must be of type int"),
    ("val_size", 0.0, ValueError, "fraction in (0, 1) or a whole count >= 1, got 0"),
    ("val_size", -3, ValueError, "got -3"), ("val_size", 1.5, ValueError, "got 1.5"),
    ("val_size", 1e9 + 0.5, ValueError, "whole count"),
    ("p_k", [0.5, 0.6], ValueError, "sum to 1"), ("p_k", [1.5, -0.5], ValueError, "probabilities >= 0"),
    ("p_k", 0.5, TypeError, "must be a list"), ("label_smoothing", 1.0, ValueError, "in [0, 1)"),
    ("mixup", -0.1, ValueError, "mixup must be >= 0"), ("select", "best", ValueError, "per-metric, score"),
    ("m", 1, ValueError, "m must be >= 2"), ("epochs", None, ValueError, "must be given")])
def test_check_value_names_the_option(name, value, error, message):
    with pytest.raises(error, match=message.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[")):
        check_value(name, value)
    with pytest.raises(error, match=f"^{BY_NAME[name].flag} "):  # or its flag, on the command line
        check_value(name, value, BY_NAME[name].flag)


@given(st.floats(0.0, 0.999), st.integers(1, 10**7))
def test_val_size_takes_fractions_and_counts(fraction, count):
    if fraction > 0:
        assert check_value("val_size", fraction) == fraction
    assert check_value("val_size", count) == count
    assert check_value("val_size", float(count)) == count


def test_which_methods_an_option_applies_to():
    for method in METHODS:
        used = {option.name for option in OPTIONS if applies(option, method, NETWORK_METHODS)}
        assert {"method", "p_k", "lr", "epochs", "seed"} <= used
        assert ("distribution" in used) == (method in NETWORK_METHODS)
        assert ("inverse_temperature" in used) == (method not in ("softmax", "smooth_topk"))
        assert ("tau" in used) == (method == "smooth_topk")
        # label smoothing and mixed (probability) targets: every loss but the smooth top-k SVM
        assert ("label_smoothing" in used) == ("mixup" in used) == (method != "smooth_topk")


@pytest.mark.parametrize(("message", "expected"), [
    ("method='softmax' is plain cross-entropy and needs p_k = 1,0,...",
     "--method softmax is plain cross-entropy and needs --p-k = 1,0,..."),
    ("m must be greater than K = len(p_k) = 2, got m = 2",
     "--top-m must be greater than K = len(--p-k) = 2, got --top-m = 2"),
    ("distribution must be one of 'cauchy', 'logistic'; got 'weird'",
     "--distribution must be one of 'cauchy', 'logistic'; got 'weird'"),
    ("inverse_temperature must be finite and > 0", "--inverse-temperature must be finite and > 0"),
    ("--top-m is already a flag; so is --p-k", "--top-m is already a flag; so is --p-k"),
    ("the top-m of the methods", "the top-m of the methods"),
])
def test_library_messages_name_the_flags(message, expected):
    assert with_flags(message) == expected


def test_a_sweep_file_writes_none_as_a_string():
    assert check_value("m", "none") is None and check_value("m", "None") is None
    with pytest.raises(TypeError, match="epochs must be of type int"):
        check_value("epochs", "none")
