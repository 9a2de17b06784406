"""The clocked experiments' common block and three of them: 3, wall clock (tokens/s of our decode
loop against Hugging Face's `generate`, plain and assisted, greedy and sampled); 5, the DP's own run
time; 6, the decode loop's time outside the model forwards (read from 3's runs). Experiment 4
(hardware.py) times its sweep in `timed_block` too."""

import time
from functools import partial

import numpy as np
from sequoia_cli.stages.bench.harness import Config, Run, decode_one, hf_one, kxd_parents, run_block
from sequoia_cli.stages.bench.shared import (
    SETTINGS,
    WORKLOADS,
    Bench,
    failing,
    interval_row,
    paired_interval,
    plan_of,
    profile_work,
    speed,
    step_speed,
)
from sequoia_cli.stages.bench.stats import failure, first_difference, pooled_interval

from sequoia_cli.layout import tree_layout
from sequoia_cli.sampling import Sampling
from sequoia_cli.tree import best_tree, chain_parents, tree_table

WALL_METHODS = ("HF generate", "HF assisted", "autoregressive", "chain 4", "SpecInfer 4x4", "Sequoia")
WARMUP_TOKENS = 8


def wall_methods(setting: str, config: Config) -> list[str]:
    """Experiment 3's methods at `setting`: all when greedy; sampled, those of `config.sampled_methods`."""
    if setting == "greedy":
        return list(WALL_METHODS)
    return [m for m in WALL_METHODS if not config.sampled_methods or m in config.sampled_methods]


def wall_trees(plan: dict) -> dict:
    """Experiment 3's method name -> its tree (None for Hugging Face's, a reason where the tree
    could not be had)."""
    return {"HF generate": None, "HF assisted": None, "autoregressive": [-1], "chain 4": chain_parents(4),
            "SpecInfer 4x4": kxd_parents(4, 4), "Sequoia": plan.get("parents") or plan["error"]}


def wall_clock_settings(config: Config) -> list[Sampling]:
    return list(SETTINGS.values())


def wall_clock_work(config: Config) -> int:
    """Experiment 3's weight: the profile's, then per workload the warm-up's and every cell's tokens."""
    wall = config.prompts * config.new_tokens * sum(len(wall_methods(s, config)) for s in SETTINGS)
    return config.new_tokens + len(WORKLOADS) * (wall + 2 * WARMUP_TOKENS)


def timed_block(bench: Bench, run: Run, block: str, trees: dict, setting: str, prompts: int,
                new_tokens: int) -> list[dict]:
    """Each method (a tree, or None for Hugging Face's `generate`) on the first `prompts` prompts,
    the methods of a prompt back to back in rotated order: a row per method, with speedups over
    HF generate (where it ran) and over our autoregressive loop. `setting`: a key of SETTINGS."""
    config, sampling = bench.config, SETTINGS[setting]
    methods = {}
    for name, tree in trees.items():
        if tree is None:
            methods[name] = partial(hf_one, run, sampling=sampling, new_tokens=new_tokens,
                                    assisted=name == "HF assisted")
        elif isinstance(tree, str):
            methods[name] = failing(tree)
        else:
            method = "specinfer" if name.startswith("SpecInfer") else "sequoia"
            methods[name] = partial(decode_one, run, parents=tree, new_tokens=new_tokens,
                                    sampling=Sampling(sampling.temperature, sampling.top_p, method))
    results = run_block(bench.store, block, methods, prompts, bench.tick, new_tokens)
    reference, ours = results.get("HF generate"), results["autoregressive"]
    rows = []
    for name, tree in trees.items():
        row = {"workload": run.workload, "setting": setting, "method": name}
        if isinstance(tree, list):
            row.update(tree_size=len(tree), depth=tree_layout(tree).depth, parents=tree)
        row.update(interval_row(results[name], config.resamples, run.seed, base=reference))
        if reference and sampling.greedy and "error" not in row and not failure(reference):
            row["same_tokens"] = ("reference" if name == "HF generate" else first_difference(
                [r["output"] for r in results[name]], [r["output"] for r in reference]))
        row["vs_autoregressive"] = paired_interval(results[name], ours, speed, config.resamples, run.seed)
        if all(r and "prefill_seconds" in r for r in results[name] + ours):
            row["steps_vs_autoregressive"] = paired_interval(results[name], ours, step_speed, config.resamples,
                                                             run.seed)
        if not failure(results[name]) and all(r and "step_tokens" in r for r in results[name]):
            # Every step's tokens, before the cut at EOS or the budget: what the cost model predicts.
            row["step_tokens_per_step"] = pooled_interval([r["step_tokens"] for r in results[name]],
                                                          [r["steps"] for r in results[name]], config.resamples,
                                                          run.seed)
        rows.append(row)
    return rows


