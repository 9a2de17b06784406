"""The `sequoia` command: parse, load, call one stage, render a summary on stderr, write artifacts.

Exit codes: 0 success, 2 bad input (one line naming the file and the fault), 1 anything else.
Options shared by several commands are declared once, below, as annotated types.
"""

import json
import random
import sys
import tempfile
from dataclasses import replace
from typing import Annotated, Optional

import typer

from sequoia_cli import artifacts, render
from sequoia_cli.errors import BadInput, SetupError
from sequoia_cli.render import console, progress_bar

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
DATA_HELP = "A prompt set: .jsonl/.json/.txt/.parquet file or a built-in name (mt-bench, humaneval)."

Out = Annotated[str, typer.Option(help="Where to write the artifact ('-' for standard output).")]
Draft = Annotated[Optional[str], typer.Option(help="Draft model. " + MODEL_HELP)]
Target = Annotated[Optional[str], typer.Option(help="Target model. " + MODEL_HELP)]
Pair = Annotated[Optional[str], typer.Option(help="A pair name from configs/: sets both --draft and --target.")]
Device = Annotated[str, typer.Option(help="cpu, cuda or cuda:N.")]
Dtype = Annotated[str, typer.Option(help="bfloat16, float16 or float32 (on a 2-core CPU bfloat16 ran 2x faster"
                                         " than float32 at 1 token, 3.5-4.8x at 16-64).")]
NoChatTemplate = Annotated[bool, typer.Option("--no-chat-template", help="Feed prompts as raw text, not as a user"
                                                                          " turn of the model's chat template.")]
Data = Annotated[str, typer.Option(help=DATA_HELP)]
PromptField = Annotated[Optional[str], typer.Option(help="The prompt set's text field (default: prompt).")]
MaxPrompts = Annotated[Optional[int], typer.Option(help="Use only the first N prompts.")]
Greedy = Annotated[bool, typer.Option("--greedy", help="Temperature 0: children are the draft's top-k and the"
                                                        " target's argmax decides.")]
Temperature = Annotated[Optional[float], typer.Option(help="Sampling temperature (> 0).")]
TopP = Annotated[Optional[float], typer.Option(help="Nucleus sampling mass in (0, 1].")]
DraftQuantize = Annotated[Optional[str], typer.Option(help="none, int8 or int4: weight-only quantization of the draft's linear layers, its output layer included (the output never changes). Default: the pair's setting, else none.")]
TargetQuantize = Annotated[Optional[str], typer.Option(help="none, int8 or int4: weight-only quantization of the target's linear layers; the target then is that quantized model. Default: the pair's setting, else none.")]
DeviceMap = Annotated[Optional[str], typer.Option(help="Place the target with accelerate: auto, balanced, sequential, or a JSON file mapping module names to devices (cpu, cuda:N, disk). The draft stays whole on --device. Default: auto when --max-memory or --offload-folder is given, else the whole target on --device.")]
MaxMemory = Annotated[Optional[str], typer.Option(help="DEVICE=SIZE[,DEVICE=SIZE...], e.g. cpu=1GiB,cuda:0=20GiB: the most of the target's weights each device may hold; the rest goes to --offload-folder and is streamed in at every forward.")]
OffloadFolder = Annotated[Optional[str], typer.Option(help="Folder for the target's weights that fit on no device (read from disk at every forward).")]
DraftVocab = Annotated[Optional[int], typer.Option(help="The draft proposes only from N token ids: every special token and the lowest ids (a BPE vocabulary's most frequent tokens). Default: the pair's setting, else the whole vocabulary.")]
AcceptanceFile = Annotated[str, typer.Option("--acceptance", help="A sequoia-acceptance/1 file ('-' for standard input).")]
Positional = Annotated[bool, typer.Option("--positional", help="Plan with the single acceptance vector at every level (the paper's DP), not with rows by level (those the tree meets on the file's ranks, else the file's own).")]


