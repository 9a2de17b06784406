"""The bench's timing harness: what one run shares, the tree families it compares, and the cells
that decode, time and count forwards (ours through the decode stage, Hugging Face's `generate`).
A cell that raises is a result ("failed: ..."), not the end of the run."""

import datetime
import os
import platform
import subprocess
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch

from sequoia_cli.engine import Sampling, sync, tree_layout
from sequoia_cli.errors import one_line
from stages.decode import decode_prompt
from stages.profile_hw import machine_facts


@dataclass(frozen=True)
class Config:
    """What one run measures and how many tokens each cell gets (per prompt)."""

    name: str
    prompts: int  # decode prompts: mt-bench 0 .. prompts-1
    acceptance_prompts: int  # the vectors are measured on the prompts right after those
    continuation: int  # tokens of the target's own continuation per acceptance prompt
    width: int  # entries in each acceptance vector
    new_tokens: int  # experiments 1-2 (tokens per step only)
    timed_tokens: int  # experiments 3, 4, 6 (wall clock)
    sizes: tuple = (2, 8, 32)
    temperatures: tuple = (0.0, 0.6)  # experiment 1; 0 = greedy
    robust_temperatures: tuple = (0.2, 1.0)
    robust_size: int = 16
    chain_max_size: int = 32  # longer chains cost one draft forward per token: skipped
    sweep_sizes: tuple = (4, 16)
    sweep_depths: tuple = (3, 6)
    profile_max: int = 64
    profile_repeats: int = 3
    dp_sizes: tuple = (64, 256, 1024)
    dp_depth: int = 32
    dp_width: int = 32


QUICK = Config("quick", prompts=1, acceptance_prompts=1, continuation=32, width=8, new_tokens=16, timed_tokens=24)
FULL = Config("full", prompts=2, acceptance_prompts=2, continuation=64, width=16, new_tokens=20, timed_tokens=40,
              sizes=(2, 4, 8, 16, 32, 64, 128), temperatures=(0.0, 0.6, 1.0),
              robust_temperatures=(0.2, 0.6, 1.0, 1.2), sweep_sizes=(4, 16, 64), sweep_depths=(2, 4, 8),
              profile_max=128, profile_repeats=5)


@dataclass
class Run:
    """What every cell of one run shares: the models, the encoded prompts, the stop ids."""

    target: object
    draft: object
    tokenizer: object
    prompt_ids: list[list[int]]
    eos: set[int]
    pad: int
    seed: int
    memo: dict = field(default_factory=dict)  # one decode per (tree, sampling, tokens)


# ---- tree families ---------------------------------------------------------------------------

def kxd_parents(k: int, d: int) -> list[int]:
    """SpecInfer's k independent sequences of depth d from the root: size k*d + 1."""
    return [-1] + [0 if i <= k else i - k for i in range(1, k * d + 1)]


def kxd_shape(size: int) -> tuple[int, int]:
    """(k, d) of the SpecInfer tree standing for a nominal size: k = 2 up to 16, 4 up to 64, then 8;
    d as deep as fits (the tree has k*d + 1 <= size nodes)."""
    k = 1 if size <= 2 else 2 if size <= 16 else 4 if size <= 64 else 8
    return k, (size - 1) // k


