"""Load a VideoLLM — 4-bit NF4 by default — and ask it multiple-choice questions about a video.

>>> vllm = load_videollm("path/to/llava-next-video-checkpoint")      # doctest: +SKIP
>>> prepared = vllm.prepare(frames, "Which way does the red square move?", ["left", "right"])
>>> vllm.answer(prepared).probs                                       # doctest: +SKIP

Every checkpoint — a hub id, a local folder, the kit's own small model — goes through
one code path: ``from_pretrained`` with a ``BitsAndBytesConfig`` for NF4. Quantization
covers the language model's Linear layers; the vision side stays in full precision.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from collections.abc import Sequence

import torch

from flowkit.model import named_models
from flowkit.errors import ModelLoadError, QuestionError
from flowkit.families import FamilyAdapter, Prepared, adapter_for_config, language_model_of
from flowkit.model.fingerprint import checkpoint_folder, model_fingerprint
from flowkit.errors import KnockoutError
from flowkit.intervention.spec import KnockoutSpec
from flowkit.data.video import frames_identical
from flowkit.model.nf4_cpu import (
    NF4_CPU_KERNELS,
    cache_dequantized_weights,
    import_bitsandbytes,
    numeric_path,
    set_cpu_kernel,
)

QUANTS = ("nf4", "bf16", "fp32")
#: how quant="bf16" computes on the CPU: "float32" (portable, the default) or "bfloat16" (CPU-dependent)
BF16_CPU_ARITHMETIC = ("float32", "bfloat16")


@dataclass
class VideoLLM:
    """A loaded VideoLLM: the transformers model, its processor and the family adapter."""

    model: torch.nn.Module
    processor: object
    adapter: FamilyAdapter
    name: str
    quant: str
    extra: dict = field(default_factory=dict)

    @property
    def language_model(self) -> torch.nn.Module:
        """The language model's decoder stack (``.layers``, ``.config``), where the family adapter
        declares it (``adapter.decoder_path``), set up for knockout (see :func:`flowkit.families.language_model_of`)."""
        return language_model_of(self)

    @property
    def num_layers(self) -> int:
        return len(self.language_model.layers)

    @property
    def tokenizer(self):
        return getattr(self.processor, "tokenizer", self.processor)

    @property
    def numeric_path(self) -> str:
        """The arithmetic this model runs, e.g. ``"nf4/fp32-dequant/cpu"`` (see :mod:`flowkit.model.nf4_cpu`)."""
        return self.extra.get("numeric_path", f"{self.quant}/cpu")

    @property
    def fingerprint(self) -> str:
        """Identifies the checkpoint's content, its quantization and its numeric path (part of every cache key).

        The same checkpoint gives the same fingerprint on every machine and under any path or
        name; see :mod:`flowkit.model.fingerprint`.
        """
        if "fingerprint" not in self.extra:
            folder = self.extra.get("checkpoint_folder")
            quantization = self.extra.get("quantization", {"quant": self.quant})
            if folder is not None:
                self.extra["fingerprint"] = model_fingerprint(folder, quantization, self.numeric_path)
            else:  # a model built in memory: hash its full weights and config
                h = hashlib.sha256(json.dumps([quantization, self.numeric_path], sort_keys=True).encode())
                h.update(json.dumps(self.model.config.to_dict(), sort_keys=True, default=str).encode())
                for pname, tensor in sorted(self.model.state_dict().items()):
                    h.update(pname.encode())
                    h.update(tensor.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
                self.extra["fingerprint"] = h.hexdigest()[:16]
        return self.extra["fingerprint"]

    def prepare(self, frames, question: str, candidates: Sequence[str], answer: int | str | None = None) -> Prepared:
        """Inputs and spans for one multiple-choice question (``answer``: index or letter).

        The prompt also records ``identical_frames``: whether every frame equals the first (e.g. a
        1-frame clip sampled to 8 frames), which :func:`flowkit.check` reports next to a ``cross_frame`` cut.
        """
        if isinstance(answer, str):
            from flowkit.prompts.spans import OPTION_LETTERS

            valid = OPTION_LETTERS[: len(candidates)]
            if answer.strip().upper() not in valid:
                raise QuestionError(
                    f"answer {answer!r} is not an option letter of this question: with "
                    f"{len(candidates)} options the letters are {', '.join(valid)} "
                    "(or pass the option's index, 0-based)."
                )
            answer = OPTION_LETTERS.index(answer.strip().upper())
        prepared = self.adapter.prepare(self.processor, frames, question, candidates, answer_index=answer)
        prepared.identical_frames = frames_identical(frames)
        return prepared

    def prepare_sample(self, sample) -> Prepared:
        """Inputs and spans for a :class:`flowkit.data.Sample`."""
        return self.prepare(sample.frames, sample.question, sample.candidates, answer=sample.answer)

    def prepare_prompt(self, prompt) -> Prepared:
        """The one place a prompt in any form becomes a :class:`Prepared` prompt: a prepared prompt is
        returned as it is, a :class:`flowkit.data.Sample` (frames, question, candidates, answer) is prepared."""
        if isinstance(prompt, Prepared):
            return prompt
        if all(hasattr(prompt, a) for a in ("frames", "question", "candidates", "answer")):
            return self.prepare_sample(prompt)
        raise TypeError(
            f"expected a flowkit.data.Sample or a prepared prompt (vllm.prepare(frames, question, options)), "
            f"got {type(prompt).__name__}"
        )

    def session(self, prompt, *, replay: bool = True, row_budget: int | None = None):
        """The one entry point for a prompt: a :class:`~flowkit.intervention.session.Session` (clean run, named
        activation cache, answers under specs or masks). ``prompt``: a :class:`Prepared` prompt or a
        :class:`flowkit.data.Sample`. The session is given the transformers model and the family adapter;
        it never calls back into this object."""
        from flowkit.intervention.session import DEFAULT_ROW_BUDGET, Session

        return Session(
            self.model,
            self.adapter,
            self.prepare_prompt(prompt),
            row_budget=row_budget or DEFAULT_ROW_BUDGET,
            replay=replay,
        )

    def last_logits(
        self, prepared: Prepared, spec: KnockoutSpec | None = None, *, masks: dict[int, torch.Tensor] | None = None
    ) -> torch.Tensor:
        """Next-token logits at the last position (float32, shape ``(vocab,)``) of one full forward,
        optionally under a knockout: a ``spec`` or ready-made per-layer block ``masks``
        (``{layer: (N, N) bool}``, e.g. a pathway mask or a random control).
        """
        if spec is not None and masks is not None:
            raise KnockoutError("pass a spec or block masks, not both")
        return self.session(prepared).full_forward_logits(spec if masks is None else masks)

    def answer(self, prepared: Prepared, spec: KnockoutSpec | None = None):
        """The answer distribution over the option letters of one full forward (see :mod:`flowkit.prompts.readout`).

        For several knockouts on one prompt use :meth:`session` (one clean run, batched replays)."""
        return self.session(prepared).full_forward_answer(spec)


def quantization_config(adapter: FamilyAdapter, config):
    """The NF4 ``BitsAndBytesConfig``: LM Linear layers in 4-bit, vision side and lm_head kept."""
    from transformers import BitsAndBytesConfig

    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=False,
        bnb_4bit_compute_dtype=torch.bfloat16 if torch.cuda.is_available() else torch.float32,
        llm_int8_skip_modules=adapter.skip_modules(config),
    )


def _is_local(name_or_path: str | os.PathLike) -> bool:
    return Path(name_or_path).expanduser().exists()


def _looks_like_a_path(name_or_path: str) -> bool:
    """True for strings a person means as a folder (``./x``, ``/x``, ``~/x``, ``a/b/c``), not a hub id (``owner/name``)."""
    text = str(name_or_path)
    return (
        text.startswith((".", "/", "~", "\\"))
        or text.endswith(("/", "\\"))
        or text.count("/") > 1
        or "\\" in text
        or (len(text) > 1 and text[1] == ":")
    )


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes")


def _check_local_checkpoint(path: Path) -> None:
    """A clear error unless the existing ``path`` is a folder holding ``config.json``."""
    if path.is_file():
        folder = f" ({path.parent})" if path.name == "config.json" else ""
        raise ModelLoadError(
            f"{path} is a file, not a model checkpoint: give the checkpoint folder{folder}, the one that holds "
            "config.json and the weights (e.g. load_videollm('path/to/LLaVA-NeXT-Video-7B-hf'))."
        )
    if path.is_dir() and not (path / "config.json").is_file():
        inside = sorted(str(config.parent) for config in path.glob("*/config.json"))[:3]
        hint = (
            f" A checkpoint is one level down: {', '.join(inside)}."
            if inside
            else " Give the folder that holds config.json and the weights."
        )
        raise ModelLoadError(
            f"{path} is not a model checkpoint: no config.json in it, so no readable model config.{hint}"
        )


def _missing_folder(text: str) -> str:
    """Where a path that does not exist was looked for: its full absolute path, and the nearest folder that exists."""
    path = Path(text).expanduser()
    absolute = path if path.is_absolute() else Path.cwd() / path
    nearest = absolute.parent
    while not nearest.is_dir() and nearest != nearest.parent:
        nearest = nearest.parent
    shown = str(absolute) if str(absolute) == text else f"{text} (= {absolute})"
    return f"the folder {shown} does not exist (the nearest folder that does is {nearest})"


def _read_config(name_or_path: str, trust_remote_code: bool):
    from transformers import AutoConfig

    local = _is_local(name_or_path)
    if local:
        _check_local_checkpoint(Path(name_or_path).expanduser())
    try:
        return AutoConfig.from_pretrained(name_or_path, trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as exc:
        if local:
            raise ModelLoadError(
                f"{name_or_path} exists but holds no readable model config (config.json): {exc}. "
                "Point load_videollm at the folder that contains config.json and the weights."
            ) from None
        if _looks_like_a_path(name_or_path):
            raise ModelLoadError(
                f"{_missing_folder(str(name_or_path))}. "
                "Check the path, or pass a hub id like 'llava-hf/LLaVA-NeXT-Video-7B-hf' or a shipped model "
                "name like 'flowkit-smol-video'."
            ) from None
        raise ModelLoadError(
            f"cannot get {name_or_path!r}: it is not a local folder and the Hugging Face Hub cannot be "
            f"reached{' (HF_HUB_OFFLINE is set)' if _offline() else ' (set HF_HUB_OFFLINE=1 to fail fast offline)'}. To use this checkpoint, download it "
            f"on a machine with internet (`hf download {name_or_path} --local-dir ./{Path(str(name_or_path)).name}`), "
            f"copy the folder here and call load_videollm('./{Path(str(name_or_path)).name}'). "
            "The kit's own small model needs no download: load_videollm('flowkit-smol-video')."
        ) from None


def checkpoint_config(name_or_path: str | os.PathLike, *, trust_remote_code: bool = False):
    """The config of the checkpoint :func:`load_videollm` would load, read without any weights.

    Raises the same clear :class:`ModelLoadError` as :func:`load_videollm` for a path that does not
    exist or is not a checkpoint, and :class:`UnsupportedModelError` for a class flowkit has no adapter
    for, so a command line can check its arguments against the model before the (slow) weights load.
    """
    resolved = named_models.resolve(str(name_or_path))
    config = _read_config(str(resolved) if resolved is not None else str(name_or_path), trust_remote_code)
    adapter_for_config(config)
    return config


def config_num_layers(config) -> int | None:
    """The number of decoder layers of the language model a config describes (``num_hidden_layers`` of
    its text config), or ``None`` when the config does not say; :attr:`VideoLLM.num_layers` once loaded."""
    try:
        text_config = config.get_text_config(decoder=True)
    except (AttributeError, TypeError, ValueError):
        text_config = config
    count = getattr(text_config, "num_hidden_layers", None)
    return count if isinstance(count, int) and not isinstance(count, bool) and count > 0 else None


def _dtype_for(quant: str) -> torch.dtype:
    return {"nf4": torch.float32, "bf16": torch.bfloat16, "fp32": torch.float32}[quant]


def load_videollm(
    name_or_path: str | os.PathLike,
    quant: str = "nf4",
    *,
    attn_implementation: str = "sdpa",
    trust_remote_code: bool = False,
    device: str | None = None,
    nf4_cpu_kernel: str = "portable",
    bf16_cpu_arithmetic: str = "float32",
) -> VideoLLM:
    """Load a VideoLLM checkpoint through ``from_pretrained``.

    Args:
        name_or_path: a local checkpoint folder, a Hugging Face hub id (needs internet), or
            the name of a model the kit ships (see :func:`flowkit.model.named_models.available`).
        quant: ``"nf4"`` (4-bit NormalFloat via bitsandbytes; runs on CPU), ``"bf16"`` or ``"fp32"``.
        attn_implementation: ``"sdpa"`` (fast) or ``"eager"`` (needed to read attention weights).
        trust_remote_code: passed to transformers; never enabled unless you ask.
        device: ``"cpu"`` (default) or e.g. ``"cuda"``.
        nf4_cpu_kernel: how NF4 layers compute on the CPU. ``"portable"`` (default) dequantizes
            to float32 and gives the same numbers on every CPU; ``"avx512_bf16"`` opts into
            bitsandbytes' bfloat16 kernel for CPUs with AVX512-BF16 — faster there, but p(answer)
            moves by up to about 1e-2, so its results (and fingerprint) differ from every other
            CPU's. See :mod:`flowkit.model.nf4_cpu`.
        bf16_cpu_arithmetic: how ``quant="bf16"`` computes on the CPU. ``"float32"`` (default)
            rounds the weights to bfloat16 as loaded, then computes in float32: the same numbers on
            every CPU (the bf16-weights reference beside NF4). ``"bfloat16"`` computes in bfloat16
            as a GPU would; on the CPU its numbers depend on the CPU's instructions (AVX2, AVX-512,
            AVX512-BF16 each give another p(answer), by up to about 1e-3), and so does its fingerprint.
    """
    if quant not in QUANTS:
        raise ModelLoadError(f"unknown quant {quant!r}: choose one of {', '.join(QUANTS)}.")
    if attn_implementation not in ("sdpa", "eager"):
        raise ModelLoadError("attn_implementation must be 'sdpa' or 'eager' for knockout to work.")
    if nf4_cpu_kernel not in NF4_CPU_KERNELS:
        raise ModelLoadError(
            f"unknown nf4_cpu_kernel {nf4_cpu_kernel!r}: choose "
            f"{' or '.join(map(repr, NF4_CPU_KERNELS))} ('portable' gives the same numbers on every CPU)."
        )
    if bf16_cpu_arithmetic not in BF16_CPU_ARITHMETIC:
        raise ModelLoadError(
            f"unknown bf16_cpu_arithmetic {bf16_cpu_arithmetic!r}: choose "
            f"{' or '.join(map(repr, BF16_CPU_ARITHMETIC))} ('float32' gives the same numbers on every CPU)."
        )
    resolved = named_models.resolve(str(name_or_path))
    source = str(resolved) if resolved is not None else str(name_or_path)
    config = _read_config(source, trust_remote_code)
    adapter = adapter_for_config(config)
    model_cls = adapter.model_class()
    kwargs = {
        "dtype": _dtype_for(quant),
        "attn_implementation": attn_implementation,
        "trust_remote_code": trust_remote_code,
    }
    if quant == "nf4":
        import_bitsandbytes()
        kwargs["quantization_config"] = quantization_config(adapter, config)
    if device and device != "cpu":
        kwargs["device_map"] = device
    try:
        model = model_cls.from_pretrained(source, **kwargs)
    except (OSError, ValueError, RuntimeError) as exc:
        raise ModelLoadError(f"loading {source} as {model_cls.__name__} failed: {exc}") from exc
    model.eval()
    on_cpu = not (device and torch.device(device).type != "cpu")
    if quant == "bf16" and on_cpu and bf16_cpu_arithmetic == "float32":
        model.to(torch.float32)  # the weights stay bf16-rounded; the arithmetic is the same on every CPU
    quantization = {"quant": quant}
    weight_cache = 0
    if quant == "nf4":
        set_cpu_kernel(model, nf4_cpu_kernel)
        if nf4_cpu_kernel == "portable" and not (device and torch.device(device).type != "cpu"):
            # same numbers, no dequantization per forward (flowkit.model.nf4_cpu.cache_dequantized_weights)
            weight_cache = cache_dequantized_weights(model)
        qconfig = model.config.quantization_config
        qconfig = qconfig.to_dict() if hasattr(qconfig, "to_dict") else dict(qconfig)
        quantization.update(
            {
                key: str(qconfig.get(key))
                for key in (
                    "bnb_4bit_quant_type",
                    "bnb_4bit_compute_dtype",
                    "bnb_4bit_use_double_quant",
                    "llm_int8_skip_modules",
                )
            }
        )
    from transformers import AutoProcessor

    try:
        processor = AutoProcessor.from_pretrained(source, trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"{source} has no usable processor (tokenizer + video processor): {exc}") from exc
    extra = {
        "numeric_path": numeric_path(quant, device or "cpu", nf4_cpu_kernel, bf16_cpu_arithmetic),
        "quantization": quantization,
        "nf4_layers_keeping_dequantized_weights": weight_cache,
        "checkpoint_folder": checkpoint_folder(source),
        # how its arithmetic was chosen, so a worker can load the same (flowkit.analysis.sweep_work.ModelSource.of)
        "load_options": {"nf4_cpu_kernel": nf4_cpu_kernel, "bf16_cpu_arithmetic": bf16_cpu_arithmetic},
    }
    return VideoLLM(model=model, processor=processor, adapter=adapter, name=str(name_or_path), quant=quant, extra=extra)
