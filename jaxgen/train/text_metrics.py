"""Scores of decoded texts against references, as training's evaluation reports them."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def text_metrics(hypotheses: Sequence[str], references: Sequence[str]) -> dict[str, float]:
  """Exact match (a fraction), corpus BLEU and chrF (sacrebleu's defaults, 0-100)."""
  import sacrebleu
  hyps, refs = list(hypotheses), list(references)
  exact = float(np.mean([h == r for h, r in zip(hyps, refs)])) if refs else 0.0
  return {"exact_match": exact,
          "bleu": float(sacrebleu.corpus_bleu(hyps, [refs]).score),
          "chrf": float(sacrebleu.corpus_chrf(hyps, [refs]).score)}
