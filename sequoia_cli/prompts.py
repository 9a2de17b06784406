"""Prompt sets: a built-in set's name, or a local .jsonl/.json/.txt/.parquet file read with `datasets`.
A built-in set with subtasks takes one after a colon: `spec-bench:translation`.

In .jsonl/.json/.parquet files the prompt is the `prompt` field unless another is named; a list of
strings there counts as a conversation's turns, and the first turn is the prompt (as in MT-Bench);
a record of several turns also lists them all (`turns`).
A .txt file holds one prompt per line; blank lines are skipped. Any of them may be gzipped (.gz).
"""

from pathlib import Path

from sequoia_cli.errors import BadInput

DATA_DIR = Path(__file__).resolve().parent / "data"
BUILTIN_SETS = {
    # MT-Bench's 80 questions; the prompt is the first turn, the reference its reference answer.
    "mt-bench": {"file": "mt_bench_question.jsonl", "field": "turns"},
    # HumanEval's 164 problems; the reference is the canonical solution, which continues the prompt.
    "humaneval": {"file": "HumanEval.jsonl.gz", "field": "prompt"},
    # Spec-Bench's 480 questions, 80 per subtask: MT-Bench's 80 two-turn questions first.
    "spec-bench": {"file": "spec_bench_question.jsonl.gz", "field": "turns"},
}
# Spec-Bench's subtasks in its own words; its MT-Bench questions carry MT-Bench's eight categories.
SPEC_BENCH_SUBTASKS = ("mt-bench", "translation", "summarization", "qa", "math_reasoning", "rag")
LOADERS = {".jsonl": "json", ".json": "json", ".txt": "text", ".parquet": "parquet"}
# Fields holding a known good continuation or answer, tried in this order.
REFERENCE_FIELDS = ("reference", "canonical_solution")


def load_prompts(source: str, field: str | None = None, max_prompts: int | None = None) -> list[str]:
    return [record["prompt"] for record in load_prompt_records(source, field, max_prompts)]


def load_prompt_records(source: str, field: str | None = None,
                        max_prompts: int | None = None) -> list[dict]:
    """[{"prompt": str, "reference": str | None}, ...] in file order, at most `max_prompts`."""
    if max_prompts is not None and max_prompts < 1:
        raise BadInput(f"{source}: max_prompts is {max_prompts}: use at least 1 prompt", "max_prompts")
    subtask = None
    if source.startswith("spec-bench:"):
        source, subtask = source.split(":", 1)
        if subtask not in SPEC_BENCH_SUBTASKS:
            raise BadInput(f"spec-bench:{subtask}: no such Spec-Bench subtask"
                           f" (subtasks: {', '.join(SPEC_BENCH_SUBTASKS)})")
    builtin = BUILTIN_SETS.get(source)
    if builtin:
        path, field = DATA_DIR / builtin["file"], field or builtin["field"]
    else:
        path = Path(source)
    if path.is_dir():
        raise BadInput(f"{source}: is a folder; give a prompt file or a built-in set's name")
    if not path.is_file():
        raise BadInput(f"{source}: no such file, and not a built-in set ({', '.join(BUILTIN_SETS)})")
    loader = loader_for(path)
    if loader == "text":
        if field:
            raise BadInput(f"{path}: a .txt file has one prompt per line and no fields to pick from")
        records = text_records(path)
    else:
        records = field_records(path, loader, field or "prompt", subtask)
    if not records:
        raise BadInput(f"{path}: no prompts in it")
    return records[:max_prompts]


def loader_for(path: Path) -> str:
    name = path.name.lower().removesuffix(".gz")
    loader = LOADERS.get(Path(name).suffix)
    if loader is None:
        raise BadInput(f"{path}: unknown file kind; use .jsonl, .json, .txt or .parquet")
    return loader


def text_records(path: Path) -> list[dict]:
    lines = read_dataset(path, "text")["text"]
    return [{"prompt": line, "reference": None} for line in lines if line.strip()]


def field_records(path: Path, loader: str, field: str, subtask: str | None = None) -> list[dict]:
    """The records of a file with fields; with `subtask`, only the Spec-Bench rows of that subtask."""
    dataset = read_dataset(path, loader)
    if subtask is not None:
        dataset = dataset.filter(lambda row: spec_bench_subtask(row["category"]) == subtask)
    if field not in dataset.column_names:
        present = ", ".join(dataset.column_names) or "none"
        others = sorted((name for name in dataset.column_names if name != field), key=lambda name: name != "text")
        fix = f": name the prompt's field, e.g. prompt_field {others[0]}" if others else ""
        raise BadInput(f"{path}: no field '{field}' (fields present: {present}){fix}", "prompt_field")
    reference_field = next((name for name in REFERENCE_FIELDS if name in dataset.column_names), None)
    records = []
    for row_number, row in enumerate(dataset, start=1):
        prompt = first_text(row[field])
        if prompt is None:
            raise BadInput(f"{path}: row {row_number}: '{field}' is {type(row[field]).__name__}, not text")
        if not prompt.strip():
            raise BadInput(f"{path}: row {row_number}: '{field}' is empty")
        reference = first_text(row[reference_field]) if reference_field else None
        records.append({"prompt": prompt, "reference": reference, **turns_of(row[field])})
    return records


def spec_bench_subtask(category: str) -> str:
    return category if category in SPEC_BENCH_SUBTASKS else "mt-bench"


def turns_of(value) -> dict:
    """{"turns": [...]} for a conversation of several text turns, else nothing."""
    if isinstance(value, list) and len(value) > 1 and all(isinstance(turn, str) for turn in value):
        return {"turns": list(value)}
    return {}


def first_text(value) -> str | None:
    """A string itself, or the first turn of a list of strings; None for anything else."""
    if isinstance(value, list) and value:
        value = value[0]
    return value if isinstance(value, str) else None


def read_dataset(path: Path, loader: str):
    import datasets

    datasets.disable_progress_bars()
    datasets.logging.set_verbosity(datasets.logging.CRITICAL)  # we report the fault ourselves
    if path.stat().st_size == 0:
        raise BadInput(f"{path}: no prompts in it (empty file)")
    try:
        return datasets.load_dataset(loader, data_files=str(path), split="train")
    except Exception as error:  # datasets reports a malformed file through many exception types
        if "corresponds to no data" in str(error):  # its way to say the file holds no rows
            raise BadInput(f"{path}: no prompts in it") from None
        raise BadInput(f"{path}: cannot read it as {loader}: {innermost_message(error)}") from None


def innermost_message(error: BaseException) -> str:
    while error.__cause__ is not None or error.__context__ is not None:
        error = error.__cause__ or error.__context__
    return (str(error).splitlines() or [type(error).__name__])[0]