def sampling_options(greedy: bool, temperature: Optional[float], top_p: Optional[float],
                     default: dict | None = None) -> tuple[float, float]:
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


def model_names(pair: Optional[str], draft: Optional[str], target: Optional[str],
                need_draft: bool) -> tuple[Optional[str], str]:
    """(draft or None, target) from --pair or --draft/--target."""
    from sequoia_cli.pairs import pair_config

    if pair and (draft or target):
        raise BadInput("--pair sets both models: give it alone, or --draft and --target")
    if pair:
        pair_config(pair)  # an unknown name is an error here, not a Hugging Face id
        draft, target = pair, pair
    if not target:
        raise BadInput("no target model: give --target (or --pair)")
    if need_draft and not draft:
        raise BadInput("no draft model: give --draft (or --pair)")
    return draft if need_draft else None, target


def target_placement(device_map: Optional[str], max_memory: Optional[str], offload_folder: Optional[str]):
    from sequoia_cli.models import placement_of

    return placement_of(device_map, max_memory, offload_folder)


def model_setups(draft_name: Optional[str], target_name: str, draft_quantize: Optional[str],
                 target_quantize: Optional[str], draft_vocab: Optional[int], placement: Optional[dict] = None) -> dict:
    """{"draft": {"quantize", "vocab"}, "target": {..., "placement"}}: the options given, else the
    defaults of the pair a model comes from (its `setup:` in configs/), else none and the whole
    vocabulary; the target's placement (models.placement_of), None for whole on --device."""
    from sequoia_cli.pairs import pair_config, pair_names
    from sequoia_cli.quantize import QUANTIZE

    def default(name, role, key):
        return pair_config(name)[role].get("setup", {}).get(key) if name in pair_names() else None

    setups = {"target": {"quantize": target_quantize or default(target_name, "target", "quantize") or "none",
                         "vocab": None, "placement": placement},
              "draft": {"quantize": draft_quantize or default(draft_name, "draft", "quantize") or "none",
                        "vocab": draft_vocab if draft_vocab is not None else default(draft_name, "draft", "vocab")}}
    for role, setup in setups.items():
        if setup["quantize"] not in QUANTIZE:
            raise BadInput(f"--{role}-quantize '{setup['quantize']}' is not one of {', '.join(QUANTIZE)}")
    if placement and setups["target"]["quantize"] != "none":
        raise BadInput("--target-quantize and a placement (--device-map, --max-memory, --offload-folder) do not go"
                       " together: accelerate streams the target's own weights")
    return setups


def load_pair(draft_name: Optional[str], target_name: str, device: str, dtype: str, setups: dict):
    """(draft or None, target, tokenizer), with the tokenizers checked to agree and each model set
    up as `setups` says (model_setups)."""
    from sequoia_cli.models import check_same_tokenizer, device_of, dtype_of, load_model, load_tokenizer
    from sequoia_cli.quantize import check_kernels, kept_ids, set_up

    where, precision = device_of(device), dtype_of(dtype)
    tokenizer = load_tokenizer(target_name, "target")
    if draft_name:
        check_same_tokenizer(load_tokenizer(draft_name, "draft"), tokenizer)
        if setups["draft"]["vocab"] is not None:
            kept_ids(tokenizer, setups["draft"]["vocab"], len(tokenizer))  # a bad N fails before loading
    for role in ("target", "draft") if draft_name else ("target",):
        check_kernels(setups[role]["quantize"], where, f"--{role}-quantize")
    placement = setups["target"].get("placement")
    with console.status(f"loading target {target_name} ({dtype}, {'placed by accelerate' if placement else device})"):
        target = set_up(load_model(target_name, "target", where, precision, placement), tokenizer,
                        setups["target"]["quantize"], None)
    draft = None
    if draft_name:
        with console.status(f"loading draft {draft_name}"):
            draft = set_up(load_model(draft_name, "draft", where, precision), tokenizer, **setups["draft"])
    return draft, target, tokenizer


