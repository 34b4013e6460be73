"""Reliability (issue 14): skips decided from the files, upstream checks, the run folder's ownership and lock,
concurrent manifest updates, failure messages, Ctrl-C, secrets in LLM errors, the reply cache, corpus errors and
checkpoint fallback. Runner tests use small stand-in notebooks (seconds each); the SIGKILL fault-injection test
on the real notebooks is tests/test_fault_injection.py.
"""

from __future__ import annotations

import gzip
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_notebook

from medslm.rundir import JsonlError, NotARunDir, RunDir, RunDirBusy, read_json, read_jsonl
from medslm.runner import StepFailed, UpstreamNotReady, run_profile

REPO = Path(__file__).resolve().parents[1]
PARAMS = "n_documents = 3000\nlocal_files = []\nrun_dir = ''\nprofile = ''"

PREPARE = """\
import json
from pathlib import Path
out = Path(run_dir) / "00_prepare"
out.mkdir(parents=True, exist_ok=True)
docs = [{"id": i, "text": f"document {i}", "label": "medical" if i % 2 else "general"} for i in range(n_documents)]
(out / "corpus.jsonl").write_text("".join(json.dumps(d) + "\\n" for d in docs))
"""
ANNOTATE = """\
from pathlib import Path
corpus = (Path(run_dir) / "00_prepare" / "corpus.jsonl").read_text()
out = Path(run_dir) / "01_annotate"
out.mkdir(parents=True, exist_ok=True)
(out / "labels.jsonl").write_text(corpus.upper())
"""


def make_notebook(folder: Path, name: str, body: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    params = new_code_cell(PARAMS)
    params.metadata["tags"] = ["parameters"]
    nb = new_notebook(cells=[params, new_code_cell(body)])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, folder / f"{name}.ipynb")
    return folder / f"{name}.ipynb"


@pytest.fixture
def project(tmp_path):
    """A project folder with stand-in prepare/annotate notebooks and a profile running both."""
    nbs = tmp_path / "notebooks"
    make_notebook(nbs, "00_prepare", PREPARE)
    make_notebook(nbs, "01_annotate", ANNOTATE)
    profile = tmp_path / "params" / "p.yaml"
    profile.parent.mkdir()
    profile.write_text("run: {name: t, output_dir: outputs/t}\nsteps:\n  prepare: {n_documents: 6}\n  annotate: {}\n")
    return tmp_path, nbs, profile


def run(profile: Path, nbs: Path, **kwargs) -> list[str]:
    lines: list[str] = []
    run_profile(profile, notebooks_dir=nbs, log=lines.append, **kwargs)
    return lines


def flip_label(path: Path) -> None:
    """Replace one label by another of the same length (same size: the old size check could not see it)."""
    text = path.read_text()
    end = text.index('"}') - 1  # the last letter of the first record's label
    changed = text[:end] + text[end].swapcase() + text[end + 1:]
    assert len(changed) == len(text) and changed != text
    path.write_text(changed)


# --------------------------------------------------------------------------------------------------------------
# 14.1 skips are decided from the files
# --------------------------------------------------------------------------------------------------------------


def test_an_edited_artifact_of_the_same_size_is_not_skipped(project):
    root, nbs, profile = project
    run(profile, nbs)
    out = root / "outputs" / "t"
    assert all("skipped" in line for line in run(profile, nbs))  # unchanged: both skipped
    labels = out / "01_annotate" / "labels.jsonl"
    flip_label(labels)
    lines = run(profile, nbs)
    assert "prepare: unchanged, skipped" in lines[0]
    assert "01_annotate/labels.jsonl changed (sha256 differs)" in lines[1]
    assert labels.read_text() == (out / "00_prepare" / "corpus.jsonl").read_text().upper()  # rewritten
    # negative control: a touched file (new mtime, same bytes) is hashed and found unchanged
    os.utime(labels, ns=(labels.stat().st_atime_ns, labels.stat().st_mtime_ns + 10**9))
    assert all("skipped" in line for line in run(profile, nbs))


