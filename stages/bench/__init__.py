"""bench: the paper's claims measured on one model pair, every figure side by side, in one run.

`harness` holds what a run shares and the timed cells, `experiments` the six experiments (which
call the stages), `report` the markdown, JSON and plots. Every number comes from this run: a cell
that raised says "failed: ..." in its place, a cell left out says "skipped: ..." and why.
"""

import time
from dataclasses import asdict
from pathlib import Path

from sequoia_cli.engine import context_length
from sequoia_cli.models import encode_prompts, eos_ids
from sequoia_cli.prompts import load_prompts
from stages.bench.experiments import (FAMILIES, PROMPT_SET, ROBUST_METHODS, WALL_METHODS, acceptance_vectors,
                                      dp_timing, hardware, loop_overhead, plan_tree, robustness, scalability,
                                      wall_clock)
from stages.bench.harness import FULL, QUICK, Config, Run, machine
from stages.bench.report import write_report

__all__ = ["FULL", "QUICK", "Config", "count_cells", "run_bench"]


def count_cells(config: Config) -> int:
    """Ticks a run makes, for a progress bar."""
    return (len(config.temperatures) * (1 + len(config.sizes) * len(FAMILIES))
            + len(config.robust_temperatures) * len(ROBUST_METHODS)
            + 1 + 1 + config.prompts * len(WALL_METHODS)
            + 1 + len(config.sweep_sizes) * len(config.sweep_depths)
            + len(config.dp_sizes) + 1)


def run_bench(target, draft, tokenizer, out_dir: str, config: Config = QUICK, seed: int = 0,
              names: dict | None = None, dtype: str | None = None, tick=None) -> Path:
    """Run every experiment and write the report; returns report.md's path. `tick(label)` is
    called after each of `count_cells(config)` cells."""
    tick = tick or (lambda label: None)
    started = time.perf_counter()
    dtype = dtype or str(target.dtype).removeprefix("torch.")
    prompts = load_prompts(PROMPT_SET, max_prompts=config.prompts)
    context = min(context_length(target), context_length(draft))
    stop = eos_ids(target, tokenizer)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else min(stop, default=0)
    run = Run(target, draft, tokenizer, encode_prompts(tokenizer, prompts, context, True), stop, pad, seed)
    facts = machine(target.device, dtype)  # now: the commit the run's code came from

    vectors = acceptance_vectors(run, tokenizer, config, tick)
    results = {"scalability": scalability(run, config, vectors, tick),
               "robustness": robustness(run, config, vectors, tick)}
    plan = plan_tree(run, config, vectors, dtype, tick)
    results["wall_clock"] = wall_clock(run, config, plan, tick)
    results["hardware"] = hardware(run, config, vectors, plan, results["wall_clock"], tick)
    results["dp"] = dp_timing(config, seed, tick)
    results["overhead"] = loop_overhead(run, config, plan, tick)
    results.update(
        config=asdict(config), seed=seed, machine=facts, models=names or {},
        prompts={"set": PROMPT_SET, "decode": list(range(config.prompts)),
                 "acceptance": list(range(config.prompts, config.prompts + config.acceptance_prompts)),
                 "decode_prompt_tokens": [len(ids) for ids in run.prompt_ids], "chat_template": True},
        eos=sorted(stop), vectors=[{"temperature": t, **v} for t, v in vectors.items()],
        plan=plan, seconds=time.perf_counter() - started)
    return write_report(out_dir, results)
