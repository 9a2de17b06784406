"""The bench on a tiny random pair: tree families, the interleaving order, the bootstrap interval,
one whole run whose report carries the numbers the cells measured, resuming, failed cells, and
the command's errors."""

import dataclasses
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from sequoia_cli.stages import bench
from sequoia_cli.stages.bench import (
    dynamic_trees,
    hardware,
    harness,
    memory,
    offload,
    shared,
    spec_bench,
    stats,
    step_counts,
    timing,
)

from sequoia_cli.errors import BadInput
from sequoia_cli.loading import Loaded, Resolved
from sequoia_cli.prompts import DATA_DIR, SPEC_BENCH_SUBTASKS
from sequoia_cli.tree import check_parents, depths, level_widths
from tests.conftest import assert_one_line_error, sequoia
from tests.tiny import noisy_copy, tiny_model, tiny_tokenizer

TINY = dataclasses.replace(bench.QUICK, name="tiny", prompts=3, new_tokens=8, scale_prompts=2, scale_tokens=(8, 8),
                           robust_tokens=8, acceptance_prompts=1, continuation=8, width=4, sizes=(2, 8),
                           robust_temperatures=(0.6,), sweep=((4, 1), (4, 3)), sweep_prompts=4, sweep_tokens=8,
                           profile_max=8, profile_repeats=1, dp_sizes=(16,), resamples=200)
NAMES = {"target": "tiny-t", "draft": "tiny-d"}


def run_tiny(pair, out, config, seed=3, names=NAMES, resume=False, tick=None, target_name="tiny-t"):
    """The whole stage on the tiny pair, as the command runs it: prepare, then bench; `tick(label,
    weight)` sees each advance of its progress bar, whose total must be the plan's work."""
    target, draft, tokenizer = pair
    plan = bench.prepare(str(out), config, seed, names, "float32", resume)
    loaded = Loaded(Resolved("tiny-d", target_name, {}, "cpu", "float32"), target, draft, tokenizer)

    def progress(description, total):
        assert total == plan.work == bench.total_work(config)
        return lambda weight=1, label=None: tick(label, weight)
    return bench.bench(plan, loaded, progress if tick else None)


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


# ---- interleaving ----------------------------------------------------------------------------

def test_rotation_puts_every_method_in_every_place_equally_often():
    names = ["a", "b", "c", "d"]
    orders = [harness.rotation(names, i) for i in range(8)]
    assert orders[0] == names and orders[1] == ["b", "c", "d", "a"] and orders[5] == orders[1]
    for place in range(4):
        assert sorted(order[place] for order in orders) == sorted(names * 2)
    assert harness.rotation([], 3) == []


def test_a_block_runs_each_prompts_methods_back_to_back_in_rotated_order(tmp_path):
    calls, ticks = [], []
    methods = {name: (lambda index, name=name: calls.append((index, name)) or {"tokens": index}) for name in "xyz"}
    store = harness.Store(tmp_path / "cells.jsonl", {"run": 1}, resume=False)
    results = harness.run_block(store, "block", methods, 4, lambda label, weight: ticks.append(weight), 5)
    assert calls == [(0, "x"), (0, "y"), (0, "z"), (1, "y"), (1, "z"), (1, "x"),
                     (2, "z"), (2, "x"), (2, "y"), (3, "x"), (3, "y"), (3, "z")]
    assert results == {name: [{"tokens": i} for i in range(4)] for name in "xyz"}
    assert ticks == [5] * 12


def test_the_store_resumes_finished_cells_and_retries_failed_ones(tmp_path):
    path = tmp_path / "cells.jsonl"
    store = harness.Store(path, {"seed": 1, "sizes": (2, 8)}, resume=False)
    store.cell("done", lambda: {"tokens": 3})
    store.cell("broken", lambda: 1 / 0)
    with path.open("a") as out:
        out.write('{"key": "half-writt')  # the run was killed while writing
    again = harness.Store(path, {"seed": 1, "sizes": (2, 8)}, resume=True)
    ran = []
    assert again.cell("done", lambda: ran.append("done") or {}) == {"tokens": 3}
    assert again.cell("broken", lambda: ran.append("broken") or {"tokens": 1}) == {"tokens": 1}
    assert ran == ["broken"]
    with pytest.raises(BadInput, match="not the cells of this run"):
        harness.Store(path, {"seed": 2, "sizes": (2, 8)}, resume=True)
    assert harness.Store(path, {"seed": 2}, resume=False).cells == {}  # no --resume: a fresh file
    assert len(path.read_text().splitlines()) == 1