def test_an_edited_upstream_file_is_refused_when_its_step_is_not_run(project):
    root, nbs, profile = project
    run(profile, nbs)
    flip_label(root / "outputs" / "t" / "00_prepare" / "corpus.jsonl")
    with pytest.raises(UpstreamNotReady) as err:
        run(profile, nbs, steps=["annotate"])
    assert ("step 'annotate' reads what step 'prepare' writes, but 'prepare' changed since it finished: "
            "00_prepare/corpus.jsonl changed (sha256 differs)") in str(err.value)
    assert f"medslm run {profile} --from prepare" in str(err.value)
    lines = run(profile, nbs)  # the whole run: prepare runs again and names the file
    assert "00_prepare/corpus.jsonl changed" in lines[0] and "done" in lines[1]


def test_a_new_file_in_a_step_folder_and_an_edited_input_file_rerun(project):
    root, nbs, profile = project
    corpus = root / "data" / "corpus.jsonl"
    corpus.parent.mkdir()
    corpus.write_text('{"text": "a"}\n')
    profile.write_text(profile.read_text().replace("{n_documents: 6}", "{n_documents: 6, local_files: [data/corpus.jsonl]}"))
    run(profile, nbs)
    corpus.write_text('{"text": "b"}\n')  # same size, other content
    lines = run(profile, nbs)
    assert "changed since its last run: input files" in lines[0]
    (root / "outputs" / "t" / "01_annotate" / "stray.txt").write_text("x")
    assert "01_annotate/stray.txt appeared" in run(profile, nbs)[1]


# --------------------------------------------------------------------------------------------------------------
# 14.4 an upstream that failed or never ran is not success; failures say what failed; Ctrl-C
# --------------------------------------------------------------------------------------------------------------


def test_a_step_after_a_missing_or_failed_upstream_is_an_error(project):
    root, nbs, profile = project
    with pytest.raises(UpstreamNotReady, match="'prepare' has not run in this run folder; run it first"):
        run(profile, nbs, steps=["annotate"])
    make_notebook(nbs, "00_prepare", "raise RuntimeError('no corpus')")
    with pytest.raises(StepFailed):
        run(profile, nbs)
    from medslm.cli import main

    assert main(["run", str(profile), "--steps", "annotate"]) == 1  # not success
    with pytest.raises(UpstreamNotReady, match="'prepare' failed in its last run"):
        run(profile, nbs, steps=["annotate"])


def serve(status: int, body) -> tuple[ThreadingHTTPServer, str]:
    """A local HTTP server answering every POST with ``status`` and ``body(headers)``."""

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_POST(self):
            self.rfile.read(int(self.headers["Content-Length"]))
            data = body(dict(self.headers)).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    return httpd, f"http://127.0.0.1:{httpd.server_address[1]}/v1"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


CALL_LLM = """\
from medslm.llm import LLM, OpenAIBackend
llm = LLM(OpenAIBackend({url!r}, "m", api_key_env={env!r}, max_retries=0))
llm.generate([[{{"role": "user", "content": "Is this medical?"}}]])
"""


def test_unreachable_server_ends_the_run_with_the_exception_and_the_cell(project):
    root, nbs, profile = project
    url = f"http://127.0.0.1:{free_port()}/v1"
    make_notebook(nbs, "00_prepare", CALL_LLM.format(url=url, env=None))
    with pytest.raises(StepFailed) as err:
        run(profile, nbs)
    message = str(err.value)
    expected = f"LLMServerError: {url}/chat/completions: no reply after 1 attempt(s); last error: ConnectError"
    print(message)
    assert expected in message and "cell 2 (execution count 3): from medslm.llm import" in message
    assert "CellExecutionError" not in message
    assert expected in RunDir(root / "outputs" / "t").read_manifest()["steps"]["prepare"]["error"]


