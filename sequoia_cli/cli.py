"""The `sequoia` command: parse, load, call one stage, render a summary on stderr, write artifacts.

Exit codes: 0 success, 2 bad input (one line naming the file and the fault), 1 anything else.
Options shared by several commands are declared once, below; the model options reach a command
as one `ModelChoice` through `model_options`.
"""

import functools
import inspect
import sys
from typing import Annotated

import typer

from sequoia_cli import artifacts, render
from sequoia_cli.errors import BadInput, SetupError
from sequoia_cli.loading import ModelChoice
from sequoia_cli.render import Bars, console

app = typer.Typer(
    help="Sequoia speculative decoding: a draft model proposes a token tree, the target verifies "
    "it in one forward. Stages pass JSON artifacts as files or through pipes ('-').",
    epilog="Example: sequoia build-tree --acceptance acc.json --size 32 --out - | sequoia show -",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)

MODEL_HELP = "A Hugging Face id, a local folder, or a pair name from configs/ (e.g. qwen2.5-coder)."
DATA_HELP = ("A prompt set: .jsonl/.json/.txt/.parquet file or a built-in name (mt-bench, humaneval, spec-bench,"
             " or one Spec-Bench subtask: spec-bench:mt-bench|translation|summarization|qa|math_reasoning|rag).")


def option(help: str, *names: str) -> typer.Option:
    return typer.Option(*names, help=help)


Out = Annotated[str, option("Where to write the artifact ('-' for standard output).")]
NoChatTemplate = Annotated[bool, option("Feed prompts as raw text, not as a user turn of the model's chat"
                                        " template.", "--no-chat-template")]
PromptField = Annotated[str | None, option("The prompt set's text field (default: prompt).")]
MaxPrompts = Annotated[int | None, option("Use only the first N prompts.")]
Temperature = Annotated[float | None, option("Sampling temperature (> 0).")]
TopP = Annotated[float | None, option("Nucleus sampling mass in (0, 1].")]
AcceptanceFile = Annotated[str, option("A sequoia-acceptance/1 file ('-' for standard input).", "--acceptance")]
Positional = Annotated[bool, option(
    "Plan with the single acceptance vector at every level (the paper's DP), not with rows by level (those the"
    " tree meets on the file's ranks, else the file's own).", "--positional")]

# The options of every command that loads models, in the order --help lists them.
MODEL_OPTIONS = {
    "pair": (str | None, None, "A pair name from configs/: sets both --draft and --target."),
    "draft": (str | None, None, "Draft model. " + MODEL_HELP),
    "target": (str | None, None, "Target model. " + MODEL_HELP),
    "device": (str, "cpu", "cpu, cuda or cuda:N."),
    "dtype": (str, "bfloat16", "bfloat16, float16 or float32 (bfloat16 runs oneDNN's packed kernels on a CPU;"
                               " float32 makes greedy decoding token for token the target's own)."),
    "draft_quantize": (str | None, None, "none, int8 or int4: weight-only quantization of the draft's linear"
                       " layers, its output layer included (the output never changes). Default: the pair's"
                       " setting, else none."),
    "target_quantize": (str | None, None, "none, int8 or int4: weight-only quantization of the target's linear"
                        " layers; the target then is that quantized model. Default: the pair's setting, else none."),
    "draft_vocab": (int | None, None, "The draft proposes only from N token ids: every special token and the"
                    " lowest ids (a BPE vocabulary's most frequent tokens). Default: the pair's setting, else the"
                    " whole vocabulary."),
    "device_map": (str | None, None, "Place the target with accelerate: auto, balanced, sequential, or a JSON"
                   " file mapping module names to devices (cpu, cuda:N, disk). The draft stays whole on --device."
                   " Default: auto when --max-memory or --offload-folder is given, else the whole target on"
                   " --device."),
    "max_memory": (str | None, None, "DEVICE=SIZE[,DEVICE=SIZE...], e.g. cpu=1GiB,cuda:0=20GiB: the most of the"
                   " target's weights each device may hold; the rest goes to --offload-folder and is streamed in at"
                   " every forward."),
    "offload_folder": (str | None, None, "Folder for the target's weights that fit on no device (read from disk"
                       " at every forward)."),
    "engine": (str, "auto", "How forwards run: eager (dynamic KV caches, any placement), static (preallocated"
               " caches, fixed-shape forwards) or cuda-graphs (static, each forward captured once and replayed;"
               " CUDA only). auto: cuda-graphs on CUDA, else eager."),
}


