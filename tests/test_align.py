"""06_align: SFT and DPO through trl on a tiny model — labels mask, DPO reference, LoRA/QLoRA, resume, bad input."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from conftest import build_tiny_model_dir

from medslm.align import AlignRecipe, check_chat_template, read_dpo_rows, read_sft_rows, synthesize_files
from medslm.align.trainers import dpo_trainer, sft_trainer
from medslm.params import AlignParams, RunParams
from medslm.rundir import JsonlError, RunDir, write_jsonl

FAST = dict(sft_batch_size=4, dpo_batch_size=4, sft_epochs=1, dpo_epochs=1, save_steps=2, logging_steps=1,
            sft_learning_rate=1e-2, dpo_learning_rate=1e-2, warmup=0)
QUESTIONS = [("What treats diabetes?", "Metformin."), ("Was behandelt Asthma?", "Salbutamol."),
             ("What does the heart do?", "It pumps blood."), ("Hauptstadt von Frankreich?", "Paris.")]

pytestmark = pytest.mark.usefixtures("one_thread")


def _sft_rows(n: int = 16) -> list[dict]:
    return [{"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}], "task": "qa"}
            for q, a in (QUESTIONS[i % 4] for i in range(n))]


def _dpo_rows(n: int = 16) -> list[dict]:
    """Pairs whose rejected answer is verbose (labelled so, as 05 does) or wrong (every other pair: no label)."""
    rows = []
    for i in range(n):
        q, a = QUESTIONS[i % 4]
        verbose = i % 2 == 0
        worse = f"{a} {a} Well, in English: it depends on many things." if verbose else "Paracetamol."
        rows.append({"prompt": [{"role": "user", "content": q}], "chosen": [{"role": "assistant", "content": a}],
                     "rejected": [{"role": "assistant", "content": worse}], **({"rejection": "verbose"} if verbose else {})})
    return rows




@pytest.fixture()
def run_dir(tmp_path, tiny_tokenizer) -> Path:
    """A run folder with what 06_align reads: 04_merge's selected model and 05_synthesize's files."""
    run = RunDir(tmp_path / "run")
    # hidden 64: bitsandbytes' CPU 4-bit inference needs layers at least one quantisation block (64) wide
    build_tiny_model_dir(run.merge.selected, tiny_tokenizer, hidden_size=64, intermediate_size=128)
    files = synthesize_files(run)
    write_jsonl(files["sft_train"], _sft_rows())
    write_jsonl(files["sft_test"], _sft_rows(4))
    write_jsonl(files["dpo_train"], _dpo_rows())
    write_jsonl(files["dpo_test"], _dpo_rows(4))
    return run.path


def _recipe(run_dir: Path, **values) -> AlignRecipe:
    recipe = AlignRecipe(AlignParams(**{**FAST, **values}), run_dir, RunParams(device="cpu", seed=0))
    recipe.setup()
    return recipe


def test_sft_loss_is_on_assistant_tokens_only(run_dir):
    recipe = _recipe(run_dir)
    trainer = recipe.sft_trainer()
    batch = next(iter(trainer.get_train_dataloader()))
    tok = recipe.tokenizer
    for ids, labels in zip(batch["input_ids"], batch["labels"], strict=True):
        learned = tok.decode(ids[labels != -100])
        whole = tok.decode(ids[ids != tok.pad_token_id])
        answer = next(a for q, a in QUESTIONS if q in whole)
        assert learned.strip() == f"{answer}<|end|>", (whole, learned)  # the answer and its end-of-turn, nothing else
        assert "<|user|>" in whole and "<|user|>" not in learned  # negative control: the prompt is there, unlearned


def test_dpo_reference_is_frozen_and_policy_moves(run_dir):
    recipe = _recipe(run_dir, stages="dpo_only", mode="full")
    trainer = recipe.dpo_trainer()
    reference = {n: p.detach().clone() for n, p in trainer.ref_model.named_parameters()}
    start = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
    assert all(not p.requires_grad for p in trainer.ref_model.parameters())
    summary = recipe.train("dpo", trainer)
    moved = [n for n, p in trainer.model.named_parameters() if not torch.equal(p.detach(), start[n])]
    assert moved, "the policy did not change"
    assert all(torch.equal(p.detach(), reference[n]) for n, p in trainer.ref_model.named_parameters())
    assert 0 <= summary["heldout"]["preference_accuracy"] <= 1 and summary["reward_curve"]
    # held-out figures per rejection kind (unlabelled pairs grouped apart); weighted by pairs they are trl's own
    # figures over the whole held-out set (one batch of 4 here, so the weighting is exact)
    by_kind = summary["heldout_by_rejection"]
    assert {kind: figures["pairs"] for kind, figures in by_kind.items()} == {"unlabelled": 2, "verbose": 2}
    whole = dpo_trainer(trainer.model, trainer.ref_model, recipe.tokenizer, recipe.dataset("dpo_train"),
                        recipe.dataset("dpo_test"), recipe.dpo_config()).evaluate()
    for name, key in (("preference_accuracy", "rewards/accuracies"), ("reward_margin", "rewards/margins")):
        assert summary["heldout"][name] == pytest.approx(whole[f"eval_{key}"], rel=1e-4, abs=1e-6), name
    # the loss's sft term (RPO) is a mean over tokens, not pairs: weighting by pairs is close, not exact
    assert summary["heldout"]["loss"] == pytest.approx(whole["eval_loss"], rel=0.01)
    assert by_kind["verbose"]["reward_margin"] != by_kind["unlabelled"]["reward_margin"]  # really two evaluations


@pytest.mark.parametrize("mode", ["lora", "qlora"])
def test_adapter_modes_run_on_cpu_and_save_full_models(run_dir, mode):
    from transformers import AutoModelForCausalLM

    recipe = _recipe(run_dir, mode=mode)
    results = recipe.run()
    assert set(results) == {"sft", "dpo"} and results["sft"]["global_step"] == 4
    out = RunDir(run_dir).align
    for stage in ("sft", "dpo"):
        model = AutoModelForCausalLM.from_pretrained(out.model(stage))
        assert model.dtype == torch.float32 and not any("lora" in n for n, _ in model.named_parameters())
        assert (out.adapter(stage) / "adapter_config.json").is_file()
        assert f"06_align: {stage.upper()}" in (out.model(stage) / "README.md").read_text()
    assert recipe.stage_input("dpo").ref == str(out.model("sft"))  # DPO starts from the SFT model
    projection = recipe.timings["sft_projection"]  # the CPT step's helper, on trl's SFTTrainer
    assert projection["steps"] == results["sft"]["global_step"] and projection["tokens_per_second"] > 0


def _crash_at(step: int):
    from transformers import TrainerCallback

    class Crash(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step == step:
                raise RuntimeError("simulated crash")

    return Crash()


def test_sft_resumes_after_a_kill_with_the_same_result(run_dir, tmp_path):
    recipe = _recipe(run_dir, sft_epochs=2, save_steps=3)  # 8 steps, checkpoint at 3 and 6
    trainer = recipe.sft_trainer()
    trainer.add_callback(_crash_at(5))
    with pytest.raises(RuntimeError, match="simulated crash"):
        recipe.train("sft", trainer)
    resumed_trainer = recipe.sft_trainer()  # a fresh process starts from the start model again
    resumed = recipe.train("sft", resumed_trainer)
    assert resumed["resumed_from"].endswith("checkpoint-3") and resumed["global_step"] == 8

    straight_run = tmp_path / "straight"
    shutil.copytree(run_dir, straight_run, ignore=shutil.ignore_patterns("06_align"))
    straight = _recipe(straight_run, sft_epochs=2, save_steps=3)
    straight_trainer = straight.sft_trainer()
    assert straight.train("sft", straight_trainer)["resumed_from"] is None
    for (name, a), (_, b) in zip(resumed_trainer.model.named_parameters(), straight_trainer.model.named_parameters(),
                                 strict=True):
        assert torch.allclose(a, b, atol=1e-5), name


def test_bad_rows_name_file_and_line(tmp_path):
    sft = tmp_path / "sft.jsonl"
    write_jsonl(sft, [*_sft_rows(2), {"text": "no messages here"}])
    with pytest.raises(JsonlError, match=rf"{sft}:3.*messages"):
        read_sft_rows(sft)
    write_jsonl(sft, [{"messages": [{"role": "user", "content": "only a question"}]}])
    with pytest.raises(JsonlError, match=rf"{sft}:1.*no assistant message"):
        read_sft_rows(sft)
    dpo = tmp_path / "dpo.jsonl"
    same = _dpo_rows(2)
    same[1]["rejected"] = same[1]["chosen"]
    write_jsonl(dpo, same)
    with pytest.raises(JsonlError, match=rf"{dpo}:2.*identical"):
        read_dpo_rows(dpo)


def test_a_template_without_generation_markers_fails_before_training(run_dir, tiny_tokenizer):
    check_chat_template(tiny_tokenizer, assistant_only_loss=True)  # the toy template has the markers
    plain = RunDir(run_dir).merge.selected
    tok = tiny_tokenizer.__class__.from_pretrained(plain)
    tok.chat_template = tok.chat_template.replace("{% generation %}", "").replace("{% endgeneration %}", "")
    tok.save_pretrained(plain)
    with pytest.raises(ValueError, match="no \\{% generation %\\}"):
        _recipe(run_dir)
    _recipe(run_dir, assistant_only_loss=False)  # allowed without the markers


def test_missing_inputs_say_which_step_to_run(tmp_path, run_dir):
    with pytest.raises(FileNotFoundError, match="run 04_merge"):
        AlignRecipe(AlignParams(), tmp_path / "empty", RunParams(device="cpu"))
    synthesize_files(RunDir(run_dir))["dpo_train"].unlink()
    with pytest.raises(FileNotFoundError, match="Run 05_synthesize"):
        _recipe(run_dir)


def test_quick_check_figures_against_hand_computed_ones():
    from medslm.align.checks import summarize

    schema = {"type": "object", "properties": {"drug": {"type": "string"}}, "required": ["drug"]}
    rows = [
        {"task": "qa", "format": "text", "answer_language": "de", "language": "de",
         "messages": [{"role": "user", "content": "Was behandelt Metformin?"},
                      {"role": "assistant", "content": "Metformin wird bei Typ-2-Diabetes eingesetzt, um den Blutzucker zu senken."}]},
        {"task": "extract", "format": "json", "answer_language": "en", "language": "en",
         "messages": [{"role": "user", "content": "Extract the drug."},
                      {"role": "assistant", "content": '{"drug": "Metformin"}'}]},
    ]
    perfect = summarize(rows, [r["messages"][-1]["content"] for r in rows], {"extract": schema}, ["de"])
    assert perfect["task_score"] == 1.0 and perfect["json_validity"] == 1.0 and perfect["wrong_language_share"] == 0
    assert perfect["length_ratio"] == 1.0
    english = "Metformin is used for type 2 diabetes to lower the blood sugar of the patient."
    wrong = summarize(rows, [english, '{"drug": "Aspirin"'], {"extract": schema}, ["de"])
    assert wrong["json_validity"] == 0.0 and wrong["tasks"]["extract"] == 0.0  # broken JSON scores nothing
    assert wrong["wrong_language_share"] == 1.0  # an English answer to a German question
    assert 0 < wrong["tasks"]["qa"] < 1  # token F1 of shared words (Metformin, 2, diabetes) only


def test_check_answers_held_out_prompts_with_the_model(run_dir):
    recipe = _recipe(run_dir, check_examples=3, max_new_tokens=4)
    summary = recipe.check("start")
    assert summary["answers"] == 3 and len(recipe.answers["start"]) == 3 and 0 <= summary["task_score"] <= 1
    assert recipe.check_rows() == recipe.check_rows()  # every model answers the same sample


def test_examples_trl_would_cut_are_counted_as_trl_tokenizes_them_and_warned(run_dir):
    from medslm.align.data import training_lengths

    recipe = _recipe(run_dir)  # max_length 512: nothing is cut, nothing said
    assert recipe.lengths["sft_train"]["over_max_length"] == 0 and recipe.lengths["dpo_train"]["over_max_length"] == 0
    config = recipe.sft_config()
    config.max_length = None  # trl's own token counts, uncut
    trainer = sft_trainer(recipe.sft_trainer().model, recipe.tokenizer, recipe.dataset("sft_train"), config)
    ours = training_lengths(recipe.tokenizer, recipe.rows["sft_train"])
    assert sorted(len(ids) for ids in trainer.train_dataset["input_ids"]) == sorted(ours)
    cut_at = sorted(ours)[len(ours) // 2]
    over = sum(n > cut_at for n in ours)
    assert 0 < over < len(ours)
    with pytest.warns(UserWarning, match=rf"sft/train\.jsonl: {over} of {len(ours)} examples are longer than "
                                         rf"align\.max_length = {cut_at} tokens \(longest {max(ours)}\)"):
        short = _recipe(run_dir, max_length=cut_at)
    assert short.lengths["sft_train"] == {"examples": len(ours), "over_max_length": over, "longest": max(ours),
                                          "max_length": cut_at}