def wall_clock(bench: Bench, run: Run) -> dict[str, list[dict]]:
    """Experiment 3 on one workload: the optimizer's tree for each setting, then each method on the
    same prompts after one untimed warm-up. {setting: rows}."""
    config, plans = bench.config, bench.results["plans"].setdefault(run.workload, {})
    for setting, sampling in SETTINGS.items():
        plans[setting] = bench.store.cell(f"plan | {run.workload} | {setting}", partial(
            plan_of, bench.vectors[run.workload], sampling, bench.profile))
    bench.store.cell(f"warm-up | {run.workload}", lambda: {
        "ours": decode_one(run, 0, kxd_parents(2, 2), SETTINGS["greedy"], WARMUP_TOKENS)["tokens"],
        "hf": hf_one(run, 0, SETTINGS["greedy"], WARMUP_TOKENS, assisted=True)["tokens"]})
    bench.tick(f"{run.workload}: warm-up", 2 * WARMUP_TOKENS)
    tables = {}
    for setting in SETTINGS:
        trees = {name: tree for name, tree in wall_trees(plans[setting]).items()
                 if name in wall_methods(setting, config)}
        tables[setting] = timed_block(bench, run, f"wall clock | {run.workload} | {setting}", trees, setting,
                                      config.prompts, config.new_tokens)
    return tables


def run_wall_clock(bench: Bench) -> None:
    """Experiment 3: the profile both workloads plan with, then each workload's blocks."""
    config = bench.config
    bench.profile = bench.store.cell("profile", profile_work(bench, bench.runs, bench.loaded.target, "target",
                                                             config.profile_max, config.new_tokens))
    bench.tick("profile", config.new_tokens)
    for run in bench.runs:
        bench.wall_rows[run.workload] = wall_clock(bench, run)
        bench.results["wall_clock"] += [row for rows in bench.wall_rows[run.workload].values() for row in rows]


def loop_overhead(rows: list[dict]) -> list[dict]:
    """Experiment 6: the share of each of our greedy runs' wall time spent outside both models'
    forwards (drafting bookkeeping, masks, verification, cache trimming), timed through hooks."""
    out = []
    for row in rows:
        if "target_seconds" not in row or "error" in row:
            continue
        outside = row["seconds"] - row["target_seconds"] - row["draft_seconds"]
        out.append({"workload": row["workload"], "method": row["method"], "tree_size": row["tree_size"],
                    "wall_seconds": row["seconds"], "steps": row["steps"], "target_seconds": row["target_seconds"],
                    "draft_seconds": row["draft_seconds"], "draft_forwards": row["draft_forwards"],
                    "outside_seconds": outside, "outside_share": outside / row["seconds"],
                    "outside_ms_per_step": 1000 * outside / row["steps"]})
    return out


def run_overhead(bench: Bench) -> None:
    for run in bench.runs:
        bench.results["overhead"] += loop_overhead(bench.wall_rows[run.workload]["greedy"])


def dp_timing(config: Config, seed: int) -> list[dict]:
    """Experiment 5: wall time of the DP (tree_table) and of rebuilding the tree (best_tree)."""
    generator = np.random.default_rng(seed)
    vector = sorted(generator.dirichlet(np.ones(config.dp_width + 1))[:config.dp_width], reverse=True)
    rows = []
    for size in config.dp_sizes:
        started = time.perf_counter()
        table = tree_table(vector, size, config.dp_depth)
        built = time.perf_counter()
        best_tree(table, size, config.dp_depth)
        rows.append({"size": size, "depth": config.dp_depth, "width": config.dp_width,
                     "table_seconds": built - started, "tree_seconds": time.perf_counter() - built,
                     "expected": float(table.expected[config.dp_depth, size])})
    return rows


def run_dp(bench: Bench) -> None:
    bench.results["dp"] = dp_timing(bench.config, bench.seed)
    bench.tick("DP timing", 1)
