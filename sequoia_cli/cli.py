"""The `sequoia` command: parse, load, call a stage, print a summary on stderr, write artifacts.

Exit codes: 0 success, 2 bad input (one line naming the file and the fault), 1 anything else.
"""

import json
import sys
from typing import Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table
from rich.tree import Tree

from sequoia_cli import artifacts
from sequoia_cli.errors import BadInput
from sequoia_cli.tree import path_probabilities, ranks

console = Console(stderr=True)
app = typer.Typer(
    help="Sequoia speculative decoding: a draft model proposes a token tree, the target verifies "
    "it in one forward. Stages pass JSON artifacts as files or through pipes ('-').",
    epilog="Example: sequoia build-tree --acceptance acc.json --size 32 --out - | sequoia show -",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)

OUT_HELP = "Where to write the artifact ('-' for standard output)."


DEVICE = typer.Option("cpu", help="cpu, cuda or cuda:N.")
DTYPE = typer.Option("bfloat16", help="bfloat16, float16 or float32 (on a 2-core CPU bfloat16 ran 2x faster than float32 at 1 token, 3.5-4.8x at 16-64).")
NO_CHAT_TEMPLATE = typer.Option(False, "--no-chat-template", help="Feed prompts as raw text, not as a user turn of the model's chat template.")
MODEL_HELP = "A Hugging Face id, a local folder, or a pair name from configs/ (e.g. qwen2.5-coder)."
DECODE_METHODS = ("sequoia", "specinfer", "topk", "chain", "autoregressive")


def sampling_options(greedy: bool, temperature: Optional[float], top_p: Optional[float], default: dict | None = None):
    """(temperature, top_p) from the flags; with neither given, what the tree was built for, else greedy."""
    if greedy and (temperature is not None or top_p is not None):
        raise BadInput("--greedy takes no --temperature or --top-p")
    if greedy:
        return 0.0, 1.0
    if temperature is None and top_p is None and default and default.get("mode") == "stochastic":
        return float(default.get("temperature") or 1.0), float(default.get("top_p") or 1.0)
    if temperature is None:
        if top_p is not None:
            raise BadInput("--top-p needs --temperature (or drop it for greedy decoding)")
        return 0.0, 1.0
    if not 0.0 < temperature <= 100.0:
        raise BadInput(f"--temperature is {temperature}: it must be > 0 (use --greedy for temperature 0)")
    top_p = 1.0 if top_p is None else top_p
    if not 0.0 < top_p <= 1.0:
        raise BadInput(f"--top-p is {top_p}: it must be in (0, 1]")
    return temperature, top_p


def models_of(pair: Optional[str], draft: Optional[str], target: Optional[str], need_draft: bool):
    if pair and (draft or target):
        raise BadInput("--pair sets both models: give it alone, or --draft and --target")
    if pair:
        from stages.fetch_models import pair_config

        pair_config(pair)  # an unknown name is an error here, not a Hugging Face id
        draft, target = pair, pair
    if not target:
        raise BadInput("no target model: give --target (or --pair)")
    if need_draft and not draft:
        raise BadInput("no draft model: give --draft (or --pair)")
    return draft if need_draft else None, target


def load_pair(draft_name: Optional[str], target_name: str, device: str, dtype: str):
    """(draft or None, target, tokenizer), with the tokenizers checked to agree."""
    from sequoia_cli.models import check_same_tokenizer, device_of, dtype_of, load_model, load_tokenizer

    where, precision = device_of(device), dtype_of(dtype)
    tokenizer = load_tokenizer(target_name, "target")
    if draft_name:
        check_same_tokenizer(load_tokenizer(draft_name, "draft"), tokenizer)
    with console.status(f"loading target {target_name} ({dtype}, {device})"):
        target = load_model(target_name, "target", where, precision)
    draft = None
    if draft_name:
        with console.status(f"loading draft {draft_name}"):
            draft = load_model(draft_name, "draft", where, precision)
    return draft, target, tokenizer


def load_prompt_records(source: str, field: Optional[str], max_prompts: Optional[int]) -> list[dict]:
    """[{"prompt": ..., "reference": ...}] of a prompt set."""
    from sequoia_cli.prompts import load_prompt_records as load  # datasets is slow to import: only when asked

    if max_prompts is not None and max_prompts < 1:
        raise BadInput(f"--max-prompts is {max_prompts}: use at least 1 prompt")
    return load(source, field, max_prompts)


