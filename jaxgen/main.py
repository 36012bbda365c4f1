"""The `jaxgen` command: `jaxgen train --config=configs/X.py --workdir=DIR`.

Errors the user can fix end with one line on stderr and exit status 2 (bad
flags) or 1 (anything else), never a traceback.
"""

from __future__ import annotations

import json
import os
import pathlib
import sys

from absl import app, flags, logging
from ml_collections import config_flags

from jaxgen import config_check, distributed, json_config, logs, supervise, workdir_paths
from jaxgen.errors import UserError

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Recipe file from configs/ (or a workdir's config.json, its run's resolved "
    "config); override keys as --config.train.steps=100.", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for metrics, TensorBoard files, "
                               "samples and checkpoints.")

_PROMPT = flags.DEFINE_string("prompt", "", "sample: text to continue ('' = unconditional).")
_PROMPT_FILE = flags.DEFINE_string("prompt_file", None, "sample: a file of prompts, one per "
                                   "line, generated in batches (instead of --prompt).")
_MAX_NEW = flags.DEFINE_integer("max_new_tokens", 500, "sample: tokens to generate per sample.")
_TEMPERATURE = flags.DEFINE_float("temperature", 0.8, "sample: softmax temperature; 0 = greedy.")
_TOP_K = flags.DEFINE_integer("top_k", 0, "sample: keep the k most likely tokens; 0 = off.")
_TOP_P = flags.DEFINE_float("top_p", 1.0, "sample: nucleus sampling mass in (0, 1]; 1 = off.")
_NUM_SAMPLES = flags.DEFINE_integer("num_samples", 1, "sample: samples per prompt (one batch).")
_SEED = flags.DEFINE_integer("seed", 0, "sample: random seed.")
_BEAM = flags.DEFINE_integer("beam_size", 0, "sample: beam search with this many beams "
                             "(0 = sample); --num_samples best beams are printed.")
_LENGTH_PENALTY = flags.DEFINE_float("length_penalty", 1.0, "sample: beam length "
                                     "normalisation exponent alpha (0 = raw log-probability).")
_REPETITION_PENALTY = flags.DEFINE_float(
    "repetition_penalty", 1.0, "sample: divide the logits of tokens already in the text by "
    "this (multiply where negative; Hugging Face's formula); 1 = off.")
_WINDOW_STRIDE = flags.DEFINE_integer(
    "window_stride", 1, "sample: past the model's context, re-read the last context-N+1 "
    "tokens every N new tokens; 1 predicts every token from the whole context (exact, "
    "nanoGPT's crop), larger is faster.")
_STOP = flags.DEFINE_multi_string("stop", [], "sample: end each text before the first "
                                  "occurrence of this string (repeat the flag for several).")
_TRUNCATE_SOURCE = flags.DEFINE_bool("truncate_source", False, "sample: cut sources longer "
                                     "than the model reads (as training does) instead of "
                                     "refusing them; a line says how many were cut.")
# Conditional models (encoder-decoders): generate from sources instead of prompts.
_SOURCE = flags.DEFINE_string("source", None, "sample: the source text to generate from.")
_SOURCE_FILE = flags.DEFINE_string("source_file", None, "sample: a file of sources, one per "
                                   "line, generated in batches.")
_OUTPUT_FILE = flags.DEFINE_string("output_file", None, "sample: write the outputs here, one "
                                   "per line (prompts or sources in input order, each one's "
                                   "samples in turn; line breaks inside become spaces) "
                                   "instead of printing them.")
_STEP = flags.DEFINE_integer("step", None, "sample: restore the checkpoint of this step.")
_BEST = flags.DEFINE_bool("best", False, "sample: restore the checkpoint with the lowest "
                          "validation loss.")
_VOCAB_SIZE = flags.DEFINE_integer("vocab_size", None, "tokenizer train: SentencePiece pieces. "
                                    "plan: the tokenizer's vocabulary size (default: "
                                    "model.vocab_size, else the tokenizer's).")
