"""Run configurations: checking what the user gave, resolving defaults, checking against the data."""

from __future__ import annotations

import json

import pytest
import torch

from softtopk import TopKCrossEntropyLoss
from softtopk_experiments.data.splits import Splits
from softtopk_experiments.settings.run_config import RunConfig, applying, check_fits, check_given, make_config

WORDNET = {"name": "wordnet"}


def _features(n=300, c=8, d=6) -> Splits:
    g = torch.Generator().manual_seed(0)
    y = torch.arange(n + 60) % c
    x = 2 * torch.randn(c, d, generator=g)[y] + torch.randn(n + 60, d, generator=g)
    return Splits(x[:n], y[:n], x[n:], y[n:], c)


def _images(n=48, c=6) -> Splits:
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (n + 12, 1, 8, 8), generator=g, dtype=torch.uint8)
    y = torch.arange(n + 12) % c
    return Splits(x[:n], y[:n], x[n:], y[n:], c)


def _config(given, protocol="finetune", spec=WORDNET, splits=None) -> RunConfig:
    return make_config(protocol, spec, splits or (_features() if protocol == "finetune" else _images()),
                       check_given(protocol, given))


def test_defaults_are_resolved_and_their_sources_recorded():
    config = _config({"method": "bitonic", "p_k": [0.5, 0, 0, 0, 0.5], "epochs": 3})
    assert (config.method, config.p_k, config.epochs, config.m) == ("bitonic", (0.5, 0, 0, 0, 0.5), 3, 16)
    assert (config.distribution, config.art_lambda, config.inverse_temperature) == ("logistic_phi", 0.5, 1.0)
    assert config.sources["epochs"] == "given" and config.sources["m"] == "paper: ImageNet-1K fine-tuning"
    assert config.sources["lr"].startswith("lr rule") and 0 < config.lr < 1  # wordnet is not the paper's data
    assert config.tau is None and config.width is None  # options that do not apply read as None
    assert "tau" not in config.settings and "width" not in config.settings
    with pytest.raises(AttributeError):
        config.colour  # noqa: B018


def test_train_takes_the_cifar_settings_and_the_data_sets_own():
    config = _config({"method": "neuralsort", "p_k": [0, 1]}, "train", {"name": "glyphs"})
    assert (config.inverse_temperature, config.top1_mode, config.m, config.lr) == (0.0625, "smce", None, 1e-3)
    assert (config.epochs, config.width) == (20, 16)
    assert config.sources["width"].startswith("data set glyphs:")
    assert config.augmentation.crop_padding == 4 and not config.augmentation.hflip
    assert _config({}, "train", {"name": "glyphs"}).mixes is False
    assert _config({"mixup": 0.2}, "train", {"name": "glyphs"}).mixes


def test_identity_leaves_out_epochs_and_sources():
    a = _config({"method": "softmax", "epochs": 2})
    b = _config({"method": "softmax", "epochs": 5})
    assert a.identity() == b.identity() and a.to_dict() != b.to_dict()
    assert json.loads(json.dumps(a.to_dict()))["settings"]["p_k"] == [1.0, 0.0, 0.0, 0.0, 0.0]
    assert a.identity() != _config({"method": "softmax", "seed": 1}).identity()


def test_the_head_is_fused_from_ten_thousand_classes_on_and_not_part_of_the_identity():
    few, many = _features(), _features(n=10_000, c=10_000, d=2)
    assert _config({}).head == "logits" and _config({}).sources["head"] == "auto (8 classes)"
    assert _config({}, splits=many).head == "fused"
    assert _config({"method": "smooth_topk", "p_k": [0, 1]}, splits=many).head == "logits"
    assert _config({"head": "fused"}, splits=few).head == "fused"
    assert _config({"head": "logits"}, splits=many).head == "logits"
    assert _config({"head": "fused"}).identity() == _config({"head": "logits"}).identity()
    assert _config({}, "train", {"name": "glyphs"}).head is None  # an option of finetune only
    with pytest.raises(ValueError, match="`head` fused needs softmax or a relaxation"):
        _config({"method": "smooth_topk", "p_k": [0, 1], "head": "fused"})
    with pytest.raises(ValueError, match="`head` must be one of auto, logits, fused"):
        check_given("finetune", {"head": "chunked"})


def test_an_option_that_does_not_apply_is_an_error():
    with pytest.raises(ValueError, match=r"`inverse_temperature` does not apply to `method` softmax "
                                         r"\(it is a setting of the relaxations\)"):
        _config({"method": "softmax", "inverse_temperature": 2.0})
    with pytest.raises(ValueError, match=r"`distribution` does not apply to `method` neuralsort \(it is a "
                                         r"setting of the sorting networks \(bitonic"):
        _config({"method": "neuralsort", "p_k": [0, 1], "distribution": "cauchy"})
    # its default is harmless; in a sweep file a method setting applies to the methods that use it
    assert _config({"method": "softmax", "label_smoothing": 0.0}).label_smoothing == 0.0
    given = {"method": "softmax", "inverse_temperature": 2.0, "epochs": 3}
    assert applying(given) == {"method": "softmax", "epochs": 3}
    assert "inverse_temperature" not in _config(applying(given)).settings