def model_options(command):
    """Give `command` the model options: it declares a `models: ModelChoice` parameter and
    receives them in it."""
    signature = inspect.signature(command)
    extra = [inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default,
                               annotation=Annotated[kind, typer.Option(help=help)])
             for name, (kind, default, help) in MODEL_OPTIONS.items()]
    own = [parameter for name, parameter in signature.parameters.items() if name != "models"]

    @functools.wraps(command)
    def wrapper(**values):
        choice = ModelChoice(**{name: values.pop(name) for name in MODEL_OPTIONS})
        return command(models=choice, **values)

    wrapper.__signature__ = signature.replace(parameters=own + extra)
    wrapper.__annotations__ = {parameter.name: parameter.annotation for parameter in own + extra}
    return wrapper


def load(resolved, check=None):
    """The models of a resolved choice, loaded under a status line; `check(tokenizer, limits)`
    before their weights load (loading.load)."""
    from sequoia_cli.loading import load

    return load(resolved, console.status, check)


def prompt_records(data: str, prompt_field: str | None, max_prompts: int | None) -> list[dict]:
    from sequoia_cli.prompts import load_prompt_records  # datasets is slow to import: only when asked

    return load_prompt_records(data, prompt_field, max_prompts)


def writable(**paths: str | None) -> None:
    """Check every output path, each by the option that names it, before any long work."""
    for setting, path in paths.items():
        artifacts.check_writable(path, setting)


@app.command("fetch-models", epilog="Example: sequoia fetch-models qwen2.5-coder")
def fetch_models_command(pair: str = typer.Argument("qwen2.5-coder", help="A pair name from configs/.")):
    """Download, verify and convert a model pair from configs/ once, into the cache folder
    ($SEQUOIA_CACHE, default ~/.cache/sequoia). Safe to rerun: a fetched pair is skipped."""
    from sequoia_cli.pairs import pair_config
    from stages.fetch_models import fetch_pair

    pair_config(pair)  # an unknown pair is an error before the progress display starts
    with render.progress_bar() as bar:
        folders = fetch_pair(pair, bar)
    for role, folder in folders.items():
        console.print(f"{role}: {folder}")


@app.command("pairs", epilog="Example: sequoia pairs")
def pairs_command():
    """List the built-in model pairs, their models and whether they are fetched."""
    from sequoia_cli.pairs import ROLES, is_complete, model_folder, pair_config, pair_names

    for name in pair_names():
        config = pair_config(name)
        fetched = all(is_complete(model_folder(name, role)) for role in ROLES)
        models = ", ".join(f"{role} {config[role]['name']}" for role in ROLES)
        print(f"{name}\t{models}\t{'fetched' if fetched else 'not fetched'}")


@app.command("measure-acceptance", epilog="Example: sequoia measure-acceptance --pair qwen2.5-coder --data mt-bench"
             " --max-prompts 8 --temperature 0.6 --top-p 0.9 --width 8 --out acc.json")
@model_options
def measure_acceptance_command(
    models: ModelChoice, data: Annotated[str, option(DATA_HELP)], out: Out, prompt_field: PromptField = None,
    max_prompts: MaxPrompts = None,
    greedy: Annotated[bool, option("Temperature 0: children are the draft's top-k and the target's argmax"
                                   " decides.", "--greedy")] = False,
    temperature: Temperature = None, top_p: TopP = None,
    width: Annotated[int, option("Children drawn per position W: the vector has W entries.")] = 8,
    continuation_tokens: Annotated[int, option("Tokens of continuation per prompt (the target's own"
                                               " generation).")] = 64,
    use_reference: Annotated[bool, option("Use the set's reference text as the continuation where it has one.",
                                          "--use-reference")] = False,
    seed: Annotated[int, option("Seed of the draws.")] = 0,
    no_chat_template: NoChatTemplate = False,
    shard: Annotated[str | None, option("I/N: measure prompts I, I+N, I+2N, ... only (0-based), e.g. on N"
                                           " machines; merge the shards with merge-acceptance.")] = None,
):
    """Measure the acceptance vector: how often the target accepts the draft's k-th child, overall
    and by level (1: right after a rejection, l: after l-1 accepted positions, 4: 4 or more)."""
    from sequoia_cli.loading import resolve
    from stages import measure_acceptance as stage

    writable(out=out)
    request = stage.prepare(prompt_records(data, prompt_field, max_prompts), greedy, temperature, top_p, width,
                            continuation_tokens, seed, not no_chat_template, use_reference, shard)
    loaded = load(resolve(models, need_draft=True), functools.partial(stage.fitted_prompts, request))
    with Bars() as bars:
        acceptance = stage.measure(request, loaded, data, bars.task)
    artifacts.write_json(out, acceptance)
    render.acceptance_summary(acceptance, out)


