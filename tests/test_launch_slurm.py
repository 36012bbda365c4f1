"""launch/slurm.sbatch on a real SLURM: two tasks form one two-process jaxgen job.

Needs a reachable SLURM cluster (`sinfo` works); .ci/run starts a one-node one on this
machine with .ci/slurm_cluster.sh and hands it over through SLURM_CONF. Elsewhere the test
skips and says why. The job is a tiny CPU run, two tasks with two host devices each, and its
per-step train losses must match one process with four devices and the same global batch.
"""

import re
import shutil
import subprocess
import sys
import time

import pytest

from tests.helpers import write_corpus
from tests.launch_common import (LAUNCH, REPO, START_LINE, clean_env, run, tiny_train_args,
                                 train_losses)

pytestmark = pytest.mark.slow  # a job on a real SLURM cluster

JOB_TIMEOUT_S = 240

# The tasks' coordinator listens on 127.0.0.1 only, not on every interface (JAX's default
# for a cluster it detects): the port is the one JAX derives from the job id, asked of JAX.
_BIND_LOOPBACK = (
    'port=$("$1" -c "from jax._src.clusters.slurm_cluster import SlurmCluster as c; '
    "print(c.get_coordinator_address(None, None).rsplit(':', 1)[1])\") && "
    'export JAX_COORDINATOR_BIND_ADDRESS=127.0.0.1:$port && exec "$@"')


def _cluster_or_skip():
  if shutil.which("sinfo") is None:
    pytest.skip("no SLURM cluster: sinfo not found (.ci/slurm_cluster.sh start runs one here)")
  try:
    r = subprocess.run(["sinfo", "-h", "-o", "%t"], capture_output=True, text=True, timeout=20)
  except subprocess.TimeoutExpired:
    pytest.skip("no SLURM cluster reachable: sinfo did not answer in 20 s")
  if r.returncode != 0:
    reason = (r.stderr.strip().splitlines() or ["no message"])[0]
    pytest.skip(f"no SLURM cluster reachable: sinfo failed: {reason}")
  if not {"idle", "mix"} & set(r.stdout.split()):
    pytest.skip(f"no idle SLURM node: sinfo says {r.stdout.split()}")


def _job_state(job_id: str) -> dict[str, str]:
  r = subprocess.run(["scontrol", "-o", "show", "job", job_id], capture_output=True, text=True,
                     timeout=20)
  return dict(re.findall(r"(\w+)=(\S*)", r.stdout))


def _wait(job_id: str, timeout: float) -> dict[str, str]:
  deadline = time.monotonic() + timeout
  while time.monotonic() < deadline:
    state = _job_state(job_id)
    if state.get("JobState") not in (None, "PENDING", "CONFIGURING", "RUNNING", "COMPLETING"):
      return state
    time.sleep(1)
  subprocess.run(["scancel", "--full", job_id], timeout=20, check=False)
  raise AssertionError(f"SLURM job {job_id} not finished after {timeout} s: {state}")


def test_sbatch_runs_two_tasks_as_one_jaxgen_job(tmp_path):
  _cluster_or_skip()
  source = write_corpus(tmp_path / "corpus.txt")
  jaxgen = [sys.executable, "-m", "jaxgen"]

  reference = tmp_path / "reference"
  r = run([*jaxgen, *tiny_train_args(reference, source)], timeout=180, cwd=REPO,
          env=clean_env(XLA_FLAGS="--xla_force_host_platform_device_count=4"))
  assert r.returncode == 0, r.stderr

  workdir, logs = tmp_path / "slurm", tmp_path / "logs"
  env = clean_env(XLA_FLAGS="--xla_force_host_platform_device_count=2",
                  JAXGEN_LOG_DIR=str(logs))
  submit = run(["sbatch", "--parsable", "--ntasks=2", "--time=5", "--job-name=jaxgen-test",
                f"--chdir={REPO}", f"--output={tmp_path}/batch-%j.out",
                str(LAUNCH / "slurm.sbatch"), "--",
                "bash", "-c", _BIND_LOOPBACK, "-", *jaxgen, *tiny_train_args(workdir, source)],
               timeout=30, env=env)
  assert submit.returncode == 0, submit.stderr
  job_id = submit.stdout.strip().split(";")[0]
  state = _wait(job_id, JOB_TIMEOUT_S)

  task_logs = [logs / f"jaxgen-{job_id}-{t}.log" for t in range(2)]
  texts = [p.read_text() if p.exists() else f"({p.name} missing)" for p in task_logs]
  batch_path = tmp_path / f"batch-{job_id}.out"
  batch_log = batch_path.read_text() if batch_path.exists() else "(missing)"
  detail = f"{state}\nbatch log:\n{batch_log}\n" + "\n".join(
      f"task {t} log:\n{text}" for t, text in enumerate(texts))
  assert (state["JobState"], state["ExitCode"]) == ("COMPLETED", "0:0"), detail
  assert "srun --kill-on-bad-exit=1 --unbuffered" in batch_log, detail
  # Each task's log holds its own start line: process t of 2.
  assert [START_LINE.findall(text) for text in texts] == [[("0", "2")], [("1", "2")]], detail

  expected, got = train_losses(reference), train_losses(workdir)
  assert sorted(got) == sorted(expected) == list(range(1, 7))
  for step, loss in expected.items():
    assert got[step] == pytest.approx(loss, abs=1e-5), (step, got, expected)


