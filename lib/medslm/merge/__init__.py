"""04_merge with mergekit: merge the continually pre-trained (CPT) model back into the instruct model.

The recipe (DeFineMed, MediPhi): the CPT model knows medicine but forgot some general skill; merging it back into
the instruct model trades the two off. :class:`MergeRecipe` runs the step (setup → merge → evaluate → select →
save) for the notebook and for ``python -m medslm.merge PROFILE``. The rooms:

- :mod:`.configs` — mergekit ``MergeConfiguration`` builders (slerp, linear, task vectors, model_stock, mediphi)
- :mod:`.parents` — the models to merge, resolved once (hub, LoRA adapters, safetensors only)
- :mod:`.compat`, :mod:`.memory` — can they be merged, does it fit
- :mod:`.execute` — one mergekit run (``run_mergekit``), atomic and resumable
- :mod:`.sanity`, :mod:`.sweep`, :mod:`.selection` — check, measure (``SweepPoint``) and choose (``Selection``)
"""

from medslm.merge.compat import IncompatibleModelsError, check_compatible
from medslm.merge.configs import (
    METHODS,
    MergeError,
    Stage,
    build_config,
    config_from_params,
    config_models,
    linear_config,
    mediphi_stages,
    model_stock_config,
    slerp_config,
    task_vector_config,
)
from medslm.merge.execute import run_mergekit, run_stages, same_merge
from medslm.merge.memory import (
    IMPORT_OVERHEAD_BYTES,
    MergeMemoryError,
    check_memory,
    estimate_merge_memory,
    parse_size,
    safetensors_summary,
)
from medslm.merge.parents import (
    Parent,
    is_lora_adapter,
    require_safetensors,
    resolve_lora,
    resolve_parent,
    resolve_parents,
)
from medslm.merge.recipe import MergeRecipe
from medslm.merge.sanity import echoes_prompt, sanity_check
from medslm.merge.selection import (
    Constraint,
    Selection,
    SelectionRule,
    save_selection,
    select_merge,
    select_nearest,
)
from medslm.merge.sweep import (
    PlannedMerge,
    SweepPoint,
    evaluate_point,
    perplexity_evaluator,
    plan_merges,
    point_name,
    probe_evaluator,
    sweep_table,
)

__all__ = [
    "IMPORT_OVERHEAD_BYTES", "METHODS", "Constraint", "IncompatibleModelsError", "MergeError", "MergeMemoryError",
    "MergeRecipe", "Parent", "PlannedMerge", "Selection", "SelectionRule", "Stage", "SweepPoint", "build_config",
    "check_compatible", "check_memory", "config_from_params", "config_models", "echoes_prompt",
    "estimate_merge_memory", "evaluate_point", "is_lora_adapter", "linear_config", "mediphi_stages",
    "model_stock_config", "parse_size", "perplexity_evaluator", "plan_merges", "point_name", "probe_evaluator",
    "require_safetensors", "resolve_lora", "resolve_parent", "resolve_parents", "run_mergekit", "run_stages",
    "safetensors_summary", "same_merge", "sanity_check", "save_selection", "select_merge", "select_nearest",
    "slerp_config", "sweep_table", "task_vector_config",
]
