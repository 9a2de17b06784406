"""The options several `sequoia` commands share, declared once, and the steps every command
takes: loading models under a status line, reading prompt sets, checking outputs are writable.
The model options reach a command as one `ModelChoice` through `model_options`."""

import functools
import inspect
from typing import Annotated

import typer

from sequoia_cli import artifacts
from sequoia_cli.errors import BadInput
from sequoia_cli.loading import ModelChoice
from sequoia_cli.render import console

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
Strict = Annotated[bool, option("Stop with exit code 2 on the first warning that something does not fit the run (a"
                                " tree measured at another setting or on other models, a tree wider than its"
                                " vector, an unsteady profile, a thin vector, sizes capped by the profile), before"
                                " anything is written.", "--strict")]
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


def warn(lines: list[str], strict: bool) -> None:
    """Each line as a warning on stderr; with `strict`, the first as the error that stops the command."""
    if strict and lines:
        raise BadInput(lines[0])
    for line in lines:
        console.print(f"warning: {line}", soft_wrap=True)