_WORKERS = flags.DEFINE_integer("workers", 0, "data prepare: tokenizing processes (0: one per "
                                "core).")
_NUM_HOSTS = flags.DEFINE_integer("num_hosts", None, "data prepare: hosts sharing the work "
                                  "(default: a SLURM array's task count, else 1).")
_HOST_INDEX = flags.DEFINE_integer("host_index", None, "data prepare: this host's share, in "
                                   "[0, --num_hosts) (default: SLURM_ARRAY_TASK_ID or "
                                   "JOB_COMPLETION_INDEX, else 0).")
_FINALIZE = flags.DEFINE_bool("finalize", False, "data prepare: check every host's shards and "
                              "write the store's split and manifest (after --num_hosts > 1).")
_UNIT_MB = flags.DEFINE_float("unit_mb", 64.0, "data prepare: input MB per unit of work "
                              "(one shard); part of the store's identity.")
_NUM_BATCHES = flags.DEFINE_integer("num_batches", 2, "data inspect: batches to show.")
_DEVICES = flags.DEFINE_integer("devices", None, "plan: plan for this many devices, compiling "
                                "for as many host CPU devices (default: the devices JAX finds).")
_CHIP = flags.DEFINE_string("chip", None, "plan: the accelerator to check the fit and step "
                            "time against, e.g. h100, h200, tpu_v5e (default: this machine's).")
_MFU = flags.DEFINE_float("mfu", 0.4, "plan: the model FLOPs utilisation the step time "
                          "estimate assumes.")
_JSON = flags.DEFINE_bool("json", False, "plan: print one JSON object instead of text (also "
                          "data prepare).")

# Hugging Face interoperability (jaxgen/interop/): export and import.
_OUT = flags.DEFINE_string("out", None, "export: the directory to write (new or empty); data "
                          "prepare: the token store to write (see README, Data at scale).")
_FORMAT = flags.DEFINE_enum("format", "hf", ["hf"], "export: the output format (Hugging "
                            "Face transformers: config.json + safetensors).")
_MAX_SHARD = flags.DEFINE_string("max_shard_size", "5GB", "export: safetensors shard size "
                                 "limit, e.g. 5GB or 500MB (HF's default is 5GB).")
_HF = flags.DEFINE_string("hf", None, "import: a local Hugging Face model directory "
                          "(config.json, safetensors, tokenizer.json).")
_NO_CONFIG = ("sample", "export", "import")  # commands that take no --config

# Each command, and the flags it needs besides its own.
COMMANDS = {"train": ("config", "workdir"), "sample": ("workdir",), "plan": ("config",),
            "data prepare": ("config",), "data inspect": ("config",),
            "tokenizer train": ("config", "vocab_size"), "export": ("workdir", "out"),
            "import": ("hf", "workdir"), "config": ("config",)}
_EXAMPLE = "e.g. jaxgen train --config=configs/shakespeare_char_cpu.py --workdir=runs/sc"


def main(argv: list[str]) -> None:
  held = None
  if not flags.FLAGS["verbosity"].present:
    # Libraries log routine warnings (Orbax on every read-only open, urllib3 on
    # every retry): a successful command prints only its own output. They are
    # shown if the command crashes, and all of them with --verbosity.
    logging.set_verbosity(logging.WARNING)
    held = logs.hold_library_logs()
  try:
    _run_command(argv)
  except BrokenPipeError:  # `jaxgen config ... | head` stopped reading: not an error of ours
    os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no flush error at exit
    sys.exit(1)
  except Exception:
    if held is not None:
      held.show()  # a crash shows what the libraries said before it
    raise


