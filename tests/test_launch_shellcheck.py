"""Every launch script passes shellcheck (and the CI's SLURM cluster script with them)."""

import shutil
import subprocess

import pytest

from tests.launch_common import LAUNCH, REPO


def _scripts():
  return sorted(p for p in LAUNCH.rglob("*") if p.suffix in (".sh", ".sbatch")) + [
      REPO / ".ci/slurm_cluster.sh"]


@pytest.mark.skipif(shutil.which("shellcheck") is None,
                    reason="shellcheck not installed (apt-get install -y shellcheck; .ci/run "
                           "installs it)")
def test_launch_scripts_pass_shellcheck():
  scripts = _scripts()
  assert len(scripts) >= 3
  r = subprocess.run(["shellcheck", *map(str, scripts)], capture_output=True,
                     text=True, timeout=120)
  assert r.returncode == 0, r.stdout + r.stderr
