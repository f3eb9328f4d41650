"""The one exception type hpopt raises for bad input or a bad result.

A single type lets a recipe (or a launcher) tell "hpopt refused this" apart from a crash in the
recipe itself, and it subclasses ``ValueError`` because every case is a bad value or argument.
"""


class HpoptError(ValueError):
    """Bad command line, bad hpopt file, or a result that must not reach the optimiser."""
