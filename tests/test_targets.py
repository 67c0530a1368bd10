"""Target text: class names, indices, weighted mixes, negatives, per-image lines."""

import pytest
import torch

from cag_core.class_names import combo_label, imagenet_class_names, resolve_class
from cag_core.errors import CaGError
from cag_core.targets import parse_target, split_weight

NAMES = imagenet_class_names()


def test_names_synonyms_indices_and_combo_labels_resolve():
    """A class is found by its name, any synonym, case-insensitively, by index and by the node's combo label."""
    assert resolve_class("golden retriever", NAMES) == 207
    assert resolve_class("Tabby Cat", NAMES) == 281
    assert resolve_class("207", NAMES) == 207
    assert resolve_class(combo_label(207, NAMES[207]), NAMES) == 207
    assert len(NAMES) == 1000


def test_unknown_class_suggests_close_matches():
    """A misspelt class names the close matches."""
    with pytest.raises(CaGError, match="golden retriever"):
        resolve_class("golden retreiver", NAMES)


def test_index_out_of_range_names_the_range():
    """An index past the classifier's classes gives the valid range."""
    with pytest.raises(CaGError, match="0..999"):
        resolve_class("1000", NAMES)


def test_weighted_mix_is_normalized_and_negatives_kept():
    """'tabby:3 | tiger cat:1 | lynx:-2' gives 0.75/0.25 positive and 2 on lynx negative."""
    target = parse_target("tabby:3 | tiger cat:1 | lynx:-2", NAMES, 1)
    assert target.positive[0, 281] == pytest.approx(0.75)
    assert target.positive[0, 282] == pytest.approx(0.25)
    assert target.negative[0, 287] == pytest.approx(2.0)
    assert target.positive.sum() == pytest.approx(1.0)


def test_lines_are_cycled_over_the_batch():
    """Two target lines for four images alternate."""
    target = parse_target("goldfish\n207", NAMES, 4)
    assert target.positive.argmax(-1).tolist() == [1, 207, 1, 207]
    assert parse_target("goldfish; 207", NAMES, 2).positive.argmax(-1).tolist() == [1, 207]


def test_weight_parsing_keeps_other_colons():
    """Only a trailing ':number' is a weight."""
    assert split_weight("tabby:0.5") == ("tabby", 0.5)
    assert split_weight("207: golden retriever") == ("207: golden retriever", 1.0)
    assert split_weight("x:1e-1") == ("x", 0.1)


@pytest.mark.parametrize("text", ["", "  \n ", "tabby:-1"])
def test_empty_or_all_negative_targets_are_refused(text):
    """A target needs at least one positively weighted class."""
    with pytest.raises(CaGError):
        parse_target(text, NAMES, 1)


def test_target_for_a_small_classifier():
    """Non-ImageNet classifiers use their own names and indices."""
    target = parse_target("class 3 | 4:1", [f"class {i}" for i in range(5)], 1)
    assert torch.allclose(target.positive[0], torch.tensor([0, 0, 0, 0.5, 0.5]))