# ---- the bootstrap interval ------------------------------------------------------------------

def test_interval_of_a_constant_sample_is_the_value():
    figure = stats.geometric_interval([1.5] * 6, 500, seed=0)
    assert figure["value"] == pytest.approx(1.5) and figure["low"] == pytest.approx(1.5)
    assert figure["high"] == pytest.approx(1.5) and figure["n"] == 6 and not figure["wide"]


def test_interval_of_two_values_spans_both():
    # Resamples of [1, 4] have geometric means 1, 2 or 4 with chances 1/4, 1/2, 1/4.
    figure = stats.geometric_interval([1.0, 4.0], 4000, seed=0)
    assert figure["value"] == pytest.approx(2.0)
    assert (figure["low"], figure["high"]) == pytest.approx((1.0, 4.0)) and figure["wide"]


def test_interval_of_a_lognormal_sample_matches_the_normal_theory():
    logs = np.random.default_rng(7).normal(0.3, 0.2, size=400)
    figure = stats.geometric_interval(np.exp(logs).tolist(), 4000, seed=1)
    half = 1.96 * logs.std() / math.sqrt(len(logs))
    assert figure["value"] == pytest.approx(math.exp(logs.mean()))
    assert math.log(figure["high"] / figure["low"]) / 2 == pytest.approx(half, rel=0.1)
    assert figure["low"] < figure["value"] < figure["high"] and not figure["wide"]


def test_interval_covers_the_true_geometric_mean_about_95_percent_of_the_time():
    generator = np.random.default_rng(3)
    covered = 0
    for trial in range(300):
        sample = np.exp(generator.normal(0.3, 0.2, size=30)).tolist()
        figure = stats.geometric_interval(sample, 1000, seed=trial)
        covered += figure["low"] < math.exp(0.3) < figure["high"]
    assert 0.88 <= covered / 300 <= 0.99


def test_pooled_interval_of_two_prompts_spans_both():
    # Resamples of prompts (2 tokens in 1 step, 8 in 2) pool to 2, 10/3 or 4 tokens per step.
    figure = stats.pooled_interval([2.0, 8.0], [1, 2], 4000, seed=0)
    assert figure["value"] == pytest.approx(10 / 3)
    assert (figure["low"], figure["high"]) == pytest.approx((2.0, 4.0)) and figure["wide"]
    same = stats.pooled_interval([2.0, 8.0], [1, 2], 4000, seed=0, base=([2.0, 8.0], [1, 2]))
    assert (same["value"], same["low"], same["high"]) == pytest.approx((1.0, 1.0, 1.0)) and not same["wide"]


def test_pooled_interval_matches_the_normal_theory():
    sums = np.random.default_rng(5).normal(20.0, 4.0, size=400)
    figure = stats.pooled_interval(sums.tolist(), [5] * 400, 4000, seed=2)
    half = 1.96 * sums.std() / math.sqrt(400) / 5
    assert figure["value"] == pytest.approx(sums.mean() / 5)
    assert (figure["high"] - figure["low"]) / 2 == pytest.approx(half, rel=0.1)
    # Over a base that is the same sample doubled, prompt for prompt: exactly one half.
    halved = stats.pooled_interval(sums.tolist(), [5] * 400, 500, seed=2, base=((2 * sums).tolist(), [5] * 400))
    assert (halved["value"], halved["low"], halved["high"]) == pytest.approx((0.5, 0.5, 0.5))


def test_one_value_has_no_interval_and_says_so():
    figure = stats.geometric_interval([2.0], 100, seed=0)
    assert figure["value"] == 2.0 and figure["low"] is None and figure["wide"]


