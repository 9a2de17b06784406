"""Experiment 11, memory: what a machine needs to run each stage that loads the models. Each stage
runs once on the pair in a fresh interpreter of its own (a spawned process: nothing of the bench's
own models or heap in it), as the command line runs it, and reports the peak resident memory that
process reached, interpreter and libraries included, and its memory once the models were set up."""

import multiprocessing
import time
from functools import partial

from sequoia_cli.stages.bench.shared import WORKLOADS, Bench
from sequoia_cli.stages.bench.tables import markdown_table, number
from sequoia_cli.stages.decode import decode
from sequoia_cli.stages.decode import prepare as decode_request
from sequoia_cli.stages.measure_acceptance import measure
from sequoia_cli.stages.measure_acceptance import prepare as acceptance_request
from sequoia_cli.stages.profile_hw import QUICK, profile

from sequoia_cli.loading import Resolved, load
from sequoia_cli.render import peak_kilobytes, status_kilobytes
from sequoia_cli.sampling import Asked

STAGES = ("measure-acceptance", "profile-hw --quick", "decode")
WORKLOAD = "humaneval"
CHAIN = 4  # decode's tree: its size barely moves the peak, which the weights set

ABOUT = """Peak resident memory of each stage that loads the models, each run once on the pair in a fresh
process of its own: measure-acceptance on {prompts} HumanEval prompt(s) with {continuation} tokens of
continuation at width {width}, greedy; profile-hw --quick (its default settings); decode of a
chain of {chain} on one prompt, {new_tokens} tokens. "set up" is the process's resident memory once
both models are loaded and set up (packed or quantized), before any work; "peak" the most it held;
"seconds" the stage's wall time, loading included (the load average above says what else ran).
build-tree, optimize and the tree commands load no model."""


def gib(kilobytes: int) -> float:
    return kilobytes / 2**20


def stage_memory(stage: str, resolved: Resolved, texts: list[str], settings: dict) -> dict:
    """Run `stage` on `texts` in this process as its command does; its memory and seconds. Runs in a
    child of the bench (memory_of)."""
    started = time.perf_counter()
    loaded = load(resolved)
    set_up = status_kilobytes("VmRSS")  # resident now, before any work
    if stage == "measure-acceptance":
        request = acceptance_request([{"prompt": text} for text in texts], Asked(greedy=True), settings["width"],
                                     settings["continuation"], 0, chat_template=WORKLOADS[WORKLOAD]["chat_template"])
        measure(request, loaded, WORKLOAD)
    elif stage == "profile-hw --quick":
        profile(loaded, QUICK)
    else:
        request = decode_request("chain", None, CHAIN, Asked(greedy=True), settings["new_tokens"], 0,
                                 WORKLOADS[WORKLOAD]["chat_template"])
        decode(request, loaded, texts[:1])
    return {"stage": stage, "set_up_gib": gib(set_up),
            "peak_gib": gib(peak_kilobytes()),
            "seconds": time.perf_counter() - started}


def memory_of(stage: str, resolved: Resolved, texts: list[str], settings: dict) -> dict:
    """stage_memory in a spawned process: a fork would share the bench's pages and heap."""
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        return pool.apply(stage_memory, (stage, resolved, texts, settings))


def memory_settings(bench: Bench) -> dict:
    config = bench.config
    return {"width": min(config.width, 8), "continuation": config.continuation, "new_tokens": config.new_tokens,
            "prompts": 1}


def run_memory(bench: Bench) -> None:
    settings = memory_settings(bench)
    texts = bench.run_of(WORKLOAD).acceptance_prompts[:settings["prompts"]]
    for stage in STAGES:
        row = bench.store.cell(f"memory | {stage}", partial(memory_of, stage, bench.loaded.resolved, texts, settings))
        bench.results["memory"].append({"stage": stage, **row, "settings": settings})
        bench.tick(f"memory: {stage}", 1)


def memory_work(config) -> int:
    return len(STAGES)


def memory_section(results: dict) -> str:
    rows = results["memory"]
    if not rows:
        return "not run"
    settings = rows[0]["settings"]
    about = ABOUT.format(chain=CHAIN, **settings)
    lines = [[row["stage"], row["error"]] + [""] * 2 if "error" in row else
             [row["stage"], number(row["set_up_gib"], 2), number(row["peak_gib"], 2), number(row["seconds"], 0)]
             for row in rows]
    return about + "\n\n" + markdown_table(["stage", "set up GiB", "peak GiB", "seconds"], lines)
