"""The one exception type the library raises for bad input; the CLI prints it as one line."""


class ContinualError(ValueError):
    """A bad value from the user (a name, a file, a config value), with what would be accepted."""


class ContinualWarning(UserWarning):
    """Something the user should know that does not stop the work (e.g. a file that cannot be
    verified); the CLI prints it as one line, ``continual: warning: ...``."""


def one_line(exc: BaseException) -> str:
    """An exception as one short line, ``Type: first line of its message`` (at most 300 characters)."""
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"[:300]