def _run_command(argv: list[str]) -> None:
  command = " ".join(argv[1:])
  if command not in COMMANDS:
    _fail(f"expected a command, one of: {', '.join(COMMANDS)} (got {command or 'none'}); "
          f"{_EXAMPLE}; jaxgen --help describes each", status=2)
  from jaxgen import cli_help
  stray = cli_help.stray_flags(command, COMMANDS, sys.modules[__name__])
  if stray:  # every command's flags are defined here; another command's would be ignored
    _fail(f"--{stray[0]} is not a flag of `jaxgen {command}`, which would ignore it; drop "
          f"it (jaxgen {command} --help lists the flags it takes)", status=2)
  for name in COMMANDS[command]:
    if getattr(flags.FLAGS, name) in (None, ""):
      _fail(_MISSING[name], status=2)
  if command == "plan":
    _check_plan_flags()  # --devices takes effect only before JAX starts
  if command == "config":
    _print_config()
  try:
    if command not in _NO_CONFIG:
      config_check.check(_CONFIG.value)  # every key, before anything runs
    if command == "config":
      return  # printed above; a config the checks refuse ends with their line
    if command == "train":
      _join_job(_CONFIG.value)  # before anything touches a JAX backend
    if command not in ("plan", *_NO_CONFIG):  # a dry run writes no compilation cache
      _setup_jax(_CONFIG.value)
    if command == "train":
      from jaxgen.interop.workdir import adopt
      from jaxgen.train.loop import train_and_evaluate  # heavy imports after flag checks
      adopt(_CONFIG.value, _WORKDIR.value)  # an imported workdir's start: no-op otherwise
      train_and_evaluate(_CONFIG.value, _WORKDIR.value)
      distributed.shutdown()
    elif command in ("export", "import"):
      _interop(command)
    elif command == "sample":
      _sample()
    elif command == "plan":
      _plan()
    else:
      from jaxgen import commands
      if command == "data prepare" and _OUT.value:
        from jaxgen.data import store_prepare
        hosts, index = store_prepare.host_from_env(_NUM_HOSTS.value, _HOST_INDEX.value)
        store_prepare.prepare(
            _CONFIG.value, _OUT.value, workers=_WORKERS.value, num_hosts=hosts,
            host_index=index, finalize=_FINALIZE.value, unit_mb=_UNIT_MB.value,
            vocab_size=_VOCAB_SIZE.value, command=_prepare_command(), as_json=_JSON.value)
      elif command == "data prepare":
        commands.data_prepare(_CONFIG.value)
      elif command == "data inspect":
        commands.data_inspect(_CONFIG.value, _NUM_BATCHES.value)
      else:
        commands.tokenizer_train(_CONFIG.value, _VOCAB_SIZE.value)
  except UserError as e:
    _fail(str(e))
  except KeyboardInterrupt:
    # Also a second Ctrl-C while a checkpoint is being written: exit at once,
    # before interpreter shutdown cuts off the library threads mid-write (each
    # would print a traceback). An unfinished save is never used on resume.
    _fail("interrupted; an unfinished checkpoint is not used: the same command resumes "
          "from the newest complete one", status=130, at_once=True)


def _prepare_command() -> str:
  """This `jaxgen data prepare`, less the flags that only split the work."""
  import shlex
  own = ("--workers", "--num_hosts", "--host_index", "--finalize", "--nofinalize", "--json",
         "--verbosity")
  args = [a for a in sys.argv[1:] if not a.split("=")[0] in own]
  return "jaxgen " + " ".join(shlex.quote(a) for a in args)


_MISSING = {
    "config": "--config is required, e.g. --config=configs/shakespeare_char_cpu.py",
    "workdir": "--workdir is required: the directory for metrics, TensorBoard files and "
               "checkpoints",
    "vocab_size": "--vocab_size is required: the number of SentencePiece pieces, e.g. 1024",
    "out": "--out is required: the directory to export into, e.g. --out=runs/sc/hf",
    "hf": "--hf is required: a local Hugging Face model directory",
}


