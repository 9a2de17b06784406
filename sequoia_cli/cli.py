"""The `sequoia` command: parse, load, call one stage, render a summary on stderr, write artifacts.

Exit codes: 0 success, 2 bad input (one line naming the file and the fault), 1 anything else.
The commands live here (models and measurements), in cli_trees.py (trees) and cli_runs.py (decode
and the bench); the options they share in cli_options.py.
"""

import functools
import sys
from dataclasses import replace
from typing import Annotated

import typer

from sequoia_cli import artifacts, cli_runs, cli_trees, render
from sequoia_cli.cli_options import (
    DATA_HELP,
    MaxPrompts,
    NoChatTemplate,
    Out,
    PromptField,
    Temperature,
    TopP,
    load,
    model_options,
    option,
    prompt_records,
    writable,
)
from sequoia_cli.errors import BadInput, SetupError
from sequoia_cli.loading import ModelChoice
from sequoia_cli.render import Bars, console
from sequoia_cli.sampling import Asked

app = typer.Typer(
    help="Sequoia speculative decoding: a draft model proposes a token tree, the target verifies "
    "it in one forward. Stages pass JSON artifacts as files or through pipes ('-').",
    epilog="Example: sequoia build-tree --acceptance acc.json --size 32 --out - | sequoia show -",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)
app.add_typer(cli_trees.app)
app.add_typer(cli_runs.app)


@app.command("fetch-models", epilog="Example: sequoia fetch-models qwen2.5-coder")
def fetch_models_command(pair: str = typer.Argument("qwen2.5-coder", help="A pair name from configs/.")):
    """Download, verify and convert a model pair from configs/ once, into the cache folder
    ($SEQUOIA_CACHE, default ~/.cache/sequoia). Safe to rerun: a fetched pair is skipped."""
    from sequoia_cli.pairs import pair_config
    from sequoia_cli.stages.fetch_models import fetch_pair

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
    from sequoia_cli.stages import measure_acceptance as stage

    writable(out=out)
    request = stage.prepare(prompt_records(data, prompt_field, max_prompts), Asked(greedy, temperature, top_p),
                            width, continuation_tokens, seed, not no_chat_template, use_reference, shard)
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
    from sequoia_cli.stages.merge_acceptance import merge_acceptance

    writable(out=out)
    acceptance = merge_acceptance([(path, artifacts.read_acceptance(path)) for path in shards])
    artifacts.write_json(out, acceptance)
    render.acceptance_summary(acceptance, out)


@app.command("profile-hw", epilog="Example: sequoia profile-hw --pair qwen2.5-coder --max-tokens 128"
             " --out profile.json")
@model_options
def profile_hw_command(
    models: ModelChoice, out: Out,
    quick: Annotated[bool, option("2 rounds, 1 warm-up, counts up to 32 tokens: a third of the default's forwards,"
                                  " none of the slow large counts (README: minutes and memory on the built-in"
                                  " pair).", "--quick")] = False,
    max_tokens: Annotated[int | None, option("Largest token count to time (1..8, then powers of two up to this);"
                                             " the optimizer weighs no tree larger. Default: 128; 32 with"
                                             " --quick.")] = None,
    context_length: Annotated[int, option("Tokens already in the KV cache during each timed forward.")] = 256,
    repeats: Annotated[int | None, option("Rounds: each times every (model, count) twice, out and back in a rotated"
                                          " order, each the fastest of 3 forwards; each count keeps the median over"
                                          " rounds of its time over its model's t(1) of the same round. Default: 5;"
                                          " 2 with --quick.")] = None,
    warmup: Annotated[int | None, option("Untimed forwards per (model, count) first. Default: 2; 1 with"
                                         " --quick.")] = None,
    seed: Annotated[int, option("Seed of the random tokens.")] = 0,
):
    """Time one forward of n tokens on a KV cache, for the target and, given a draft or a pair,
    the draft (without one, the optimizer counts the draft as free). The machine's speed drifts,
    so every count is timed in interleaved rounds as a ratio to its model's t(1) of the same round
    (the draft's t(1) to the target's), each ratio the median over rounds. A profile whose rounds
    read the target's t(1) more than 15% apart is marked unsteady: a slowed machine also changes
    the curves' shape, so profile again when the machine is idle. By default each model runs 12
    counts 12 times (2 warm-up, 10 timed), each the fastest of 3 forwards: 432 forwards of up to
    128 tokens; --quick runs 10 counts 5 times: 150 forwards of up to 32."""
    from sequoia_cli.loading import resolve
    from sequoia_cli.stages.profile_hw import DEFAULT, QUICK, check_settings, profile

    given = {"max_tokens": max_tokens, "repeats": repeats, "warmup": warmup}
    timing = replace(QUICK if quick else DEFAULT, context_length=context_length, seed=seed,
                     **{name: value for name, value in given.items() if value is not None})
    check_settings(timing)
    writable(out=out)
    loaded = load(resolve(models, need_draft=bool(models.pair or models.draft)))
    with Bars() as bars:
        result = profile(loaded, timing, bars.task)
    artifacts.write_json(out, result)
    render.profile_summary(result, out)


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