def progress_bar() -> Progress:
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    TimeRemainingColumn(), console=console)


@app.command("fetch-models", epilog="Example: sequoia fetch-models qwen2.5-coder")
def fetch_models_command(pair: str = typer.Argument("qwen2.5-coder", help="A pair name from configs/.")):
    """Download, verify and convert a model pair from configs/ once, into the cache folder
    ($SEQUOIA_CACHE, default ~/.cache/sequoia). Safe to rerun: a fetched pair is skipped."""
    from stages.fetch_models import fetch_pair

    with progress_bar() as bar:
        folders = fetch_pair(pair, bar)
    for role, folder in folders.items():
        console.print(f"{role}: {folder}")


@app.command("measure-acceptance", epilog="Example: sequoia measure-acceptance --pair qwen2.5-coder --data mt-bench --max-prompts 8 --temperature 0.6 --top-p 0.9 --width 8 --out acc.json")
def measure_acceptance_command(
    draft: Optional[str] = typer.Option(None, help="Draft model. " + MODEL_HELP),
    target: Optional[str] = typer.Option(None, help="Target model. " + MODEL_HELP),
    pair: Optional[str] = typer.Option(None, help="A pair name from configs/: sets both --draft and --target."),
    data: str = typer.Option(..., help="A prompt set: .jsonl/.json/.txt/.parquet file or a built-in name (mt-bench, humaneval)."),
    prompt_field: Optional[str] = typer.Option(None, help="The prompt set's text field (default: prompt)."),
    max_prompts: Optional[int] = typer.Option(None, help="Use only the first N prompts."),
    greedy: bool = typer.Option(False, "--greedy", help="Greedy mode: children are the draft's top-k."),
    temperature: Optional[float] = typer.Option(None, help="Sampling temperature (> 0); default greedy."),
    top_p: Optional[float] = typer.Option(None, help="Nucleus sampling mass in (0, 1]."),
    width: int = typer.Option(8, help="Children drawn per position W: the vector has W entries."),
    continuation_tokens: int = typer.Option(64, help="Tokens of continuation per prompt (the target's own generation)."),
    use_reference: bool = typer.Option(False, "--use-reference", help="Use the set's reference text as the continuation where it has one."),
    seed: int = typer.Option(0, help="Seed of the draws."),
    out: str = typer.Option(..., help=OUT_HELP),
    device: str = DEVICE,
    dtype: str = DTYPE,
    no_chat_template: bool = NO_CHAT_TEMPLATE,
):
    """Measure the acceptance vector: how often the target accepts the draft's k-th child."""
    from sequoia_cli.engine import Sampling
    from stages.measure_acceptance import measure_acceptance

    temperature, top_p = sampling_options(greedy, temperature, top_p)
    if width < 1:
        raise BadInput(f"--width is {width}: draw at least 1 child")
    if continuation_tokens < 1:
        raise BadInput(f"--continuation-tokens is {continuation_tokens}: use at least 1")
    records = load_prompt_records(data, prompt_field, max_prompts)
    draft_name, target_name = models_of(pair, draft, target, need_draft=True)
    draft_model, target_model, tokenizer = load_pair(draft_name, target_name, device, dtype)
    with progress_bar() as bar:
        task = bar.add_task("measuring", total=len(records))
        result = measure_acceptance(target_model, draft_model, tokenizer, records, Sampling(temperature, top_p),
                                    width, continuation_tokens, seed, chat_template=not no_chat_template,
                                    use_reference=use_reference, on_prompt_done=lambda: bar.advance(task))
    result.update(draft=draft_name, target=target_name, dataset=data, prompts=len(records),
                  continuation_tokens=continuation_tokens, seed=seed, device=device, dtype=dtype)
    artifacts.write_json(out, result)
    shown = ", ".join(f"{a:.3f}" for a in result["acceptance"])
    console.print(f"{result['samples']} positions, {result['mode']}: acceptance [{shown}], "
                  f"none accepted {result['rejected_all']:.3f} -> {out}")