def kary_parents(size: int, k: int = 2) -> list[int]:
    """A tree in which every node has k children, filled breadth first up to `size` nodes."""
    return [-1] + [(i - 1) // k for i in range(1, size)]


# ---- cells -----------------------------------------------------------------------------------

def attempt(cell: Callable[[], dict]) -> dict:
    """The cell's figures, or {"error": "failed: ..."} if it raised."""
    try:
        return cell()
    except Exception as error:  # a failed cell is a result, not the end of the run
        return {"error": f"failed: {one_line(error)}"}


def clock(device: torch.device) -> float:
    sync(device)
    return time.perf_counter()


@contextmanager
def forward_clock(model, timed: bool = True):
    """Count (and time, with `timed`) the model's forwards through hooks; removed on exit."""
    totals = {"calls": 0, "seconds": 0.0}
    started = []

    def before(module, args):
        started.append(clock(model.device) if timed else 0.0)

    def after(module, args, output):
        begun = started.pop()
        totals["calls"] += 1
        if timed:
            totals["seconds"] += clock(model.device) - begun

    hooks = [model.register_forward_pre_hook(before), model.register_forward_hook(after)]
    try:
        yield totals
    finally:
        for hook in hooks:
            hook.remove()


def decode_one(run: Run, index: int, parents: list[int], sampling: Sampling, new_tokens: int) -> dict:
    """One prompt through the decode stage: output ids, steps (= target forwards) and wall seconds."""
    record = decode_prompt(run.target, run.draft, run.tokenizer, "", run.prompt_ids[index], index,
                           tree_layout(parents, run.target.device), sampling, new_tokens, run.seed)
    return {"output": record["output_ids"], "steps": record["steps"], "seconds": record["seconds"]}


def figures(outputs: list[list[int]], steps: int, seconds: float) -> dict:
    tokens = sum(len(o) for o in outputs)
    return {"tokens": tokens, "steps": steps, "seconds": seconds,
            "tokens_per_step": tokens / steps if steps else None,
            "tokens_per_second": tokens / seconds if seconds else None, "outputs": outputs}


def decode_cell(run: Run, parents: list[int], sampling: Sampling, new_tokens: int) -> dict:
    """Every prompt through `generate` with one tree; decoded once per (tree, sampling, tokens)."""
    key = (tuple(parents), sampling.temperature, sampling.top_p, "" if sampling.greedy else sampling.method,
           new_tokens)
    if key not in run.memo:
        runs = [decode_one(run, i, parents, sampling, new_tokens) for i in range(len(run.prompt_ids))]
        run.memo[key] = figures([r["output"] for r in runs], sum(r["steps"] for r in runs),
                                sum(r["seconds"] for r in runs))
    layout = tree_layout(parents)
    return {"tree_size": layout.size, "depth": layout.depth, **run.memo[key]}


def vector_of(vectors: dict, temperature: float) -> list[float]:
    vector = vectors.get(temperature)
    if vector is None or "error" in vector:
        reason = vector["error"] if vector else "not measured"
        raise RuntimeError(f"no acceptance vector at temperature {temperature} ({reason})")
    return vector["acceptance"]


def hf_one(run: Run, index: int, new_tokens: int, assisted: bool) -> dict:
    """One prompt through Hugging Face `generate` (greedy), its target forwards counted."""
    from transformers import GenerationConfig
    from transformers.utils import logging as hf_logging

    ids = torch.tensor([run.prompt_ids[index]], device=run.target.device)
    settings = GenerationConfig(do_sample=False, max_new_tokens=new_tokens, pad_token_id=run.pad,
                                eos_token_id=sorted(run.eos) or None)
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # assisted generation warns about its own internal call
    try:
        with torch.inference_mode(), forward_clock(run.target, timed=False) as forwards:
            started = clock(run.target.device)
            out = run.target.generate(ids, attention_mask=torch.ones_like(ids), generation_config=settings,
                                      assistant_model=run.draft if assisted else None)
            seconds = clock(run.target.device) - started
    finally:
        hf_logging.set_verbosity(verbosity)
    return {"output": out[0, ids.shape[1]:].tolist(), "steps": forwards["calls"], "seconds": seconds}


def first_difference(outputs: list[list[int]], reference: list[list[int]]) -> str:
    for index, (out, ref) in enumerate(zip(outputs, reference)):
        if out != ref:
            at = next((i for i, (a, b) in enumerate(zip(out, ref)) if a != b), min(len(out), len(ref)))
            return f"no: prompt {index} differs at token {at}"
    return "yes"


def machine(device: torch.device, dtype: str) -> dict:
    import transformers

    facts = machine_facts(device, dtype)
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as info:
            cpu = next((line.split(":", 1)[1].strip() for line in info if line.startswith("model name")), cpu)
    except OSError:
        pass
    try:
        commit = subprocess.run(["git", "describe", "--always", "--dirty"], capture_output=True, text=True,
                                cwd=Path(__file__).parent, timeout=10).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        commit = None
    facts.update(transformers=transformers.__version__, python=platform.python_version(), cpu=cpu,
                 cores=os.cpu_count(), platform=platform.platform(), code=commit,
                 date=datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"))
    return facts
