"""bench: the paper's claims measured on one model pair and two workloads (HumanEval, MT-Bench),
every figure side by side in one run, with bootstrap intervals over the prompts.

The stage in two calls: `prepare` opens the run's store of cells (so that a bad `--resume` fails
before any model loads), `bench` runs the chosen experiments on the loaded models and writes the
report. Every number comes from this run: a cell that raised says "failed: ..." in its place.

Where things are:
- experiments: the registry (number, name, what each needs, runs and reports) and `experiments_of`;
- harness: the config and its two modes, the cells, the interleaved blocks and the resumable store;
- shared: the workloads, the run's state, the vectors, profile and trees the experiments plan with;
- step_counts (1, 2), timing (3, 5, 6), hardware (4), offload (7): the experiments themselves;
- stats: the bootstrap intervals; report, sections, tables, plots: report.md, bench.json, the figures.
"""

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from sequoia_cli.stages.bench.experiments import (
    check_experiments,
    chosen_experiments,
    experiments_of,
    total_work,
    vector_settings,
)
from sequoia_cli.stages.bench.harness import FULL, QUICK, Config, Store, load_average, machine
from sequoia_cli.stages.bench.report import write_report
from sequoia_cli.stages.bench.shared import WORKLOADS, Bench, measure_vectors, prompt_indices, workload_runs

from sequoia_cli.devices import input_device
from sequoia_cli.loading import Loaded
from sequoia_cli.seeds import check_seed

__all__ = ["CELLS_FILE", "DEFAULT_OUT_DIR", "FULL", "QUICK", "Config", "Plan", "bench",
           "check_experiments", "experiments_of", "mode", "prepare", "total_work"]

CELLS_FILE = "cells.jsonl"
DEFAULT_OUT_DIR = "runs/bench"


@dataclass(frozen=True)
class Plan:
    """A bench run as asked for, its store of cells opened: where it writes, what it measures, its
    seed, the models as the report names them and their dtype (these make the run's identity, which
    `--resume` checks), whether it resumes."""

    out_dir: str
    config: Config
    seed: int
    names: dict
    dtype: str
    resume: bool
    store: Store

    @property
    def work(self) -> int:
        """The sum of the weights `bench` ticks, for a progress bar's total."""
        return total_work(self.config)


def mode(quick: bool = False, experiments: str | None = None) -> Config:
    """The full or the quick mode, with the experiments `experiments` names (`experiments_of`) where given."""
    config = QUICK if quick else FULL
    return config if experiments is None else replace(config, experiments=experiments_of(experiments))


def prepare(out_dir: str, config: Config, seed: int, names: dict, dtype: str, resume: bool = False) -> Plan:
    """The run, its store `out_dir`/cells.jsonl opened: with `resume`, the cells an interrupted run of
    the same identity (mode, seed, models as `names` names them, dtype) finished; else an empty file.
    A seed out of range is bad input before the store opens, a mismatch as it opens: both before any model loads."""
    check_seed(seed)
    # Which experiments run is left out: a run of some of them resumes into a run of all.
    identity = {key: value for key, value in asdict(config).items() if key != "experiments"}
    store = Store(Path(out_dir) / CELLS_FILE, {"config": identity, "prompts": prompt_indices(config), "seed": seed,
                                               "models": names, "dtype": dtype}, resume)
    return Plan(out_dir, config, seed, names, dtype, resume, store)


def bench(plan: Plan, loaded: Loaded, progress: Callable | None = None) -> Path:
    """Run the plan's experiments on the `loaded` models, both workloads, and write the report;
    report.md's path. Each finished cell goes to the store as it ends. `progress(description, total)`
    returns `advance(weight, label)`, called after each cell; the weights sum to `plan.work`.
    Experiment 7 loads the target again, offloaded, from the choice it was loaded from."""
    if loaded.resolved.dtype != plan.dtype:
        raise ValueError(f"the plan is for {plan.dtype}; the models were loaded in {loaded.resolved.dtype}")
    started, load_at_start = time.perf_counter(), load_average()
    config = plan.config
    advance = progress(f"bench ({config.name})", plan.work) if progress else None
    state = Bench(plan.store, config, loaded, workload_runs(loaded, config, plan.seed),
                  (lambda label, weight: advance(weight, label)) if advance else (lambda label, weight: None),
                  plan.seed, plan.dtype)
    facts = machine(input_device(loaded.target), plan.dtype, loaded.resolved.engine)
    measure_vectors(state, vector_settings(config))
    for experiment in chosen_experiments(config):
        experiment.run(state)
    results = state.results
    indices = prompt_indices(config)
    results.update(
        config=asdict(config), seed=plan.seed, machine=facts, models=plan.names, profile=state.profile,
        prompts={run.workload: {**indices[run.workload],
                                "decode_prompt_tokens": [len(ids) for ids in run.prompt_ids],
                                "chat_template": WORKLOADS[run.workload]["chat_template"]} for run in state.runs},
        eos=sorted(state.runs[0].eos), load_average={"start": load_at_start, "end": load_average()},
        seconds=time.perf_counter() - started, resumed=plan.resume)
    return write_report(plan.out_dir, results)
