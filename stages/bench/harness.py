"""The bench's timing harness: what a run measures (Config, in two modes), what one workload shares
(Run), the tree families it compares, the cells that decode and time one prompt (ours through the
decode stage, Hugging Face's `generate`), the interleaved blocks they run in, the store that lets an
interrupted run resume, and the facts of the machine. A cell that raises is a result ("failed:
..."), not the end of the run."""

import datetime
import json
import os
import platform
import subprocess
import time
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import torch
from sequoia_cli.stages.decode import decode_prompt
from sequoia_cli.stages.profile_hw import machine_facts

from sequoia_cli.decoder import Caches, DecodeConfig, Decoder
from sequoia_cli.devices import input_device, sync
from sequoia_cli.dynamic import Growth
from sequoia_cli.errors import BadInput, one_line
from sequoia_cli.sampling import Sampling
from sequoia_cli.seeds import prompt_generator, prompt_seed


@dataclass(frozen=True)
class Config:
    """What one run measures, per workload. Experiments 3, 4 and 6 decode `prompts` prompts with
    `new_tokens` each; experiments 1 and 2 (tokens per step only, no clock) the first
    `scale_prompts` of them, with `scale_tokens[i]` tokens at size `sizes[i]` and `robust_tokens`
    in experiment 2."""

    name: str
    prompts: int
    new_tokens: int
    scale_prompts: int
    scale_tokens: tuple  # experiment 1, per size: bigger trees take more tokens per step
    robust_tokens: int  # experiment 2
    acceptance_prompts: int  # the vectors' prompts: others than the decoded ones (spread_prompts)
    continuation: int  # tokens of the target's own continuation per acceptance prompt
    width: int  # entries in each acceptance vector
    sizes: tuple  # experiment 1
    scale_temperatures: tuple  # experiment 1; 0 = greedy
    robust_temperatures: tuple  # experiment 2
    robust_size: int
    sweep: tuple  # experiment 4: (size, depth bound) of the DP trees beside the optimizer's pick
    sweep_prompts: int  # experiment 4's prompts (the first of them are 3's) and tokens per prompt
    sweep_tokens: int
    sampled_methods: tuple = ()  # experiment 3's sampled blocks: these methods only (empty: all)
    chain_max_size: int = 16  # a chain costs one draft forward per token: longer ones are left out
    profile_max: int = 64
    profile_repeats: int = 3
    dp_sizes: tuple = (64, 256, 1024)
    dp_depth: int = 32
    dp_width: int = 32
    resamples: int = 2000  # bootstrap resamples per interval
    # Experiment numbers (experiments.EXPERIMENTS); by default not 7, which loads the target a second time,
    # nor 9, which decodes a set of its own (Spec-Bench: half of `prompts` per subtask, its vector on
    # `acceptance_prompts` / 16 others per subtask), nor 10 (dynamic trees: vectors of its own on a quarter of
    # `acceptance_prompts`, then as many decodes as 3), nor 11 (memory: loads the models again per stage).
    experiments: tuple = (1, 2, 3, 4, 5, 6, 8)
    # Experiment 7: the target offloaded (CPU memory for this much of it, the rest on disk).
    offload_memory: str = "1GiB"
    offload_prompts: int = 3
    offload_tokens: int = 64
    offload_profile_max: int = 128


# The two modes. Quick answers one question (is Sequoia faster than generate, greedy and sampled?) and
# stays short: 3 prompts of 48 tokens per workload, and its sampled blocks keep only the methods that
# question needs. Full decodes 8 prompts of 128 tokens in experiments 3 and 6; experiment 4 decodes 24
# prompts of 96 and its vectors rest on 32 others of 96, since tokens per step vary between prompts by
# more than the 5% a prediction is checked to. Experiments 1 and 2 count tokens per step only; most of
# their budget goes to sizes 64 and 128, whose steps vary the most.
QUICK = Config("quick", prompts=3, new_tokens=48, scale_prompts=2, scale_tokens=(8, 8), robust_tokens=8,
               acceptance_prompts=1, continuation=16, width=8, sizes=(4, 32), scale_temperatures=(1.0,),
               robust_temperatures=(1.0,), robust_size=16, sweep=(), sweep_prompts=3, sweep_tokens=32,
               sampled_methods=("HF generate", "autoregressive", "Sequoia"), chain_max_size=4, profile_max=32,
               profile_repeats=1, dp_sizes=(64, 256))
