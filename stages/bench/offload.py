"""Experiment 7, the offloaded target: the same target loaded again with most of its weights in a
folder on disk, streamed in at every forward (the CPU analogue of the paper's offloading setting,
where a forward costs nearly the same for 1 token as for hundreds). On HumanEval, greedy: its
profile with the draft, the optimizer's tree for that profile, and that tree against autoregressive
decoding of the same offloaded target, interleaved per prompt."""

import tempfile
from dataclasses import replace
from functools import partial

from sequoia_cli.stages.bench.harness import Config, Run, decode_one, run_block
from sequoia_cli.stages.bench.shared import SETTINGS, Bench, failing, interval_row, plan_of, profile_work
from sequoia_cli.stages.bench.stats import failure, first_difference

from sequoia_cli.errors import one_line
from sequoia_cli.layout import tree_layout
from sequoia_cli.loading import Resolved
from sequoia_cli.models import device_of, dtype_of, load_model, placement_of

WORKLOAD = "humaneval"


def offload_work(config: Config) -> int:
    """Experiment 7's weight (one workload): its profile and its two methods' tokens."""
    return config.offload_tokens + 2 * config.offload_prompts * config.offload_tokens


def offload_settings(config: Config) -> list:
    return [SETTINGS["greedy"]]


def offloaded_target(resolved: Resolved, memory: str, folder: str):
    """The target loaded again by name, on its device and in its dtype, with `memory` of CPU memory
    (accelerate's `device_map="auto"`) and the rest of its weights in `folder`."""
    placement = placement_of("auto", f"cpu={memory}", folder)
    return load_model(resolved.target_name, "target", device_of(resolved.device), dtype_of(resolved.dtype),
                      placement)


def offloaded(bench: Bench, run: Run, target) -> dict:
    """Experiment 7 with `target` (the same model, offloaded): {"workload", "memory", "profile",
    "plan", "rows"}, the rows those of autoregressive decoding and of the optimizer's tree."""
    config, vectors = bench.config, bench.vectors[run.workload]
    placed = replace(run, target=target)
    head = replace(run, prompt_ids=run.prompt_ids[:config.offload_prompts])
    profile = bench.store.cell(f"offloaded | {run.workload} | profile", profile_work(
        bench, [head], target, "target, offloaded", config.offload_profile_max, config.offload_tokens))
    bench.tick(f"{run.workload}: offloaded profile", config.offload_tokens)
    plan = bench.store.cell(f"offloaded | {run.workload} | plan", partial(plan_of, vectors, SETTINGS["greedy"],
                                                                          profile))
    trees = {"autoregressive": [-1], "Sequoia": plan.get("parents") or plan["error"]}
    methods = {name: failing(tree) if isinstance(tree, str) else partial(
        decode_one, placed, parents=tree, sampling=SETTINGS["greedy"], new_tokens=config.offload_tokens)
        for name, tree in trees.items()}
    results = run_block(bench.store, f"offloaded | {run.workload} | greedy", methods, config.offload_prompts,
                        bench.tick, config.offload_tokens)
    reference = results["autoregressive"]
    rows = []
    for name, tree in trees.items():
        row = {"workload": run.workload, "method": name}
        if isinstance(tree, list):
            row.update(tree_size=len(tree), depth=tree_layout(tree).depth)
        row.update(interval_row(results[name], config.resamples, run.seed, base=reference))
        if "error" not in row and not failure(reference):
            row["same_tokens"] = ("reference" if name == "autoregressive" else first_difference(
                [r["output"] for r in results[name]], [r["output"] for r in reference]))
        rows.append(row)
    return {"workload": run.workload, "memory": config.offload_memory, "profile": profile, "plan": plan, "rows": rows}


def run_offload(bench: Bench) -> None:
    """Experiment 7: load the offloaded target into a folder removed afterwards, then measure it."""
    bench.tick(f"{WORKLOAD}: loading the target again, offloaded", 0)
    with tempfile.TemporaryDirectory(prefix="sequoia-offload-") as folder:
        try:
            target = offloaded_target(bench.loaded.resolved, bench.config.offload_memory, folder)
        except Exception as error:  # a target that cannot be placed fails this experiment, not the run
            bench.results["offloaded"] = {"error": f"failed: {one_line(error)}"}
            bench.tick(f"{WORKLOAD}: offloaded target failed", offload_work(bench.config))
            return
        bench.results["offloaded"] = offloaded(bench, bench.run_of(WORKLOAD), target)
