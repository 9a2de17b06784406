"""The exceptions that end a command with one line instead of a traceback."""


class BadInput(Exception):
    """A fault in what the user passed: a file, an option, a model (exit code 2). One line."""


class SetupError(Exception):
    """The installation lacks something it should carry (exit code 1). One line."""


def one_line(error: BaseException) -> str:
    """An exception as one line: its type and the first line of its message."""
    text = str(error).strip()
    return f"{type(error).__name__}: {text.splitlines()[0]}" if text else type(error).__name__
