"""The one exception type that reaches the user as a single line."""


class UserError(Exception):
  """Something the user can fix: bad flag, config, data or workdir.

  The command line prints `jaxgen: error: <message>` and exits non-zero with
  no traceback, so the message must say what is wrong and what to do.
  """