@app.command("merge-acceptance", epilog="Example: sequoia merge-acceptance acc-0.json acc-1.json --out acc.json")
def merge_acceptance_command(
    shards: Annotated[list[str], typer.Argument(help="Acceptance files of measure-acceptance --shard I/N"
                                                     " ('-': standard input, once).")],
    out: Out,
):
    """Merge the shards of one acceptance measurement exactly (from their counts and ranks): the
    result is the measurement of all their prompts. Shards of other models, setups, sampling
    settings or widths are refused."""
    from stages.merge_acceptance import merge_acceptance

    writable(out=out)
    acceptance = merge_acceptance([(path, artifacts.read_acceptance(path)) for path in shards])
    artifacts.write_json(out, acceptance)
    render.acceptance_summary(acceptance, out)


@app.command("build-tree", epilog="Example: sequoia build-tree --acceptance acc.json --size 64 --max-depth 8"
             " --out tree.json")
def build_tree_command(
    acceptance: AcceptanceFile, out: Out,
    size: Annotated[int, option("Number of nodes, root included (= tokens the target verifies per step).")],
    max_depth: Annotated[int | None, option("Longest root-to-leaf path in edges (= draft forwards per step)."
                                               " Default: no bound.")] = None,
    table: Annotated[str | None, option("Also write the whole E(n, d) table here (JSON).")] = None,
    positional: Positional = False,
):
    """The tree of SIZE nodes with the most expected accepted tokens (Sequoia's dynamic program;
    by level where the acceptance file has ranks or rows by level: with ranks, planned again with
    the rows the tree meets until it stays the same)."""
    from stages.build_tree import build_tree

    writable(out=out, table=table)
    tree, table_artifact = build_tree(artifacts.read_acceptance(acceptance), size, max_depth, positional)
    artifacts.write_json(out, tree)
    if table:
        artifacts.write_json(table, table_artifact)
    render.tree_summary(tree, out)


@app.command("profile-hw", epilog="Example: sequoia profile-hw --pair qwen2.5-coder --max-tokens 128"
             " --out profile.json")
@model_options
def profile_hw_command(
    models: ModelChoice, out: Out,
    max_tokens: Annotated[int, option("Largest token count to time (1..8, then powers of two up to this).")] = 128,
    context_length: Annotated[int, option("Tokens already in the KV cache during each timed forward.")] = 256,
    repeats: Annotated[int, option("Rounds: each times every (model, count) twice, out and back in a rotated order,"
                                   " each the fastest of 3 forwards; each count keeps the median over rounds of its"
                                   " time over its model's t(1) of the same round.")] = 5,
    warmup: Annotated[int, option("Untimed forwards per (model, count) first.")] = 2,
    seed: Annotated[int, option("Seed of the random tokens.")] = 0,
):
    """Time one forward of n tokens on a KV cache, for the target and, given a draft or a pair,
    the draft (without one, the optimizer counts the draft as free). The machine's speed drifts,
    so every count is timed in interleaved rounds as a ratio to its model's t(1) of the same round
    (the draft's t(1) to the target's), each ratio the median over rounds. A profile whose rounds
    read the target's t(1) more than 15% apart is marked unsteady: a slowed machine also changes
    the curves' shape, so profile again when the machine is idle."""
    from sequoia_cli.loading import resolve
    from stages.profile_hw import check_settings, profile

    check_settings(max_tokens, context_length, repeats, warmup, seed)
    writable(out=out)
    loaded = load(resolve(models, need_draft=bool(models.pair or models.draft)))
    with Bars() as bars:
        result = profile(loaded, max_tokens, context_length, repeats, warmup, seed, bars.task)
    artifacts.write_json(out, result)
    render.profile_summary(result, out)


