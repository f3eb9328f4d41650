"""The one exception type data preparation raises for bad input.

Callers (the command-line entry points and the recipe) catch it to print a one-line message that
names the offending file or option and the fix, instead of a traceback.
"""


class DataError(Exception):
    """Bad input data or arguments; the message names the file/option and how to fix it."""
