"""Edge groups: which query <- key edges a knockout cuts, by name.

Edge groups are written ``"source->target"``: information flows from the *source*
(key) tokens to the *target* (query) tokens, so ``"video->question"`` blocks question
tokens from reading video tokens. Any token group of :mod:`flowkit.spans` can be used on
either side; ``"cross_frame"`` is special (frame i <- every earlier frame j < i; with
Qwen's temporal patches a "frame" is a block of two frames, see ``Spans.frames_per_span``).

The groups follow the paper's official analysis code (``byminji/map-the-flow``):
``question`` is the paper's question span (header through the last option),
``video->question`` cuts question+options <- video, ``question->last`` cuts last <- question
span. :data:`DEFINITIONS_VERSION` names this set of definitions; result caches key on it so
numbers computed under older definitions are never reused.
"""

from __future__ import annotations

from flowkit.errors import KnockoutError

#: Version of the knockout definitions (what each token group and edge group means, the
#: random control, the accuracy after knockout). Bump it whenever a definition changes
#: what a stored number means; :class:`flowkit.cache.ResultCache` never returns a record
#: computed under another version.
#: 1: ``question`` was every token between the video and the last position.
#: 2: ``question`` is the paper's question span (header / question sentence through the
#:    last option); the wide group is ``prompt_after_video``; the paper's random control;
#:    the paper's accuracy after knockout; the paper's PLLaVA prompt byte for byte.
DEFINITIONS_VERSION = 2

#: The edge groups of the paper, by name.
PAPER_EDGE_GROUPS = (
    "cross_frame",
    "video->question",
    "video->last",
    "question->last",
    "last->last",
)
#: Finer groups of the paper's answer analysis.
OPTION_EDGE_GROUPS = ("question_text->last", "true_option->last", "false_options->last")

_ARROWS = ("-/->", "↛", "-x->", "→", "->")


def normalize_edges(edges: str) -> str:
    """Canonical spelling of an edge group: ``"video -/-> question"`` -> ``"video->question"``."""
    if not isinstance(edges, str) or not edges.strip():
        raise KnockoutError(f"an edge group must be a non-empty string like 'video->question', got {edges!r}")
    text = edges.strip().lower().replace(" ", "")
    if text in ("cross_frame", "cross-frame", "crossframe"):
        return "cross_frame"
    for arrow in _ARROWS:
        if arrow in text:
            parts = text.split(arrow)
            if len(parts) != 2 or not all(parts):
                break
            return f"{parts[0]}->{parts[1]}"
    raise KnockoutError(
        f"unknown edge group {edges!r}. Write 'source->target' with token groups such as "
        f"video, frame:0, question, prompt_after_video, question_text, options, option:A, true_option, "
        f"false_options, prefix, last — or 'cross_frame'. The paper's groups: {', '.join(PAPER_EDGE_GROUPS)}."
    )


