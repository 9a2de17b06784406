"""The calibration of measure-acceptance: the draft's probability of each child verification tried,
binned with whether it was accepted; its counts merge exactly, its file part is checked, and
`filled_rates` gives the acceptance a dynamic tree reads for each bin."""

import bisect
import copy
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from sequoia_cli.stages.measure_acceptance import Request, Verified, calibration_counts, measure_acceptance
from sequoia_cli.stages.merge_acceptance import merge_acceptance

from sequoia_cli.acceptance import CALIBRATION_EDGES, calibration_from_counts, merged_calibration
from sequoia_cli.artifacts import check_acceptance
from sequoia_cli.dynamic import Growth, calibrated, filled_rates
from sequoia_cli.errors import BadInput
from sequoia_cli.sampling import Sampling
from tests.tiny import tiny_model, tiny_tokenizer

EDGES = torch.tensor(CALIBRATION_EDGES, dtype=torch.float64)
RECORDS = [{"prompt": text} for text in ("abc", "hello world", "zz", "the fox", "a b c d", "q")]


def pair():
    """(target, draft, tokenizer): two tiny models that agree sometimes."""
    tokenizer = tiny_tokenizer()
    return (tiny_model("qwen2", vocab=len(tokenizer), seed=3), tiny_model("qwen2", vocab=len(tokenizer), seed=4),
            tokenizer)


@pytest.mark.parametrize("sampling", [Sampling(), Sampling(0.8, 1.0)], ids=["greedy", "sampled"])
def test_shards_merge_to_the_whole_calibration_and_it_counts_the_children_the_ranks_imply(sampling):
    target, draft, tokenizer = pair()
    width = 3
    whole = measure_acceptance(target, draft, tokenizer, Request(RECORDS, sampling, width, 10, seed=5))
    shards = [measure_acceptance(target, draft, tokenizer, Request(RECORDS, sampling, width, 10, seed=5, shard=(i, 3)))
              for i in range(3)]
    calibration = whole["calibration"]
    assert merged_calibration(shards) == calibration
    assert merge_acceptance([(f"s{i}", shard) for i, shard in enumerate(shards)])["calibration"] == calibration
    ranks = [rank for row in whole["ranks"].values() for rank in row]
    assert sum(calibration["tried"]) == sum(rank if rank else width for rank in ranks)
    assert sum(calibration["accepted"]) == sum(rank > 0 for rank in ranks) > 0
    assert calibration["edges"] == list(CALIBRATION_EDGES)


def test_greedy_with_the_target_as_draft_accepts_every_first_child():
    target, _, tokenizer = pair()
    measured = measure_acceptance(target, target, tokenizer, Request(RECORDS[:2], Sampling(), 4, 12, seed=0))
    calibration = measured["calibration"]
    assert calibration["tried"] == calibration["accepted"] and sum(calibration["tried"]) == measured["samples"]
    assert {rate for rate in calibration["acceptance"] if rate is not None} == {1.0}
    assert all(error == 0.0 for error in calibration["stderr"] if error is not None)


def reference_bin(probability: float) -> int:
    """The bin [edge_i, edge_i+1) holding `probability`, the last closed at 1."""
    return min(bisect.bisect_right(CALIBRATION_EDGES, probability) - 1, len(CALIBRATION_EDGES) - 2)


NEAR_EDGES = [value for edge in CALIBRATION_EDGES for value in (edge, math.nextafter(edge, -1.0),
                                                                 math.nextafter(edge, 2.0)) if 0.0 <= value <= 1.0]


@settings(deadline=None, max_examples=60, derandomize=True)
@given(rows=st.lists(st.tuples(st.lists(st.one_of(st.sampled_from(NEAR_EDGES), st.floats(0.0, 1.0)), min_size=3,
                                        max_size=3), st.integers(0, 3)), min_size=1, max_size=12))
def test_binning_counts_each_tried_child_in_the_bin_of_its_probability(rows):
    probabilities = torch.tensor([row for row, _ in rows], dtype=torch.float64)
    ranks = [rank for _, rank in rows]
    tried = torch.arange(3) < torch.tensor([rank or 3 for rank in ranks]).unsqueeze(-1)
    counted = calibration_counts(Verified(ranks, probabilities, tried), EDGES)
    expected = torch.zeros(2, len(CALIBRATION_EDGES) - 1, dtype=torch.long)
    for row, rank in rows:
        for child, probability in enumerate(row[:rank or 3]):
            expected[0, reference_bin(probability)] += 1
            expected[1, reference_bin(probability)] += int(child == rank - 1)
    assert torch.equal(counted, expected)


def test_calibration_from_counts_leaves_empty_bins_null():
    part = calibration_from_counts([0.0, 0.5, 1.0], [4, 0], [1, 0])
    assert part == {"edges": [0.0, 0.5, 1.0], "tried": [4, 0], "accepted": [1, 0], "acceptance": [0.25, None],
                    "stderr": [math.sqrt(0.25 * 0.75 / 4), None]}


CALIBRATION = calibration_from_counts([0.0, 0.1, 0.5, 0.9, 1.0], [10, 0, 0, 4], [1, 0, 0, 4])


def rate_at(calibration: dict, probability: float) -> float:
    """The acceptance a dynamic tree reads for a child of this draft probability."""
    growth = Growth((1,), 1, tuple(calibration["edges"]), filled_rates(calibration), 0.5, {1: 1.0}, {1: 1.0}, 1.0)
    return calibrated(torch.tensor([probability], dtype=torch.float64), growth).item()


