"""`sequoia` commands that decode and measure runs: decode, compare, bench and the GPU check."""

import os
import signal
import sys
from typing import Annotated

import typer

from sequoia_cli import artifacts, render
from sequoia_cli.cli_options import (
    DATA_HELP,
    MaxPrompts,
    NoChatTemplate,
    PromptField,
    Strict,
    load,
    model_options,
    option,
    prompt_records,
    warn,
    writable,
)
from sequoia_cli.errors import BadInput
from sequoia_cli.loading import ModelChoice
from sequoia_cli.render import Bars, console
from sequoia_cli.sampling import Asked

app = typer.Typer()


@app.command("decode", epilog="Example: sequoia decode --pair qwen2.5-coder --tree tree.json"
             " --prompt 'Write a haiku about trees.' --greedy")
@model_options
def decode_command(
    models: ModelChoice,
    tree: Annotated[str | None, option("A sequoia-tree/1 file ('-' for standard input); methods sequoia,"
                                          " specinfer, topk.")] = None,
    prompt: Annotated[str | None, option("One prompt; the text streams to standard output.")] = None,
    data: Annotated[str | None, option(DATA_HELP)] = None,
    prompt_field: PromptField = None, max_prompts: MaxPrompts = None,
    greedy: Annotated[bool, option("Temperature 0: the target's greedy output (token for token in float32;"
                                   " bfloat16 rounds trees differently).", "--greedy")] = False,
    temperature: Annotated[float | None, option("Sampling temperature (> 0). Default: the tree's, else"
                                                   " greedy.")] = None,
    top_p: Annotated[float | None, option("Nucleus sampling mass in (0, 1]. Default: the tree's, else 1.")] = None,
    method: Annotated[str, option("sequoia | specinfer | topk | chain | autoregressive | dynamic (a tree grown"
                                  " every step where the draft is confident, by the plan of a tree file from"
                                  " optimize --method dynamic; the file's tree where the plan predicts that"
                                  " faster).")] = "sequoia",
    chain_length: Annotated[int | None, option("Tokens the draft speculates per step, for --method"
                                                  " chain.")] = None,
    max_new_tokens: Annotated[int, option("Stop after this many new tokens (EOS and the context stop"
                                          " earlier).")] = 128,
    seed: Annotated[int | None, option("Makes a run repeatable; each prompt gets its own stream.")] = None,
    out: Annotated[str | None, option("Write one JSON line per prompt here ('-': standard output; default for"
                                         " --data).")] = None,
    turns: Annotated[str, option("first: a multi-turn record's first turn only. all: every turn in order, each"
                                 " after the earlier turns and the model's own answers, one JSON line per turn"
                                 " (with `turn`: 1, 2, ...).")] = "first",
    stats: Annotated[str | None, option("Write the run's figures here (JSON).")] = None,
    no_chat_template: NoChatTemplate = False, strict: Strict = False,
):
    """Generate text with the target, sped up by the draft and a token tree; the output follows the
    target's own distribution (with --greedy in float32: token for token)."""
    from sequoia_cli.loading import resolve
    from sequoia_cli.stages import decode as stage

    if (prompt is None) == (data is None):
        raise BadInput("give exactly one of --prompt TEXT and --data PROMPTS")
    if turns not in ("first", "all"):
        raise BadInput(f"turns '{turns}' is not first or all", "turns")
    request = stage.prepare(method, artifacts.read_tree(tree) if tree else None, chain_length,
                            Asked(greedy, temperature, top_p), max_new_tokens, seed, not no_chat_template)
    streaming = prompt is not None
    out = out if out is not None or streaming else "-"  # an empty --out is refused, not taken for the default
    writable(out=out, stats=stats)
    prompts = [prompt] if streaming else [r.get("turns", r["prompt"]) if turns == "all" else r["prompt"]
                                          for r in prompt_records(data, prompt_field, max_prompts)]
    resolved = resolve(models, request.needs_draft)
    warn(stage.mismatches(request, resolved), strict)
    loaded = load(resolved, stage.fits(request, prompts))
    try:
        with Bars() as bars:
            shown = dict(on_tokens=render.text_streamer(loaded.tokenizer)) if streaming else dict(progress=bars.task)
            records, figures = stage.decode(request, loaded, prompts, console.print, **shown)
    except stage.Interrupted as stop:
        signal.signal(signal.SIGINT, lambda *_: os._exit(130))  # a second Ctrl-C quits at once
        write_decoded(out, stats, stop.records, stop.stats, streaming)
        written = " and ".join(path for path in (out, stats) if path) or "nowhere (no --out or --stats)"
        console.print(f"interrupted: {len(stop.records)} of {stop.total} prompts written to {written}", soft_wrap=True,
                      highlight=False)
        raise typer.Exit(130) from None
    write_decoded(out, stats, records, figures, streaming)
    render.stats_table(figures)


