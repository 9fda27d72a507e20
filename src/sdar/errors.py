"""The exceptions that mean "the user asked for something that cannot be done".

The ``sdar`` command prints one of these as one line (``sdar: error: ...``) and exits with code 2;
any other exception is a bug and keeps its traceback. ``sdar --debug COMMAND`` shows the traceback
of a user error too.
"""

from __future__ import annotations


class UserError(Exception):
    """A mistake the user can fix (a bad config value, a missing file, a run directory in the way);
    the message says what is wrong and, where there is one, what to do instead."""
