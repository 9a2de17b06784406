"""Experiment 9, spec-bench: Spec-Bench's six subtasks (hemingkx/Spec-Bench) in its own terms.

Per subtask, the run decodes half of `config.prompts` questions (MT-Bench's both turns, as a chat:
the second turn after the model's own first answer), greedy, with autoregressive decoding, Hugging
Face `generate`, a chain of 4 and Sequoia. Sequoia's tree is `optimize`'s for one greedy vector
measured on other Spec-Bench questions, `config.acceptance_prompts // 16` (at least 1) of every
subtask, and a profile at these prompts' typical cache. Reported per subtask and over all of them:
mean accepted tokens per step (tokens over target forwards), tokens/s, the speedups over
autoregressive decoding and over HF generate (geometric mean over questions, paired, with the
bench's interval), and how many questions' outputs equal autoregressive decoding's.
"""

from functools import partial

from sequoia_cli.stages.bench.harness import Config, Run, hf_one, kxd_parents, run_block, spread_prompts
from sequoia_cli.stages.bench.shared import Bench, failing, interval_row, paired_interval, plan_of, profile_work, speed
from sequoia_cli.stages.bench.stats import departs_at, failure
from sequoia_cli.stages.bench.tables import interval, markdown_table
from sequoia_cli.stages.bench.timing import WARMUP_TOKENS
from sequoia_cli.stages.decode import decode_prompt
from sequoia_cli.stages.measure_acceptance import Request, measure_acceptance

from sequoia_cli.decoder import Caches, DecodeConfig, Decoder
from sequoia_cli.devices import context_length, input_device
from sequoia_cli.models import encode_prompts, next_turn_ids
from sequoia_cli.prompts import SPEC_BENCH_SUBTASKS, load_prompt_records
from sequoia_cli.sampling import Sampling
from sequoia_cli.seeds import prompt_generator
from sequoia_cli.tree import chain_parents

GREEDY = Sampling()
METHODS = ("autoregressive", "HF generate", "chain 4", "Sequoia")