def write_decoded(out: str | None, stats: str | None, records: list[dict], figures: dict, streaming: bool) -> None:
    """A decode run's generations and stats, each written whole or not at all."""
    if streaming:
        sys.stdout.write("\n")
    if out:
        artifacts.write_jsonl(out, records)
    if stats:
        artifacts.write_json(stats, figures)


@app.command("compare", epilog="Example: sequoia compare runs/sequoia.json runs/autoregressive.json")
def compare_command(
    stats: list[str] = typer.Argument(..., help="Stats files written by decode --stats; the last is the baseline."),
):
    """Print the speeds of several decode runs and their ratio to the last one."""
    render.compare_table(stats, [artifacts.read_stats(path) for path in stats])


@app.command("bench", epilog="Example: sequoia bench --quick --pair qwen2.5-coder")
@model_options
def bench_command(
    models: ModelChoice,
    quick: Annotated[bool, option("3 prompts of 48 tokens per workload, fewer sizes and temperatures; the full run"
                                  " decodes 8 prompts of 128 tokens, 24 of 96 in the hardware experiment.",
                                  "--quick")] = False,
    out_dir: Annotated[str | None, option("Folder for report.md, the plots, bench.json (every row) and"
                                             " cells.jsonl (every finished cell). Default: runs/bench.")] = None,
    resume: Annotated[bool, option("Reuse the finished cells of an interrupted run in --out-dir's cells.jsonl"
                                   " (same mode, seed and models).", "--resume")] = False,
    seed: Annotated[int, option("Seed of every draw (each prompt gets its own stream).")] = 0,
    experiments: Annotated[str | None, option("Which experiments to run, by name or number, e.g."
                                                 " wall-clock,hardware or 3,4 (hardware and overhead use wall-clock's"
                                                 " profile, trees and runs, so they need it). Default: all, without"
                                                 " offload with --quick. A run of some resumes into a run of all"
                                                 " with --resume.")] = None,
):
    """Measure the paper's claims on a model pair (default: qwen2.5-coder), on HumanEval and
    MT-Bench: tokens per step against tree size and temperature, wall clock against Hugging Face
    generate (plain and assisted, greedy and sampled), the optimizer's pick against a sweep of
    trees, the DP's run time, the loop's overhead and the device's engines side by side. The methods
    of a block run back to back on each prompt, in rotated order; figures are geometric means over
    prompts with 95% bootstrap intervals."""
    from sequoia_cli.loading import DEFAULT_PAIR, labels, resolve
    from sequoia_cli.stages import bench as stage

    resolved = resolve(models, need_draft=True, default_pair=DEFAULT_PAIR)
    plan = stage.prepare(out_dir or stage.DEFAULT_OUT_DIR, stage.mode(quick, experiments), seed, labels(resolved),
                         resolved.dtype, resume)
    loaded = load(resolved)
    with Bars() as bars:
        report = stage.bench(plan, loaded, bars.task)
    console.print(f"report -> {report} (plots, bench.json and cells.jsonl beside it)")


@app.command("gpu-check", epilog="Example: sequoia gpu-check --device cuda")
def gpu_check_command(
    device: Annotated[str, option("cpu, cuda or cuda:N. On a CPU the shapes are shrunk (hidden and intermediate"
                                  " sizes / 16, layers / 8, vocabulary 512), so that the check runs in seconds.")]
    = "cpu",
    out: Annotated[str | None, option("Folder for report.md and report.json. Default: runs/gpu-check.")] = None,
    quick: Annotated[bool, option("32 new tokens per run, one timed round, profiles up to 32 tokens in 2 rounds;"
                                  " the full check decodes 64 tokens in 3 rounds and profiles up to 128 tokens in"
                                  " 5.", "--quick")] = False,
):
    """Settle the decode engines on this machine with random-weight models of the built-in pair's
    shapes (Qwen2.5-Coder 1.5B and 0.5B) and the paper's (Llama-2-7B and Llama-68M): per engine
    (eager against cuda-graphs on CUDA, static on a CPU), each model's t(n), decode's time per step
    (autoregressive, a chain of 4, the planned tree) beside the profile's prediction, and the speedup
    optimize predicts from the pairs' real acceptance vectors (configs/acceptance/); on the paper's
    pair, t(n) against the official A100 figures. `make gpu-check DEVICE=cuda` runs the exactness
    tests on the device first."""
    from sequoia_cli.models import device_of
    from sequoia_cli.stages.gpu_check import DEFAULT_OUT_DIR, gpu_check
    from sequoia_cli.stages.gpu_check.report import write_report

    where = device_of(device)
    folder = out or DEFAULT_OUT_DIR
    writable(out=f"{folder}/report.md")
    with Bars() as bars:
        for report in gpu_check(where, quick, bars.task):
            path = write_report(folder, report)
    console.print(f"report -> {path} (report.json beside it)")
