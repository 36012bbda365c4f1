"""jaxgen/parallel/ is the bottom layer: importing it pulls in no other part of jaxgen."""

import subprocess
import sys

from tests.helpers import REPO


def _modules_after(imports: str) -> list[str]:
  """The jaxgen modules (and 'jax', if loaded) a fresh interpreter holds after `imports`."""
  code = (f"import sys\n{imports}\n"
          "print(' '.join(sorted(m for m in sys.modules if m.startswith('jaxgen') or m == 'jax')))")
  return subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
                        check=True).stdout.split()


def test_parallel_imports_nothing_else_from_jaxgen():
  out = _modules_after("import jaxgen.parallel.mesh, jaxgen.parallel.specs, "
                       "jaxgen.parallel.activations")
  allowed = {"jax", "jaxgen", "jaxgen.errors", "jaxgen.parallel"}
  assert [m for m in out if m not in allowed and not m.startswith("jaxgen.parallel.")] == []
  assert {"jaxgen.parallel.mesh", "jaxgen.parallel.specs", "jaxgen.parallel.activations"} <= set(out)


def test_the_config_checks_mesh_functions_import_no_jax():
  # The command line checks a config before JAX starts.
  assert "jax" not in _modules_after("import jaxgen.parallel.mesh, jaxgen.config_check")
