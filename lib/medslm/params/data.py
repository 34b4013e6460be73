"""Parameters of the data steps: 00_prepare, 01_annotate, 02_classify."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import AfterValidator, Field, field_validator, model_validator

from medslm.params.base import (
    Language,
    StrictModel,
    server_url,
)


def _gold_jsonl(value: str | None) -> str | None:
    if value is not None and not value.endswith(".jsonl"):
        raise ValueError(f"gold_file {value!r} must be a .jsonl file with id and label fields")
    return value


GoldFile = Annotated[str | None, AfterValidator(_gold_jsonl)]  # annotate's and classify's gold labels


class PrepareParams(StrictModel):
    """00_prepare: build the toy world and its tiny general model, or resolve a real corpus and base model."""

    source: Literal["toyworld", "hub", "local"] = Field(
        "toyworld", description="toyworld (embedded offline world), hub (a hub dataset, streamed) or local (JSONL/Parquet files)."
    )
    # --- toy world -----------------------------------------------------------------------------------------
    n_documents: int = Field(3000, gt=0, le=5_000_000, description="Web-corpus documents to generate (toy world).")
    de_fraction: float = Field(0.5, ge=0.0, le=1.0, description="Share of German documents in the toy corpus.")
    medical_fraction: float = Field(0.35, ge=0.0, le=1.0, description="Share of medical documents in the toy corpus.")
    ambiguous_fraction: float = Field(0.15, ge=0.0, le=1.0, description="Share of ambiguous (fitness, nutrition, wellness…) documents.")
    held_out_fraction: float = Field(0.2, ge=0.0, lt=1.0, description="Share of medical, general and ambiguous documents built only from held-out sentence families (never seen by the lexicon or the classifier; 01/02 report P/R/F1 on them apart).")
    lexicon_documents: int = Field(1000, ge=20, description="Gold-labelled development documents (development families only) the toy world's lexicon annotator is derived from.")
    pretrain_documents: int = Field(2500, gt=0, description="General documents the tiny model is pretrained on.")
    chat_examples: int = Field(2500, ge=0, description="General chat examples mixed into pretraining.")
    vocab_size: int = Field(2048, ge=300, le=65536, description="BPE vocabulary size of the toy tokenizer.")
    hidden_size: int = Field(128, ge=16, description="Hidden size of the tiny Llama.")
    num_layers: int = Field(2, ge=1, description="Transformer layers of the tiny Llama.")
    num_heads: int = Field(4, ge=1, description="Attention heads of the tiny Llama.")
    intermediate_size: int = Field(384, ge=16, description="MLP width of the tiny Llama.")
    block_size: int = Field(128, ge=16, le=4096, description="Packed sequence length for pretraining.")
    pretrain_epochs: float = Field(4.0, gt=0, description="Passes over the pretraining data.")
    learning_rate: float = Field(4e-3, gt=0, lt=1, description="Peak learning rate of pretraining.")
    batch_size: int = Field(32, ge=1, description="Sequences per optimisation step.")
    max_probes_per_relation: int | None = Field(
        None, ge=1, description="Toy-world probes kept per (kind, relation, language), a seeded sample; None = all (~1,300).")
    eval_max_texts: int = Field(400, ge=1, le=100_000, description="Held-out texts per domain for the perplexity of the toy model.")
    # --- real corpora ------------------------------------------------------------------------------------------
    hub_dataset: str | None = Field(None, description="Hub dataset id for source=hub, e.g. HuggingFaceFW/fineweb-2.")
    hub_config: str | None = Field(None, description="Hub dataset config, e.g. deu_Latn.")
    hub_split: str = Field("train", description="Hub dataset split.")
    local_files: list[str] = Field(default_factory=list, description="JSONL or Parquet files for source=local.")
    text_field: str = Field("text", min_length=1, description="Field holding the document text.")
    max_documents: int = Field(100_000, gt=0, description="Documents taken from a hub or local corpus.")
    base_model: str | None = Field(
        None, description="Instruct model to adapt (hub id or local folder); the toy world uses its tiny model."
    )
    revision: str | None = Field(None, description="Hub revision (branch, tag or commit) of the base model.")
    trust_remote_code: bool = Field(False, description="Allow model code from the hub. Off unless you trust it.")

    @field_validator("ambiguous_fraction")
    @classmethod
    def _fractions_fit(cls, value: float, info: Any) -> float:
        medical = info.data.get("medical_fraction")
        if medical is not None and medical + value > 1:
            raise ValueError(f"medical_fraction {medical} + ambiguous_fraction {value} = {medical + value:g} is more "
                             "than 1: the rest of the corpus is general, so together they may be at most 1")
        return value

    @field_validator("local_files")
    @classmethod
    def _known_suffixes(cls, files: list[str]) -> list[str]:
        for f in files:
            if not f.endswith((".jsonl", ".json", ".parquet", ".jsonl.gz")):
                raise ValueError(f"{f!r} is not a .jsonl, .jsonl.gz, .json or .parquet file")
        return files

    @model_validator(mode="after")
    def _real_source_is_complete(self) -> PrepareParams:
        """A hub or local corpus names its documents and the base model (only the toy world brings its own model),
        so a profile missing either fails when it is loaded, not after the corpus has been streamed."""
        needs = {"hub": ("hub_dataset", "a hub dataset id, e.g. HuggingFaceFW/fineweb-2"),
                 "local": ("local_files", "JSONL or Parquet paths")}
        problems = []
        if self.source in needs and not getattr(self, needs[self.source][0]):
            problems.append(f"source: {self.source} needs {needs[self.source][0]} ({needs[self.source][1]})")
        if self.source != "toyworld" and not self.base_model:
            problems.append(f"source: {self.source} needs base_model (a hub id or a local folder of the instruct model "
                            "to adapt); only the toy world has a model of its own")
        if problems:
            raise ValueError("; ".join(problems))
        return self




class AnnotateParams(StrictModel):
    """01_annotate: an LLM (or the offline lexicon) labels a sample of the corpus as medical or not."""

    backend: Literal["lexicon", "transformers", "loglik", "openai"] = Field(
        "lexicon", description="lexicon (offline weighted medical lexicon), transformers (local model writes a reply), loglik (local model: the verdict as a choice scored by log-likelihood, never unparseable) or openai (OpenAI-compatible server)."
    )
    model: str | None = Field(
        None, description="transformers/loglik: hub id or folder (None = the model of 00_prepare); openai: the model name the server serves."
    )
    base_url: str | None = Field(None, description="openai: server URL up to /v1, e.g. http://127.0.0.1:8000/v1.")
    api_key_env: str | None = Field(
        None, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$", description="openai: NAME of the environment variable holding the API key (never the key itself)."
    )
    prompt_language: Language | None = Field(None, description="Language of the prompt: de or en (None = the run language).")
    sample_size: int = Field(1200, gt=0, le=10_000_000, description="Documents drawn from the corpus (seeded) and labelled.")
    stratify_by_language: bool = Field(True, description="Give each language its corpus share of the sample.")
    max_chars: int = Field(2000, ge=100, le=200_000, description="Characters of a document shown to the annotator (truncated at a word boundary).")
    quality_score: bool = Field(True, description="Also ask for a 0-5 quality score of the document as medical training text.")
    batch_size: int = Field(8, ge=1, le=4096, description="transformers/loglik: prompts per batch.")
    concurrency: int = Field(4, ge=1, le=1024, description="openai: requests in flight at once.")
    timeout_s: float = Field(120.0, gt=0, le=3600, description="openai: seconds to wait for one reply before retrying.")
    max_retries: int = Field(3, ge=0, le=20, description="openai: retries (exponential backoff) after a timeout, connection error, 429 or 5xx.")
    max_new_tokens: int = Field(256, ge=1, le=8192, description="Tokens the annotator may generate (justification + score + verdict).")
    temperature: float = Field(0.0, ge=0.0, le=2.0, description="Sampling temperature (0 = greedy).")
    gold_file: GoldFile = Field(None, description="Optional human labels: JSONL with id and label (medical | not_medical).")
    trust_remote_code: bool = Field(False, description="transformers: allow model code from the hub. Off unless you trust it.")
    max_unparseable_rate: float = Field(
        0.2, ge=0.0, le=1.0, description="Fail the step when a larger share of the replies has no valid verdict line."
    )

    @field_validator("model")
    @classmethod
    def _openai_model(cls, value: str | None, info: Any) -> str | None:
        if info.data.get("backend") == "openai" and not value:
            raise ValueError("the openai backend needs model: the name the server serves (transformers serve: its model path)")
        return value

    @field_validator("base_url")
    @classmethod
    def _openai_url(cls, value: str | None, info: Any) -> str | None:
        return server_url(value, "the openai backend" if info.data.get("backend") == "openai" else None)



class ClassifyParams(StrictModel):
    """02_classify: a classifier trained on the annotated sample filters the whole corpus at a target precision."""

    backend: Literal["tfidf", "transformers"] = Field(
        "tfidf", description="tfidf (word + char n-gram TF-IDF and logistic regression, CPU) or transformers (fine-tuned encoder)."
    )
    encoder: str = Field("xlm-roberta-base", min_length=1, description="transformers: sequence-classification encoder (hub id or folder).")
    trust_remote_code: bool = Field(False, description="transformers: allow model code from the hub. Off unless you trust it.")
    target_precision: float = Field(0.95, gt=0.0, le=1.0, description="Precision the threshold must reach on validation; recall is reported there.")
    validation_fraction: float = Field(0.25, gt=0.0, lt=0.9, description="Share of the labelled sample held out (stratified) to pick the threshold.")
    min_per_class: int = Field(20, ge=2, description="Fewest labelled documents of each class needed to train.")
    max_chars: int = Field(4000, ge=100, le=1_000_000, description="Characters of a document the classifier reads (train and score).")
    tfidf_min_df: int = Field(2, ge=1, description="tfidf: keep n-grams seen in at least this many training documents.")
    logreg_c: float = Field(4.0, gt=0, description="tfidf: inverse regularisation strength C of the logistic regression.")
    epochs: float = Field(2.0, gt=0, le=100, description="transformers: passes over the training documents.")
    learning_rate: float = Field(2e-5, gt=0, lt=1, description="transformers: peak learning rate (AdamW).")
    train_batch_size: int = Field(16, ge=1, description="transformers: documents per training step.")
    max_length: int = Field(512, ge=16, le=8192, description="transformers: tokens per document (truncated).")
    batch_size: int = Field(1024, ge=1, description="Documents scored per batch when the corpus is filtered.")
    executor: Literal["local", "datatrove", "slurm"] = Field(
        "local", description="local (in the notebook), datatrove (LocalPipelineExecutor with `tasks`) or slurm (SlurmPipelineExecutor)."
    )
    tasks: int = Field(2, ge=1, le=100_000, description="datatrove/slurm: tasks the corpus is split into.")
    workers: int = Field(-1, ge=-1, description="datatrove/slurm: tasks running at once (-1 = all).")
    slurm_partition: str | None = Field(None, description="slurm: partition to submit to (required for executor slurm).")
    slurm_time: str = Field("04:00:00", pattern=r"^(\d+-)?\d{1,2}:\d{2}:\d{2}$", description="slurm: time limit per task ([days-]hh:mm:ss).")
    slurm_cpus_per_task: int = Field(4, ge=1, le=1024, description="slurm: CPU cores per task.")
    slurm_mem_per_cpu_gb: int = Field(2, ge=1, le=1024, description="slurm: memory per core in GB.")
    gold_file: GoldFile = Field(
        None, description="Optional human labels (as annotate's gold_file): the filter's precision/recall against them when the corpus has no label field."
    )

    @field_validator("slurm_partition")
    @classmethod
    def _partition_for_slurm(cls, value: str | None, info: Any) -> str | None:
        if info.data.get("executor") == "slurm" and not value:
            raise ValueError("executor slurm needs slurm_partition (the partition to submit the array job to)")
        return value


