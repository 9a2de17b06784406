"""The bench on a tiny random pair: tree families, one whole run, failed cells, the command's errors."""

import dataclasses
import json

import pytest

from sequoia_cli.tree import check_parents, depths, level_widths
from stages import bench
from stages.bench import experiments, harness
from tests.conftest import sequoia
from tests.tiny import noisy_copy, tiny_model, tiny_tokenizer

TINY = dataclasses.replace(bench.QUICK, name="tiny", continuation=8, width=4, new_tokens=8, timed_tokens=8,
                           sizes=(2, 8), profile_max=8, profile_repeats=1, dp_sizes=(16, 32),
                           sweep_sizes=(4,), sweep_depths=(1, 3))


def children(parents):
    out = [[] for _ in parents]
    for i, parent in enumerate(parents[1:], start=1):
        out[parent].append(i)
    return out


@pytest.mark.parametrize("k, d", [(1, 1), (2, 3), (4, 4), (8, 15)])
def test_kxd_tree_is_k_chains_of_depth_d(k, d):
    parents = harness.kxd_parents(k, d)
    check_parents(parents)
    assert len(parents) == k * d + 1
    assert max(depths(parents)) == d
    kids = children(parents)
    assert len(kids[0]) == k
    assert all(len(c) <= 1 for c in kids[1:])
    assert level_widths(parents) == [1] + [k] * d


@pytest.mark.parametrize("size", [2, 4, 8, 16, 32, 64, 128])
def test_kxd_shape_fits_the_nominal_size(size):
    k, d = harness.kxd_shape(size)
    assert k in (1, 2, 4, 8) and d >= 1
    assert size - k < k * d + 1 <= size


@pytest.mark.parametrize("size", [1, 2, 3, 8, 13, 32])
def test_kary_tree_is_filled_breadth_first(size):
    parents = harness.kary_parents(size, 2)
    check_parents(parents)
    assert len(parents) == size
    kids = children(parents)
    assert all(len(c) <= 2 for c in kids)
    # Breadth first: node i's children are 2i+1 and 2i+2, as far as the size goes.
    assert all(c == [j for j in (2 * i + 1, 2 * i + 2) if j < size] for i, c in enumerate(kids))


@pytest.fixture(scope="module")
def tiny_pair():
    tokenizer = tiny_tokenizer()
    target = tiny_model("qwen2", vocab=len(tokenizer), seed=1, eos=tokenizer.eos_token_id, context=1024)
    return target, noisy_copy(target, 0.3), tokenizer


def test_whole_bench_on_a_tiny_pair(tiny_pair, tmp_path, monkeypatch):
    def broken(size, k=2):
        raise RuntimeError("boom\nsecond line")

    monkeypatch.setattr(experiments, "kary_parents", broken)  # every top-2 tree cell raises
    ticks = []
    target, draft, tokenizer = tiny_pair
    report = bench.run_bench(target, draft, tokenizer, str(tmp_path / "out"), TINY, seed=3,
                             names={"target": "tiny-t", "draft": "tiny-d"}, tick=ticks.append)

    assert report == tmp_path / "out" / "report.md"
    for name in ("scalability.png", "robustness.png", "bench.json"):
        assert (tmp_path / "out" / name).stat().st_size > 0
    assert len(ticks) == bench.count_cells(TINY)
    text = report.read_text()
    for heading in ("## 1. Scalability", "## 2. Robustness", "## 3. Wall clock", "## 4. Hardware awareness",
                    "## 5. The DP itself", "## 6. Loop overhead"):
        section = text.split(heading, 1)[1].split("\n## ", 1)[0]
        assert "\n|---|" in section, heading  # each experiment has its table
    assert "tiny-t" in text and "mt-bench" in text and "seed 3" in text

    results = json.loads((tmp_path / "out" / "bench.json").read_text())
    # The raising cells are reported, one line each, and the rest of the run went on.
    failed = [r for r in results["scalability"] if r["family"] == "topk"]
    assert failed and all(r["error"] == "failed: RuntimeError: boom" for r in failed)
    assert "failed: RuntimeError: boom |" in text
    assert all("error" not in r for r in results["scalability"] if r["family"] != "topk")
    assert all("error" not in r for key in ("robustness", "wall_clock", "hardware", "dp", "overhead")
               for r in results[key])

    # Greedy: every method gives the target's own tokens.
    wall = results["wall_clock"]
    assert [r["method"] for r in wall] == list(experiments.WALL_METHODS)
    assert all(r["outputs"] == wall[0]["outputs"] for r in wall)
    assert [r["same_tokens"] for r in wall] == ["reference"] + ["yes"] * (len(wall) - 1)
    greedy = [r["outputs"] for r in results["scalability"] if r["temperature"] == 0 and "outputs" in r]
    assert len(greedy) == 2 * 3 and all(out == greedy[0] for out in greedy)

    # The DP cells carry their prediction; the k x d cells their shape.
    for row in results["scalability"]:
        if row["family"] == "dp":
            assert row["predicted"] >= 1.0 and row["tree_size"] == row["size"]
        if row["family"] == "kxd":
            assert row["shape"] == "{}x{}".format(*harness.kxd_shape(row["size"]))
    overhead = results["overhead"][0]
    assert overhead["outside_seconds"] == pytest.approx(
        overhead["wall_seconds"] - overhead["target_seconds"] - overhead["draft_seconds"])
    assert overhead["target_forwards"] == overhead["steps"]


def test_a_failed_vector_fails_its_cells_not_the_run(tiny_pair, tmp_path, monkeypatch):
    def broken(*args, **kwargs):
        raise ValueError("no acceptance today")

    monkeypatch.setattr(experiments, "measure_acceptance", broken)
    config = dataclasses.replace(TINY, sizes=(2,), robust_temperatures=(1.0,), dp_sizes=(8,))
    target, draft, tokenizer = tiny_pair
    report = bench.run_bench(target, draft, tokenizer, str(tmp_path), config)
    results = json.loads((tmp_path / "bench.json").read_text())
    assert all("no acceptance today" in r["error"] for r in results["robustness"] + results["hardware"])
    assert all("no acceptance today" in r["error"] for r in results["scalability"] if r["family"] == "dp")
    assert all("error" not in r for r in results["scalability"] if r["family"] != "dp")
    # Without the greedy vector there is no optimizer's tree; the other wall-clock methods still ran.
    assert [r["method"] for r in results["wall_clock"] if "error" in r] == ["Sequoia"]
    assert "failed: ValueError: no acceptance today" in report.read_text()


def test_bench_command_bad_input_is_one_line():
    run = sequoia("bench", "--pair", "qwen2.5-coder", "--draft", "x")
    assert run.returncode == 2
    assert run.stderr.strip() == "error: --pair sets both models: give it alone, or --draft and --target"