def prompt_records(source: str, field: Optional[str], max_prompts: Optional[int]) -> list[dict]:
    from sequoia_cli.prompts import load_prompt_records  # datasets is slow to import: only when asked

    if max_prompts is not None and max_prompts < 1:
        raise BadInput(f"--max-prompts is {max_prompts}: use at least 1 prompt")
    return load_prompt_records(source, field, max_prompts)


def writable(*paths: Optional[str]) -> None:
    """Check every output path before any long work."""
    for path in paths:
        artifacts.check_writable(path)


@app.command("fetch-models", epilog="Example: sequoia fetch-models qwen2.5-coder")
def fetch_models_command(pair: str = typer.Argument("qwen2.5-coder", help="A pair name from configs/.")):
    """Download, verify and convert a model pair from configs/ once, into the cache folder
    ($SEQUOIA_CACHE, default ~/.cache/sequoia). Safe to rerun: a fetched pair is skipped."""
    from sequoia_cli.pairs import pair_config
    from stages.fetch_models import fetch_pair

    pair_config(pair)  # an unknown pair is an error before the progress display starts
    with progress_bar() as bar:
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


@app.command("measure-acceptance", epilog="Example: sequoia measure-acceptance --pair qwen2.5-coder --data mt-bench --max-prompts 8 --temperature 0.6 --top-p 0.9 --width 8 --out acc.json")
def measure_acceptance_command(
    data: Data, out: Out, draft: Draft = None, target: Target = None, pair: Pair = None,
    prompt_field: PromptField = None, max_prompts: MaxPrompts = None, greedy: Greedy = False,
    temperature: Temperature = None, top_p: TopP = None,
    width: Annotated[int, typer.Option(help="Children drawn per position W: the vector has W entries.")] = 8,
    continuation_tokens: Annotated[int, typer.Option(help="Tokens of continuation per prompt (the target's own generation).")] = 64,
    use_reference: Annotated[bool, typer.Option("--use-reference", help="Use the set's reference text as the continuation where it has one.")] = False,
    seed: Annotated[int, typer.Option(help="Seed of the draws.")] = 0,
    device: Device = "cpu", dtype: Dtype = "bfloat16", no_chat_template: NoChatTemplate = False,
    draft_quantize: DraftQuantize = None, target_quantize: TargetQuantize = None, draft_vocab: DraftVocab = None,
    device_map: DeviceMap = None, max_memory: MaxMemory = None, offload_folder: OffloadFolder = None,
    shard: Annotated[Optional[str], typer.Option(help="I/N: measure prompts I, I+N, I+2N, ... only (0-based), e.g. on N machines; merge the shards with merge-acceptance.")] = None,
):
    """Measure the acceptance vector: how often the target accepts the draft's k-th child, overall
    and by level (1: right after a rejection, l: after l-1 accepted positions, 4: 4 or more)."""
    from sequoia_cli.engine import Sampling
    from stages.measure_acceptance import measure_acceptance

    temperature, top_p = sampling_options(greedy, temperature, top_p)
    if width < 1:
        raise BadInput(f"--width is {width}: draw at least 1 child")
    if continuation_tokens < 1:
        raise BadInput(f"--continuation-tokens is {continuation_tokens}: use at least 1")
    part, parts = shard_of(shard)
    writable(out)
    records = prompt_records(data, prompt_field, max_prompts)
    if part >= len(records):
        raise BadInput(f"--shard {shard}: the data has only {len(records)} prompts")
    draft_name, target_name = model_names(pair, draft, target, need_draft=True)
    setups = model_setups(draft_name, target_name, draft_quantize, target_quantize, draft_vocab,
                          target_placement(device_map, max_memory, offload_folder))
    draft_model, target_model, tokenizer = load_pair(draft_name, target_name, device, dtype, setups)
    with progress_bar() as bar:
        task = bar.add_task("measuring", total=len(range(part, len(records), parts)))
        acceptance = measure_acceptance(
            target_model, draft_model, tokenizer, records, Sampling(temperature, top_p), width, continuation_tokens,
            seed, chat_template=not no_chat_template, use_reference=use_reference,
            on_prompt_done=lambda: bar.advance(task), shard=(part, parts),
            run=dict(draft=draft_name, target=target_name, dataset=data, device=device, dtype=dtype,
                     draft_setup=setups["draft"], target_setup=setups["target"]))
    artifacts.write_json(out, acceptance)
    render.acceptance_summary(acceptance, out)


