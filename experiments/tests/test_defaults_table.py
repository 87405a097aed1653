"""The defaults table as --help and the README show it."""

from __future__ import annotations

from pathlib import Path

import pytest

from softtopk_experiments.settings.defaults_table import describe, method_rows
from softtopk_experiments.settings.losses import METHODS

README = Path(__file__).parents[2] / "README.md"


@pytest.mark.parametrize("protocol", ["finetune", "train"])
def test_the_readme_shows_the_table_the_code_holds(protocol):
    assert describe(protocol, markdown=True) in README.read_text()


@pytest.mark.parametrize("protocol", ["finetune", "train"])
def test_every_method_has_a_row(protocol):
    names = [row[0].removesuffix(" (generic)") for row in method_rows(protocol)]
    assert names == list(METHODS[1:])
    text = describe(protocol)
    assert all(name in text for name in names) and max(len(line) for line in text.splitlines()) <= 88


def test_methods_without_a_paper_setting_are_marked_generic():
    rows = {row[0]: row[1:] for row in method_rows("finetune")}
    assert rows["bitonic"] == ["1", "logistic_phi", "0.5", "–"]
    assert rows["neuralsort"] == ["0.5", "–", "–", "–"]
    assert rows["odd_even (generic)"] == ["1", "logistic_phi", "0.5", "–"]
    assert rows["smooth_topk"] == ["–", "–", "–", "1"]
    assert method_rows("train")[0] == ["bitonic", "0.5", "logistic_phi", "0.5", "–"]
