"""flowkit — Map the Flow, in Jupyter.

Attention-knockout analysis of (4-bit quantized) VideoLLMs, after Kim, Kim & Han,
*Map the Flow: Revealing Hidden Pathways of Information in VideoLLMs* (ICLR 2026).

The main entry points:

- :func:`load_videollm` — load a VideoLLM (NF4 by default) as a :class:`VideoLLM`;
- :class:`KnockoutSpec`, :class:`LayerWindow`, :func:`knockout` — which edges to cut, where;
- :mod:`flowkit.prompts.readout` and :mod:`flowkit.analysis.lens` — read answers and hidden states.
"""

from flowkit.errors import FlowkitError, KnockoutError, ModelLoadError, UnsupportedModelError, VideoError
from flowkit.intervention.edge_groups import PAPER_EDGE_GROUPS
from flowkit.intervention.spec import Cut, KnockoutSpec, LayerSet, LayerWindow, parse_layers
from flowkit.intervention.masks import block_masks, count_edges
from flowkit.intervention.attention import knockout
from flowkit.model.videollm import VideoLLM, load_videollm
from flowkit.prompts.readout import AnswerDistribution, accuracy, answer_distribution, percent_change
from flowkit.prompts.spans import Spans
from flowkit.knockout_check import CheckResult, check

__version__ = "0.1.0"

__all__ = [
    "PAPER_EDGE_GROUPS",
    "AnswerDistribution",
    "CheckResult",
    "Cut",
    "FlowkitError",
    "KnockoutError",
    "KnockoutSpec",
    "LayerSet",
    "LayerWindow",
    "ModelLoadError",
    "Spans",
    "UnsupportedModelError",
    "VideoError",
    "VideoLLM",
    "accuracy",
    "answer_distribution",
    "block_masks",
    "check",
    "count_edges",
    "knockout",
    "load_videollm",
    "parse_layers",
    "percent_change",
]