def sizes(config: Config) -> tuple[int, int]:
    """(questions decoded, questions the vector is measured on) per subtask."""
    return max(1, config.prompts // 2), max(1, config.acceptance_prompts // 16)


def spec_bench_work(config: Config) -> int:
    """The vector's, the profile's and the warm-up's weights, then every question's decodes."""
    decoded, acceptance = sizes(config)
    subtasks = len(SPEC_BENCH_SUBTASKS)
    return (subtasks * acceptance * config.continuation + config.new_tokens + 2 * WARMUP_TOKENS
            + subtasks * decoded * len(METHODS) * config.new_tokens)


def questions(config: Config) -> dict[str, dict]:
    """{subtask: {"decode": [...], "acceptance": [...], "records": [...]}}: the indices within each
    subtask of the questions decoded and of those the vector is measured on, spread over the
    subtask and disjoint, and the subtask's records."""
    decoded, acceptance = sizes(config)
    chosen = {}
    for subtask in SPEC_BENCH_SUBTASKS:
        records = load_prompt_records(f"spec-bench:{subtask}")
        decode, measured = spread_prompts(len(records), decoded, acceptance)
        chosen[subtask] = {"decode": decode, "acceptance": measured, "records": records}
    return chosen


def conversation(run: Run, turns: list[list[str]], index: int, parents: list[int], new_tokens: int) -> dict:
    """Question `index` through the decode stage, turn by turn, the caches carried from one turn to
    the next: its tokens, target forwards and seconds summed over the turns, its output ids
    concatenated."""
    config = DecodeConfig(run.target, run.draft, parents, GREEDY, new_tokens, frozenset(run.eos), run.engine)
    decoder = Decoder(config, run.caches.setdefault(run.engine, Caches()))
    ids, answers, turn_results = run.prompt_ids[index], [], []
    for turn, text in enumerate(turns[index]):
        if turn:
            ids = next_turn_ids(run.tokenizer, turns[index], answers, decoder.caches.tokens, True)
        generator = prompt_generator(run.seed, index, input_device(run.target))
        record = decode_prompt(decoder, run.tokenizer, text, ids, generator, extend=turn > 0)
        answers.append(record["text"])
        turn_results.append({"output": record["output_ids"], "steps": record["steps"], "seconds": record["seconds"]})
    return joined(turn_results)


def hf_conversation(run: Run, turns: list[list[str]], index: int, new_tokens: int) -> dict:
    """Question `index` through Hugging Face `generate`, turn by turn: each later turn is the whole
    conversation so far (its answers HF's own), read again from the start."""
    held, answers, turn_results = run.prompt_ids[index], [], []
    for turn in range(len(turns[index])):
        if turn:
            held = next_turn_ids(run.tokenizer, turns[index], answers, held, True)
        result = hf_one(run, index, GREEDY, new_tokens, False, ids=held)
        answers.append(run.tokenizer.decode(result["output"], skip_special_tokens=True))
        turn_results.append(result)
        held = held + result["output"]
    return joined(turn_results)


def joined(turn_results: list[dict]) -> dict:
    """A question's figures from its turns': output ids concatenated, tokens, steps and seconds summed."""
    output = [token for result in turn_results for token in result["output"]]
    return {"output": output, "turn_tokens": [len(r["output"]) for r in turn_results], "tokens": len(output),
            "steps": sum(r["steps"] for r in turn_results), "seconds": sum(r["seconds"] for r in turn_results)}


def same_outputs(results: list[dict], reference: list[dict]) -> str:
    """"k of n" questions whose output equals the reference's, and where the first other one departs."""
    if failure(results) or failure(reference):
        return "-"
    same = [r["output"] == b["output"] for r, b in zip(results, reference)]
    text = f"{sum(same)} of {len(same)}"
    if all(same):
        return text
    index = same.index(False)
    at = departs_at(results[index]["output"], reference[index]["output"])
    return f"{text} (question {index} departs at token {at})"


def rows_of(name: str, results: dict[str, list[dict]], resamples: int, seed: int) -> list[dict]:
    """One row per method over these questions' results."""
    reference, hf = results["autoregressive"], results["HF generate"]
    rows = []
    for method in METHODS:
        row = {"subtask": name, "method": method,
               **interval_row(results[method], resamples, seed, base=reference)}
        row["vs_hf_generate"] = paired_interval(results[method], hf, speed, resamples, seed)
        row["same_as_autoregressive"] = "reference" if method == "autoregressive" else same_outputs(
            results[method], reference)
        rows.append(row)
    return rows


def run_spec_bench(bench: Bench) -> None:
    """The vector, the profile and optimize's tree, then every method on every question in one
    interleaved block (subtask after subtask); the rows per subtask and over all questions."""
    config, loaded = bench.config, bench.loaded
    chosen = questions(config)
    measured = [{"prompt": chosen[s]["records"][i]["prompt"]} for s in chosen for i in chosen[s]["acceptance"]]
    request = Request(measured, GREEDY, config.width, config.continuation, bench.seed, chat_template=True)
    vector = bench.store.cell("spec-bench | acceptance | greedy", partial(
        measure_acceptance, loaded.target, loaded.draft, loaded.tokenizer, request, engine=loaded.resolved.engine))
    bench.tick("spec-bench: acceptance", len(measured) * config.continuation)

    decoded = [(s, chosen[s]["records"][i]) for s in chosen for i in chosen[s]["decode"]]
    turns = [record.get("turns", [record["prompt"]]) for _, record in decoded]
    template = bench.runs[0]
    context = min(context_length(loaded.target), context_length(loaded.draft))
    run = Run("spec-bench", loaded.target, loaded.draft, loaded.tokenizer,
              encode_prompts(loaded.tokenizer, [t[0] for t in turns], context, True), [], template.eos, template.pad,
              bench.seed, loaded.resolved.engine)
    profile = bench.store.cell("spec-bench | profile", profile_work(bench, [run], loaded.target, "target",
                                                                   config.profile_max, config.new_tokens))
    bench.tick("spec-bench: profile", config.new_tokens)
    plan = bench.store.cell("spec-bench | plan", partial(plan_of, {"greedy": vector}, GREEDY, profile))
    bench.store.cell("spec-bench | warm-up", lambda: {
        "ours": conversation(run, turns, 0, kxd_parents(2, 2), WARMUP_TOKENS)["tokens"],
        "hf": hf_one(run, 0, GREEDY, WARMUP_TOKENS, assisted=False)["tokens"]})
    bench.tick("spec-bench: warm-up", 2 * WARMUP_TOKENS)

    trees = {"autoregressive": [-1], "chain 4": chain_parents(4), "Sequoia": plan.get("parents")}
    methods = {"HF generate": partial(hf_conversation, run, turns, new_tokens=config.new_tokens)}
    for name, tree in trees.items():
        methods[name] = failing(plan.get("error", "no tree")) if tree is None else partial(
            conversation, run, turns, parents=tree, new_tokens=config.new_tokens)
    results = run_block(bench.store, "spec-bench", {name: methods[name] for name in METHODS}, len(decoded),
                        bench.tick, config.new_tokens)

    rows = []
    for subtask in (*SPEC_BENCH_SUBTASKS, "overall"):
        picked = [i for i, (s, _) in enumerate(decoded) if subtask in (s, "overall")]
        rows += rows_of(subtask, {m: [results[m][i] for i in picked] for m in METHODS}, config.resamples, bench.seed)
    bench.results["spec_bench"] = {
        "questions": {s: {"decode": c["decode"], "acceptance": c["acceptance"]} for s, c in chosen.items()},
        "prompt_tokens": [len(ids) for ids in run.prompt_ids], "vector": vector, "profile": profile, "plan": plan,
        "rows": rows}


ABOUT = ("Spec-Bench's six subtasks, greedy, {new_tokens} new tokens per turn (MT-Bench: both turns, the second"
         " after the model's own first answer; ours carry the caches from turn to turn, HF generate reads the"
         " conversation again). Questions per subtask: {decoded} (their indices within it: {decode}); the methods"
         " of a question run back to back in rotated order. Sequoia: optimize's tree ({tree}) for one greedy vector"
         " measured on other questions, {acceptance} per subtask (indices {measured}). Tokens per step: tokens"
         " over target forwards (Spec-Bench's mean accepted tokens; HF generate's and autoregressive decoding's are"
         " 1). Speedups: geometric mean over questions of the method's tokens/s over the baseline's on the same"
         " question, with its 95% bootstrap interval. Same as autoregressive: questions whose output ids equal"
         " autoregressive decoding's, all turns.")


def tree_text(plan: dict) -> str:
    if "error" in plan:
        return plan["error"]
    return (f"size {plan['plan']['size']}, depth {plan['plan']['depth']}, predicted"
            f" {plan['plan']['speedup']:.2f}x over autoregressive")


def spec_bench_section(results: dict) -> str:
    found = results.get("spec_bench")
    if not found:
        return "not run"
    chosen = found["questions"]
    first = next(iter(chosen.values()))
    about = ABOUT.format(new_tokens=results["config"]["new_tokens"], decoded=len(first["decode"]),
                         decode=first["decode"], tree=tree_text(found["plan"]), acceptance=len(first["acceptance"]),
                         measured=first["acceptance"])
    profile = found["profile"]
    if "error" not in profile:
        about += (f" Profile: target t(1) {profile['target']['ms']['1']:.1f} ms, draft t(1)"
                  f" {profile['draft']['ms']['1']:.1f} ms, at a KV cache of {profile['context_length']} tokens.")
    header = ["subtask", "method", "tokens", "seconds", "tokens per step", "tokens/s", "vs autoregressive",
              "vs HF generate", "same as autoregressive"]
    lines = [[r["subtask"], r["method"], str(r.get("tokens", "-")),
              f"{r['seconds']:.1f}" if "seconds" in r else "-", interval(r, "tokens_per_step"),
              interval(r, "tokens_per_second"), interval(r, "speedup", suffix="x"),
              interval(r, "vs_hf_generate", suffix="x"), r.get("same_as_autoregressive", "-")]
             for r in found["rows"]]
    return about + "\n\n" + markdown_table(header, lines)