@pytest.mark.parametrize("total, decoded, acceptance", [(80, 8, 16), (164, 8, 16), (80, 3, 1), (4, 3, 1), (10, 5, 5)])
def test_decoded_and_acceptance_prompts_are_disjoint_and_spread_over_the_set(total, decoded, acceptance):
    decode, held = harness.spread_prompts(total, decoded, acceptance)
    assert len(set(decode)) == decoded and len(set(held)) == acceptance
    assert not set(decode) & set(held) and set(decode) | set(held) <= set(range(total))
    # Each list reaches across the set: no gap between neighbours (or the ends) wider than an even
    # spacing's, plus one for a prompt the other list took.
    for chosen in (decode, held):
        bounds = [-1] + chosen + [total]
        assert max(b - a for a, b in zip(bounds, bounds[1:])) <= -(-total // len(chosen)) + 1


def test_mt_bench_is_decoded_one_prompt_per_category_and_measured_on_two():
    records = [json.loads(line) for line in (DATA_DIR / "mt_bench_question.jsonl").read_text().splitlines()]
    decode, held = harness.spread_prompts(len(records), 8, 16)
    categories = sorted({r["category"] for r in records})
    assert len(categories) == 8
    assert sorted(records[i]["category"] for i in decode) == categories
    assert sorted(records[i]["category"] for i in held) == sorted(categories * 2)


def test_a_set_too_small_for_the_bench_is_refused():
    with pytest.raises(BadInput, match="needs 8 \\+ 16 prompts per workload; the set has 20"):
        harness.spread_prompts(20, 8, 16)


# ---- whole runs --------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def tiny_pair():
    tokenizer = tiny_tokenizer()
    target = tiny_model("qwen2", vocab=len(tokenizer), seed=1, eos=tokenizer.eos_token_id, context=4096)
    return target, noisy_copy(target, 0.3), tokenizer


@pytest.fixture(scope="module")
def whole_run(tiny_pair, tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    ticks = []
    report = run_tiny(tiny_pair, out, TINY, tick=lambda label, weight: ticks.append(weight))
    return out, report, ticks


def cells_of(out) -> dict:
    lines = (out / bench.CELLS_FILE).read_text().splitlines()
    return {entry["key"]: entry["result"] for entry in map(json.loads, lines[1:])}


def test_whole_bench_on_a_tiny_pair(whole_run):
    out, report, ticks = whole_run
    assert report == out / "report.md"
    for name in ("scalability.png", "robustness.png", "bench.json", bench.CELLS_FILE):
        assert (out / name).stat().st_size > 0
    assert sum(ticks) == bench.total_work(TINY)
    text = report.read_text()
    for heading in ("## 1. Scalability", "## 2. Robustness", "## 3. Wall clock", "## 4. Hardware awareness",
                    "## 5. The DP itself", "## 6. Loop overhead"):
        section = text.split(heading, 1)[1].split("\n## ", 1)[0]
        assert "\n|---|" in section, heading  # each experiment has its table
    for workload in ("humaneval", "mt-bench"):
        for setting, title in (("greedy", "greedy"), ("sampled", "t=0.6 p=0.9")):
            table = text.split(f"### {workload}, {title}\n", 1)[1].split("\n#", 1)[0]
            lines = [line for line in table.splitlines() if line.startswith("| ") and "---" not in line]
            expected = [f"| {method}" for method in timing.wall_methods(setting, TINY)]
            assert [line.split(" | ")[0] for line in lines][1:] == expected
    assert "tiny-t" in text and "seed 3" in text and "load average" in text

    results = json.loads((out / "bench.json").read_text())
    assert not [r for key in ("scalability", "robustness", "wall_clock", "hardware") for r in results[key]
                if "error" in r]
    # Greedy: every method, ours and HF's, gives HF generate's tokens.
    greedy = [r for r in results["wall_clock"] if r["setting"] == "greedy"]
    assert {r["method"] for r in greedy} == set(timing.wall_methods("greedy", TINY))
    assert all(r["same_tokens"] in ("reference", "yes") for r in greedy)
    # The DP cells carry their prediction; the k x d cells their shape.
    for row in results["scalability"]:
        if row["family"] == "dp":
            assert row["predicted"] >= 1.0 and row["tree_size"] == row["size"]
        if row["family"] == "kxd":
            assert row["shape"] == "{}x{}".format(*harness.kxd_shape(row["size"]))
    for row in results["overhead"]:
        inside = row["target_seconds"] + row["draft_seconds"]
        assert row["outside_seconds"] == pytest.approx(row["wall_seconds"] - inside)


def test_every_method_of_a_prompt_ran_back_to_back_in_rotated_order(whole_run):
    out, _, _ = whole_run
    keys = [k for k in cells_of(out) if k.startswith("wall clock | mt-bench | greedy |")]
    methods = timing.wall_methods("greedy", TINY)
    expected = [f"wall clock | mt-bench | greedy | {name} | prompt {i}"
                for i in range(TINY.prompts) for name in harness.rotation(methods, i)]
    assert keys == expected


def test_the_reports_numbers_are_the_cells_measured(whole_run):
    out, report, _ = whole_run
    cells = cells_of(out)
    text = report.read_text()
    for workload in ("humaneval", "mt-bench"):
        def speeds(method, workload=workload):
            return [cells[f"wall clock | {workload} | greedy | {method} | prompt {i}"] for i in range(TINY.prompts)]
        ratios = [s["tokens"] / s["seconds"] / (b["tokens"] / b["seconds"])
                  for s, b in zip(speeds("Sequoia"), speeds("HF generate"))]
        expected = stats.geometric_interval(ratios, TINY.resamples, 3)
        table = text.split(f"### {workload}, greedy", 1)[1].split("###", 1)[0]
        line = next(line for line in table.splitlines() if line.startswith("| Sequoia |"))
        assert f"| {expected['value']:.2f}x [{expected['low']:.2f}, {expected['high']:.2f}]" in line
        tokens = sum(s["tokens"] for s in speeds("Sequoia"))
        assert line.split(" | ")[2] == str(tokens)
        steps = [cells[f"scalability | {workload} | t=1 p=1 | size 8 | dp | prompt {i}"]
                 for i in range(TINY.scale_prompts)]
        per_step = sum(sum(s["expected"]) for s in steps) / sum(s["steps"] for s in steps)
        row = next(line for line in text.split(f"**{workload}, temperature 1**", 1)[1].splitlines()
                   if line.startswith("| 8 |"))
        assert row.startswith(f"| 8 | {per_step:.2f} [")


def test_the_sweep_decodes_more_prompts_whose_first_are_experiment_3s(whole_run):
    out, _, _ = whole_run
    cells = cells_of(out)
    results = json.loads((out / "bench.json").read_text())
    assert TINY.sweep_prompts > TINY.prompts
    for workload in ("humaneval", "mt-bench"):
        chosen = results["prompts"][workload]
        assert len(chosen["decode"]) == TINY.sweep_prompts and not set(chosen["decode"]) & set(chosen["acceptance"])
        def outputs(block, method, count, workload=workload):
            return [cells[f"{block} | {workload} | greedy | {method} | prompt {i}"]["output"] for i in range(count)]
        # Greedy decoding is deterministic: the same prompt index is the same prompt in both blocks.
        assert outputs("sweep", "Sequoia", TINY.prompts) == outputs("wall clock", "Sequoia", TINY.prompts)
        assert outputs("sweep", "autoregressive", TINY.sweep_prompts)[:TINY.prompts] == outputs(
            "wall clock", "autoregressive", TINY.prompts)
        rows = [r for r in results["hardware"] if r["workload"] == workload]
        assert [r["tree"] for r in rows] == ["optimizer's pick"] + [hardware.sweep_name(*p) for p in TINY.sweep]
        sweep_rows = {r["method"]: r for r in results["sweep"] if r["workload"] == workload}
        for row in rows:
            method = "Sequoia" if row["tree"] == "optimizer's pick" else row["tree"]
            assert len(sweep_rows[method]["per_prompt"]) == TINY.sweep_prompts
            assert row["tokens_per_step"] == sweep_rows[method]["step_tokens_per_step"]
            # Decode's walk on the vector's own prompts: a step adds 1 to depth + 1 tokens.
            assert 1.0 <= row["replayed_tokens"]["value"] <= row["depth"] + 1
    assert "(the model's error)" in (out / "report.md").read_text()


def test_resume_runs_only_the_missing_cells(whole_run, tiny_pair, tmp_path, monkeypatch):
    out, _, _ = whole_run
    lines = (out / bench.CELLS_FILE).read_text().splitlines()
    keep = [line for line in lines if "| mt-bench | sampled |" not in line]  # as if stopped there
    (tmp_path / bench.CELLS_FILE).write_text("\n".join(keep) + "\n")
    decoded = []
    real = harness.decode_prompt
    monkeypatch.setattr(harness, "decode_prompt", lambda *a, **k: decoded.append(a[3]) or real(*a, **k))
    run_tiny(tiny_pair, tmp_path, TINY, resume=True)
    ours = [m for m in timing.wall_methods("sampled", TINY) if not m.startswith("HF")]  # HF's: not through us
    assert len(decoded) == len(ours) * TINY.prompts
    again = json.loads((tmp_path / "bench.json").read_text())
    first = json.loads((out / "bench.json").read_text())
    assert again["scalability"] == first["scalability"] and again["resumed"]
    assert len(cells_of(tmp_path)) == len(cells_of(out))


def test_some_experiments_run_alone_and_resume_into_all(whole_run, tiny_pair, tmp_path):
    out, _, _ = whole_run
    ticks = []
    wall_only = dataclasses.replace(TINY, experiments=bench.experiments_of("wall-clock,overhead"))
    assert wall_only == dataclasses.replace(TINY, experiments=(3, 6))  # chosen by name as by number
    report = run_tiny(tiny_pair, tmp_path, wall_only, tick=lambda label, weight: ticks.append(weight))
    assert sum(ticks) == bench.total_work(wall_only) < bench.total_work(TINY)
    text = report.read_text()
    assert "## 3. Wall clock" in text and "## 6. Loop overhead" in text and "experiments 3, 6 only" in text
    assert not any(f"## {n}." in text for n in (1, 2, 4, 5))
    assert not (tmp_path / "scalability.png").exists() and not (tmp_path / "robustness.png").exists()
    # No sweep without experiment 4, and only the vectors experiment 3 plans with.
    assert {k.split(" | ")[0] for k in cells_of(tmp_path)} == {"profile", "acceptance", "plan", "warm-up", "wall clock"}
    assert not [k for k in cells_of(tmp_path) if "DP size" in k or "t=1 p=1" in k]
    # Resuming into a run of all experiments reuses every cell and adds the others'.
    wall = cells_of(tmp_path)
    run_tiny(tiny_pair, tmp_path, TINY, resume=True)
    resumed = cells_of(tmp_path)
    assert set(resumed) == set(cells_of(out))
    assert all(resumed[key] == cell for key, cell in wall.items())  # timed cells kept, not run again


def test_the_offloaded_target_runs_against_its_own_autoregressive_decoding(tiny_pair, tmp_path, monkeypatch):
    target, draft, tokenizer = tiny_pair
    target.save_pretrained(tmp_path / "target")
    loaded = []
    real = offload.offloaded_target
    monkeypatch.setattr(offload, "offloaded_target", lambda *a: loaded.append(real(*a)) or loaded[-1])
    config = dataclasses.replace(TINY, experiments=(7,), offload_memory="20KB", offload_prompts=2, offload_tokens=8,
                                 offload_profile_max=8)
    ticks = []
    report = run_tiny(tiny_pair, tmp_path / "out", config, target_name=str(tmp_path / "target"),
                      tick=lambda label, weight: ticks.append(weight))
    # The bench loaded the target again by its name, most of it on disk, in a folder it removed afterwards.
    assert len(loaded) == 1 and "disk" in set(loaded[0].hf_device_map.values())
    assert loaded[0].dtype == torch.float32
    assert sum(ticks) == bench.total_work(config)
    result = json.loads((tmp_path / "out" / "bench.json").read_text())["offloaded"]
    assert result["workload"] == "humaneval" and result["profile"]["target"]["model"] == "target, offloaded"
    rows = {row["method"]: row for row in result["rows"]}
    assert rows["Sequoia"]["tree_size"] == len(result["plan"]["parents"])
    assert rows["Sequoia"]["same_tokens"] == "yes" and rows["autoregressive"]["same_tokens"] == "reference"
    assert rows["Sequoia"]["speedup"]["value"] > 0
    text = report.read_text()
    assert "## 7. Offloaded target" in text and "Optimizer's tree: size" in text
    assert not any(f"## {n}." in text for n in range(1, 7))


def test_an_offloaded_target_that_cannot_load_fails_its_experiment_not_the_run(tiny_pair, tmp_path):
    config = dataclasses.replace(TINY, experiments=(5, 7))
    ticks = []
    report = run_tiny(tiny_pair, tmp_path, config, target_name=str(tmp_path / "no-such-model"),
                      tick=lambda label, weight: ticks.append(weight))
    assert sum(ticks) == bench.total_work(config)
    result = json.loads((tmp_path / "bench.json").read_text())
    assert result["offloaded"]["error"].startswith("failed: BadInput: target") and result["dp"]
    text = report.read_text()
    assert "## 5. The DP itself" in text and "## 7. Offloaded target" in text and "failed: BadInput" in text


def test_spec_bench_decodes_each_subtask_and_both_mt_bench_turns_as_autoregressive_decoding_does(tmp_path):
    tokenizer = tiny_tokenizer()  # bytes as tokens: Spec-Bench's long articles need a long context
    target = tiny_model("qwen2", vocab=len(tokenizer), seed=1, eos=tokenizer.eos_token_id, context=8192)
    config = dataclasses.replace(TINY, experiments=bench.experiments_of("spec-bench"))
    ticks = []
    report = run_tiny((target, noisy_copy(target, 0.3), tokenizer), tmp_path, config,
                      tick=lambda label, weight: ticks.append(weight))
    assert sum(ticks) == bench.total_work(config)
    found = json.loads((tmp_path / "bench.json").read_text())["spec_bench"]
    decoded, measured = spec_bench.sizes(config)
    for chosen in found["questions"].values():
        assert len(chosen["decode"]) == decoded and len(chosen["acceptance"]) == measured
        assert not set(chosen["decode"]) & set(chosen["acceptance"])
    assert found["vector"]["prompts"] == measured * len(SPEC_BENCH_SUBTASKS)
    rows = {(r["subtask"], r["method"]): r for r in found["rows"]}
    assert set(rows) == {(s, m) for s in (*SPEC_BENCH_SUBTASKS, "overall") for m in spec_bench.METHODS}
    count = decoded * len(SPEC_BENCH_SUBTASKS)
    for (subtask, method), row in rows.items():
        assert "error" not in row, row
        questions = count if subtask == "overall" else decoded
        # Greedy in float32: every method's output, HF generate's included, is autoregressive decoding's.
        assert row["same_as_autoregressive"] == ("reference" if method == "autoregressive"
                                                 else f"{questions} of {questions}")
        assert len(row["per_prompt"]) == questions
    assert rows["overall", "Sequoia"]["tokens"] == sum(rows[s, "Sequoia"]["tokens"] for s in SPEC_BENCH_SUBTASKS)
    cells = cells_of(tmp_path)
    first = next(key for key in cells if key.startswith("spec-bench | autoregressive | prompt 0"))
    assert len(cells[first]["turn_tokens"]) == 2  # MT-Bench's question: both turns
    assert all(len(cells[f"spec-bench | autoregressive | prompt {i}"]["turn_tokens"]) == 1
               for i in range(decoded, count))
    text = report.read_text()
    assert "## 9. Spec-Bench" in text and "| overall | Sequoia |" in text


def test_dynamic_trees_run_beside_the_static_tree_with_the_calibrations_error(tiny_pair, tmp_path):
    config = dataclasses.replace(TINY, experiments=bench.experiments_of("dynamic"))
    ticks = []
    report = run_tiny(tiny_pair, tmp_path, config, tick=lambda label, weight: ticks.append(weight))
    assert sum(ticks) == bench.total_work(config)
    rows = json.loads((tmp_path / "bench.json").read_text())["dynamic"]
    assert [(r["workload"], r["setting"], r["method"]) for r in rows] == [
        (w, s, m) for w in ("humaneval", "mt-bench") for s in ("greedy", "sampled") for m in dynamic_trees.METHODS]
    for row in rows:
        assert "error" not in row, row
        if row["setting"] == "greedy" and row["method"] != "HF generate":
            assert row["same_as_autoregressive"] == "yes"
        if row["method"] == "dynamic":
            assert row["plan"]["children"] >= 1 and 0 <= row["undrafted_share"] <= 1
            # Grown trees carry their calibration's prediction; a plan that falls back runs the static tree.
            assert ("calibration_error" in row) == (not row["plan"]["fallback"])
            assert row.get("calibration_error", 0) > -1
            # The draft's forwards, counted at the model, include one prompt read (prefill) per prompt.
            levels = max(len(row["plan"]["widths"]), row["plan"]["static_depth"])
            prefills = len(row["per_prompt"]) / row["steps"]
            assert 0 <= row["draft_forwards_per_step"] <= levels + prefills
    # Its vectors are its own, each with a calibration, on a quarter of the acceptance prompts.
    vectors = [key for key in cells_of(tmp_path) if "acceptance" in key]
    assert vectors == [f"dynamic | acceptance | {w} | {s}" for w in ("humaneval", "mt-bench")
                       for s in ("greedy", "t=0.6 p=0.9")]
    measured = json.loads((tmp_path / "bench.json").read_text())["dynamic_vectors"]
    assert len(measured) == 4 and all(sum(v["calibration"]["tried"]) > 0 for v in measured)
    text = report.read_text()
    assert "## 10. Dynamic trees" in text and "- calibration, humaneval at greedy (" in text


def test_memory_runs_each_stage_in_a_process_of_its_own_and_reports_its_peak(tiny_pair, tmp_path):
    target, draft, tokenizer = tiny_pair
    for role, model in (("target", target), ("draft", draft)):
        model.save_pretrained(tmp_path / role)
        tokenizer.save_pretrained(tmp_path / role)
    setups = {"draft": {"quantize": "none", "vocab": None},
              "target": {"quantize": "none", "vocab": None, "placement": None}}
    resolved = Resolved(str(tmp_path / "draft"), str(tmp_path / "target"), setups, "cpu", "float32")
    config = dataclasses.replace(TINY, experiments=bench.experiments_of("memory"))
    plan = bench.prepare(str(tmp_path / "out"), config, 3, NAMES, "float32")
    held = torch.ones(2**28)  # 1 GiB resident in the bench's process, none of it the stages'
    report = bench.bench(plan, Loaded(resolved, target, draft, tokenizer))
    rows = json.loads((tmp_path / "out" / "bench.json").read_text())["memory"]
    assert [row["stage"] for row in rows] == list(memory.STAGES)
    for row in rows:
        assert "error" not in row, row
        # The interpreter and torch alone hold a hundred MiB; the peak is at least the set-up models,
        # and is the stage's own, not the process's it was started from.
        assert 0.1 < row["set_up_gib"] <= row["peak_gib"] < held.numel() * 4 / 2**30
    text = report.read_text()
    assert "## 11. Memory" in text and "| measure-acceptance |" in text


def test_a_stage_that_cannot_load_fails_its_memory_row_not_the_run(tiny_pair, tmp_path):
    setups = {"draft": {"quantize": "none", "vocab": None},
              "target": {"quantize": "none", "vocab": None, "placement": None}}
    resolved = Resolved(str(tmp_path / "no-draft"), str(tmp_path / "no-target"), setups, "cpu", "float32")
    config = dataclasses.replace(TINY, experiments=(5, 11))
    plan = bench.prepare(str(tmp_path / "out"), config, 3, NAMES, "float32")
    report = bench.bench(plan, Loaded(resolved, *tiny_pair))
    rows = json.loads((tmp_path / "out" / "bench.json").read_text())["memory"]
    assert all("no such folder" in row["error"] for row in rows)
    assert "## 5. The DP itself" in report.read_text()


ALL = "scalability,robustness,wall-clock,hardware,dp,overhead,offload"


@pytest.mark.parametrize("text, chosen", [("wall-clock,hardware", (3, 4)), ("3,4,6", (3, 4, 6)),
                                          ("overhead, 3", (3, 6)), ("Wall-Clock,4", (3, 4)), ("5", (5,)),
                                          ("dp,5,dp", (5,)), (ALL, (1, 2, 3, 4, 5, 6, 7)),
                                          ("1,2,3,4,5,6,7", (1, 2, 3, 4, 5, 6, 7))])
def test_experiments_are_chosen_by_name_or_number(text, chosen):
    assert bench.experiments_of(text) == chosen


def test_a_run_chosen_by_name_is_the_run_chosen_by_number(tmp_path):
    assert bench.mode(False, "wall-clock,hardware,overhead") == bench.mode(False, "3,4,6") == dataclasses.replace(
        bench.FULL, experiments=(3, 4, 6))
    assert bench.mode(True, "offload") == dataclasses.replace(bench.QUICK, experiments=(7,))
    assert bench.mode(True) == bench.QUICK and bench.mode(False) == bench.FULL
    # The same run's identity, whichever experiments run: it resumes into the others.
    first = bench.prepare(str(tmp_path / "a"), bench.mode(True, "wall-clock,overhead"), 0, NAMES, "float32", False)
    second = bench.prepare(str(tmp_path / "b"), bench.mode(True, "3,6"), 0, NAMES, "float32", False)
    assert first.config == second.config and first.work == second.work == bench.total_work(second.config)
    assert first.store.path.read_text() == second.store.path.read_text()
    all_of_them = bench.prepare(str(tmp_path / "a"), bench.mode(True), 0, NAMES, "float32", True)
    assert all_of_them.store.path.read_text() == first.store.path.read_text()


@pytest.mark.parametrize("text, message", [("3,x", "no experiment 'x'"), ("wallclock", "no experiment 'wallclock'"),
                                           ("3,12", "no experiment '12'"), ("", "no experiment ''"),
                                           ("3,,4", "no experiment ''")])
def test_an_unknown_experiment_is_named_with_the_valid_ones(text, message):
    with pytest.raises(BadInput, match=message) as refused:
        bench.experiments_of(text)
    assert "1 scalability, 2 robustness, 3 wall-clock, 4 hardware, 5 dp, 6 overhead, 7 offload" in str(refused.value)
    assert refused.value.worded_as_options().startswith(f"--experiments '{text}': ")
    assert "\n" not in str(refused.value)


@pytest.mark.parametrize("chosen, message", [((4,), "need 3"), ((6,), "need 3"), ((4, 5), r"need 3 \(wall-clock\)"),
                                             ((3, 6, 12), "no experiment 12; choose among 1 scalability"),
                                             ((), "choose among 1 scalability")])
def test_experiments_that_cannot_run_are_refused(chosen, message):
    with pytest.raises(BadInput, match=message):
        bench.check_experiments(chosen)


@pytest.mark.parametrize("text", ["hardware", "overhead", "dp,hardware", "4,6", "1,2,4,5,6,7"])
def test_an_experiment_is_refused_without_those_it_reads(text):
    with pytest.raises(BadInput, match=r"4 and 6 need 3 \(wall-clock\) in the same run: 4 \(hardware\) reads"):
        bench.experiments_of(text)


def test_a_failed_cell_says_so_and_the_run_goes_on(tiny_pair, tmp_path, monkeypatch):
    def broken(size, k=2):
        raise RuntimeError("boom\nsecond line")

    def no_vector(*args, **kwargs):
        raise ValueError("no acceptance today")

    monkeypatch.setattr(step_counts, "kary_parents", broken)  # every top-2 tree cell raises
    monkeypatch.setattr(shared, "measure_acceptance", no_vector)
    config = dataclasses.replace(TINY, prompts=2, sizes=(4,))
    report = run_tiny(tiny_pair, tmp_path, config, seed=0, names={})
    results = json.loads((tmp_path / "bench.json").read_text())
    assert all(r["error"] == "failed: RuntimeError: boom" for r in results["scalability"] if r["family"] == "topk")
    # Without a vector there is no DP tree and no optimizer's tree; every other method still ran.
    assert all("no acceptance today" in r["error"] for r in results["robustness"] + results["hardware"])
    assert all("no acceptance today" in r["error"] for r in results["scalability"] if r["family"] == "dp")
    assert all("error" not in r for r in results["scalability"] if r["family"] in ("kxd", "chain"))
    failed = {r["method"] for r in results["wall_clock"] if "error" in r}
    assert failed == {"Sequoia"} | {harness_name for harness_name in timing.wall_methods("greedy", config)
                                    if harness_name.startswith("DP size")}
    text = report.read_text()
    assert "failed: ValueError: no acceptance today" in text and "failed: RuntimeError: boom" in text


def test_bench_command_bad_input_is_one_line(pair, tmp_path):
    run = sequoia("bench", "--pair", "qwen2.5-coder", "--draft", "x")
    assert_one_line_error(run, "--pair sets both models")
    draft, target = pair
    (tmp_path / bench.CELLS_FILE).write_text('{"run": {"seed": 99}}\n')
    run = sequoia("bench", "--draft", draft, "--target", target, "--out-dir", tmp_path, "--resume", "--quick")
    assert_one_line_error(run, "cells.jsonl", "not the cells of this run")
    for chosen, message in (("3,x", "separated by commas"), ("6", "need 3")):
        run = sequoia("bench", "--draft", draft, "--target", target, "--out-dir", tmp_path, "--experiments", chosen)
        assert_one_line_error(run, "--experiments", message)


def test_a_default_run_writes_where_git_ignores():
    ignored = (Path(__file__).resolve().parent.parent / ".gitignore").read_text().split()
    assert bench.DEFAULT_OUT_DIR.split("/")[0] + "/" in ignored
