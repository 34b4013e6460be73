"""Evaluation: multiple choice as lm-evaluation-harness scores it (faster), benchmarks, perplexity, generative
task scores and judge win-rates.

- :mod:`.mcq` — log-likelihood multiple choice (lm-eval 0.4.13 semantics, shared-context KV cache);
- :mod:`.probes` — the toy world's probes through the same scorer;
- :mod:`.perplexity` — held-out perplexity, loss in chunks;
- :mod:`.copying` — in-context copying (loss on a repeated random sequence: the induction-head probe);
- :mod:`.benchmarks` — MedQA, MedMCQA, PubMedQA, MMLU medical, MMMLU DE, Global-MMLU de, local files; k-shot;
- :mod:`.intervals` — Wilson and bootstrap 95 % intervals;
- :mod:`.generative` — exact match, token F1, ROUGE-L, JSON validity and field accuracy;
- :mod:`.judge` — pairwise judge with position swap, win/tie/loss, length-controlled win-rate.
"""

from medslm.evaluate.mcq import (
    MCQItem,
    MCQResult,
    accuracy,
    encode_pair,
    loglikelihoods,
    score_mcq,
    tok_encode,
)
from medslm.evaluate.perplexity import heldout_perplexity, perplexity
from medslm.evaluate.probes import PROBE_GROUPS, evaluate_probes, probe_group

__all__ = [
    "MCQItem",
    "MCQResult",
    "PROBE_GROUPS",
    "accuracy",
    "encode_pair",
    "evaluate_probes",
    "heldout_perplexity",
    "loglikelihoods",
    "perplexity",
    "probe_group",
    "score_mcq",
    "tok_encode",
]
