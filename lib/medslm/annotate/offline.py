"""The offline annotator: the weighted medical lexicon (:mod:`medslm.lexicon`) writes replies in the format an LLM is
asked for, in the language of the prompt, so it goes through the same prompt → reply → parse path."""

from __future__ import annotations

import functools

from medslm.annotate.rubric import FENCE_CLOSE, FENCE_OPEN, document_of
from medslm.lexicon import Lexicon, default_lexicon
from medslm.llm import FunctionBackend, Messages


@functools.lru_cache(maxsize=64)
def detect_language(text: str) -> str:
    """``de`` or ``en``: the likelier of the two for ``text`` (lingua); English when lingua cannot tell."""
    from medslm.language import detect

    return "de" if detect(text, ("de", "en")) == "de" else "en"


def instruction_language(messages: Messages) -> str:
    """The language (de/en) of a prompt's instructions — the last message without its fenced document, so an
    English document in a German prompt does not switch the reply to English."""
    content = messages[-1]["content"]
    start, end = content.rfind(FENCE_OPEN + "\n"), content.rfind("\n" + FENCE_CLOSE)
    if 0 <= start < end:
        content = content[:start] + content[end + len(FENCE_CLOSE) + 1:]
    return detect_language(content)


def lexicon_reply(messages: Messages, lexicon: Lexicon | None = None, quality_score: bool = True) -> str:
    """The lexicon annotator's reply to a prompt of :func:`build_messages`, in the format an LLM is asked for.
    It reads the fenced document only; the reply language follows the prompt."""
    lex = lexicon or default_lexicon()
    doc = document_of(messages)
    german = instruction_language(messages) == "de"
    s = lex.score(doc)
    positive = [h for h in s["hits"] if h[1] > 0]
    terms = ", ".join(h[0] for h in positive[:6]) or ("keine" if german else "none")
    if german:
        topic = "medizinisch" if s["medical"] else "nicht medizinisch"
        just = (f"Begründung: Lexikon-Annotator: Das Hauptthema ist {topic}; medizinische Begriffe: {terms} "
                f"(Punktzahl {s['score']:.1f}, {s['density']:.1f} pro 100 Wörter).")
    else:
        topic = "medical" if s["medical"] else "not medical"
        just = (f"Justification: lexicon annotator: the main topic is {topic}; medical terms: {terms} "
                f"(score {s['score']:.1f}, {s['density']:.1f} per 100 words).")
    lines = [just]
    if quality_score:
        quality = 0 if not s["medical"] else max(1, min(5, round(s["density"] / 6)))
        lines.append(f"{'Qualität' if german else 'Quality'}: {quality}")
    lines.append(f"Verdict: {'medical' if s['medical'] else 'not_medical'}")
    return "\n".join(lines)


def lexicon_backend(quality_score: bool = True, batch_size: int = 256, lexicon: Lexicon | None = None) -> FunctionBackend:
    """The offline annotator as an LLM backend (the smoke default); ``lexicon`` defaults to the packaged one."""
    lex = lexicon or default_lexicon()
    return FunctionBackend(lambda m: lexicon_reply(m, lex, quality_score), name="lexicon",
                           model=f"medical-lexicon-{lex.digest}", batch_size=batch_size)