def test_one_failing_task_ends_the_whole_job(tmp_path):
  """--kill-on-bad-exit: task 1 fails at once, and task 0 (which would sleep for minutes) is
  ended with it instead of holding the allocation."""
  _cluster_or_skip()
  logs = tmp_path / "logs"
  script = 'echo "task $SLURM_PROCID"; if [ "$SLURM_PROCID" = 1 ]; then exit 3; fi; sleep 300'
  submit = run(["sbatch", "--parsable", "--ntasks=2", "--time=5", "--job-name=jaxgen-test",
                f"--output={tmp_path}/batch-%j.out", str(LAUNCH / "slurm.sbatch"), "--",
                "bash", "-c", script],
               timeout=30, env=clean_env(JAXGEN_LOG_DIR=str(logs)))
  assert submit.returncode == 0, submit.stderr
  job_id = submit.stdout.strip().split(";")[0]
  start = time.monotonic()
  state = _wait(job_id, 90)
  assert time.monotonic() - start < 60, state
  assert state["JobState"] == "FAILED", state
  assert [(logs / f"jaxgen-{job_id}-{t}.log").read_text().splitlines()[0] for t in range(2)] \
      == ["task 0", "task 1"]


def test_sbatch_array_prepares_a_store_as_one_host_does(tmp_path):
  """launch/README.md's commands: a SLURM array of 2 tasks tokenizes its shares of the
  input into one store, a job after it finalizes; the store equals one host's file for
  file (the command each records aside)."""
  _cluster_or_skip()
  import json
  corpus = tmp_path / "corpus"
  corpus.mkdir()
  for f in range(3):
    (corpus / f"part{f}.jsonl").write_text("".join(
        json.dumps({"text": f"document {f}.{i} " + "word " * (i % 17)}) + "\n"
        for i in range(400)))
  common = [sys.executable, "-m", "jaxgen", "data", "prepare",
            "--config=configs/shakespeare_char_cpu.py", f"--config.data.source=jsonl:{corpus}/*",
            "--config.data.tokenizer=byte", "--config.data.doc_split=hashed", "--unit_mb=0.05",
            "--workers=1"]
  env = clean_env()
  ref = run([*common, f"--out={tmp_path}/one"], timeout=120, cwd=REPO, env=env)
  assert ref.returncode == 0, ref.stderr
  store = tmp_path / "array"
  wrap = " ".join([*common, f"--out={store}"])
  array = run(["sbatch", "--parsable", "--array=0-1", "--time=5", "--job-name=jaxgen-prep",
               f"--chdir={REPO}", f"--output={tmp_path}/prep-%A-%a.out", f"--wrap={wrap}"],
              timeout=30, env=env)
  assert array.returncode == 0, array.stderr
  array_id = array.stdout.strip().split(";")[0]
  final = run(["sbatch", "--parsable", f"--dependency=afterok:{array_id}", "--time=5",
               "--job-name=jaxgen-prep", f"--chdir={REPO}", f"--output={tmp_path}/final-%j.out",
               f"--wrap={wrap} --finalize"], timeout=30, env=env)
  assert final.returncode == 0, final.stderr
  final_id = final.stdout.strip().split(";")[0]
  state = _wait(final_id, JOB_TIMEOUT_S)
  logs = "\n".join(f"{p.name}:\n{p.read_text()}" for p in sorted(tmp_path.glob("*.out")))
  assert (state["JobState"], state["ExitCode"]) == ("COMPLETED", "0:0"), f"{state}\n{logs}"
  # Each array task did its own share (SLURM_ARRAY_TASK_ID of SLURM_ARRAY_TASK_COUNT):
  # units h, h + 2, ... of the same plan, together all of them.
  done = []
  for t in range(2):
    text = (tmp_path / f"prep-{array_id}-{t}.out").read_text()
    found = re.search(r"prepared (\d+) units? of (\d+)", text)
    assert found and "this host's units are done" in text, f"task {t}:\n{text}"
    done.append((int(found[1]), int(found[2])))
  total = done[0][1]
  assert done == [((total + 1) // 2, total), (total // 2, total)], done

  def files(root):
    out = {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
           if p.is_file() and p.name not in ("manifest.json", "prepare.json")}
    manifest = json.loads((root / "manifest.json").read_text())
    manifest.pop("command", None)
    return out, manifest
  (one, m_one), (two, m_two) = files(tmp_path / "one"), files(store)
  assert len([k for k in one if k.endswith(".bin")]) >= 3, sorted(one)  # a unit a file
  assert sorted(one) == sorted(two)
  assert all(one[k] == two[k] for k in one), [k for k in one if one[k] != two[k]]
  assert m_one == m_two
