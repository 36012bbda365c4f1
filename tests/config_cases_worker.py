"""Runs many `jaxgen` command lines through the real flag parsing and `main`, in one process.

Reads a JSON list of argv lists on stdin; prints a JSON list of results. A
command line that gets past every config check reaches JAX setup, which is
replaced here by a marker exception, so a bad value that slips through shows
up as "reached" rather than as a training run.
"""

import contextlib
import io
import json
import sys
import traceback

from absl import flags

from jaxgen import main
from jaxgen.cli import common


class Reached(Exception):
  pass


def _reached(cfg):
  raise Reached()


def run_case(argv):
  f = flags.FLAGS
  f.unparse_flags()
  for name in [n for n in f if n.startswith("config.")]:
    delattr(f, name)  # config_flags defines one flag per override on each parse
  sys.argv = argv  # config_flags finds the overrides to define there
  out, err = io.StringIO(), io.StringIO()
  status, traced, reached = None, False, False
  with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
    try:
      main.main(main._parse_flags(argv))
      status = 0
    except SystemExit as e:
      status = e.code
    except Reached:
      reached = True
    except BaseException:  # pylint: disable=broad-except
      traced = True
      traceback.print_exc()
  return {"argv": argv, "status": status, "stdout": out.getvalue(), "stderr": err.getvalue(),
          "traceback": traced, "reached": reached}


if __name__ == "__main__":
  common.setup_jax = _reached  # the commands that compile call it once the checks pass
  print(json.dumps([run_case(argv) for argv in json.load(sys.stdin)]))