def test_a_401_that_echoes_the_key_never_shows_it(project, monkeypatch):
    root, nbs, profile = project
    key = "sk-test-" + "7f3a9c" * 6
    monkeypatch.setenv("MEDSLM_TEST_KEY", key)  # the kernel inherits the runner's environment
    httpd, url = serve(401, lambda headers: json.dumps({"error": "invalid key", "got": headers.get("Authorization")}))
    try:
        make_notebook(nbs, "00_prepare", CALL_LLM.format(url=url, env="MEDSLM_TEST_KEY"))
        with pytest.raises(StepFailed) as err:
            run(profile, nbs)
    finally:
        httpd.shutdown()
    message = str(err.value)
    assert "LLMRequestError" in message and "HTTP 401" in message and "api_key_env" in message
    assert "Bearer ***" in message  # the echo is there, masked
    out = root / "outputs" / "t"
    for text in (message, (out / "manifest.json").read_text(), (out / "notebooks" / "00_prepare.ipynb").read_text()):
        assert key not in text and key[3:20] not in text


def test_ctrl_c_marks_the_step_interrupted_with_one_line(project):
    root, nbs, profile = project
    make_notebook(nbs, "00_prepare", "import time\nfrom pathlib import Path\n"
                                     "Path(run_dir, 'started').write_text('')\ntime.sleep(120)")
    env = {**os.environ, "PYTHONPATH": str(REPO / "lib")}
    cli = ("import functools, sys; from medslm import cli, runner; "
           f"runner.run_profile = functools.partial(runner.run_profile, notebooks_dir={str(nbs)!r}); "
           "sys.exit(cli.main(sys.argv[1:]))")
    proc = subprocess.Popen([sys.executable, "-c", cli, "run", str(profile)], cwd=root, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    manifest = root / "outputs" / "t" / "manifest.json"
    deadline = time.time() + 90
    while not (root / "outputs" / "t" / "started").exists():  # the cell runs
        assert time.time() < deadline and proc.poll() is None, proc.communicate()
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGINT)  # a terminal's Ctrl-C reaches the whole foreground group
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    # (papermill warns about each parameter the stand-in notebook does not declare; the real ones declare all)
    lines = [line for line in err.splitlines() if "Passed unknown parameter" not in line]
    assert "Traceback" not in err and len(lines) == 1, err
    assert lines[0].startswith("medslm: interrupted during step 'prepare'; the manifest marks it interrupted")
    entry = read_json(manifest)["steps"]["prepare"]
    assert entry["status"] == "interrupted" and entry["artifacts"] == []


# --------------------------------------------------------------------------------------------------------------
# 14.3 output_dir: ownership, ~, lock, concurrent manifest updates
# --------------------------------------------------------------------------------------------------------------


def test_a_folder_that_is_not_a_run_is_refused_unless_forced(project):
    root, nbs, profile = project
    mine = root / "outputs" / "t" / "notebooks" / "00_prepare.ipynb"
    mine.parent.mkdir(parents=True)
    mine.write_text("the user's own notebook")
    with pytest.raises(NotARunDir, match=r"is not empty and is not a medslm run .*holds notebooks.*--force"):
        run(profile, nbs)
    assert mine.read_text() == "the user's own notebook"
    run(profile, nbs, force=True)
    assert RunDir(root / "outputs" / "t").is_run()
    run(profile, nbs)  # now a run: no refusal
    for bad in ("/", "~"):
        profile.write_text(f"run: {{name: t, output_dir: '{bad}'}}\nsteps:\n  prepare: {{}}\n")
        with pytest.raises(NotARunDir, match="folder of its own"):
            run(profile, nbs, force=True)


def test_output_dir_expands_the_home_folder(tmp_path):
    from medslm.params import load_profile

    profile = tmp_path / "p.yaml"
    profile.write_text("run: {output_dir: ~/medslm-runs/x}\nsteps:\n  prepare: {}\n")
    assert load_profile(profile).run_dir() == Path.home() / "medslm-runs" / "x"