FULL = Config("full", prompts=8, new_tokens=128, scale_prompts=8, scale_tokens=(16, 32, 40, 48), robust_tokens=24,
              acceptance_prompts=32, continuation=96, width=16, sizes=(4, 16, 64, 128), scale_temperatures=(1.0,),
              robust_temperatures=(0.3, 0.6, 1.0), robust_size=16, sweep=((16, 8), (64, 8)), sweep_prompts=24,
              sweep_tokens=96, chain_max_size=4,
              profile_max=128, profile_repeats=7, experiments=(1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11))


def spread_prompts(total: int, decoded: int, acceptance: int) -> tuple[list[int], list[int]]:
    """The indices of the decoded prompts and of the acceptance prompts in a set of `total`, each
    spread evenly over the whole set and none in both. A set may list its prompts by kind (MT-Bench:
    10 writing, then 10 roleplay, ...): taken from the front, the decoded prompts would all be of one
    kind and the vectors predicting them measured on another."""
    if decoded + acceptance > total:
        raise BadInput(f"the bench needs {decoded} + {acceptance} prompts per workload; the set has {total}")
    decode = spread(list(range(total)), decoded)
    return decode, spread(sorted(set(range(total)) - set(decode)), acceptance)


def spread(items: list, count: int) -> list:
    """`count` of the items, evenly spaced from the first."""
    return [items[k * len(items) // count] for k in range(count)]


@dataclass
class Run:
    """What every cell of one workload shares: the models, the encoded prompts (and the texts of
    the acceptance prompts), the stop ids."""

    workload: str
    target: object
    draft: object
    tokenizer: object
    prompt_ids: list[list[int]]
    acceptance_prompts: list[str]
    eos: set[int]
    pad: int
    seed: int
    engine: str = "eager"
    caches: dict = field(default_factory=dict)  # engine -> the decode caches, which the next cell on it reuses


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
def forward_clock(model):
    """Count and time the model's forwards through hooks; removed on exit."""
    totals = {"calls": 0, "seconds": 0.0}
    started = []

    def before(module, args):
        started.append(clock(input_device(model)))

    def after(module, args, output):
        totals["calls"] += 1
        totals["seconds"] += clock(input_device(model)) - started.pop()

    hooks = [model.register_forward_pre_hook(before), model.register_forward_hook(after)]
    try:
        yield totals
    finally:
        for hook in hooks:
            hook.remove()


def decode_one(run: Run, index: int, parents: list[int], sampling: Sampling, new_tokens: int,
               growth: Growth | None = None, expected: bool = False, engine: str | None = None) -> dict:
    """One prompt through the decode stage: output ids, steps (= target forwards), wall seconds and
    the seconds spent inside each model's forwards; with `expected`, each step's expected tokens.
    The run's engine unless `engine` is given, its caches the run's, reused prompt to prompt. With
    `growth` (`dynamic.Growth`), trees grown per step within `parents`, and the tokens their
    calibration predicted, summed over the steps."""
    engine = engine or run.engine
    config = DecodeConfig(run.target, run.draft, parents, sampling, new_tokens, frozenset(run.eos), engine, growth,
                          expected)
    decoder = Decoder(config, run.caches.setdefault(engine, Caches()))
    generator = prompt_generator(run.seed, index, input_device(run.target))
    with forward_clock(run.target) as target, forward_clock(run.draft) as draft:
        record = decode_prompt(decoder, run.tokenizer, "", run.prompt_ids[index], generator)
    result = {"output": record["output_ids"], "tokens": len(record["output_ids"]), "steps": record["steps"],
              "seconds": record["seconds"], "prefill_seconds": record["prefill_seconds"],
              "step_tokens": record["step_tokens"],
              "target_seconds": target["seconds"], "draft_seconds": draft["seconds"],
              "draft_forwards": draft["calls"], "undrafted_steps": record["undrafted_steps"]}
    if expected:
        result["expected"] = [round(e, 4) for e in record["expected"]]
    if growth is not None:
        result["predicted"] = sum(record["predicted"])
    return result


def hf_one(run: Run, index: int, sampling: Sampling, new_tokens: int, assisted: bool,
           ids: list[int] | None = None) -> dict:
    """One prompt through Hugging Face `generate`, plain or with the draft as assistant (its default
    schedule); sampled with the same temperature and top-p and no top-k cut, else greedy. The
    prompt's ids are `ids` where given (a conversation's later turn), else the run's."""
    from transformers import GenerationConfig
    from transformers.utils import logging as hf_logging

    ids = torch.tensor([run.prompt_ids[index] if ids is None else ids], device=input_device(run.target))
    sampled = {"do_sample": True, "temperature": sampling.temperature, "top_p": sampling.top_p, "top_k": 0}
    settings = GenerationConfig(max_new_tokens=new_tokens, pad_token_id=run.pad, eos_token_id=sorted(run.eos) or None,
                                **({"do_sample": False} if sampling.greedy else sampled))
    torch.manual_seed(prompt_seed(run.seed, index))  # HF draws from the global stream
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # assisted generation warns about its own internal call
    try:
        with torch.inference_mode(), forward_clock(run.target) as forwards:
            started = clock(input_device(run.target))
            out = run.target.generate(ids, attention_mask=torch.ones_like(ids), generation_config=settings,
                                      assistant_model=run.draft if assisted else None)
            seconds = clock(input_device(run.target)) - started
    finally:
        hf_logging.set_verbosity(verbosity)
    output = out[0, ids.shape[1]:].tolist()
    return {"output": output, "tokens": len(output), "steps": forwards["calls"], "seconds": seconds}


# ---- interleaved blocks and the store that lets a run resume ---------------------------------

def rotation(names: list[str], index: int) -> list[str]:
    """The order of a block's methods on prompt `index`: shifted by one per prompt, so that each
    method runs first, second, ... equally often and a drift of the machine falls on all alike."""
    shift = index % len(names) if names else 0
    return names[shift:] + names[:shift]


class Store:
    """Finished cells, one JSON line each in `path` after a first line naming the run (`identity`:
    its mode, seed, models), written as each cell ends. `resume` keeps the cells of a file made by
    the same run (those that failed are tried again); without it the file starts empty."""

    def __init__(self, path: Path, identity: dict, resume: bool):
        self.path, self.cells = path, {}
        identity = json.loads(json.dumps(identity))  # tuples as lists, as read back
        if resume and path.is_file():
            lines = path.read_text(encoding="utf-8").splitlines()
            if not lines or parse(lines[0]) != {"run": identity}:
                raise BadInput(f"{path}: not the cells of this run (its mode, seed, models or dtype differ);"
                               " drop resume or give another out_dir", "resume", "out_dir")
            for line in lines[1:]:
                entry = parse(line)
                if isinstance(entry, dict) and "key" in entry and "error" not in entry.get("result", {"error": 1}):
                    self.cells[entry["key"]] = entry["result"]
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text("".join(json.dumps(entry) + "\n" for entry in [{"run": identity}] + [
                {"key": k, "result": r} for k, r in self.cells.items()]), encoding="utf-8")
        except OSError as error:
            raise BadInput(f"{path}: cannot write the run's cells ({one_line(error)})") from None

    def cell(self, key: str, work: Callable[[], dict]) -> dict:
        """The stored result of `key`, else `work()` run (through `attempt`) and stored."""
        if key not in self.cells:
            result = attempt(work)
            with self.path.open("a", encoding="utf-8") as out:
                out.write(json.dumps({"key": key, "result": result}) + "\n")
            self.cells[key] = result
        return self.cells[key]


def parse(line: str):
    try:
        return json.loads(line)
    except json.JSONDecodeError:
        return None  # the line being written when the run stopped


def run_block(store: Store, block: str, methods: dict[str, Callable[[int], dict]], prompts: int,
              tick: Callable[[str, int], None], weight: int) -> dict[str, list[dict]]:
    """Every method on every prompt, prompt by prompt, the methods of one prompt back to back in
    `rotation` order. {method: [result of prompt 0, 1, ...]}; `tick(label, weight)` after each."""
    results = {name: [None] * prompts for name in methods}
    for index in range(prompts):
        for name in rotation(list(methods), index):
            results[name][index] = store.cell(f"{block} | {name} | prompt {index}", partial(methods[name], index))
            tick(f"{block}: {name}, prompt {index}", weight)
    return results


def load_average() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def machine(device: torch.device, dtype: str, engine: str = "eager") -> dict:
    import transformers

    facts = machine_facts(device, dtype, engine)
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
