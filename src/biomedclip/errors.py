"""The errors a user can fix, shared by every stage; the CLI prints them as one line, without a traceback.

Library code raises these (never ``click`` exceptions); ``biomedclip.cli.main`` maps them to exit codes:
``InputError`` (the invocation names something that is not there or not valid) exits 2, like click's own
usage errors; ``RunError`` (the run started but cannot finish correctly: a source that cannot be listed, a
selection that matches nothing) exits 1. Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations


class BiomedclipError(Exception):
    """Base of the errors a user can fix."""

    exit_code = 1


class InputError(BiomedclipError, ValueError):
    """A bad argument: a spec that names nothing, a missing file, a value out of range, a layout not understood."""

    exit_code = 2


class RunError(BiomedclipError, RuntimeError):
    """A run that cannot finish correctly on its data; earlier outputs are left untouched."""

    exit_code = 1