def shard_of(text: Optional[str]) -> tuple[int, int]:
    """(I, N) of --shard I/N; (0, 1) without it."""
    if text is None:
        return 0, 1
    part, _, parts = text.partition("/")
    if not (part.isdigit() and parts.isdigit() and int(part) < int(parts)):
        raise BadInput(f"--shard '{text}': give I/N with 0 <= I < N, e.g. 0/4")
    return int(part), int(parts)


@app.command("merge-acceptance", epilog="Example: sequoia merge-acceptance acc-0.json acc-1.json --out acc.json")
def merge_acceptance_command(
    shards: Annotated[list[str], typer.Argument(help="Acceptance files of measure-acceptance --shard I/N ('-': standard input, once).")],
    out: Out,
):
    """Merge the shards of one acceptance measurement exactly (from their counts and ranks): the result is
    the measurement of all their prompts. Shards of other models, setups, sampling settings or
    widths are refused."""
    from stages.merge_acceptance import merge_acceptance

    writable(out)
    acceptance = merge_acceptance([(path, artifacts.read_acceptance(path)) for path in shards])
    artifacts.write_json(out, acceptance)
    render.acceptance_summary(acceptance, out)


@app.command("build-tree", epilog="Example: sequoia build-tree --acceptance acc.json --size 64 --max-depth 8 --out tree.json")
def build_tree_command(
    acceptance: AcceptanceFile, out: Out,
    size: Annotated[int, typer.Option(help="Number of nodes, root included (= tokens the target verifies per step).")],
    max_depth: Annotated[Optional[int], typer.Option(help="Longest root-to-leaf path in edges (= draft forwards per step). Default: no bound.")] = None,
    table: Annotated[Optional[str], typer.Option(help="Also write the whole E(n, d) table here (JSON).")] = None,
    positional: Positional = False,
):
    """The tree of SIZE nodes with the most expected accepted tokens (Sequoia's dynamic program;
    by level where the acceptance file has ranks or rows by level: with ranks, planned again with
    the rows the tree meets until it stays the same)."""
    from stages.build_tree import build_tree

    writable(out, table)
    tree, table_artifact = build_tree(artifacts.read_acceptance(acceptance), size, max_depth, positional)
    artifacts.write_json(out, tree)
    if table:
        artifacts.write_json(table, table_artifact)
    render.tree_summary(tree, out)


