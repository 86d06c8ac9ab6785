"""Edge groups: which query <- key edges a knockout cuts, by name.

Edge groups are written ``"source->target"``: information flows from the *source*
(key) tokens to the *target* (query) tokens, so ``"video->question"`` blocks question
tokens from reading video tokens. Any token group of :mod:`flowkit.prompts.spans` can be used on
either side; ``"cross_frame"`` is special (frame i <- every earlier frame j < i; with
Qwen's temporal patches a "frame" is a block of two frames, see ``Spans.frames_per_span``), and
so is ``"within_frame"``: every ``video->video`` edge that is not ``cross_frame``.

The groups follow the paper's official analysis code (``byminji/map-the-flow``):
``question`` is the paper's question span (header through the last option),
``video->question`` cuts question+options <- video, ``question->last`` cuts last <- question
span. :data:`DEFINITIONS_VERSION` names this set of definitions; result caches key on it so
numbers computed under older definitions are never reused.

:data:`EDGE_GROUPS` is the registry of named edge groups: for each, the label and colour
figures and widgets show, the sentence the knockout grid shows, and whether it is one of the
paper's groups. :data:`PAPER_EDGE_GROUPS`, :data:`OPTION_EDGE_GROUPS`, the colours of
:mod:`flowkit.views.plots` and the grid's titles are all read from it.

Adding an edge group is one :class:`EdgeGroup` entry in :data:`EDGE_GROUPS`: its name
(``"source->target"`` over token groups of :data:`flowkit.prompts.spans.TOKEN_GROUPS`; a new token
group is one entry there), its colour, and ``paper=True`` if it is one of the paper's. Its
label (``"source ↛ target"``) and title (``"target cannot read source"``) follow from the name
unless given. Any ``"source->target"`` works without an entry; an entry fixes how it is shown.
"""

from __future__ import annotations

from dataclasses import dataclass

from flowkit.errors import KnockoutError
from flowkit.palette import OKABE_ITO
from flowkit.prompts.spans import TOKEN_GROUPS

#: Version of the knockout definitions (what each token group and edge group means, the
#: random control, the accuracy after knockout). Bump it whenever a definition changes
#: what a stored number means; :class:`flowkit.analysis.result_cache.ResultCache` never returns a record
#: computed under another version.
#: 1: ``question`` was every token between the video and the last position.
#: 2: ``question`` is the paper's question span (header / question sentence through the
#:    last option); the wide group is ``prompt_after_video``; the paper's random control;
#:    the paper's accuracy after knockout; the paper's PLLaVA prompt byte for byte.
#: 3: the paper's readouts (:mod:`flowkit.prompts.readout`): a question is correct when the
#:    whole vocabulary's top token is its true letter (a non-letter top token is wrong); stored
#:    answers record that top token; answer emergence without the final norm before the last
#:    layer; the lens numbered as the paper's script reads it.
DEFINITIONS_VERSION = 3


def _notation(name: str) -> str:
    """The paper's notation: ``"video->question"`` -> ``"video ↛ question"``."""
    return name.replace("->", " ↛ ")


def _cut_sentence(name: str) -> str:
    """What cutting ``"source->target"`` does: ``"target cannot read source"``."""
    source, target = name.split("->")
    return f"{target} cannot read {source}"


@dataclass(frozen=True)
class EdgeGroup:
    """One named edge group and how figures, widgets and the knockout grid show it.

    Attributes:
        name: its canonical spelling (``"video->question"``, ``"cross_frame"``).
        color: its fixed colour in every figure and widget (Okabe-Ito, :mod:`flowkit.palette`).
        paper: one of the paper's five edge groups (:data:`PAPER_EDGE_GROUPS`).
        option_analysis: one of the finer groups of the paper's answer analysis
            (:data:`OPTION_EDGE_GROUPS`).
        label: legend entry and grid column header; default the paper's notation
            (``"video ↛ question"``).
        title: what a cut does, as the grid says it; default ``"question cannot read video"``.
    """

    name: str
    color: str
    paper: bool = False
    option_analysis: bool = False
    label: str = ""
    title: str = ""

    def __post_init__(self):
        if not self.label:
            object.__setattr__(self, "label", _notation(self.name))
        if not self.title:
            object.__setattr__(self, "title", _cut_sentence(self.name))


