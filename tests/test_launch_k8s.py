"""launch/k8s: the Job's environment contract, checked by running its pod command locally.

No cluster here: the test reads the manifest as Kubernetes would, takes the container's
command and environment, resolves the completion-index field for pods 0 and 1, points the
coordinator at 127.0.0.1 and runs the two pod commands as two processes on CPU (two host
devices each, a tiny training run in place of the manifest's GPT-2 arguments). They must
form one job of two processes, and only process 0 may write metrics.jsonl.
"""

import pathlib
import shutil
import subprocess
import sys

import pytest
import yaml

from tests.helpers import write_corpus
from tests.launch_common import (LAUNCH, START_LINE, clean_env, free_port, kill_group,
                                 tiny_train_args, train_losses)

K8S = LAUNCH / "k8s"
INDEX_FIELD = "metadata.annotations['batch.kubernetes.io/job-completion-index']"


def _manifest():
  docs = list(yaml.safe_load_all((K8S / "jaxgen-job.yaml").read_text()))
  by_kind = {d["kind"]: d for d in docs}
  assert sorted(by_kind) == ["Job", "Service"]
  return by_kind["Service"], by_kind["Job"]


def _pod_env(container, index: int) -> dict[str, str]:
  """The container's environment as the kubelet would set it for completion index `index`."""
  env = {}
  for var in container["env"]:
    if "value" in var:
      env[var["name"]] = str(var["value"])
    else:
      assert var["valueFrom"] == {"fieldRef": {"fieldPath": INDEX_FIELD}}, var
      env[var["name"]] = str(index)
  return env


def test_manifest_wires_coordinator_service_and_volumes():
  service, job = _manifest()
  spec, pod = job["spec"], job["spec"]["template"]["spec"]
  (container,) = pod["containers"]
  env = _pod_env(container, 0)
  assert spec["completionMode"] == "Indexed"
  assert spec["completions"] == spec["parallelism"] == int(env["JAX_NUM_PROCESSES"])
  assert pod["restartPolicy"] == "Never" and spec["backoffLimit"] == 0
  # Pod 0 is <job>-0.<subdomain>, the subdomain is the headless Service selecting the pods.
  host, port = env["JAX_COORDINATOR_ADDRESS"].rsplit(":", 1)
  assert host == f"{job['metadata']['name']}-0.{pod['subdomain']}"
  assert pod["subdomain"] == service["metadata"]["name"]
  assert service["spec"]["clusterIP"] == "None"
  assert service["spec"]["selector"] == {"job-name": job["metadata"]["name"]}
  assert [p["port"] for p in service["spec"]["ports"]] == [int(port)]
  assert [p["containerPort"] for p in container["ports"]] == [int(port)]
  assert int(container["resources"]["limits"]["nvidia.com/gpu"]) >= 1
  mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
  volumes = {v["name"]: v for v in pod["volumes"]}
  assert volumes["workdir"]["persistentVolumeClaim"]["claimName"] == "jaxgen-workdir"
  workdir_arg = [a for a in container["args"] if a.startswith("--workdir=")]
  assert workdir_arg and workdir_arg[0].startswith(f"--workdir={mounts['workdir']}/")
  pvc = yaml.safe_load((K8S / "workdir-pvc.yaml").read_text())
  assert pvc["metadata"]["name"] == "jaxgen-workdir"
  assert pvc["spec"]["accessModes"] == ["ReadWriteMany"]
  # The image holds what the command needs, relative to its working directory.
  dockerfile = (K8S / "Dockerfile").read_text()
  config_arg = [a for a in container["args"] if a.startswith("--config=")][0]
  assert "COPY configs/ configs/" in dockerfile and (LAUNCH.parent / config_arg[9:]).exists()


@pytest.mark.slow
def test_pod_command_and_env_form_one_two_process_job(tmp_path):
  _, job = _manifest()
  pod = job["spec"]["template"]["spec"]
  (container,) = pod["containers"]
  assert container["args"][0] == "train"
  # The command the image runs, from this environment's installation of jaxgen.
  program = container["command"][0]
  local = pathlib.Path(sys.executable).parent / program
  program = str(local) if local.exists() else shutil.which(program)
  assert program, f"{container['command'][0]} is not installed"

  mount = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}["workdir"]
  workdir = tmp_path / mount.lstrip("/") / "runs/tiny"
  args = tiny_train_args(workdir, write_corpus(tmp_path / "corpus.txt"))
  port = free_port()
  logs = [tmp_path / f"pod{index}.log" for index in range(2)]
  procs = []
  try:
    for index, log in enumerate(logs):
      env = _pod_env(container, index)
      env["JAX_COORDINATOR_ADDRESS"] = f"127.0.0.1:{port}"
      env["XLA_FLAGS"] += " --xla_force_host_platform_device_count=2"
      with open(log, "w") as out:  # a file, not a pipe: a full pipe would stall a process
        procs.append(subprocess.Popen([program, *args], env=clean_env(**env),
                                      cwd=LAUNCH.parent, start_new_session=True,
                                      stdout=out, stderr=subprocess.STDOUT))
    for p in procs:
      p.wait(timeout=240)
  finally:
    for p in procs:
      kill_group(p)
      p.wait(timeout=30)
  outputs = [log.read_text() for log in logs]
  detail = "\n".join(f"pod {i} (exit {p.returncode}):\n{out}"
                     for i, (p, out) in enumerate(zip(procs, outputs)))
  assert [p.returncode for p in procs] == [0, 0], detail
  assert [START_LINE.findall(out) for out in outputs] == [[("0", "2")], [("1", "2")]], detail
  # Process 0 alone reports: one metrics line per step, progress in its log only.
  lines = (workdir / "metrics.jsonl").read_text().splitlines()
  assert sorted(train_losses(workdir)) == list(range(1, 7))
  assert len([line for line in lines if '"train_loss"' in line]) == 6, lines
  assert "step 6/6" in outputs[0] and "step 6/6" not in outputs[1], detail
