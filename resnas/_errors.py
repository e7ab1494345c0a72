"""Errors a user can cause: the CLI prints them as one line and exits with code 2."""


class UserError(Exception):
    """A problem in the user's input (flags, files, data) with a message naming the fix."""
