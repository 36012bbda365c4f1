"""Where the data and tokenizer commands' work was before jaxgen/cli/; kept for callers
that import it from here (data/store_prepare.py)."""

from jaxgen.cli.data import data_inspect, data_prepare  # noqa: F401
from jaxgen.cli.tokenizer import tokenizer_train  # noqa: F401
