"""The exceptions that end a command with one line instead of a traceback."""

import re


class BadInput(Exception):
    """A fault in what the user passed: a file, an option, a model (exit code 2). One line.

    `settings` are the names of the settings the message speaks of, as the stage's parameters
    name them (`max_depth`); the command line words each as its option (`--max-depth`), any other
    caller reads the plain name."""

    def __init__(self, message: str, *settings: str):
        super().__init__(message)
        self.settings = settings

    def worded_as_options(self) -> str:
        """The message with each setting's first mention written as its command-line option."""
        message = str(self)
        for name in self.settings:
            message = re.sub(rf"(?<![\w-]){re.escape(name)}(?![\w-])", "--" + name.replace("_", "-"), message, count=1)
        return message


class SetupError(Exception):
    """The installation lacks something it should carry (exit code 1). One line."""


def one_line(error: BaseException) -> str:
    """An exception as one line: its type and the first line of its message."""
    text = str(error).strip()
    return f"{type(error).__name__}: {text.splitlines()[0]}" if text else type(error).__name__