HOLD_LOCK = """\
import sys, time
from medslm.rundir import RunDir
with RunDir(sys.argv[1]).lock(profile="other.yaml"):
    print("locked", flush=True)
    time.sleep(60)
"""


def test_a_second_run_says_who_holds_the_folder_and_a_dead_holder_is_taken_over(project):
    root, nbs, profile = project
    out = root / "outputs" / "t"
    run(profile, nbs)
    env = {**os.environ, "PYTHONPATH": str(REPO / "lib")}
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(out)], env=env, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(RunDirBusy) as err:
            run(profile, nbs)
        message = str(err.value)
        assert f"pid {holder.pid} on host {socket.gethostname()}, started 20" in message
        assert "profile other.yaml" in message
        holder.send_signal(signal.SIGKILL)  # dies holding the lock: the OS frees it, its details stay behind
        holder.wait()
    finally:
        if holder.poll() is None:
            holder.kill()
    lines = run(profile, nbs)
    assert f"taking over the lock of a run that ended without releasing it (pid {holder.pid}" in lines[0]
    assert not (out / ".medslm-lock.json").exists()  # released at the end of the run


def _update_many(args: tuple[str, int, int]) -> None:
    folder, first, count = args
    rundir = RunDir(folder)
    for i in range(first, first + count):
        rundir.update_step(f"s{i:03d}", status="done", n=i)


def test_concurrent_manifest_updates_lose_nothing(tmp_path):
    """400 entries written by 4 threads and 2 processes at once, every one kept."""
    jobs = [(str(tmp_path), start, 50) for start in range(0, 200, 50)]
    with ProcessPoolExecutor(2) as procs, ThreadPoolExecutor(4) as threads:
        futures = [procs.submit(_update_many, (str(tmp_path), 200 + 100 * k, 100)) for k in range(2)]
        list(threads.map(_update_many, jobs))
        for f in futures:
            f.result()
    steps = RunDir(tmp_path).read_manifest()["steps"]
    assert len(steps) == 400 and all(steps[f"s{i:03d}"]["n"] == i for i in range(400))


# --------------------------------------------------------------------------------------------------------------
# 13.3 progress lines while a notebook runs
# --------------------------------------------------------------------------------------------------------------


def test_progress_lines_reach_the_runner_log(project):
    root, nbs, profile = project
    make_notebook(nbs, "00_prepare", PREPARE + "from medslm.progress import emit\nfor i in range(3):\n"
                                              "    emit(f'batch {i + 1}/3')\n")
    lines = run(profile, nbs, steps=["prepare"])
    assert [line for line in lines if line.startswith("    ")] == [f"    prepare: batch {i}/3" for i in (1, 2, 3)]
    assert "MEDSLM_PROGRESS" not in os.environ  # restored after the step


def test_throttle_and_lines():
    from medslm.progress import Throttle, duration, rate_line

    now = [0.0]
    throttle = Throttle(10, clock=lambda: now[0])
    seen = []
    for t in range(0, 35):
        now[0] = float(t)
        seen.append(throttle.due())
    assert [t for t, due in enumerate(seen) if due] == [0, 10, 20, 30]
    assert rate_line("train", 40, 200, 12.0, " steps", "loss 3.210") == \
        "train: 40/200 steps · loss 3.210 · 12 s elapsed · ETA 48 s"
    assert duration(185) == "3 min 05 s" and duration(3720) == "1 h 02 min"


