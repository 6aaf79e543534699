"""The error a command-line user can cause and fix (no traceback).

:class:`CommandError` is printed by ``zotheory`` as one line, ``zotheory <command>: error:
<message>``, with exit code 2; so is a ``ValueError`` (the library's error for bad input,
naming the argument and its valid range). ``ZOTHEORY_DEBUG=1`` shows the traceback instead.
"""

from __future__ import annotations


class CommandError(Exception):
    """A failure the user caused on the command line (bad input, a missing asset, an unwritable
    path, a corrupt file): the message names the thing and the fix, in one line."""


def one_line_errors(parser):
    """Make an ``argparse`` parser report a usage error as one line, ``<prog>: error: <message>
    (see `<prog> --help`)``, exit code 2 (argparse prints its whole usage block first otherwise)."""

    def error(message: str):
        text = " ".join(str(message).split())
        parser.exit(2, f"{parser.prog}: error: {text} (see `{parser.prog} --help`)\n")

    parser.error = error
    return parser


__all__ = ["CommandError", "one_line_errors"]
