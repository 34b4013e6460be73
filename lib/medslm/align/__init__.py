"""06_align: SFT then DPO with trl on 05_synthesize's data, starting from 04_merge's selected merge.

* :mod:`~medslm.align.data` — the conversational SFT/DPO files, checked (file:line) before training;
* :mod:`~medslm.align.trainers` — ``SFTConfig``/``SFTTrainer``, ``DPOConfig``/``DPOTrainer``, LoRA/QLoRA, the
  DPO reference;
* :mod:`~medslm.align.recipe` — :class:`AlignRecipe`, the one code path of the notebook and a script.
"""

from medslm.align.data import check_chat_template, read_dpo_rows, read_sft_rows
from medslm.align.recipe import STAGES, AlignRecipe, synthesize_files
from medslm.align.trainers import dpo_config, load_policy, load_reference, peft_config, sft_config

__all__ = ["STAGES", "AlignRecipe", "check_chat_template", "dpo_config", "load_policy", "load_reference",
           "peft_config", "read_dpo_rows", "read_sft_rows", "sft_config", "synthesize_files"]
