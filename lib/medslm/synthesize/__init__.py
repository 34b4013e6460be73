"""05_synthesize: synthetic clinical instructions and preference pairs (MediFlow-style), from the toy world.

Modules: ``tasks`` (exact answers, JSON Schemas, length bounds), ``grid`` (prompts over task × document type ×
language × format), ``faults`` (what teachers get wrong, injected with ground truth), ``teachers`` (programmatic
or any llm.py backend), ``filters`` + ``judge`` + ``funnel`` (what each filter removed), ``pairs`` (DPO),
``output`` (trl-ready JSONL with dataset cards) and ``recipe`` (the step, in order).
"""