def _join_job(cfg) -> None:
  """Joins a multi-process job, if this is one of its processes; otherwise nothing.

  The job's work runs in a child process (see `supervise`), so that losing
  another process ends this one with a line rather than a runtime abort.
  """
  launch = distributed.resolve(cfg.distributed)
  if not launch.multi_process:
    return
  if not supervise.is_worker():
    sys.stdout.flush()
    sys.exit(supervise.run([sys.executable, *sys.orig_argv[1:]], launch.process_id,
                           _WORKDIR.value, show_all=flags.FLAGS["verbosity"].present,
                           join_failure=distributed.join_failure(launch, cfg.distributed)))
  print(distributed.initialize(launch, cfg.distributed), flush=True)


def _sample() -> None:
  workdir_paths.checkpoints_of(_WORKDIR.value)
  from jaxgen.sample.restore import generate, read_prompt_file
  if _SOURCE.value is not None or _SOURCE_FILE.value is not None:
    _sample_sources(generate, read_prompt_file)
    return
  if _TRUNCATE_SOURCE.value:
    raise UserError("--truncate_source cuts the sources of an encoder-decoder; give --source "
                    "or --source_file, or drop it")
  if _PROMPT_FILE.value is not None and _PROMPT.present:
    raise UserError("--prompt and --prompt_file both given; use one")
  _check_checkpoint_choice()
  _output_file()
  prompts = read_prompt_file(_PROMPT_FILE.value) if _PROMPT_FILE.value is not None else [
      _PROMPT.value]
  texts = generate(_WORKDIR.value, prompts, max_new_tokens=_MAX_NEW.value,
                   temperature=_TEMPERATURE.value, top_k=_TOP_K.value, top_p=_TOP_P.value,
                   num_samples=_NUM_SAMPLES.value, seed=_SEED.value, beam_size=_BEAM.value,
                   length_penalty=_LENGTH_PENALTY.value,
                   repetition_penalty=_REPETITION_PENALTY.value,
                   window_stride=_WINDOW_STRIDE.value, stop=_STOP.value,
                   step=_STEP.value, best=_BEST.value)
  if _OUTPUT_FILE.value is not None:
    _write_lines(texts)
    return
  for p, samples in enumerate(texts):
    for i, text in enumerate(samples):
      where = f"prompt {p + 1}/{len(texts)}, " if len(texts) > 1 else ""
      print(f"--- {where}sample {i + 1}/{len(samples)} ---\n{text}", flush=True)


def _check_checkpoint_choice() -> None:
  """sample and export restore the newest checkpoint, --step's or with --best the best."""
  if _STEP.value is not None and _BEST.value:
    raise UserError("--step and --best both given; use one")


def _interop(command: str) -> None:
  if command == "export":
    _check_checkpoint_choice()
    from jaxgen.interop import safetensors_io  # numpy only
    safetensors_io.parse_size(_MAX_SHARD.value)  # a bad flag is named first, as before
    workdir_paths.checkpoints_of(_WORKDIR.value)
    from jaxgen.interop.hf_export import export
    out = export(_WORKDIR.value, _OUT.value, step=_STEP.value, best=_BEST.value,
                 max_shard_size=_MAX_SHARD.value)
    print(f"jaxgen: exported {_WORKDIR.value} to {out} (Hugging Face format)", flush=True)
  else:
    workdir_paths.hf_model_dir(_HF.value)
    from jaxgen.interop.hf_import import import_hf
    wd = import_hf(_HF.value, _WORKDIR.value)
    print(f"jaxgen: imported {_HF.value} into {wd}; sample with `jaxgen sample "
          f"--workdir={wd}`, fine-tune with `jaxgen train --config={wd / 'config.py'} "
          f"--workdir={wd}`", flush=True)