#: The registry: every named edge group, by name, in the order figures list them. Add an
#: edge group here and nowhere else (see the module docstring).
EDGE_GROUPS: dict[str, EdgeGroup] = {
    group.name: group
    for group in (
        EdgeGroup(
            "cross_frame",
            OKABE_ITO["orange"],
            paper=True,
            label="cross-frame",
            title="every frame cannot read earlier frames",
        ),
        EdgeGroup("video->question", OKABE_ITO["blue"], paper=True),
        EdgeGroup("video->last", OKABE_ITO["bluish_green"], paper=True),
        EdgeGroup("question->last", OKABE_ITO["vermillion"], paper=True),
        EdgeGroup("last->last", OKABE_ITO["reddish_purple"], paper=True),
        EdgeGroup(
            "within_frame",
            OKABE_ITO["yellow"],
            label="within-frame",
            title="video tokens cannot read video tokens other than earlier frames",
        ),
        EdgeGroup("video->other_text", OKABE_ITO["sky_blue"]),
        EdgeGroup("question->question", OKABE_ITO["black"]),
        EdgeGroup("other_text->last", OKABE_ITO["orange"]),
        EdgeGroup("question_text->last", OKABE_ITO["sky_blue"], option_analysis=True),
        EdgeGroup("true_option->last", OKABE_ITO["black"], option_analysis=True),
        EdgeGroup("false_options->last", OKABE_ITO["yellow"], option_analysis=True),
    )
}

#: The edge groups of the paper, by name.
PAPER_EDGE_GROUPS = tuple(name for name, group in EDGE_GROUPS.items() if group.paper)
#: Finer groups of the paper's answer analysis.
OPTION_EDGE_GROUPS = tuple(name for name, group in EDGE_GROUPS.items() if group.option_analysis)


#: A partition of every causal edge the paper's pathway mask can cut (its ``video->video``,
#: ``question->question``, ``video->question``, ``question->last``, ``video->last``, ``last->last``)
#: plus ``video->other_text`` and ``other_text->last``: every such (query, key) pair lies in exactly
#: one of these groups. ``cross_frame`` and ``within_frame`` split ``video->video`` (``within_frame``
#: is every ``video->video`` edge that is not ``cross_frame``: a frame reading itself, and the
#: separators' edges). Edges out of the prefix, and text -> text edges other than
#: ``question->question``, are in no group: no mask here cuts them. The pathway search
#: (:mod:`flowkit.analysis.pathway_search`) gates one group in one layer at a time, so its
#: "edges kept" is exact and counted as :func:`flowkit.intervention.masks.count_edges` counts.
PARTITION_EDGE_GROUPS = (
    "cross_frame",
    "within_frame",
    "video->question",
    "video->other_text",
    "question->question",
    "question->last",
    "other_text->last",
    "video->last",
    "last->last",
)


def edge_group_label(edges: str) -> str:
    """How figures and the grid name an edge group: the registry's label, else the paper's
    notation (``"video->question"`` -> ``"video ↛ question"``)."""
    return EDGE_GROUPS[edges].label if edges in EDGE_GROUPS else _notation(edges)


def edge_group_title(edges: str) -> str:
    """What cutting an edge group does, in words: the registry's title, else
    ``"target cannot read source"`` (``edges`` in canonical spelling, see :func:`normalize_edges`)."""
    return EDGE_GROUPS[edges].title if edges in EDGE_GROUPS else _cut_sentence(edges)


_ARROWS = ("-/->", "↛", "-x->", "→", "->")


def normalize_edges(edges: str) -> str:
    """Canonical spelling of an edge group: ``"video -/-> question"`` -> ``"video->question"``."""
    if not isinstance(edges, str) or not edges.strip():
        raise KnockoutError(f"an edge group must be a non-empty string like 'video->question', got {edges!r}")
    text = edges.strip().lower().replace(" ", "")
    if text in ("cross_frame", "cross-frame", "crossframe"):
        return "cross_frame"
    if text in ("within_frame", "within-frame", "withinframe"):
        return "within_frame"
    for arrow in _ARROWS:
        if arrow in text:
            parts = text.split(arrow)
            if len(parts) != 2 or not all(parts):
                break
            return f"{parts[0]}->{parts[1]}"
    raise KnockoutError(
        f"unknown edge group {edges!r}. Write 'source->target' with token groups such as "
        f"{', '.join(group.name for group in TOKEN_GROUPS)} — or 'cross_frame' / 'within_frame'. "
        f"The paper's groups: {', '.join(PAPER_EDGE_GROUPS)}."
    )
