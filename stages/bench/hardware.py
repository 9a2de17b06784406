"""Experiment 4, hardware awareness, greedy: the optimizer's pick (experiment 3's tree, from 3's
profile and vector) against a sweep of DP trees of other sizes and depths, timed in a block of their
own beside our autoregressive loop, with the speedup and tokens per step the cost model predicts."""

from functools import partial

from sequoia_cli.stages.bench.harness import Config, Run
from sequoia_cli.stages.bench.shared import SETTINGS, WORKLOADS, Bench, setting_name, tree_or_reason, vector_of
from sequoia_cli.stages.bench.stats import pooled_interval
from sequoia_cli.stages.bench.timing import timed_block

from sequoia_cli.acceptance import replayed, rows_met
from sequoia_cli.artifacts import timings
from sequoia_cli.cost import predicted_speedup
from sequoia_cli.tree import dp_tree, expected_tokens


def sweep_name(size: int, depth: int) -> str:
    return f"DP size {size}, depth <= {depth}"


def hardware_work(config: Config) -> int:
    """Experiment 4's weight on both workloads: autoregressive, the pick and the sweep's trees."""
    return len(WORKLOADS) * config.sweep_prompts * config.sweep_tokens * (2 + len(config.sweep))


def sweep_trees(plan: dict, config: Config, vectors: dict) -> dict:
    """Experiment 4's method name -> its tree: ours autoregressive, the optimizer's pick and the
    sweep's DP trees from the greedy vector."""
    trees = {"autoregressive": [-1], "Sequoia": plan.get("parents") or plan["error"]}
    for size, depth in config.sweep:
        trees[sweep_name(size, depth)] = tree_or_reason(partial(greedy_dp_tree, vectors, size, depth))
    return trees


def greedy_dp_tree(vectors: dict, size: int, depth: int) -> list[int]:
    return dp_tree(vector_of(vectors, SETTINGS["greedy"]), size, depth)[0]


def sweep(bench: Bench, run: Run) -> list[dict]:
    """Experiment 4's greedy block on one workload: the optimizer's pick and the sweep's trees beside
    our autoregressive loop, on `config.sweep_prompts` prompts (more than experiment 3's: tokens per
    step differ between prompts by far more than the 5% a prediction is checked to)."""
    config = bench.config
    trees = sweep_trees(bench.results["plans"][run.workload]["greedy"], config, bench.vectors[run.workload])
    return timed_block(bench, run, f"sweep | {run.workload} | greedy", trees, "greedy", config.sweep_prompts,
                       config.sweep_tokens)


def hardware(rows: list[dict], profile: dict, vectors: dict, resamples: int, seed: int) -> list[dict]:
    """Experiment 4's rows from its block (`sweep`): for the optimizer's pick and each of the sweep's
    DP trees, the measured speedup over our autoregressive loop beside the cost model's prediction
    (the steps alone, as the model predicts them, and with the prompts' prefill), and measured tokens
    per step beside both predictions (positional, and by level: the rows each tree meets on the
    vector's ranks, `acceptance.rows_met`; the cost model uses the latter). Between them, the tokens
    per step greedy decode realizes on the vector's own prompts (`acceptance.replayed`, with its
    interval over those prompts): the prediction's distance to it is the model's error, its
    distance to the measured one the difference between the two sets of prompts."""
    out = []
    for row in rows:
        if row["method"] != "Sequoia" and not row["method"].startswith("DP size"):
            continue
        entry = {"tree": "optimizer's pick" if row["method"] == "Sequoia" else row["method"]}
        if "error" in row:
            out.append({**entry, "error": row["error"]})
            continue
        positional = vector_of(vectors, SETTINGS["greedy"])
        vector = vectors[setting_name(SETTINGS["greedy"])]
        by_level = rows_met(row["parents"], vector) if vector.get("ranks") else vector.get("acceptance_by_level")
        entry.update(tree_size=row["tree_size"], depth=row["depth"],
                     tokens_per_step=row.get("step_tokens_per_step", row["tokens_per_step"]),
                     predicted_tokens=expected_tokens(row["parents"], positional),
                     speedup=row.get("steps_vs_autoregressive", row["vs_autoregressive"]),
                     speedup_with_prefill=row["vs_autoregressive"])
        if by_level:
            entry["predicted_tokens_by_level"] = expected_tokens(row["parents"], by_level)
        walked = [replayed(row["parents"], ranks) for ranks in vector.get("ranks", {}).values()]
        if sum(steps for _, steps in walked):
            entry["replayed_tokens"] = pooled_interval(*zip(*walked), resamples, seed)
        if "error" not in profile:
            entry["predicted_speedup"] = predicted_speedup(row["parents"], by_level or positional,
                                                           timings(profile["target"]), timings(profile["draft"]))
        out.append(entry)
    measured = sorted((r for r in out if "value" in r.get("speedup", {})), key=lambda r: -r["speedup"]["value"])
    for rank, entry in enumerate(measured, start=1):
        entry["rank"] = rank
    return out


def run_hardware(bench: Bench) -> None:
    for run in bench.runs:
        swept = sweep(bench, run)
        bench.results["sweep"] += swept
        bench.results["hardware"] += [
            {"workload": run.workload, **row}
            for row in hardware(swept, bench.profile, bench.vectors[run.workload], bench.config.resamples, run.seed)]