def _sample_sources(generate, read_lines) -> None:
  """`jaxgen sample --source=... | --source_file=F [--output_file=O]`."""
  if _SOURCE.value is not None and _SOURCE_FILE.value is not None:
    raise UserError("--source and --source_file both given; use one")
  if _PROMPT.present or _PROMPT_FILE.value is not None:
    raise UserError("--prompt and --source both given: an encoder-decoder generates from "
                    "its source; use --source or --source_file alone")
  _check_checkpoint_choice()
  _output_file()
  sources = (read_lines(_SOURCE_FILE.value, "--source_file") if _SOURCE_FILE.value is not None
             else [_SOURCE.value])
  # Outputs from a source are greedy unless --temperature is given: a translation
  # should not change from one run to the next.
  temperature = _TEMPERATURE.value if flags.FLAGS["temperature"].present else 0.0
  texts = generate(_WORKDIR.value, source=sources, max_new_tokens=_MAX_NEW.value,
                   temperature=temperature, top_k=_TOP_K.value, top_p=_TOP_P.value,
                   num_samples=_NUM_SAMPLES.value, seed=_SEED.value, beam_size=_BEAM.value,
                   length_penalty=_LENGTH_PENALTY.value,
                   repetition_penalty=_REPETITION_PENALTY.value, stop=_STOP.value,
                   step=_STEP.value, best=_BEST.value, truncate_source=_TRUNCATE_SOURCE.value)
  if _OUTPUT_FILE.value is None:
    print("\n".join(_one_per_line(texts)), flush=True)
    return
  _write_lines(texts)


def _one_per_line(texts: list[list[str]]) -> list[str]:
  # One line per output: a line break inside one would shift every later line.
  return [t.replace("\r", " ").replace("\n", " ") for samples in texts for t in samples]


def _write_lines(texts: list[list[str]]) -> None:
  """--output_file: every output on its own line, the file whole or not at all."""
  out = _output_file()
  tmp = out.with_name(f".{out.name}.tmp")
  tmp.write_text("".join(line + "\n" for line in _one_per_line(texts)), encoding="utf-8")
  os.replace(tmp, out)  # whole or not at all


def _output_file() -> pathlib.Path | None:
  """--output_file's path, checked before any work is done; None if not given."""
  if _OUTPUT_FILE.value is None:
    return None
  out = pathlib.Path(_OUTPUT_FILE.value).expanduser()
  if out.is_dir() or not out.parent.is_dir():
    raise UserError(f"--output_file={_OUTPUT_FILE.value} cannot be written: "
                    + ("it is a directory" if out.is_dir() else f"{out.parent} does not exist"))
  return out


def _print_config() -> None:
  from jaxgen import config_docs
  label = config_flags.get_config_filename(flags.FLAGS["config"])
  print(config_docs.format_config(_CONFIG.value, label,
                                  config_flags.get_override_values(flags.FLAGS["config"]),
                                  recipe=label), flush=True)


def _check_plan_flags() -> None:
  from jaxgen import chips
  if _DEVICES.value is not None:
    if _DEVICES.value < 1:
      _fail(f"--devices={_DEVICES.value} must be at least 1", status=2)
    # Fake devices: N host CPU devices stand in for the accelerators.
    xla_flags = [f for f in os.environ.get("XLA_FLAGS", "").split()
                 if not f.startswith("--xla_force_host_platform_device_count")]
    os.environ["XLA_FLAGS"] = " ".join(
        xla_flags + [f"--xla_force_host_platform_device_count={_DEVICES.value}"])
    os.environ["JAX_PLATFORMS"] = "cpu"
  if _CHIP.value is not None and _CHIP.value not in chips.BY_NAME:
    _fail(f"--chip={_CHIP.value} is not a chip jaxgen knows; use one of "
          f"{', '.join(chips.BY_NAME)}", status=2)
  if not 0 < _MFU.value <= 1:
    _fail(f"--mfu={_MFU.value} must be in (0, 1], e.g. 0.4", status=2)


def _plan() -> None:
  import jax
  from jaxgen import chips
  from jaxgen.train import plan
  devices = jax.devices()
  chip = chips.BY_NAME[_CHIP.value] if _CHIP.value else chips.chip_of(devices[0])
  report = plan.plan(_CONFIG.value, devices, chip=chip, mfu=_MFU.value,
                     vocab_size=_VOCAB_SIZE.value)
  label = config_flags.get_config_filename(flags.FLAGS["config"])
  if _JSON.value:
    print(json.dumps({"config": label, **report}), flush=True)
  else:
    print(plan.format_text(report, label), flush=True)
  for kind in ("warning", "error"):
    for line in report[f"{kind}s"]:
      print(f"jaxgen: {kind}: {_one_line(UserError(line))}", file=sys.stderr, flush=True)
  if report["errors"]:
    sys.exit(1)


