"""Experiment 8, engines: the engines of the bench's device side by side (kv.py: eager and static
on a CPU, eager and cuda-graphs on CUDA). Each engine gets its own profile and optimize's greedy
tree for it, as a user running that engine would; per workload, the engines decode the same
prompts back to back in rotated order. Reported per engine: the draft's and the target's t(1),
Sequoia tokens/s and its speedup over the eager engine (paired by prompt), and start-up: a fresh
engine's first token (its caches allocated, on CUDA its forwards captured), prefill included."""

from functools import partial

from sequoia_cli.stages.bench.harness import Config, Run, decode_one, run_block
from sequoia_cli.stages.bench.shared import SETTINGS, WORKLOADS, Bench, failing, interval_row, plan_of, profile_work
from sequoia_cli.stages.bench.stats import failure, geometric_interval
from sequoia_cli.stages.bench.tables import interval, markdown_table, number

from sequoia_cli.devices import input_device
from sequoia_cli.kv import engines_served

GREEDY = SETTINGS["greedy"]


def engines_settings(config: Config) -> list:
    return [GREEDY]


def engines_work(config: Config) -> int:
    """The profiles', then per workload each engine's decodes and first tokens."""
    return 2 * config.new_tokens + len(WORKLOADS) * 2 * config.prompts * (config.new_tokens + 1)


def first_token(run: Run, index: int, parents: list[int], engine: str) -> dict:
    """A fresh engine's first token on prompt `index`: seconds from no caches to the token."""
    run.caches.pop(engine, None)
    record = decode_one(run, index, parents, GREEDY, 1, engine=engine)
    return {"seconds": record["seconds"], "prefill_seconds": record["prefill_seconds"]}


def run_engines(bench: Bench) -> None:
    config, engines = bench.config, engines_served(input_device(bench.loaded.target))
    profiles = {}
    for engine in engines:
        profiles[engine] = bench.store.cell(f"engines | profile | {engine}", profile_work(
            bench, bench.runs, bench.loaded.target, "target", config.profile_max, config.new_tokens, engine))
        bench.tick(f"engines: profile, {engine}", config.new_tokens)
    for run in bench.runs:
        plans = {engine: bench.store.cell(f"engines | plan | {run.workload} | {engine}", partial(
            plan_of, bench.vectors[run.workload], GREEDY, profiles[engine])) for engine in engines}
        block = f"engines | {run.workload}"
        decodes = run_block(bench.store, block, {
            engine: cell(plans[engine], partial(decode_one, run, sampling=GREEDY, new_tokens=config.new_tokens,
                                                engine=engine)) for engine in engines},
            config.prompts, bench.tick, config.new_tokens)
        starts = run_block(bench.store, f"{block} | first token", {
            engine: cell(plans[engine], partial(first_token, run, engine=engine)) for engine in engines},
            config.prompts, bench.tick, 1)
        for engine in engines:
            bench.results["engines"].append(engine_row(run, engine, profiles[engine], plans[engine], decodes,
                                                       starts[engine], config.resamples))


def cell(plan: dict, work):
    """A block's method: `work` on the plan's tree, or every prompt failing with the plan's reason."""
    return failing(plan["error"]) if "error" in plan else partial(work, parents=plan["parents"])


def engine_row(run: Run, engine: str, profile: dict, plan: dict, decodes: dict, starts: list[dict],
               resamples: int) -> dict:
    """One engine's row: its t(1)s, tree, tokens/s with the speedup over eager, and start-up."""
    row = {"workload": run.workload, "engine": engine}
    if "error" in plan:
        return {**row, "error": plan["error"]}
    error = failure(starts)
    row.update(target_t1_ms=profile["target"]["ms"]["1"], draft_t1_ms=profile["draft"]["ms"]["1"],
               tree_size=len(plan["parents"]), parents=plan["parents"], predicted_speedup=plan["plan"]["speedup"],
               first_token_seconds={"error": error} if error else geometric_interval(
                   [r["seconds"] for r in starts], resamples, run.seed))
    return {**row, **interval_row(decodes[engine], resamples, run.seed, base=decodes["eager"])}


ABOUT = ("Each engine with its own profile and optimize's greedy tree for it; the engines decode the same"
         " prompts back to back in rotated order. Speedup: Sequoia tokens/s over the eager engine's, paired by"
         " prompt (geometric mean, bootstrap interval). First token: a fresh engine (new caches; on CUDA its"
         " forwards captured) to its first token, prefill included.")


def engines_section(results: dict) -> str:
    header = ["workload", "engine", "draft t(1) ms", "target t(1) ms", "tree size", "predicted speedup",
              "tokens/s", "vs eager", "first token s"]
    lines = [[r["workload"], r["engine"], number(r.get("draft_t1_ms"), 1), number(r.get("target_t1_ms"), 1),
              str(r.get("tree_size", "-")), number(r.get("predicted_speedup")), interval(r, "tokens_per_second"),
              interval(r, "speedup"), interval(r, "first_token_seconds", 3)]
             for r in results.get("engines", [])]
    return ABOUT + "\n\n" + markdown_table(header, lines)