@pytest.mark.parametrize("probability, rate", [(0.0, 0.1), (0.05, 0.1), (0.1, 0.1), (0.3, 0.1), (0.5, 1.0),
                                               (0.9, 1.0), (0.99, 1.0), (1.0, 1.0), (-0.5, 0.1), (1.5, 1.0)])
def test_calibrated_is_the_acceptance_of_the_bin_or_the_nearest_measured_one(probability, rate):
    # Bin [0.1, 0.5) is nearer bin 0, and [0.5, 0.9) bin 3; 1.0 lies in the last, closed bin.
    assert rate_at(CALIBRATION, probability) == rate


def test_calibrated_takes_the_lower_of_two_bins_as_near_and_the_bins_middle_without_data():
    between = calibration_from_counts([0.0, 0.3, 0.6, 1.0], [2, 0, 2], [0, 0, 2])
    assert rate_at(between, 0.4) == 0.0
    assert rate_at(calibration_from_counts([0.0, 0.5, 1.0], [0, 0], [0, 0]), 0.3) == 0.25


def measured_file(**calibration) -> dict:
    """A measured artifact (3 accepted positions in counts) with its calibration's fields changed."""
    part = {**calibration_from_counts([0.0, 0.5, 1.0], [4, 3], [1, 2]), **calibration}
    return {"format": "sequoia-acceptance/1", "mode": "greedy", "temperature": 0.0, "top_p": 1.0, "width": 2,
            "acceptance": [0.5, 0.25], "rejected_all": 0.25, "samples": 4, "counts": [[1, 2, 1]], "calibration": part}


SCHEMA_FAULTS = {
    "edges not from 0": ({"edges": [0.1, 0.5, 1.0]}, ["'calibration.edges'", "0 to 1"]),
    "edges not to 1": ({"edges": [0.0, 0.5, 0.9]}, ["'calibration.edges'", "0 to 1"]),
    "edges not increasing": ({"edges": [0.0, 0.5, 0.5, 1.0]}, ["'calibration.edges[2]'", "strictly"]),
    "one edge": ({"edges": [0.0]}, ["'calibration.edges'", "fewer than 2"]),
    "an edge past 1": ({"edges": [0.0, 1.5, 1.0]}, ["'calibration.edges[1]'", "<= 1"]),
    "tried of another length": ({"tried": [4, 3, 0]}, ["'calibration.tried'", "3 entries", "2 bins"]),
    "stderr of another length": ({"stderr": [0.2]}, ["'calibration.stderr'", "1 entry"]),
    "a negative count": ({"tried": [-1, 3]}, ["'calibration.tried[0]'", ">= 0"]),
    "a fractional count": ({"accepted": [1.5, 2]}, ["'calibration.accepted[0]'", "not an integer"]),
    "more accepted than tried": ({"accepted": [1, 4]}, ["'calibration.accepted[1]'", "more than"]),
    "acceptance off its counts": ({"acceptance": [0.5, 2 / 3]}, ["'calibration.acceptance[0]'", "0.250000"]),
    "acceptance of an empty bin": ({"tried": [4, 0], "accepted": [1, 0]}, ["'calibration.acceptance[1]'", "null"]),
    "stderr off its counts": ({"stderr": [0.0, 0.0]}, ["'calibration.stderr[0]'"]),
    "accepted off the counts": ({"tried": [5, 3], "accepted": [2, 2], "acceptance": [0.4, 2 / 3],
                                 "stderr": [math.sqrt(0.24 / 5), math.sqrt(2 / 27)]},
                                ["'calibration.accepted'", "4", "'counts'", "3 accepted"]),
    "a string": ("bins", ["'calibration'", "not an object"]),
    "no edges": (None, ["missing field 'calibration.edges'"]),
}


@pytest.mark.parametrize("name", SCHEMA_FAULTS)
def test_a_malformed_calibration_is_one_line_naming_its_field(name):
    change, words = SCHEMA_FAULTS[name]
    artifact = measured_file(**change) if isinstance(change, dict) else measured_file()
    if change is None:
        del artifact["calibration"]["edges"]
    elif not isinstance(change, dict):
        artifact["calibration"] = change
    with pytest.raises(BadInput) as raised:
        check_acceptance("acc.json", artifact)
    message = str(raised.value)
    assert "\n" not in message and message.startswith("acc.json: ")
    for word in words:
        assert word in message, (word, message)


def test_the_file_the_faults_start_from_and_one_without_calibration_are_valid():
    check_acceptance("acc.json", measured_file())
    check_acceptance("acc.json", {k: v for k, v in measured_file().items() if k != "calibration"})


def test_merging_sums_the_calibrations_and_refuses_shards_without_one_or_of_other_bins():
    first, second = ({**measured_file(), "shard": f"{i}/2"} for i in range(2))
    merged = merge_acceptance([("a", first), ("b", second)])
    assert merged["calibration"] == calibration_from_counts([0.0, 0.5, 1.0], [8, 6], [2, 4])
    check_acceptance("merged", merged)
    without = {k: v for k, v in second.items() if k != "calibration"}
    with pytest.raises(BadInput, match="b: no 'calibration' but a has calibration edges"):
        merge_acceptance([("a", first), ("b", without)])
    other = copy.deepcopy(second)
    other["calibration"]["edges"] = [0.0, 0.25, 1.0]
    with pytest.raises(BadInput, match=r"b: calibration edges \[0.0, 0.25, 1.0\] but a has"):
        merge_acceptance([("a", first), ("b", other)])
