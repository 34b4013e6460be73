"""Parameter models of a run and of each step, and validation of whole profiles.

A profile is a YAML file with a ``run`` section (:class:`RunParams`) and a ``steps`` section mapping step names to
that step's parameters. Every field has a type, a default (the smoke value), constraints and a description, so
``load_profile`` can report *every* problem at once with file, step, field, bad value and what is allowed. The
models are the single source of every default: notebooks' parameters cells are generated from them, and a profile
states only what differs.

Rooms: :mod:`.base` (YAML, secrets, the strict base model, run parameters), one module per group of steps
(:mod:`.data`, :mod:`.training`, :mod:`.instructions`, :mod:`.evaluation`) and :mod:`.profile` (the recipe's steps,
paths, validation).
"""

from medslm.params.base import (
    Device,
    Language,
    ProfileError,
    RunParams,
    StrictModel,
    looks_like_secret,
    mask_secret,
    read_yaml,
    scrub_secrets,
)
from medslm.params.data import AnnotateParams, ClassifyParams, PrepareParams
from medslm.params.evaluation import EvaluateParams, FailureAnalysisParams
from medslm.params.instructions import (
    SYNTH_DOC_TYPES,
    SYNTH_REJECTIONS,
    SYNTH_TASKS,
    AlignParams,
    SynthesizeParams,
)
from medslm.params.profile import (
    MODEL_FIELDS,
    PATH_FIELDS,
    STEP_DIRS,
    STEP_ORDER,
    STEP_PARAMS,
    Profile,
    known_steps,
    load_profile,
    parse_profile,
    repo_root_of,
    resolve_profile_paths,
    step_params,
)
from medslm.params.training import LLAMA_PROJECTIONS, CptParams, MergeParams

__all__ = [
    "LLAMA_PROJECTIONS", "MODEL_FIELDS", "SYNTH_DOC_TYPES", "SYNTH_REJECTIONS", "SYNTH_TASKS", "PATH_FIELDS", "STEP_DIRS", "STEP_ORDER", "STEP_PARAMS", "AlignParams",
    "AnnotateParams", "ClassifyParams", "CptParams", "Device", "EvaluateParams", "FailureAnalysisParams", "Language",
    "MergeParams", "PrepareParams", "Profile", "ProfileError", "RunParams", "StrictModel", "SynthesizeParams",
    "known_steps", "load_profile", "looks_like_secret", "mask_secret", "parse_profile", "read_yaml", "repo_root_of",
    "resolve_profile_paths", "scrub_secrets", "step_params",
]