def test_trainer_callback_writes_throttled_lines(tmp_path, tiny_model_dir, monkeypatch):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from medslm.training import TrainSettings, packed_dataset, train_lm

    progress = tmp_path / "progress.log"
    monkeypatch.setenv("MEDSLM_PROGRESS", str(progress))
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    data = packed_dataset(tok, ["Paris is the capital of France."] * 40, 16)
    train_lm(model, tok, data, TrainSettings(tmp_path / "out", max_steps=6, batch_size=4, logging_steps=1))
    lines = progress.read_text().splitlines()
    # first step, then nothing for 10 s (the run is shorter), then the end
    assert lines[0].startswith("train: step 1/6 · loss ") and "ETA" in lines[0]
    assert lines[-1].startswith("train: finished 6 steps in ") and len(lines) == 2


# --------------------------------------------------------------------------------------------------------------
# 14.6 the reply cache
# --------------------------------------------------------------------------------------------------------------


def test_unusable_replies_are_asked_again_and_the_url_is_part_of_the_key(tmp_path):
    from medslm.llm import LLM, FunctionBackend

    answers = iter(["", "Verdict: medical", "Verdict: medical"])
    backend = FunctionBackend(lambda m: next(answers), "openai", "m")
    backend.base_url = "http://a/v1"
    prompt = [[{"role": "user", "content": "x"}]]
    assert LLM(backend, tmp_path / "c").generate(prompt) == [""]  # empty: kept, not final
    again = LLM(backend, tmp_path / "c")
    assert again.generate(prompt) == ["Verdict: medical"] and again.stats["calls"] == 1
    third = LLM(backend, tmp_path / "c")
    assert third.generate(prompt) == ["Verdict: medical"] and third.stats["calls"] == 0  # final now
    backend.base_url = "http://b/v1"  # another server: not answered from the first one's cache
    other = LLM(backend, tmp_path / "c")
    assert other.generate(prompt) == ["Verdict: medical"] and other.stats["calls"] == 1


def test_unparseable_annotations_are_not_final(tmp_path):
    from medslm.annotate import annotate_documents
    from medslm.llm import LLM, FunctionBackend

    replies = {"a": "I think so", "b": "Verdict: not_medical"}
    backend = FunctionBackend(lambda m: replies["a" if "alpha" in m[-1]["content"] else "b"], "fake", "m")
    docs = [{"id": "1", "text": "alpha text"}, {"id": "2", "text": "beta text"}]
    annotate_documents(docs, LLM(backend, tmp_path / "c"), language="en")
    replies["a"] = "Verdict: medical"  # a fixed model/server
    labels, stats = annotate_documents(docs, LLM(backend, tmp_path / "c"), language="en")
    assert stats["calls"] == 1 and stats["cached"] == 1
    assert [r["label"] for r in labels] == ["medical", "not_medical"]


# --------------------------------------------------------------------------------------------------------------
# 14.7 corpus errors, skipped records, checkpoint fallback
# --------------------------------------------------------------------------------------------------------------


