"""jaxgen/parallel/ is the bottom layer: importing it pulls in no other part of jaxgen."""

import subprocess
import sys

from tests.helpers import REPO


def test_parallel_imports_nothing_else_from_jaxgen():
  code = ("import sys\n"
          "import jaxgen.parallel.mesh, jaxgen.parallel.specs, jaxgen.parallel.activations\n"
          "print(' '.join(sorted(m for m in sys.modules if m.startswith('jaxgen'))))\n")
  out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
                       check=True).stdout.split()
  allowed = {"jaxgen", "jaxgen.errors", "jaxgen.parallel"}
  assert [m for m in out if m not in allowed and not m.startswith("jaxgen.parallel.")] == []
  assert {"jaxgen.parallel.mesh", "jaxgen.parallel.specs", "jaxgen.parallel.activations"} <= set(out)


def test_the_config_checks_mesh_functions_import_no_jax():
  code = ("import sys\n"
          "import jaxgen.parallel.mesh, jaxgen.config_check\n"
          "print('jax' in sys.modules)\n")
  out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
                       check=True).stdout.split()
  assert out == ["False"]  # the command line checks a config before JAX starts