@app.command("optimize", epilog="Example: sequoia optimize --acceptance acc.json --profile profile.json"
             " --max-depth 12 --out tree.json")
def optimize_command(
    acceptance: AcceptanceFile, out: Out,
    profile: Annotated[str, option("A sequoia-profile/1 file from profile-hw.")],
    max_size: Annotated[int | None, option("Largest tree to weigh. Default: the largest profiled target"
                                              " count.")] = None,
    max_depth: Annotated[int | None, option("Deepest tree to weigh. Default: no bound.")] = None,
    show: Annotated[int, option("How many of the best candidates to print.")] = 10,
    positional: Positional = False,
    method: Annotated[str, option("sequoia: the tree. dynamic: also the plan decode --method dynamic grows a"
                                  " tree by every step (capped by the tree the target's time alone pays for; needs"
                                  " an acceptance file with a calibration and a profile of the pair), with its"
                                  " predicted speed; where that is no faster than the tree's, decode runs the"
                                  " tree.")] = "sequoia",
):
    """Pick the tree size and depth with the best predicted speed on the profiled hardware.

    Cost model: a step costs the target's forward over the whole tree, plus one draft forward per
    level but the last, each over that level's nodes; the first reads the root and, when the last
    step accepted a node of the deepest level (which the draft never read), that node too (2 tokens
    with the probability that the walk reaches the deepest level). Times come from the profile,
    interpolated between its counts. Predicted speedup = expected tokens per step x target t(1) /
    step time, the prompt's prefill left out (the same for every tree). Expected tokens come from
    the rows by level the tree meets on the acceptance file's ranks (planned again until the tree
    stays the same), else from its rows or vector."""
    from stages.optimize import optimize

    if acceptance == "-" and profile == "-":
        raise BadInput("--acceptance and --profile cannot both be standard input")
    writable(out=out)
    tree = optimize(artifacts.read_acceptance(acceptance), artifacts.read_profile(profile), max_size, max_depth,
                    positional, method)
    artifacts.write_json(out, tree)
    render.plan_table(tree, out, show)


@app.command("show", epilog="Example: sequoia build-tree --acceptance acc.json --size 16 --out - | sequoia show -")
def show_command(tree: str = typer.Argument(..., help="A sequoia-tree/1 file ('-' for standard input).")):
    """Draw a tree with each node's rank and the probability that it is reached."""
    render.tree_drawing(artifacts.read_tree(tree))


@app.command("export-tree", epilog="Example: sequoia export-tree tree.json --format growmap --out tree.pt")
def export_tree_command(
    tree: Annotated[str, typer.Argument(help="A sequoia-tree/1 file ('-' for standard input).")],
    format: Annotated[str, option("eagle-choices (TensorRT-LLM's eagle_choices / medusa_choices: every node's path"
                                  " of 0-based child ranks), growmap (the official Sequoia code's torch.save dict, a"
                                  " .pt file) or growmap-json (the same keys as JSON lists, as UMbreLLa keeps"
                                  " them).")],
    out: Annotated[str, option("Where to write ('-' for standard output, the JSON formats only).")] = "-",
):
    """Write a tree in another engine's format, its nodes numbered level by level. A greedy tree
    means the same there (rank k: the draft's k-th most likely token); a stochastic tree's k-th
    child is sequoia's k-th draw without replacement, which an engine's top-k choices are not."""
    from stages.tree_interchange import check_export, export_tree

    check_export(format, out)
    writable(out=out)
    loaded = artifacts.read_tree(tree)
    content = export_tree(loaded, format)
    if isinstance(content, bytes):
        artifacts.write_bytes(out, content)
    else:
        artifacts.write_text(out, content)
    console.print(f"tree of size {loaded['size']}, depth {loaded['depth']} as {format} -> {out}")


