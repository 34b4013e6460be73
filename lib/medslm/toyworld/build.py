"""Build the toy world into a step folder: corpus, probes, held-out texts, chat examples, tokenizer and the tiny
general model (pretrained on general documents + general chat, never on medical facts)."""

from __future__ import annotations

import random
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from medslm.lexicon import Lexicon, derive_lexicon, write_lexicon
from medslm.rundir import PrepareDir, write_json, write_jsonl
from medslm.stats import seeded_sample
from medslm.toyworld.chat import chat_examples, render_chats
from medslm.toyworld.corpus import CorpusSpec, general_documents, generate_corpus
from medslm.toyworld.knowledge import KnowledgeBase, load_knowledge
from medslm.toyworld.probes import chat_probes, cloze_probes, heldout_texts, world_summary
from medslm.toyworld.tinymodel import new_tiny_llama
from medslm.toyworld.tokenizer import end_of_turn_ids, train_tokenizer

LEXICON_HEADER = """The toy world's lexicon annotator, derived by medslm.lexicon.derive_lexicon from gold-labelled documents of the
development sentence families (medslm.toyworld.families): never from held-out families. Not for real text: the
packaged hand-written lexicon (medslm/toyworld/data/medical_lexicon.yaml) is."""


@dataclass
class WorldData:
    """Texts of the toy world, before any model exists."""

    corpus: list[dict[str, Any]]
    pretrain_texts: list[str]
    chats: list[dict[str, Any]]
    kb: KnowledgeBase
    seed: int
    lexicon: Lexicon
    timings: dict[str, float] = field(default_factory=dict)


def make_world_data(p: Any, seed: int) -> WorldData:
    """Generate the corpus, the general pretraining documents and the chat examples for PrepareParams ``p``."""
    t0 = time.perf_counter()
    kb = load_knowledge()
    spec = CorpusSpec(p.n_documents, de_fraction=p.de_fraction, medical_fraction=p.medical_fraction,
                      ambiguous_fraction=p.ambiguous_fraction, held_out_fraction=p.held_out_fraction, seed=seed)
    corpus = list(generate_corpus(spec, kb))
    pretrain = general_documents(p.pretrain_documents, seed, p.de_fraction, kb)
    chats = chat_examples(kb, p.chat_examples, seed)
    return WorldData(corpus, pretrain, chats, kb, seed, development_lexicon(p, seed, kb),
                     {"generate_s": time.perf_counter() - t0})


def development_sample(p: Any, seed: int, kb: KnowledgeBase | None = None) -> list[dict[str, Any]]:
    """``p.lexicon_documents`` gold-labelled documents of the development families only (``held_out_fraction``
    0), drawn apart from the corpus (own id prefix) with the corpus's mix."""
    spec = CorpusSpec(p.lexicon_documents, de_fraction=p.de_fraction, medical_fraction=p.medical_fraction,
                      ambiguous_fraction=p.ambiguous_fraction, held_out_fraction=0.0, seed=seed, id_prefix="dev")
    return list(generate_corpus(spec, kb))


def development_lexicon(p: Any, seed: int, kb: KnowledgeBase | None = None) -> Lexicon:
    """The toy world's lexicon annotator, derived from :func:`development_sample` (never from held-out families)."""
    return derive_lexicon(development_sample(p, seed, kb))


def train_world_tokenizer(data: WorldData, vocab_size: int):
    """Train the BPE on everything the world can say (corpus, pretraining documents, chats, held-out texts),
    so medical words exist in the vocabulary even though the tiny model never saw them in context."""
    texts = [d["text"] for d in data.corpus] + data.pretrain_texts
    texts += [m["content"] for c in data.chats for m in c["messages"]]
    texts += [h["text"] for h in heldout_texts(data.kb, data.seed)]
    return train_tokenizer(texts, vocab_size=vocab_size)


def pretraining_texts(data: WorldData, tokenizer: Any) -> list[str]:
    """General documents and rendered chats, shuffled together (seeded)."""
    texts = data.pretrain_texts + render_chats(tokenizer, data.chats)
    random.Random(f"pretrain-mix:{data.seed}").shuffle(texts)
    return texts


def pretrain_tiny_model(p: Any, data: WorldData, tokenizer: Any, device: str = "cpu"):
    """Pretrain the tiny Llama with the shared causal-LM plumbing; return (model, log history, seconds)."""
    import tempfile

    from medslm.training import TrainSettings, packed_dataset, train_lm

    model = new_tiny_llama(tokenizer, seed=data.seed, hidden_size=p.hidden_size, num_layers=p.num_layers,
                           num_heads=p.num_heads, intermediate_size=p.intermediate_size)
    model.generation_config.eos_token_id = end_of_turn_ids(tokenizer)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    dataset = packed_dataset(tokenizer, pretraining_texts(data, tokenizer), p.block_size)
    out_dir = Path(tempfile.mkdtemp(prefix="medslm-pretrain-"))  # the Trainer's scratch folder; nothing is kept
    settings = TrainSettings(output_dir=out_dir, learning_rate=p.learning_rate, epochs=p.pretrain_epochs,
                             batch_size=p.batch_size, warmup=0.05, weight_decay=0.01, device=device,
                             seed=data.seed, logging_steps=5)
    t0 = time.perf_counter()
    history = train_lm(model, tokenizer, dataset, settings)
    shutil.rmtree(out_dir, ignore_errors=True)
    return model, history, time.perf_counter() - t0


def thin_probes(probes: list[dict[str, Any]], per_relation: int | None, seed: int) -> list[dict[str, Any]]:
    """At most ``per_relation`` probes of each (kind, relation, language): a seeded sample, in the original order
    (None keeps all). Every later step scores the same probes, so a small model on a CPU can afford them."""
    if per_relation is None:
        return probes
    groups: dict[tuple[str, str, str], list[int]] = {}
    for i, probe in enumerate(probes):
        groups.setdefault((probe["probe"], probe["relation"], probe["lang"]), []).append(i)
    keep = {i for key, members in groups.items()
            for i in seeded_sample(members, per_relation, f"probes:{seed}:{':'.join(key)}")}
    return [probe for i, probe in enumerate(probes) if i in keep]


def write_world_files(d: PrepareDir, data: WorldData, tokenizer: Any,
                      max_probes_per_relation: int | None = None) -> dict[str, Any]:
    """Write corpus, probes (all, or a seeded sample per relation), chats, held-out texts, world.json and the
    derived lexicon; return the probes."""
    write_jsonl(d.corpus, data.corpus)
    probes = thin_probes(cloze_probes(data.kb, data.seed) + chat_probes(data.kb, tokenizer, data.seed),
                         max_probes_per_relation, data.seed)
    write_jsonl(d.probes, probes)
    write_jsonl(d.chat, data.chats)
    write_jsonl(d.heldout, heldout_texts(data.kb, data.seed))
    write_json(d.world, world_summary(data.kb, data.seed))
    write_lexicon(data.lexicon, d.lexicon, header=LEXICON_HEADER)
    return {"probes": probes}