@app.command("profile-hw", epilog="Example: sequoia profile-hw --pair qwen2.5-coder --max-tokens 128 --out profile.json")
def profile_hw_command(
    out: Out, target: Target = None,
    draft: Annotated[Optional[str], typer.Option(help="Draft model (optional: without it the optimizer counts the draft as free). " + MODEL_HELP)] = None,
    pair: Annotated[Optional[str], typer.Option(help="A pair name from configs/: profiles both models.")] = None,
    max_tokens: Annotated[int, typer.Option(help="Largest token count to time (1..8, then powers of two up to this).")] = 128,
    context_length: Annotated[int, typer.Option(help="Tokens already in the KV cache during each timed forward.")] = 256,
    repeats: Annotated[int, typer.Option(help="Rounds: each times every (model, count) twice, out and back in a rotated order, each the fastest of 3 forwards; each count keeps the median over rounds of its time over its model's t(1) of the same round.")] = 5,
    warmup: Annotated[int, typer.Option(help="Untimed forwards per (model, count) first.")] = 2,
    seed: Annotated[int, typer.Option(help="Seed of the random tokens.")] = 0,
    device: Device = "cpu", dtype: Dtype = "bfloat16",
    draft_quantize: DraftQuantize = None, target_quantize: TargetQuantize = None, draft_vocab: DraftVocab = None,
    device_map: DeviceMap = None, max_memory: MaxMemory = None, offload_folder: OffloadFolder = None,
):
    """Time one forward of n tokens on a KV cache, for the target (and the draft). The machine's
    speed drifts, so every count is timed in interleaved rounds as a ratio to its model's t(1) of
    the same round (the draft's t(1) to the target's), each ratio the median over rounds. A
    profile whose rounds read the target's t(1) more than 15% apart is marked unsteady: a slowed
    machine also changes the curves' shape, so profile again when the machine is idle."""
    from stages.profile_hw import check_request, profile_hw, token_counts

    token_counts(max_tokens)
    writable(out)
    draft_name, target_name = model_names(pair, draft, target, need_draft=bool(pair or draft))
    setups = model_setups(draft_name, target_name, draft_quantize, target_quantize, draft_vocab,
                          target_placement(device_map, max_memory, offload_folder))
    draft_model, target_model, _ = load_pair(draft_name, target_name, device, dtype, setups)
    models = {"target": (target_name, target_model)}
    if draft_model is not None:
        models["draft"] = (draft_name, draft_model)
    check_request(models, max_tokens, context_length, repeats, warmup)
    with progress_bar() as bar:
        task = bar.add_task("timing", total=repeats)
        profile = profile_hw(models, dtype, max_tokens, context_length, repeats, warmup, seed,
                             lambda: bar.advance(task), setups)
    artifacts.write_json(out, profile)
    render.profile_summary(profile, out)