def test_binary_latin1_and_truncated_gzip_corpora_name_file_and_line(tmp_path):
    latin = tmp_path / "latin.jsonl"
    latin.write_bytes('{"text": "ok"}\n{"text": "Übelkeit"}\n'.encode("latin-1"))
    with pytest.raises(JsonlError, match=r"latin\.jsonl:2: not UTF-8 text \(byte 0xdc at column 11\)"):
        read_jsonl(latin)
    binary = tmp_path / "model.jsonl"
    binary.write_bytes(b'{"text": "ok"}\n' + bytes(range(256)))
    with pytest.raises(JsonlError, match=r"model\.jsonl:2: contains NUL bytes: a binary file"):
        read_jsonl(binary)
    full = gzip.compress("".join(json.dumps({"text": f"doc {i} " * 50}) + "\n" for i in range(200)).encode())
    cut = tmp_path / "cut.jsonl.gz"
    cut.write_bytes(full[: len(full) // 2])
    with pytest.raises(JsonlError, match=r"cut\.jsonl\.gz:\d+: the gzip stream ends early"):
        read_jsonl(cut)
    fake = tmp_path / "fake.jsonl.gz"
    fake.write_text('{"text": "not gzip"}\n')
    with pytest.raises(JsonlError, match=r"fake\.jsonl\.gz:1: not a readable gzip file"):
        read_jsonl(fake)
    (tmp_path / "whole.jsonl.gz").write_bytes(full)  # negative control: the complete file reads
    assert len(read_jsonl(tmp_path / "whole.jsonl.gz")) == 200


def test_records_without_usable_text_are_counted_and_reported(tmp_path, capsys):
    from medslm.params import PrepareParams
    from medslm.prepare import write_real_corpus

    corpus = tmp_path / "c.jsonl"
    texts = [f"document number {i}" for i in range(20)] + ["", "   ", None, 7, ["a"]]
    corpus.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    out = RunDir(tmp_path / "run").prepare
    out.path.mkdir(parents=True)
    params = PrepareParams(source="local", local_files=[str(corpus)], base_model="an-org/an-instruct-model")
    assert write_real_corpus(params, out, "en") == 20
    printed = capsys.readouterr().out
    assert ("skipped 5 record(s) whose 'text' is not a usable text (2 empty, 1 null, 1 not a string: int, "
            "1 not a string: list)") in printed
    assert f"{corpus}:21 (empty)" in printed
    assert read_json(out.path / "skipped_records.json")["total"] == 5


def write_checkpoint(folder: Path, step: int) -> Path:
    import torch
    from safetensors.torch import save_file

    path = folder / f"checkpoint-{step}"
    path.mkdir(parents=True)
    save_file({"w": torch.arange(1000, dtype=torch.float32)}, path / "model.safetensors")
    torch.save({"state": torch.ones(10)}, path / "optimizer.pt")
    (path / "trainer_state.json").write_text(json.dumps({"global_step": step}))
    return path


@pytest.mark.parametrize("damage", ["no_state", "cut_weights", "cut_optimizer", "none"])
def test_a_half_written_newest_checkpoint_falls_back_to_the_previous(tmp_path, damage, capsys):
    from medslm.training import last_checkpoint

    older = write_checkpoint(tmp_path, 10)
    newest = write_checkpoint(tmp_path, 20)
    if damage == "no_state":
        (newest / "trainer_state.json").unlink()
    elif damage == "cut_weights":
        data = (newest / "model.safetensors").read_bytes()
        (newest / "model.safetensors").write_bytes(data[:-100])
    elif damage == "cut_optimizer":
        data = (newest / "optimizer.pt").read_bytes()
        (newest / "optimizer.pt").write_bytes(data[: len(data) // 2])
    chosen = last_checkpoint(tmp_path)
    if damage == "none":  # negative control: a complete newest checkpoint is the one
        assert chosen == str(newest)
    else:
        assert chosen == str(older) and not newest.exists()
        assert f"checkpoint {newest} is incomplete" in capsys.readouterr().out


def test_resuming_from_the_final_checkpoint_trains_no_extra_step(tmp_path, tiny_model_dir):
    """A kill after training (during evaluation or saving) leaves the final checkpoint; resuming from it must give
    the finished model, not one more step."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from medslm.training import TrainSettings, build_trainer, packed_dataset, train_lm

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    data = packed_dataset(tok, ["Paris is the capital of France."] * 40, 16)
    settings = TrainSettings(tmp_path / "out", max_steps=4, batch_size=4, save_steps=2, logging_steps=1)
    finished = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    train_lm(finished, tok, data, settings)
    resumed = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    history = train_lm(resumed, tok, data, settings, resume=True)
    assert max(h["step"] for h in history if "loss" in h) == 4
    for (name, a), b in zip(finished.state_dict().items(), resumed.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
    # negative control: the Trainer itself trains a fifth step when resumed from the finished checkpoint
    plain = build_trainer(AutoModelForCausalLM.from_pretrained(tiny_model_dir), tok, data, settings)
    plain.train(resume_from_checkpoint=str(tmp_path / "out" / "checkpoint-4"))
    assert plain.state.global_step == 5
