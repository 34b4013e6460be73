"""03_cpt: continual pre-training (CPT) of the base model on the filtered corpus — full, LoRA or QLoRA.

One recipe, :class:`~medslm.cpt.recipe.CptRecipe` (``setup_data → setup_model → train → save → evaluate →
finish``), serves the notebook (cell by cell) and ``python -m medslm.cpt.launch PROFILE`` (one process, or each
process under ``accelerate launch`` with FSDP). The rooms:

* :mod:`~medslm.cpt.data` — filtered corpus, held-out medical and general text, replay, QA texts, packing;
* :mod:`~medslm.cpt.modes` — full / LoRA / QLoRA set-up and trainable-parameter checks;
* :mod:`~medslm.cpt.trainer` — ``transformers.Trainer``, checkpoints keyed by a fingerprint, resume;
* :mod:`~medslm.cpt.save` — adapter, full model (adapters merged into a full-precision base), model card;
* :mod:`~medslm.cpt.measure` — probes and perplexity before/after, forgetting;
* :mod:`~medslm.cpt.launch` — processes, accelerate configs and the launch command.
"""

from medslm.cpt.data import (
    CptData,
    cap_documents,
    curriculum_dataset,
    data_sha256,
    heldout_general_documents,
    load_documents,
    load_qa_texts,
    load_replay,
    pack,
    packing_stats,
    prepare_data,
    read_texts,
    replay_count,
    replay_documents,
    split_documents,
    texts,
    training_texts,
)
from medslm.cpt.launch import (
    accelerate_config_path,
    format_command,
    is_main_process,
    launch_command,
    python_accelerate,
    world_size,
)
from medslm.cpt.measure import compare, comparison_rows, evaluate_model
from medslm.cpt.modes import (
    check_setup,
    check_target_modules,
    check_trainable,
    embedding_learning_rates,
    embedding_module_names,
    linear_module_names,
    peft_lora_config,
    setup_model,
    trainable_parameters,
)
from medslm.cpt.recipe import CptRecipe
from medslm.cpt.save import finalize, merge_adapter, model_card
from medslm.cpt.trainer import (
    TrainOutcome,
    checkpoint_dir,
    cpt_training_arguments,
    fingerprint,
    train,
    train_settings,
)

__all__ = [
    "CptData", "CptRecipe", "TrainOutcome", "accelerate_config_path", "cap_documents", "check_setup", "check_target_modules",
    "check_trainable", "checkpoint_dir", "compare", "comparison_rows", "cpt_training_arguments", "curriculum_dataset", "data_sha256",
    "embedding_learning_rates", "embedding_module_names", "evaluate_model", "finalize", "fingerprint",
    "format_command", "heldout_general_documents", "is_main_process", "launch_command", "linear_module_names",
    "load_documents", "load_qa_texts", "load_replay", "merge_adapter", "model_card", "pack", "packing_stats",
    "peft_lora_config", "prepare_data", "python_accelerate", "read_texts", "replay_count", "replay_documents",
    "setup_model", "split_documents", "texts", "train", "train_settings", "trainable_parameters", "training_texts",
    "world_size",
]
