"""`sequoia` commands on trees: build, optimize, show, export and import them."""

from typing import Annotated

import typer

from sequoia_cli import artifacts, render
from sequoia_cli.cli_options import AcceptanceFile, Out, Positional, Strict, option, warn, writable
from sequoia_cli.errors import BadInput
from sequoia_cli.mismatches import profile_cap, thin_vector, unsteady_profile, width_mismatch
from sequoia_cli.render import console

app = typer.Typer()


@app.command("build-tree", epilog="Example: sequoia build-tree --acceptance acc.json --size 64 --max-depth 8"
             " --out tree.json")
def build_tree_command(
    acceptance: AcceptanceFile, out: Out,
    size: Annotated[int, option("Number of nodes, root included (= tokens the target verifies per step).")],
    max_depth: Annotated[int | None, option("Longest root-to-leaf path in edges (= draft forwards per step)."
                                               " Default: no bound.")] = None,
    table: Annotated[str | None, option("Also write the whole E(n, d) table here (JSON).")] = None,
    positional: Positional = False, strict: Strict = False,
):
    """The tree of SIZE nodes with the most expected accepted tokens (Sequoia's dynamic program;
    by level where the acceptance file has ranks or rows by level: with ranks, planned again with
    the rows the tree meets until it stays the same)."""
    from sequoia_cli.stages.build_tree import build_tree

    writable(out=out, table=table)
    vector = artifacts.read_acceptance(acceptance)
    tree, table_artifact = build_tree(vector, size, max_depth, positional)
    warn(thin_vector(vector), strict)
    artifacts.write_json(out, tree)
    if table:
        artifacts.write_json(table, table_artifact)
    render.tree_summary(tree, out)


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
    strict: Strict = False,
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
    from sequoia_cli.stages.optimize import optimize

    if acceptance == "-" and profile == "-":
        raise BadInput("--acceptance and --profile cannot both be standard input")
    writable(out=out)
    vector, timed = artifacts.read_acceptance(acceptance), artifacts.read_profile(profile)
    tree = optimize(vector, timed, max_size, max_depth, positional, method)
    largest = max(artifacts.timings(timed["target"]))
    warn(unsteady_profile(timed) + thin_vector(vector) + profile_cap(tree["plan"], largest, max_size), strict)
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
                                  " of 0-based child ranks; read by TensorRT-LLM releases from before its PR #18210,"
                                  " August 2026, which removed it; vLLM removed tree attention in PR #42121), growmap"
                                  " (the official Sequoia code's torch.save dict, a .pt file) or growmap-json (the"
                                  " same keys as JSON lists, as UMbreLLa keeps them).")],
    out: Annotated[str, option("Where to write ('-' for standard output, the JSON formats only).")] = "-",
):
    """Write a tree in another engine's format, its nodes numbered level by level. A greedy tree
    means the same there (rank k: the draft's k-th most likely token); a stochastic tree's k-th
    child is sequoia's k-th draw without replacement, which an engine's top-k choices are not."""
    from sequoia_cli.stages.tree_interchange import check_export, export_tree

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
    strict: Strict = False,
):
    """Read a tree from another engine's file into a sequoia-tree/1, numbered level by level."""
    from sequoia_cli.stages.tree_interchange import import_tree

    if source == "-" and acceptance == "-":
        raise BadInput("SOURCE and --acceptance cannot both be standard input")
    writable(out=out)
    tree = import_tree(source, artifacts.read_acceptance(acceptance) if acceptance else None)
    warn(width_mismatch(tree["parents"], tree.get("acceptance")), strict)
    artifacts.write_json(out, tree)
    if "expected_tokens" in tree:
        render.tree_summary(tree, out)
    else:
        console.print(f"tree of size {tree['size']}, depth {tree['depth']} -> {out}")