@app.command("build-tree", epilog="Example: sequoia build-tree --acceptance acc.json --size 64 --max-depth 8 --out tree.json")
def build_tree_command(
    acceptance: str = typer.Option(..., help="A sequoia-acceptance/1 file ('-' for standard input)."),
    size: int = typer.Option(..., help="Number of nodes, root included (= tokens the target verifies per step)."),
    max_depth: Optional[int] = typer.Option(None, help="Longest root-to-leaf path in edges (= draft forwards per step). Default: no bound."),
    out: str = typer.Option(..., help=OUT_HELP),
    table: Optional[str] = typer.Option(None, help="Also write the whole E(n, d) table here (JSON)."),
):
    """The tree of SIZE nodes with the most expected accepted tokens (Sequoia's dynamic program)."""
    from stages.build_tree import build_tree

    vector = artifacts.read_acceptance(acceptance)
    tree, table_json = build_tree(vector, size, max_depth)
    artifacts.write_json(out, tree)
    if table:
        artifacts.write_json(table, table_json)
    console.print(f"tree of size {tree['size']}, depth {tree['depth']}: "
                  f"{tree['expected_tokens']:.3f} expected tokens per step -> {out}")


@app.command("profile-hw", epilog="Example: sequoia profile-hw --pair qwen2.5-coder --max-tokens 128 --out profile.json")
def profile_hw_command(
    target: Optional[str] = typer.Option(None, help="Target model. " + MODEL_HELP),
    draft: Optional[str] = typer.Option(None, help="Draft model (optional: without it the optimizer counts the draft as free). " + MODEL_HELP),
    pair: Optional[str] = typer.Option(None, help="A pair name from configs/: profiles both models."),
    max_tokens: int = typer.Option(128, help="Largest token count to time (1..8, then powers of two up to this)."),
    context_length: int = typer.Option(256, help="Tokens already in the KV cache during each timed forward."),
    repeats: int = typer.Option(5, help="Timed forwards per count (the median is kept)."),
    warmup: int = typer.Option(2, help="Untimed forwards per count first."),
    out: str = typer.Option(..., help=OUT_HELP),
    device: str = DEVICE,
    dtype: str = DTYPE,
    seed: int = typer.Option(0, help="Seed of the random tokens."),
):
    """Time one forward of n tokens on a KV cache, for the target (and the draft)."""
    from sequoia_cli import engine
    from stages.profile_hw import machine_facts, profile_model, token_counts

    if repeats < 1 or warmup < 0 or context_length < 0:
        raise BadInput("--repeats must be >= 1, --warmup and --context-length >= 0")
    counts = token_counts(max_tokens)
    draft_name, target_name = models_of(pair, draft, target, need_draft=bool(pair or draft))
    draft_model, target_model, _ = load_pair(draft_name, target_name, device, dtype)
    limit = min(engine.context_length(m) for m in (target_model, draft_model) if m is not None)
    if context_length + max_tokens > limit:
        raise BadInput(f"--context-length {context_length} + --max-tokens {max_tokens} is past the models' context of {limit}")
    profile = {"format": "sequoia-profile/1", **machine_facts(target_model.device, dtype),
               "context_length": context_length, "repeats": repeats, "warmup": warmup}
    models = [("target", target_name, target_model)] + ([("draft", draft_name, draft_model)] if draft_model else [])
    with progress_bar() as bar:
        for role, name, model in models:
            task = bar.add_task(f"timing {role}", total=len(counts))
            ms = profile_model(model, context_length, counts, repeats, warmup, seed, lambda: bar.advance(task))
            profile[role] = {"model": name, "ms": ms}
    artifacts.write_json(out, profile)
    for role, _, _ in models:
        ms = profile[role]["ms"]
        console.print(f"{role}: " + ", ".join(f"{n}: {t:.1f} ms" for n, t in ms.items()))
    console.print(f"-> {out}")


