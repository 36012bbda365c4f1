"""tfds:NAME[:VERSION] as paired data (data.source_key / data.target_key): a tiny
translation data set built here (nothing downloads), its train and validation splits,
packed training on it, and one-line errors for bad keys, names and splits."""

import json

import numpy as np
import pytest
import tensorflow_datasets as tfds

from jaxgen import config_check
from jaxgen.data import pairs
from jaxgen.errors import UserError
from tests.helpers import needs_tf, one_line, reverse_config
from tests.train_helpers import run, train_losses

TRAIN = [("hallo welt", "hello world"), ("guten tag", "good day"), ("ja", "yes"),
         ("nein danke", "no thanks"), ("ein haus", "a house"), ("zwei", "two")]
VALIDATION = [("danke", "thanks"), ("gut", "good")]
_BUILDER = []


def translate_source() -> str:
  """tfds:NAME/CONFIG of a tiny German-English data set shaped like wmt14_translate/de-en
  (a Translation feature over de and en), registered once per session."""
  if not _BUILDER:
    class JaxgenTestTranslate(tfds.core.GeneratorBasedBuilder):
      VERSION = tfds.core.Version("1.0.0")
      BUILDER_CONFIGS = [tfds.core.BuilderConfig(name="de-en")]

      def _info(self):
        return tfds.core.DatasetInfo(
            builder=self, features=tfds.features.Translation(languages=("de", "en")))

      def _split_generators(self, dl_manager):
        return {"train": self._generate_examples(TRAIN),
                "validation": self._generate_examples(VALIDATION)}

      def _generate_examples(self, items):
        for i, (de, en) in enumerate(items):
          yield i, {"de": de, "en": en}

    _BUILDER.append(JaxgenTestTranslate.name)
  return f"tfds:{_BUILDER[0]}/de-en"


def tfds_config(tmp_path, **data):
  cfg = reverse_config()
  cfg.data.update({"source": translate_source(), "source_key": "de", "target_key": "en",
                   "tfds_data_dir": str(tmp_path), **data})
  return cfg


@needs_tf
def test_translation_splits_read_as_pairs(tmp_path, no_network):
  cfg = tfds_config(tmp_path)
  assert pairs.is_paired(cfg.data)
  config_check.check(cfg)
  train, evaluate = pairs.pairs(cfg.data, "train"), pairs.pairs(cfg.data, "eval")
  # Which record is which depends on TFDS's shuffle of the keys: compare as sets.
  assert sorted(train) == sorted(TRAIN) and sorted(evaluate) == sorted(VALIDATION)
  assert list(train[:2]) == [train[0], train[1]] and train[-1] == train[len(train) - 1]
  assert "de -> en, pairs=6" in repr(train) and "'validation'" in repr(evaluate)
  cfg.data.update(source_key="en", target_key="de", train_split="train[:3]",
                  eval_split="train[3:]")  # the other direction, and split slices
  train, evaluate = pairs.pairs(cfg.data, "train"), pairs.pairs(cfg.data, "eval")
  assert len(train) == 3 and sorted([*train, *evaluate]) == sorted((en, de) for de, en in TRAIN)
  cfg.data.source = f"{translate_source()}:1.0.0"  # NAME/CONFIG:VERSION
  assert len(pairs.pairs(cfg.data, "train")) == 3
  cfg.data.source_key = ""  # without data.source_key, tfds: gives documents
  assert not pairs.is_paired(cfg.data)


@needs_tf
@pytest.mark.slow
def test_packed_training_on_tfds_pairs(tmp_path, no_network):
  cfg = tfds_config(tmp_path / "data", mode="pack", seq_len=16, source_len=16)
  cfg.train.update(steps=3, batch_size=2)
  cfg.eval.update(every_steps=3, steps=1, decode_examples=2)
  workdir = tmp_path / "run"
  last = run(cfg, workdir)
  assert len(train_losses(workdir)) == 3 and np.isfinite(train_losses(workdir)).all()
  assert "val_chrf" in last  # the validation split decoded
  decoded = [json.loads(l) for l in (workdir / "metrics.jsonl").read_text().splitlines()]
  assert any("val_loss" in r for r in decoded)


@needs_tf
@pytest.mark.parametrize("keys, expected", [
    (dict(source_key="fr"), r"no feature 'fr' \(features: de, en\); set data\.source_key "
                            "to one of: de, en"),
    (dict(target_key="target"), r"no feature 'target' \(features: de, en\); set "
                                r"data\.target_key to one of: de, en"),
    (dict(eval_split="dev"), r"Unknown split 'dev'.*data\.eval_split.*train, validation"),
])
def test_bad_keys_and_splits_are_one_line(tmp_path, no_network, keys, expected):
  cfg = tfds_config(tmp_path, **keys)
  with pytest.raises(UserError, match=expected) as err:
    pairs.pairs(cfg.data, "eval" if "eval_split" in keys else "train")
  assert translate_source() in one_line(err)


def test_unknown_data_set_is_one_line(tmp_path, no_network):
  cfg = tfds_config(tmp_path, source="tfds:wmt14_translat/de-en")
  with pytest.raises(UserError, match="no data set 'wmt14_translat'; did you mean "
                                      "wmt14_translate") as err:
    pairs.pairs(cfg.data, "train")
  one_line(err)


def test_wmt14_offline_says_what_to_download_in_one_line(tmp_path, offline):
  """The brief's example: the real wmt14_translate/de-en fails fast, offline, in one line."""
  cfg = tfds_config(tmp_path, source="tfds:wmt14_translate/de-en")
  with pytest.raises(UserError, match="downloads from data.statmt.org, which cannot be "
                                      "reached") as err:
    pairs.pairs(cfg.data, "train")
  assert "data.tfds_manual_dir" in one_line(err)
