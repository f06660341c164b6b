"""The one exception type the CLI turns into a single clear error line."""


class UserError(Exception):
    """A problem with the user's input (path, data, options, checkpoint), with the fix in the message.

    The CLI prints ``error: <message>`` and exits with status 2 instead of a traceback.
    """