@app.command("optimize", epilog="Example: sequoia optimize --acceptance acc.json --profile profile.json --max-depth 12 --out tree.json")
def optimize_command(
    acceptance: str = typer.Option(..., help="A sequoia-acceptance/1 file ('-' for standard input)."),
    profile: str = typer.Option(..., help="A sequoia-profile/1 file from profile-hw."),
    max_size: Optional[int] = typer.Option(None, help="Largest tree to weigh. Default: the largest profiled target count."),
    max_depth: Optional[int] = typer.Option(None, help="Deepest tree to weigh. Default: no bound."),
    out: str = typer.Option(..., help=OUT_HELP),
    show: int = typer.Option(10, help="How many of the best candidates to print."),
):
    """Pick the tree size and depth with the best predicted speed on the profiled hardware."""
    from stages.optimize import optimize

    if acceptance == "-" and profile == "-":
        raise BadInput("--acceptance and --profile cannot both be standard input")
    vector = artifacts.read_acceptance(acceptance)
    timing = artifacts.read_profile(profile)
    tree = optimize(vector, timing, max_size, max_depth)
    artifacts.write_json(out, tree)
    plan = tree["plan"]
    grid = Table(title=f"best of {len(plan['candidates'])} candidates "
                       f"({plan['device']}, {plan['dtype']}; autoregressive {plan['autoregressive_ms_per_token']:.1f} ms/token)")
    for column in ("size", "depth", "expected tokens", "step ms", "ms/token", "speedup"):
        grid.add_column(column, justify="right")
    for c in plan["candidates"][:show]:
        grid.add_row(str(c["size"]), str(c["depth"]), f"{c['expected_tokens']:.3f}", f"{c['step_ms']:.1f}",
                     f"{c['ms_per_token']:.1f}", f"{c['speedup']:.2f}x")
    console.print(grid)
    if not plan["draft_counted"]:
        console.print("[yellow]the profile has no draft timings: the draft was counted as free[/]")
    console.print(f"chosen: size {plan['size']}, depth {plan['depth']}, predicted speedup "
                  f"{plan['speedup']:.2f}x over autoregressive -> {out}")


@app.command("show", epilog="Example: sequoia build-tree --acceptance acc.json --size 16 --out - | sequoia show -")
def show_command(tree: str = typer.Argument(..., help="A sequoia-tree/1 file ('-' for standard input).")):
    """Draw a tree with each node's rank and the probability that it is reached."""
    artifact = artifacts.read_tree(tree)
    parents = artifact["parents"]
    acceptance = artifact.get("acceptance")
    reach = path_probabilities(parents, acceptance) if acceptance else None
    node_ranks = ranks(parents)
    out = Console()
    expected = f", {artifact['expected_tokens']:.3f} expected tokens" if "expected_tokens" in artifact else ""
    labels = [Tree(f"root (size {artifact['size']}, depth {artifact['depth']}{expected})")]
    for i in range(1, len(parents)):
        label = f"{i}: child {node_ranks[i]}" + (f"  p={reach[i]:.4f}" if reach else "")
        labels.append(labels[parents[i]].add(label))
    out.print(labels[0])