def run() -> None:
  """Console-script entry point."""
  from jaxgen import host
  host.restart_with_malloc_tunables()
  app.run(main, flags_parser=_parse_flags)


# --config also reads a workdir's config.json: `jaxgen train|plan --config=runs/a/config.json`.
flags.FLAGS["config"].parser = json_config.RecipeOrJsonParser(flags.FLAGS["config"].parser)


def _parse_flags(argv: list[str]) -> list[str]:
  from jaxgen import cli_help
  cli_help.answer(argv, COMMANDS, sys.modules[__name__])  # --help, CMD --help, --version
  try:
    rest = flags.FLAGS(argv)
    if _CONFIG.value is not None:
      # config_flags defers a config file's load error until first use.
      _CONFIG.value.get  # pylint: disable=pointless-statement
  except Exception as e:  # config_flags raises several types for one cause: a bad flag
    _fail(_flag_error(e, argv), status=2)
  return rest


def _flag_error(e: BaseException, argv: list[str]) -> str:
  """One line for a bad flag, reworded where config_flags' own text is unclear."""
  load_error = e
  while load_error is not None and not isinstance(load_error, OSError):
    load_error = load_error.__cause__ or load_error.__context__
  if load_error is not None:  # the --config file failed to load
    # Its last line is the OS's reason: "[Errno 2] No such file or directory: 'x.py'".
    reason = str(load_error.__cause__ or load_error).strip().splitlines()[-1].strip()
    return (f"--config file could not be loaded: {reason}; pass a recipe from configs/, "
            "e.g. --config=configs/shakespeare_char_cpu.py")
  if isinstance(e, flags.UnrecognizedFlagError) and e.flagname.startswith("config."):
    from jaxgen import cli_help  # pylint: disable=import-outside-toplevel
    command = cli_help.command_named([a for a in argv[1:] if not a.startswith("-")], COMMANDS)
    if command in _NO_CONFIG:
      return (f"--{e.flagname} overrides a config key, but `jaxgen {command}` takes no "
              "--config; drop it")
    return (f"--{e.flagname} overrides a key of --config, which is not given; pass "
            "--config=FILE first, e.g. --config=configs/shakespeare_char_cpu.py")
  # An unknown key is a KeyError (or an AttributeError raised while handling
  # one) whose text is "'key'\nDid you mean ...?".
  key_error = e if isinstance(e, KeyError) else e.__context__
  if isinstance(key_error, KeyError) and key_error.args:
    key, _, hint = str(key_error.args[0]).partition("\n")
    key = key.strip("'\"")
    names = [a.split("=", 1)[0] for a in argv[1:] if a.startswith("--config.")]
    flag = next((n for n in names if key in n.split(".")[1:]), "--config")
    hint = f"; {hint[:1].lower()}{hint[1:]}" if hint else ""
    return f"{flag}: the config has no key {key!r}{hint}"
  return _one_line(e)


def _setup_jax(cfg) -> None:
  import jax
  cache_dir = cfg.train.get("compilation_cache_dir", "")
  if cache_dir:
    # A restarted or resumed job reuses compiled programs instead of recompiling.
    jax.config.update("jax_compilation_cache_dir", os.path.expanduser(cache_dir))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)


def _one_line(e: BaseException) -> str:
  text = " ".join(str(e).split())
  return text or type(e).__name__


def _fail(message: str, status: int = 1, at_once: bool = False) -> None:
  print(f"jaxgen: error: {_one_line(UserError(message))}", file=sys.stderr, flush=True)
  if at_once:
    sys.stdout.flush()
    os._exit(status)  # pylint: disable=protected-access
  sys.exit(status)


if __name__ == "__main__":
  run()
