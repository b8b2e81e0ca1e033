"""The one exception type the library raises for bad input; the CLI prints it as one line."""


class ContinualError(ValueError):
    """A bad value from the user (a name, a file, a config value), with what would be accepted."""
