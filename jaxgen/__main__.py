"""`python -m jaxgen ...` is the `jaxgen` command."""

from jaxgen.main import run

run()
