"""ViGGO scorer: gold against itself, shuffled attributes, values with punctuation, partial output."""

from __future__ import annotations

import csv
import random

import pytest

from tunebench.tasks.scoring import viggo

ALL_TRUE = dict.fromkeys(viggo.METRICS, True)
ALL_FALSE = dict.fromkeys(viggo.METRICS, False)


@pytest.fixture(scope="module")
def gold_mrs(mirror):
    with open(mirror / "viggo" / "test.csv", newline="") as handle:
        return [row["mr"] for row in csv.DictReader(handle)]


def test_gold_against_itself_is_perfect(gold_mrs):
    assert len(gold_mrs) == 1083
    for mr in gold_mrs:
        assert viggo.score(mr, {"answer": mr}) == ALL_TRUE


def test_gold_follows_the_canonical_order(gold_mrs):
    for mr in gold_mrs:
        parsed = viggo.parse(mr)
        assert parsed.function in viggo.FUNCTIONS
        positions = [viggo.ATTRIBUTES.index(name) for name in parsed.names]
        assert positions == sorted(positions)


def test_shuffled_attributes_keep_the_set_and_lose_the_order(gold_mrs):
    rng = random.Random(0)
    shuffled_rows = 0
    for mr in gold_mrs:
        parsed = viggo.parse(mr)
        if len(parsed.attributes) < 2:
            continue
        attributes = list(parsed.attributes)
        while [name for name, _ in attributes] == list(parsed.names):
            rng.shuffle(attributes)
        shuffled = f"{parsed.function}({', '.join(f'{n}[{v}]' for n, v in attributes)})"
        verdict = viggo.score(shuffled, {"answer": mr})
        assert verdict["function_accuracy"] and verdict["attributes_accuracy"]
        assert not verdict["attributes_ordered_accuracy"] and not verdict["exact_match"]
        shuffled_rows += 1
    assert shuffled_rows > 900


def test_values_may_hold_colons_brackets_and_commas():
    gold = "inform(name[Tom Clancy's The Division], esrb[M (for Mature)], genres[role-playing, shooter, tactical])"
    parsed = viggo.parse(gold)
    assert parsed.names == ("name", "esrb", "genres")
    assert parsed.attributes[1] == ("esrb", "M (for Mature)")
    colon = "confirm(name[Call of Duty: Advanced Warfare], platforms[PC])"
    assert viggo.parse(colon).attributes[0] == ("name", "Call of Duty: Advanced Warfare")


def test_first_complete_representation_wins():
    gold = "request(has_multiplayer[yes], specifier[fast-paced])"
    chatter = (
        "Sure (here it is): functions(like this) are listed below.\n"
        "request(has_multiplayer[yes], specifier[fast-paced])\nor maybe inform(name[X])"
    )
    assert viggo.score(chatter, {"answer": gold}) == ALL_TRUE
    assert viggo.extract(chatter) == gold
    # An unfinished first attempt is skipped in favour of a later complete one.
    retry = "request(has_multiplayer[yes], specifier[fast-paced]\nrequest(has_multiplayer[yes], specifier[fast-paced])"
    assert viggo.score(retry, {"answer": gold}) == ALL_TRUE
    # A value runs to its closing bracket, so an unclosed value swallows text up to the next "]".
    swallowed = "request(specifier[fast-pa ... request(has_multiplayer[yes])"
    assert viggo.extract(swallowed) == "request(specifier[fast-pa ... request(has_multiplayer[yes])"


def test_partial_metrics():
    gold = "give_opinion(name[Halo], rating[good], platforms[Xbox])"
    assert viggo.score("give_opinion(name[Halo], rating[poor], platforms[Xbox])", {"answer": gold}) == {
        "function_accuracy": True,
        "attributes_accuracy": True,
        "attributes_ordered_accuracy": True,
        "exact_match": False,
    }
    assert viggo.score("give_opinion(name[Halo], rating[good])", {"answer": gold}) == {
        "function_accuracy": True,
        "attributes_accuracy": False,
        "attributes_ordered_accuracy": False,
        "exact_match": False,
    }
    # A right attribute set under the wrong function earns nothing beyond the function check.
    assert viggo.score("inform(name[Halo], rating[good], platforms[Xbox])", {"answer": gold}) == ALL_FALSE
    # Whitespace inside values does not matter for exact match.
    assert viggo.score("give_opinion( name[ Halo ],rating[good] ,  platforms[Xbox])", {"answer": gold}) == ALL_TRUE


@pytest.mark.parametrize(
    "prediction",
    ["", "inform(name[Halo], rating[good]", "inform()", "inform(name[Halo],)", "name[Halo]", "inform(name Halo)"],
)
def test_nothing_complete_is_all_false(prediction):
    assert viggo.parse(prediction) is None
    assert viggo.score(prediction, {"answer": "inform(name[Halo])"}) == ALL_FALSE


def test_unparseable_gold_is_unscorable():
    assert viggo.score("inform(name[Halo])", {"answer": "not a representation"}) == dict.fromkeys(viggo.METRICS)
    assert viggo.score("inform(name[Halo])", {"answer": None}) == dict.fromkeys(viggo.METRICS)
