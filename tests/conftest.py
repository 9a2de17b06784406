"""Shared helpers: the `sequoia` command run in-process (and, for exit codes and pipes, as a real
process), the one-line error check, and a tiny model pair saved once per session."""

import os
import subprocess
import sys
from dataclasses import dataclass

import pytest
import torch
from typer.testing import CliRunner

from sequoia_cli.cli import main
from tests.tiny import TEST_DEVICE, save_tiny_pair

# Tiny models lose more to thread hand-offs than they gain; CI has 2 cores.
torch.set_num_threads(1)
if TEST_DEVICE.type == "cuda":
    # TF32 rounds float32 matmul inputs to a 10-bit mantissa, and which kernel (so which rounding) runs
    # depends on the shapes: a tree forward and generate's one-token forwards would then differ by far
    # more than float32 rounding, and greedy decoding would stop being token-identical to generate.
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False


@dataclass
class Done:
    returncode: int
    stdout: str
    stderr: str


def sequoia(*args, input: str | None = None, cwd=None) -> Done:
    """`sequoia ARGS` in this process, through the same `main` as the console script."""
    here = os.getcwd()
    with CliRunner().isolation(input=input) as (stdout, stderr, _):
        try:
            if cwd is not None:
                os.chdir(cwd)
            main([str(arg) for arg in args])
            code = 0
        except SystemExit as exit:
            code = exit.code if isinstance(exit.code, int) else 1
        finally:
            os.chdir(here)
            sys.stdout.flush()
            sys.stderr.flush()
        return Done(code, stdout.getvalue().decode(), stderr.getvalue().decode())


def sequoia_process(*args, input: str | None = None, cwd=None, env: dict | None = None) -> Done:
    """`sequoia ARGS` as its own process, for what only a process shows: exit codes, pipes, the
    environment (`env`: variables added to this one's)."""
    code = "import sys; sys.argv[0] = 'sequoia'; from sequoia_cli.cli import main; main()"
    done = subprocess.run([sys.executable, "-c", code, *map(str, args)], input=input, cwd=cwd,
                          capture_output=True, text=True, timeout=120, env={**os.environ, **(env or {})})
    return Done(done.returncode, done.stdout, done.stderr)


def assert_one_line_error(done: Done, *words) -> str:
    """Exit 2 and exactly one 'error:' line on stderr naming each of `words`; no traceback."""
    assert done.returncode == 2, (done.returncode, done.stderr)
    assert "Traceback" not in done.stderr + done.stdout
    lines = done.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:"), done.stderr
    for word in words:
        assert word in lines[0], f"{word!r} not in {lines[0]!r}"
    return lines[0]


@pytest.fixture(scope="session")
def pair(tmp_path_factory):
    """(draft folder, target folder) of a tiny Qwen2 pair with one shared byte tokenizer."""
    return save_tiny_pair(tmp_path_factory.mktemp("pair"))