@app.command("decode", epilog="Example: sequoia decode --pair qwen2.5-coder --tree tree.json --prompt 'Write a haiku about trees.' --greedy")
def decode_command(
    draft: Optional[str] = typer.Option(None, help="Draft model. " + MODEL_HELP),
    target: Optional[str] = typer.Option(None, help="Target model. " + MODEL_HELP),
    pair: Optional[str] = typer.Option(None, help="A pair name from configs/: sets both --draft and --target."),
    tree: Optional[str] = typer.Option(None, help="A sequoia-tree/1 file ('-' for standard input); methods sequoia, specinfer, topk."),
    prompt: Optional[str] = typer.Option(None, help="One prompt; the text streams to standard output."),
    data: Optional[str] = typer.Option(None, help="A prompt set: .jsonl/.json/.txt/.parquet file or a built-in name (mt-bench, humaneval)."),
    prompt_field: Optional[str] = typer.Option(None, help="The prompt set's text field (default: prompt)."),
    max_prompts: Optional[int] = typer.Option(None, help="Use only the first N prompts of --data."),
    greedy: bool = typer.Option(False, "--greedy", help="Temperature 0: the target's greedy output (token for token in float32; bfloat16 rounds trees differently)."),
    temperature: Optional[float] = typer.Option(None, help="Sampling temperature (> 0). Default: the tree's, else greedy."),
    top_p: Optional[float] = typer.Option(None, help="Nucleus sampling mass in (0, 1]. Default: the tree's, else 1."),
    method: str = typer.Option("sequoia", help="sequoia | specinfer | topk | chain | autoregressive."),
    chain_length: Optional[int] = typer.Option(None, help="Tokens the draft speculates per step, for --method chain."),
    max_new_tokens: int = typer.Option(128, help="Stop after this many new tokens (EOS and the context stop earlier)."),
    seed: Optional[int] = typer.Option(None, help="Makes a run repeatable; each prompt gets its own stream."),
    out: Optional[str] = typer.Option(None, help="Write one JSON line per prompt here ('-': standard output; default for --data)."),
    stats: Optional[str] = typer.Option(None, help="Write the run's figures here (JSON)."),
    device: str = DEVICE,
    dtype: str = DTYPE,
    no_chat_template: bool = NO_CHAT_TEMPLATE,
):
    """Generate text with the target, sped up by the draft and a token tree; the output follows the
    target's own distribution (with --greedy in float32: token for token)."""
    import random

    from sequoia_cli.engine import Sampling, chain_parents, context_length, tree_layout
    from stages.decode import decode_prompts, encode_prompts, summarize

    if method not in DECODE_METHODS:
        raise BadInput(f"--method '{method}' is not one of {', '.join(DECODE_METHODS)}")
    if (prompt is None) == (data is None):
        raise BadInput("give exactly one of --prompt TEXT and --data PROMPTS")
    tree_artifact = None
    if method == "chain":
        if chain_length is None or chain_length < 1 or tree:
            raise BadInput("--method chain takes --chain-length K (K >= 1) and no --tree")
        parents = chain_parents(chain_length)
    elif method == "autoregressive":
        if tree or chain_length:
            raise BadInput("--method autoregressive takes no --tree or --chain-length")
        parents = [-1]
    else:
        if not tree or chain_length:
            raise BadInput(f"--method {method} takes --tree (a sequoia-tree/1 file) and no --chain-length")
        tree_artifact = artifacts.read_tree(tree)
        parents = tree_artifact["parents"]
    temperature, top_p = sampling_options(greedy, temperature, top_p, (tree_artifact or {}).get("source"))
    if max_new_tokens < 1:
        raise BadInput(f"--max-new-tokens is {max_new_tokens}: generate at least 1 token")
    prompts = [prompt] if prompt is not None else [r['prompt'] for r in load_prompt_records(data, prompt_field, max_prompts)]
    draft_name, target_name = models_of(pair, draft, target, need_draft=len(parents) > 1)
    draft_model, target_model, tokenizer = load_pair(draft_name, target_name, device, dtype)
    layout = tree_layout(parents, target_model.device)
    sampling = Sampling(temperature, top_p, "sequoia" if method == "chain" else method)
    seed = random.randrange(2**31) if seed is None else seed
    context = min(context_length(m) for m in (target_model, draft_model) if m is not None)
    encoded = encode_prompts(tokenizer, prompts, context, not no_chat_template)  # fails before any output
    mode = "greedy" if sampling.greedy else f"temperature {temperature}, top-p {top_p}"
    console.print(f"{method}: tree of size {layout.size}, depth {layout.depth}; {mode}; seed {seed}")

    common = dict(max_new_tokens=max_new_tokens, seed=seed)
    if prompt is not None:
        records = decode_prompts(target_model, draft_model, tokenizer, prompts, encoded, layout, sampling,
                                 on_tokens=text_streamer(tokenizer), **common)
        sys.stdout.write("\n")
    else:
        with progress_bar() as bar:
            task = bar.add_task("decoding", total=len(prompts))
            records = decode_prompts(target_model, draft_model, tokenizer, prompts, encoded, layout, sampling,
                                     on_prompt_done=lambda: bar.advance(task), **common)
        out = out or "-"
    if out:
        artifacts.write_text(out, "".join(json.dumps(r) + "\n" for r in records))
    expected = tree_artifact.get("expected_tokens") if tree_artifact else None
    figures = summarize(records, layout, expected)
    figures.update(format="sequoia-stats/1", method=method, temperature=temperature, top_p=top_p, seed=seed,
                   draft=draft_name, target=target_name, device=device, dtype=dtype)
    if stats:
        artifacts.write_json(stats, figures)
    print_figures(figures)


@app.command("compare", epilog="Example: sequoia compare runs/sequoia.json runs/autoregressive.json")
def compare_command(
    stats: list[str] = typer.Argument(..., help="Stats files written by decode --stats; the last is the baseline."),
):
    """Print the speeds of several decode runs and their ratio to the last one."""
    runs = [artifacts.read_json(path) for path in stats]
    for path, run in zip(stats, runs):
        if "tokens_per_second" not in run:
            raise BadInput(f"{path}: not a stats file of sequoia decode (no 'tokens_per_second')")
    baseline = runs[-1]["tokens_per_second"]
    grid = Table()
    for column in ("run", "method", "tokens/s", "tokens per step", "predicted", "speedup"):
        grid.add_column(column, justify="right")
    for path, run in zip(stats, runs):
        predicted = run.get("expected_tokens")
        grid.add_row(path, run.get("method", "?"), f"{run['tokens_per_second']:.2f}", f"{run['mean_accepted']:.3f}",
                     f"{predicted:.3f}" if predicted else "-", f"{run['tokens_per_second'] / baseline:.2f}x")
    Console().print(grid)


