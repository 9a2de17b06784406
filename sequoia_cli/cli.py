"""The `sequoia` command: parse, load, call a stage, print a summary on stderr, write artifacts.

Exit codes: 0 success, 2 bad input (one line naming the file and the fault), 1 anything else.
"""

import sys
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table
from rich.tree import Tree

from sequoia_cli import artifacts
from sequoia_cli.errors import BadInput
from sequoia_cli.tree import path_probabilities, ranks

console = Console(stderr=True)
app = typer.Typer(
    help="Sequoia speculative decoding: a draft model proposes a token tree, the target verifies "
    "it in one forward. Stages pass JSON artifacts as files or through pipes ('-').",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)

OUT_HELP = "Where to write the artifact ('-' for standard output)."


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
