"""bench: the paper's claims measured on one model pair and two workloads (HumanEval, MT-Bench),
every figure side by side in one run, with bootstrap intervals over the prompts.

`harness` holds the cells, the interleaved blocks, the resumable store and the statistics,
`experiments` the six experiments (which call the stages), `report` the markdown, JSON and plots.
Every number comes from this run: a cell that raised says "failed: ..." in its place.
"""

import time
from dataclasses import asdict
from pathlib import Path

from sequoia_cli.engine import context_length, input_device
from sequoia_cli.models import encode_prompts, eos_ids
from sequoia_cli.prompts import load_prompts
from stages.bench.experiments import (WORKLOADS, acceptance_vectors, dp_timing, hardware, loop_overhead,
                                      measure_profile, offload_units, offloaded, plan_trees, prompt_indices, robustness,
                                      scalability, sweep, wall_clock, work_units)
from stages.bench.harness import FULL, QUICK, Config, Run, Store, check_experiments, load_average, machine
from stages.bench.report import write_report

__all__ = ["FULL", "QUICK", "CELLS_FILE", "Config", "check_experiments", "open_store", "total_work", "run_bench"]

CELLS_FILE = "cells.jsonl"


def total_work(config: Config) -> int:
    """The sum of the weights `run_bench` ticks, for a progress bar."""
    profile = config.new_tokens if 3 in config.experiments else 0
    return len(WORKLOADS) * work_units(config) + profile + (5 in config.experiments) + offload_units(config)


def open_store(out_dir: str, config: Config, seed: int, names: dict, dtype: str, resume: bool) -> Store:
    """`out_dir`/cells.jsonl for this run (mode, seed, models, dtype): with `resume`, the cells an
    interrupted run of the same kind finished; else an empty file. A mismatch is bad input."""
    # Which experiments run is left out: a run of some of them resumes into a run of all.
    identity = {key: value for key, value in asdict(config).items() if key != "experiments"}
    return Store(Path(out_dir) / CELLS_FILE, {"config": identity, "prompts": prompt_indices(config), "seed": seed,
                                              "models": names, "dtype": dtype}, resume)


def run_bench(target, draft, tokenizer, out_dir: str, config: Config = QUICK, seed: int = 0,
              names: dict | None = None, dtype: str | None = None, resume: bool = False, tick=None,
              store: Store | None = None, offloaded_target=None) -> Path:
    """Run `config.experiments` on both workloads and write the report; returns report.md's path.
    Each finished cell goes to `out_dir`/cells.jsonl as it ends; `resume` reuses the cells found
    there (`store`: that file, opened already). `tick(label, weight)` is called after each cell;
    the weights sum to `total_work(config)`. Experiment 7 runs on HumanEval with
    `offloaded_target`: the same target, placed with `config.offload_memory` of CPU memory."""
    tick = tick or (lambda label, weight: None)
    started, load_at_start = time.perf_counter(), load_average()
    dtype = dtype or str(target.dtype).removeprefix("torch.")
    store = store or open_store(out_dir, config, seed, names or {}, dtype, resume)
    facts = machine(input_device(target), dtype)  # now: the commit the run's code came from
    context = min(context_length(target), context_length(draft))
    stop = eos_ids(target, tokenizer)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else min(stop, default=0)
    indices = prompt_indices(config)
    runs = []
    for workload, setup in WORKLOADS.items():
        texts = load_prompts(workload)
        decoded = [texts[i] for i in indices[workload]["decode"]]
        runs.append(Run(workload, target, draft, tokenizer,
                        encode_prompts(tokenizer, decoded, context, setup["chat_template"]),
                        [texts[i] for i in indices[workload]["acceptance"]], stop, pad, seed))

    chosen = config.experiments
    profile = measure_profile(store, runs, config, dtype) if 3 in chosen else {"error": "not measured"}
    tick("profile", config.new_tokens if 3 in chosen else 0)
    results = {key: [] for key in ("vectors", "scalability", "robustness", "wall_clock", "sweep", "hardware", "overhead",
                                   "dp")}
    results["offloaded"] = None
    plans = {}
    for run in runs:
        vectors = acceptance_vectors(store, run, config, tick)
        results["vectors"] += [{"workload": run.workload, "setting": name, **vector} for name, vector in vectors.items()]
        if 1 in chosen:
            results["scalability"] += scalability(store, run, config, vectors, tick)
        if 2 in chosen:
            results["robustness"] += robustness(store, run, config, vectors, tick)
        if 3 in chosen:
            plans[run.workload] = plan_trees(store, run, vectors, profile)
            tables = wall_clock(store, run, config, plans[run.workload], tick)
            results["wall_clock"] += [row for rows in tables.values() for row in rows]
        if 4 in chosen:
            swept = sweep(store, run, config, plans[run.workload]["greedy"], vectors, tick)
            results["sweep"] += swept
            results["hardware"] += [{"workload": run.workload, **row}
                                    for row in hardware(swept, profile, vectors, config.resamples, seed)]
        if 6 in chosen:
            results["overhead"] += loop_overhead(tables["greedy"])
        if 7 in chosen and run.workload == "humaneval":
            results["offloaded"] = (offloaded(store, run, config, vectors, offloaded_target, dtype, tick)
                                    if offloaded_target is not None else {"error": "no offloaded target was loaded"})
    if 5 in chosen:
        results["dp"] = dp_timing(config, seed)
    tick("DP timing", 1 if 5 in chosen else 0)
    results.update(
        config=asdict(config), seed=seed, machine=facts, models=names or {}, profile=profile, plans=plans,
        prompts={run.workload: {**indices[run.workload],
                                "decode_prompt_tokens": [len(ids) for ids in run.prompt_ids],
                                "chat_template": WORKLOADS[run.workload]["chat_template"]} for run in runs},
        eos=sorted(stop), load_average={"start": load_at_start, "end": load_average()},
        seconds=time.perf_counter() - started, resumed=resume)
    return write_report(out_dir, results)