@app.command("import-tree", epilog="Example: sequoia import-tree A100-C4-68m-7b-greedy.pt --acceptance acc.json"
             " --out tree.json")
def import_tree_command(
    source: Annotated[str, typer.Argument(help="A growmap (.pt from the official Sequoia code, or UMbreLLa's JSON)"
                                               " or an eagle-choices JSON list ('-' for standard input).")],
    out: Out,
    acceptance: Annotated[str | None, option("A sequoia-acceptance/1 file: rate the tree's expected tokens under it,"
                                                " as build-tree does.")] = None,
):
    """Read a tree from another engine's file into a sequoia-tree/1, numbered level by level."""
    from stages.tree_interchange import import_tree

    if source == "-" and acceptance == "-":
        raise BadInput("SOURCE and --acceptance cannot both be standard input")
    writable(out=out)
    tree = import_tree(source, artifacts.read_acceptance(acceptance) if acceptance else None)
    artifacts.write_json(out, tree)
    if "expected_tokens" in tree:
        render.tree_summary(tree, out)
    else:
        console.print(f"tree of size {tree['size']}, depth {tree['depth']} -> {out}")


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
    no_chat_template: NoChatTemplate = False,
):
    """Generate text with the target, sped up by the draft and a token tree; the output follows the
    target's own distribution (with --greedy in float32: token for token)."""
    from sequoia_cli.loading import resolve
    from stages import decode as stage

    if (prompt is None) == (data is None):
        raise BadInput("give exactly one of --prompt TEXT and --data PROMPTS")
    if turns not in ("first", "all"):
        raise BadInput(f"turns '{turns}' is not first or all", "turns")
    request = stage.prepare(method, artifacts.read_tree(tree) if tree else None, chain_length, greedy, temperature,
                            top_p, max_new_tokens, seed, not no_chat_template)
    streaming = prompt is not None
    out = out if out is not None or streaming else "-"  # an empty --out is refused, not taken for the default
    writable(out=out, stats=stats)
    prompts = [prompt] if streaming else [r.get("turns", r["prompt"]) if turns == "all" else r["prompt"]
                                          for r in prompt_records(data, prompt_field, max_prompts)]
    resolved = resolve(models, request.needs_draft)
    for warning in stage.setup_mismatches(request.tree, resolved.setups, resolved.engine):
        console.print(f"warning: {warning}", soft_wrap=True)
    loaded = load(resolved, stage.fits(request, prompts))
    with Bars() as bars:
        shown = dict(on_tokens=render.text_streamer(loaded.tokenizer)) if streaming else dict(progress=bars.task)
        records, figures = stage.decode(request, loaded, prompts, console.print, **shown)
    if streaming:
        sys.stdout.write("\n")
    if out:
        artifacts.write_jsonl(out, records)
    if stats:
        artifacts.write_json(stats, figures)
    render.stats_table(figures)


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
    from stages import bench as stage

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
    from stages.bench.gpu_check import DEFAULT_OUT_DIR, gpu_check
    from stages.bench.gpu_report import write_report

    where = device_of(device)
    folder = out or DEFAULT_OUT_DIR
    writable(out=f"{folder}/report.md")
    with Bars() as bars:
        for report in gpu_check(where, quick, bars.task):
            path = write_report(folder, report)
    console.print(f"wall time {report['seconds']:.1f} s; report -> {path} (report.json beside it)")


def main(args: list[str] | None = None) -> None:
    """Run the app on `args` (default: the command line); turn bad input into one line and exit
    code 2."""
    command = typer.main.get_command(app)
    try:
        result = command.main(args=args, prog_name="sequoia", standalone_mode=False)
    except BadInput as err:
        fail(err.worded_as_options(), 2)
    except SetupError as err:
        fail(str(err), 1)
    except typer.TyperException as err:  # usage errors (exit code 2) and other click errors
        ctx = getattr(err, "ctx", None)
        fail((f"{ctx.command_path}: " if ctx else "") + err.format_message(), err.exit_code)
    except (typer.Abort, KeyboardInterrupt):
        fail("aborted", 130)
    except BrokenPipeError:
        sys.exit(1)
    sys.exit(result if isinstance(result, int) else 0)


def fail(message: str, code: int) -> None:
    render.error_line(message)
    sys.exit(code)
