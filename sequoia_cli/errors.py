"""The one exception that means "the user gave us something wrong" (exit code 2)."""


class BadInput(Exception):
    """A fault in what the user passed: a file, an option, a model. The message is one line."""
