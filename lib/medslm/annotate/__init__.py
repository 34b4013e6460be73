"""01_annotate: an LLM labels a sample of web documents as medical or not (the FineWeb-Edu annotation pattern).

- :func:`build_messages` — the rubric prompt (German or English), the document truncated and fenced as data;
- :func:`parse_reply` — reads only the model's reply, strictly, from its last ``Verdict:`` line;
- :func:`lexicon_reply` / :func:`lexicon_backend` — the offline annotator: the weighted medical lexicon of
  :mod:`medslm.lexicon` (German and English, a data file) writes a reply in the same format, in the language of
  the prompt (detected with lingua), so it goes through the same prompt → reply → parse path;
- :func:`iter_corpus`, :func:`sample_documents` — read the corpus (errors name file and line, empty texts are
  skipped and counted) and draw a seeded sample, optionally stratified by language;
- :func:`make_llm` — the backend of a profile (lexicon, transformers, openai) behind the reply cache;
- :func:`annotate_documents` — label documents; :func:`annotation_report` — label distribution, unparseable rate,
  throughput and, with gold labels, precision, recall, F1 and the confusion matrix.

One module per job — ``rubric`` (prompt and reply parsing), ``offline`` (the lexicon annotator), ``corpus`` (reading
and sampling), ``labelling`` (backends and the labelling loop), ``report`` (metrics and the unparseable guard) —
and every name above is importable from ``medslm.annotate``.
"""

from medslm.annotate.corpus import iter_corpus, sample_documents
from medslm.annotate.labelling import annotate_documents, doc_hash, make_llm, run_lexicon
from medslm.annotate.offline import detect_language, instruction_language, lexicon_backend, lexicon_reply
from medslm.annotate.report import (
    UnparseableRepliesError,
    annotation_report,
    binary_metrics,
    check_unparseable,
    load_gold,
)
from medslm.annotate.rubric import (
    FENCE_CLOSE,
    FENCE_OPEN,
    LABELS,
    PROMPT_VERSION,
    build_messages,
    document_of,
    fence,
    parse_reply,
    prompt_version,
    truncate,
)

__all__ = [
    "LABELS",
    "PROMPT_VERSION",
    "FENCE_OPEN",
    "FENCE_CLOSE",
    "prompt_version",
    "truncate",
    "fence",
    "build_messages",
    "document_of",
    "parse_reply",
    "detect_language",
    "instruction_language",
    "lexicon_reply",
    "lexicon_backend",
    "iter_corpus",
    "sample_documents",
    "run_lexicon",
    "make_llm",
    "doc_hash",
    "annotate_documents",
    "load_gold",
    "binary_metrics",
    "annotation_report",
    "UnparseableRepliesError",
    "check_unparseable",
]