def test_the_loss_is_built_once_with_the_config():
    config = _config({"method": "bitonic", "p_k": [0.5, 0, 0, 0, 0.5]})
    assert isinstance(config.loss, TopKCrossEntropyLoss) and "m=16" in repr(config.loss)
    assert config == _config({"method": "bitonic", "p_k": [0.5, 0, 0, 0, 0.5]})  # not part of the identity


def test_smooth_topk_takes_no_label_smoothing_or_mixed_targets():
    for key, protocol in (("label_smoothing", "finetune"), ("mixup", "train"), ("cutmix", "train")):
        message = f"`{key}` does not apply to .*smooth_topk.*softmax and the relaxations"
        with pytest.raises(ValueError, match=message):
            _config({"method": "smooth_topk", "p_k": [0, 1], key: 0.1}, protocol,
                    {"name": "glyphs"} if protocol == "train" else WORDNET)


@pytest.mark.parametrize(("given", "protocol", "error", "message"), [
    ({"colour": 1}, "finetune", ValueError, "unknown option 'colour'"),
    ({"width": 4}, "finetune", ValueError, "`width` is an option of train, not of finetune"),
    ({"mixup": 0.2}, "finetune", ValueError, "`mixup` is an option of train, not of finetune"),
    ({"method": "heapsort"}, "finetune", ValueError, "`method` must be one of softmax, bitonic"),
    ({"lr": "fast"}, "finetune", TypeError, "`lr` must be a number"),
    ({}, "pretrain", ValueError, "command must be one of finetune, train"),
])
def test_check_given_errors(given, protocol, error, message):
    with pytest.raises(error, match=message):
        check_given(protocol, given)


@pytest.mark.parametrize(("given", "message"), [
    ({"method": "bitonic"}, "`method` bitonic needs `p_k`"),
    # the values of the loss: the library's checks and words
    ({"method": "softmax", "p_k": [0.5, 0.5]}, "method='softmax' is plain cross-entropy"),
    ({"method": "bitonic", "p_k": [0.5, 0.6]}, "p_k must sum to 1"),
    ({"method": "bitonic", "p_k": [0, 1], "inverse_temperature": -1.0}, "inverse_temperature must be finite"),
    ({"method": "bitonic", "p_k": [0, 1], "m": 2}, "m must be greater than K"),
    ({"method": "bitonic", "p_k": [0, 1], "distribution": "weird"}, "distribution must be one of"),
    ({"method": "smooth_topk", "p_k": [0, 1], "tau": 0.0}, "tau must be finite and > 0"),
    ({"label_smoothing": 1.5}, "label_smoothing must lie in"),
    ({"method": "smooth_topk", "p_k": [0.5, 0, 0, 0, 0.5]}, "`p_k` must be one-hot"),
    ({"method": "bitonic", "p_k": [0] * 8 + [1]}, "K = 9 entries but the data has only 8 classes"),
    ({"val_size": 300}, "`val_size` 300 gives 300 validation samples out of 300"),
])
def test_settings_that_do_not_fit_are_refused_before_training(given, message):
    with pytest.raises(ValueError, match=message):
        _config(given)


def test_whole_val_sizes_become_counts():
    count = _config({"val_size": 60.0}).val_size
    assert count == 60 and isinstance(count, int)
    assert _config({"val_size": 0.25}).val_size == 0.25


def test_check_fits_names_the_mismatch():
    finetune, train = _config({}), _config({}, "train", {"name": "glyphs"})
    with pytest.raises(ValueError, match=r"finetune needs float features \[N, D\]"):
        check_fits(finetune, _images())
    with pytest.raises(ValueError, match=r"train needs uint8 images"):
        check_fits(train, _features())
    with pytest.raises(ValueError, match="K = 5 entries but the data has only 4 classes"):
        check_fits(finetune, _features(c=4))


def test_a_sharded_head_needs_a_method_with_a_sharded_loss_and_an_m_below_the_classes():
    relaxation = {"method": "bitonic", "p_k": [0.5, 0.5], "head": "sharded"}
    assert _config({**relaxation, "m": 4}).head == "sharded"  # 8 classes
    assert _config({"head": "sharded"}).identity() == _config({"head": "logits"}).identity()
    assert _config({"method": "softmax", "head": "sharded"}).m is None  # softmax needs no preselection
    for m in (None, 8):
        with pytest.raises(ValueError, match=f"`head` sharded needs `m` .* below the number of classes "
                                             f"\\(8\\) .*; got {'none' if m is None else m}"):
            _config({**relaxation, "m": m})
    with pytest.raises(ValueError, match="`head` sharded needs softmax or a relaxation"):
        _config({"method": "smooth_topk", "p_k": [0, 1], "head": "sharded"})