@app.command("bench", epilog="Example: sequoia bench --quick --pair qwen2.5-coder --out-dir bench-report")
def bench_command(
    quick: bool = typer.Option(False, "--quick", help="Fewer sizes, temperatures and tokens (about 5 minutes on a 2-core CPU for the default pair; the full run is under 45)."),
    pair: Optional[str] = typer.Option(None, help="A pair name from configs/: sets both --draft and --target. Default: qwen2.5-coder, unless --draft and --target are given."),
    draft: Optional[str] = typer.Option(None, help="Draft model. " + MODEL_HELP),
    target: Optional[str] = typer.Option(None, help="Target model. " + MODEL_HELP),
    out_dir: str = typer.Option("bench-report", help="Folder for report.md, scalability.png, robustness.png and bench.json (every row)."),
    device: str = DEVICE,
    dtype: str = DTYPE,
    seed: int = typer.Option(0, help="Seed of every draw (each prompt gets its own stream)."),
):
    """Measure the paper's claims on a model pair in one run: tokens per step against tree size and
    temperature, wall clock against Hugging Face generate (plain and assisted), the optimizer's pick
    against fixed trees, the DP's run time and the loop's overhead. Prompts: the first built-in
    mt-bench questions with the chat template."""
    from stages.bench import FULL, QUICK, count_cells, run_bench

    if not (pair or draft or target):
        pair = "qwen2.5-coder"
    draft_name, target_name = models_of(pair, draft, target, need_draft=True)
    draft_model, target_model, tokenizer = load_pair(draft_name, target_name, device, dtype)
    config = QUICK if quick else FULL
    with progress_bar() as bar:
        task = bar.add_task(f"bench ({config.name})", total=count_cells(config))
        report = run_bench(target_model, draft_model, tokenizer, out_dir, config, seed,
                           names={"target": target_name, "draft": draft_name}, dtype=dtype,
                           tick=lambda label: bar.update(task, advance=1, description=label))
    console.print(f"report -> {report} (plots and bench.json beside it)")


def text_streamer(tokenizer):
    """A callback that prints newly accepted tokens as text (decoding the whole output each time,
    since a token's text can depend on its neighbours)."""
    ids, shown = [], [0]

    def stream(new: list[int]) -> None:
        ids.extend(new)
        text = tokenizer.decode(ids, skip_special_tokens=True)
        sys.stdout.write(text[shown[0]:])
        sys.stdout.flush()
        shown[0] = len(text)

    return stream


def print_figures(figures: dict) -> None:
    grid = Table(show_header=False, box=None)
    grid.add_row("tokens", f"{figures['tokens']} in {figures['seconds']:.2f} s = {figures['tokens_per_second']:.2f} tokens/s")
    grid.add_row("target forwards", str(figures["target_forwards"]))
    grid.add_row("draft forwards", str(figures["draft_forwards"]))
    predicted = f" (tree predicts {figures['expected_tokens']:.3f})" if figures.get("expected_tokens") else ""
    grid.add_row("tokens per step", f"{figures['mean_accepted']:.3f}{predicted}")
    console.print(grid)


def main() -> None:
    """Run the app; turn bad input into one line and exit code 2."""
    command = typer.main.get_command(app)
    try:
        result = command.main(standalone_mode=False)
    except BadInput as err:
        fail(str(err), 2)
    except typer.TyperException as err:  # usage errors (exit code 2) and other click errors
        ctx = getattr(err, "ctx", None)
        fail((f"{ctx.command_path}: " if ctx else "") + err.format_message(), err.exit_code)
    except (typer.Abort, KeyboardInterrupt):
        fail("aborted", 130)
    except BrokenPipeError:
        sys.exit(1)
    sys.exit(result if isinstance(result, int) else 0)


def fail(message: str, code: int) -> None:
    console.print(f"error: {message}", markup=False, highlight=False, soft_wrap=True)
    sys.exit(code)