@app.command("optimize", epilog="Example: sequoia optimize --acceptance acc.json --profile profile.json --max-depth 12 --out tree.json")
def optimize_command(
    acceptance: AcceptanceFile, out: Out,
    profile: Annotated[str, typer.Option(help="A sequoia-profile/1 file from profile-hw.")],
    max_size: Annotated[Optional[int], typer.Option(help="Largest tree to weigh. Default: the largest profiled target count.")] = None,
    max_depth: Annotated[Optional[int], typer.Option(help="Deepest tree to weigh. Default: no bound.")] = None,
    show: Annotated[int, typer.Option(help="How many of the best candidates to print.")] = 10,
    positional: Positional = False,
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
    writable(out)
    tree = optimize(artifacts.read_acceptance(acceptance), artifacts.read_profile(profile), max_size, max_depth,
                    positional)
    artifacts.write_json(out, tree)
    render.plan_table(tree, out, show)


@app.command("show", epilog="Example: sequoia build-tree --acceptance acc.json --size 16 --out - | sequoia show -")
def show_command(tree: str = typer.Argument(..., help="A sequoia-tree/1 file ('-' for standard input).")):
    """Draw a tree with each node's rank and the probability that it is reached."""
    render.tree_drawing(artifacts.read_tree(tree))


@app.command("decode", epilog="Example: sequoia decode --pair qwen2.5-coder --tree tree.json --prompt 'Write a haiku about trees.' --greedy")
def decode_command(
    draft: Draft = None, target: Target = None, pair: Pair = None,
    tree: Annotated[Optional[str], typer.Option(help="A sequoia-tree/1 file ('-' for standard input); methods sequoia, specinfer, topk.")] = None,
    prompt: Annotated[Optional[str], typer.Option(help="One prompt; the text streams to standard output.")] = None,
    data: Annotated[Optional[str], typer.Option(help=DATA_HELP)] = None,
    prompt_field: PromptField = None, max_prompts: MaxPrompts = None,
    greedy: Annotated[bool, typer.Option("--greedy", help="Temperature 0: the target's greedy output (token for token in float32; bfloat16 rounds trees differently).")] = False,
    temperature: Annotated[Optional[float], typer.Option(help="Sampling temperature (> 0). Default: the tree's, else greedy.")] = None,
    top_p: Annotated[Optional[float], typer.Option(help="Nucleus sampling mass in (0, 1]. Default: the tree's, else 1.")] = None,
    method: Annotated[str, typer.Option(help="sequoia | specinfer | topk | chain | autoregressive.")] = "sequoia",
    chain_length: Annotated[Optional[int], typer.Option(help="Tokens the draft speculates per step, for --method chain.")] = None,
    max_new_tokens: Annotated[int, typer.Option(help="Stop after this many new tokens (EOS and the context stop earlier).")] = 128,
    seed: Annotated[Optional[int], typer.Option(help="Makes a run repeatable; each prompt gets its own stream.")] = None,
    out: Annotated[Optional[str], typer.Option(help="Write one JSON line per prompt here ('-': standard output; default for --data).")] = None,
    stats: Annotated[Optional[str], typer.Option(help="Write the run's figures here (JSON).")] = None,
    device: Device = "cpu", dtype: Dtype = "bfloat16", no_chat_template: NoChatTemplate = False,
    draft_quantize: DraftQuantize = None, target_quantize: TargetQuantize = None, draft_vocab: DraftVocab = None,
    device_map: DeviceMap = None, max_memory: MaxMemory = None, offload_folder: OffloadFolder = None,
):
    """Generate text with the target, sped up by the draft and a token tree; the output follows the
    target's own distribution (with --greedy in float32: token for token)."""
    from sequoia_cli.engine import Sampling, context_length, input_device, tree_layout
    from sequoia_cli.models import encode_prompts
    from stages.decode import decode_prompts, method_parents, predictions, summarize, verification

    if (prompt is None) == (data is None):
        raise BadInput("give exactly one of --prompt TEXT and --data PROMPTS")
    tree_artifact = artifacts.read_tree(tree) if tree else None
    parents = method_parents(method, tree_artifact, chain_length)
    temperature, top_p = sampling_options(greedy, temperature, top_p, (tree_artifact or {}).get("source"))
    if max_new_tokens < 1:
        raise BadInput(f"--max-new-tokens is {max_new_tokens}: generate at least 1 token")
    writable(out, stats)
    prompts = [prompt] if prompt is not None else [r["prompt"] for r in prompt_records(data, prompt_field, max_prompts)]
    draft_name, target_name = model_names(pair, draft, target, need_draft=len(parents) > 1)
    setups = model_setups(draft_name, target_name, draft_quantize, target_quantize, draft_vocab,
                          target_placement(device_map, max_memory, offload_folder))
    for warning in setup_mismatches(tree_artifact, setups):
        console.print(f"warning: {warning}", soft_wrap=True)
    draft_model, target_model, tokenizer = load_pair(draft_name, target_name, device, dtype, setups)
    layout = tree_layout(parents, input_device(target_model))
    sampling = Sampling(temperature, top_p, verification(method))
    seed = random.randrange(2**31) if seed is None else seed
    context = min(context_length(m) for m in (target_model, draft_model) if m is not None)
    encoded = encode_prompts(tokenizer, prompts, context, not no_chat_template)  # fails before any output
    mode = "greedy" if sampling.greedy else f"temperature {temperature}, top-p {top_p}"
    console.print(f"{method}: tree of size {layout.size}, depth {layout.depth}; {mode}; seed {seed}")

    run = dict(max_new_tokens=max_new_tokens, seed=seed)
    if prompt is not None:
        records = decode_prompts(target_model, draft_model, tokenizer, prompts, encoded, layout, sampling,
                                 on_tokens=render.text_streamer(tokenizer), **run)
        sys.stdout.write("\n")
    else:
        with progress_bar() as bar:
            task = bar.add_task("decoding", total=len(prompts))
            records = decode_prompts(target_model, draft_model, tokenizer, prompts, encoded, layout, sampling,
                                     on_prompt_done=lambda: bar.advance(task), **run)
        out = out or "-"
    if out:
        artifacts.write_text(out, "".join(json.dumps(r) + "\n" for r in records))
    figures = artifacts.stats_artifact(
        summarize(records, layout, tree_artifact.get("expected_tokens") if tree_artifact else None,
                  predictions(tree_artifact, parents)),
        method=method, temperature=temperature, top_p=top_p, seed=seed, draft=draft_name, target=target_name,
        device=device, dtype=dtype)
    if stats:
        artifacts.write_json(stats, figures)
    render.stats_table(figures)


def setup_mismatches(tree: Optional[dict], setups: dict) -> list[str]:
    """One line per model whose setup differs from the one the tree was planned for (its
    acceptance vector's, its profile's; placement changes the speed, not the acceptance)."""
    if not tree:
        return []
    planned = [("an acceptance vector", tree.get("source", {}), ("quantize", "vocab")),
               ("a profile", tree.get("plan", {}), ("quantize", "vocab", "placement"))]
    lines = []
    for role in ("draft", "target"):
        for origin, record, keys in planned:
            setup = record.get(f"{role}_setup")
            if setup is not None and any(setup.get(key) != setups[role].get(key) for key in keys):
                lines.append(f"the tree was planned from {origin} of the {role} at {describe(setup)};"
                             f" this run's {role} is at {describe(setups[role])}")
    return lines


def describe(setup: dict) -> str:
    vocab = "whole vocabulary" if setup.get("vocab") is None else f"vocabulary {setup['vocab']}"
    placement = f", placed {json.dumps(setup['placement'])}" if setup.get("placement") else ""
    return f"quantize {setup.get('quantize', 'none')}, {vocab}{placement}"


@app.command("compare", epilog="Example: sequoia compare runs/sequoia.json runs/autoregressive.json")
def compare_command(
    stats: list[str] = typer.Argument(..., help="Stats files written by decode --stats; the last is the baseline."),
):
    """Print the speeds of several decode runs and their ratio to the last one."""
    render.compare_table(stats, [artifacts.read_stats(path) for path in stats])


@app.command("bench", epilog="Example: sequoia bench --quick --pair qwen2.5-coder --out-dir bench-report")
def bench_command(
    quick: Annotated[bool, typer.Option("--quick", help="3 prompts of 48 tokens per workload, fewer sizes and temperatures (9 minutes on a 2-core CPU for the default pair with the bfloat16 draft; the full run, 8 prompts of 128 tokens, 24 of 96 in experiment 4, and experiment 7, about 3 hours).")] = False,
    pair: Annotated[Optional[str], typer.Option(help="A pair name from configs/: sets both --draft and --target. Default: qwen2.5-coder, unless --draft and --target are given.")] = None,
    draft: Draft = None, target: Target = None,
    out_dir: Annotated[str, typer.Option(help="Folder for report.md, scalability.png, robustness.png, bench.json (every row) and cells.jsonl (every finished cell).")] = "bench-report",
    resume: Annotated[bool, typer.Option("--resume", help="Reuse the finished cells of an interrupted run in --out-dir's cells.jsonl (same mode, seed and models).")] = False,
    seed: Annotated[int, typer.Option(help="Seed of every draw (each prompt gets its own stream).")] = 0,
    device: Device = "cpu", dtype: Dtype = "bfloat16",
    draft_quantize: DraftQuantize = None, target_quantize: TargetQuantize = None, draft_vocab: DraftVocab = None,
    device_map: DeviceMap = None, max_memory: MaxMemory = None, offload_folder: OffloadFolder = None,
    experiments: Annotated[Optional[str], typer.Option(help="Which experiments to run, e.g. 3,4,6 (4 uses 3's profile and trees, 6 its runs, so they need 3). Default: 1-7, and 1-6 with --quick (7, the offloaded target, takes about 6 minutes). A run of some resumes into a run of all with --resume.")] = None,
):
    """Measure the paper's claims on a model pair, on HumanEval and MT-Bench: tokens per step
    against tree size and temperature, wall clock against Hugging Face generate (plain and
    assisted, greedy and sampled), the optimizer's pick against a sweep of trees, the DP's run time
    and the loop's overhead. The methods of a block run back to back on each prompt, in rotated
    order; figures are geometric means over prompts with 95% bootstrap intervals."""
    from stages.bench import FULL, QUICK, check_experiments, open_store, run_bench, total_work

    if not (pair or draft or target):
        pair = "qwen2.5-coder"
    writable(f"{out_dir}/report.md")
    draft_name, target_name = model_names(pair, draft, target, need_draft=True)
    setups = model_setups(draft_name, target_name, draft_quantize, target_quantize, draft_vocab,
                          target_placement(device_map, max_memory, offload_folder))
    config, names = QUICK if quick else FULL, bench_names(pair, draft_name, target_name, setups)
    if experiments is not None:
        config = replace(config, experiments=check_experiments(experiment_numbers(experiments)))
    store = open_store(out_dir, config, seed, names, dtype, resume)  # a bad --resume fails before loading
    draft_model, target_model, tokenizer = load_pair(draft_name, target_name, device, dtype, setups)
    with tempfile.TemporaryDirectory(prefix="sequoia-offload-") as offload_folder:
        offloaded = None
        if 7 in config.experiments:  # the same target, most of its weights in a folder removed afterwards
            from sequoia_cli.models import dtype_of, load_model, placement_of

            placement = placement_of("auto", f"cpu={config.offload_memory}", offload_folder)
            with console.status(f"loading target {target_name} again, offloaded (experiment 7)"):
                offloaded = load_model(target_name, "target", torch_device(device), dtype_of(dtype), placement)
        with progress_bar() as bar:
            task = bar.add_task(f"bench ({config.name})", total=total_work(config))
            report = run_bench(target_model, draft_model, tokenizer, out_dir, config, seed, names=names, dtype=dtype,
                               resume=resume, store=store, offloaded_target=offloaded,
                               tick=lambda label, weight: bar.update(task, advance=weight, description=label))
    console.print(f"report -> {report} (plots, bench.json and cells.jsonl beside it)")


def torch_device(name: str):
    from sequoia_cli.models import device_of

    return device_of(name)


def experiment_numbers(text: str) -> tuple:
    try:
        return tuple(int(part) for part in text.split(","))
    except ValueError:
        raise BadInput(f"--experiments '{text}': give experiment numbers separated by commas, e.g. 3,4,6") from None


def bench_names(pair: Optional[str], draft: str, target: str, setups: dict) -> dict:
    """The models as the report names them: a pair's entries by their model names, with each
    model's setup where it is not the plain one."""
    from sequoia_cli.pairs import pair_config

    names = {"target": target, "draft": draft}
    if pair:
        config = pair_config(pair)
        names = {role: f"{config[role]['name']} (pair {pair})" for role in ("target", "draft")}
    for role, setup in setups.items():
        shown = [setup["quantize"]] if setup["quantize"] != "none" else []
        shown += [f"vocabulary {setup['vocab']}"] if setup["vocab"] is not None else []
        shown += [f"placed {json.dumps(setup['placement'])}"] if setup.get("placement") else []
        names[role] += f", {', '.join(shown)}" if shown else ""
    return names


def main(args: list[str] | None = None) -> None:
    """Run the app on `args` (default: the command line); turn bad input into one line and exit
    code 2."""
    command = typer.main.get_command(app)
    try:
        result = command.main(args=args, prog_name="sequoia", standalone_mode=False)
    except BadInput as err:
        fail(str(err), 2)
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
