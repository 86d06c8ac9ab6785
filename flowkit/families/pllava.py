"""PLLaVA-format checkpoints (the paper's LLaVA-NeXT-7B/13B-Video-FT) in the LLaVA-NeXT-Video class.

The paper's video models are LLaVA-NeXT (image) checkpoints fine-tuned as PLLaVA: the
vision tower encodes each frame, the projector maps **every patch** to the language
model, and only then are the tokens average-pooled (24x24 -> 12x12 per frame).
transformers' ``LlavaNextVideoForConditionalGeneration`` pools first and projects the
pooled patches; because the projector has a GELU in the middle the two orders give
different video tokens. :func:`flowkit.convert.pllava.convert_pllava` therefore writes a
standard LLaVA-NeXT-Video folder plus a ``pllava`` entry in its config, and flowkit loads
such a folder as :class:`~flowkit.families.model_classes.pllava.PllavaNextVideoForConditionalGeneration`:
the transformers class with PLLaVA's project-then-pool order restored, weights and language
model unchanged.
(Loaded by plain transformers the same folder runs, with pool-then-project video tokens.)

PLLaVA pools the video to a fixed number of frames (``pooling_shape[0]``, 8 in the paper):
it averages more frames in time and repeats fewer. flowkit reproduces only the exact case
and asks for that many frames. Spans are those of LLaVA-NeXT-Video (frame ``i`` owns the
``i``-th block of ``(side / 2)^2`` ``<video>`` tokens, no separators), found from the
processor's token offsets, which also works for Vicuna's SentencePiece tokenizer: the
adapter is :class:`~flowkit.families.llava_next_video.LlavaNextVideoAdapter` with the
paper's prompt, PLLaVA's model class and a fixed frame count.
"""

from __future__ import annotations

from collections.abc import Sequence

from flowkit.errors import FlowkitError
from flowkit.families.base import Prepared
from flowkit.families.llava_next_video import LlavaNextVideoAdapter
from flowkit.families.registry import register_variant

#: config key written by the converter; holds PLLaVA's pooling settings
PLLAVA_CONFIG_KEY = "pllava"

#: The system text of the paper's multiple-choice prompt (MVBench's; conv mode ``eval_mvbench``).
PAPER_SYSTEM = (
    "Carefully watch the video and pay attention to the cause and sequence of events, the detail and "
    "movement of objects, and the action and pose of persons. Based on your observations, select the best "
    "option that accurately addresses the question.\n"
)
#: "{system} USER: <video>\n USER: Question: {text} ASSISTANT:"; flowkit appends "Best option:(".
#: With ``text`` = question, "\nOptions:", the option lines and " \nOnly give the best option."
#: this is the paper's prompt (conv mode ``eval_mvbench``) character for character, except that
#: the video placeholder is ``<video>`` (the LLaVA-NeXT-Video class) where the paper's code has
#: ``<image>``; both expand to the same video tokens.
PAPER_CHAT_TEMPLATE = (
    "{{ '" + PAPER_SYSTEM.replace("\n", "\\n") + " ' }}"
    "{% for message in messages %}{% if message['role'] == 'user' %}"
    "{% for part in message['content'] %}{% if part['type'] == 'video' %}{{ 'USER: <video>\\n ' }}"
    "{% elif part['type'] == 'text' %}{{ 'USER: Question: ' + part['text'] + ' ' }}{% endif %}{% endfor %}"
    "{% elif message['role'] == 'assistant' %}{{ 'ASSISTANT:' + message['content'][0]['text'] + '</s>' }}"
    "{% endif %}{% endfor %}{% if add_generation_prompt %}{{ 'ASSISTANT:' }}{% endif %}"
)


@register_variant("llava_next_video")
class PllavaVideoAdapter(LlavaNextVideoAdapter):
    """A converted PLLaVA checkpoint: LLaVA-NeXT-Video layout, PLLaVA's video path, a fixed frame count.

    Model types, model class name (the checkpoint's: :meth:`model_class` loads it as the
    PLLaVA subclass), decoder path, attention base, vision modules and frame layout are
    LLaVA-NeXT-Video's.
    """

    #: the paper's model class: LLaVA-NeXT-Video's Llama decoder, only the video path differs
    supports_replay = True
    family = "LLaVA-NeXT-Video-FT (PLLaVA)"
    #: the paper's prompt, used if the folder lost the chat template the converter wrote
    fallback_template = PAPER_SYSTEM + " USER: {video}\n USER: Question: {body} ASSISTANT:"
    #: the paper's question span starts at its "Question: " header (written by the template)
    question_header = "Question: "
    #: the paper's MVBench conversation joins the query and "\nOnly give the best option." with
    #: a space, so the prompt is byte for byte the paper's ("... (D) Took the box. \nOnly give ...")
    instruction_separator = " \n"

    def __init__(self, num_frames: int):
        super().__init__()
        self.num_frames = num_frames

    @classmethod
    def claims(cls, config) -> bool:
        """True for a ``llava_next_video`` config written by ``flowkit.convert.pllava``."""
        return getattr(config, PLLAVA_CONFIG_KEY, None) is not None

    @classmethod
    def for_config(cls, config) -> PllavaVideoAdapter:
        """The adapter for a converted config: as many frames as PLLaVA pools to."""
        return cls(num_frames=int(getattr(config, PLLAVA_CONFIG_KEY)["pooling_shape"][0]))

    def model_class(self):
        """:class:`~flowkit.families.model_classes.pllava.PllavaNextVideoForConditionalGeneration`."""
        from flowkit.families.model_classes.pllava import PllavaNextVideoForConditionalGeneration

        return PllavaNextVideoForConditionalGeneration

    def prepare(
        self, processor, frames, question: str, candidates: Sequence[str], answer_index: int | None = None
    ) -> Prepared:
        """As LLaVA-NeXT-Video's, for exactly the frame count PLLaVA pools to."""
        frames = self.check_frames(frames)
        if frames.shape[0] != self.num_frames:
            raise FlowkitError(
                f"this PLLaVA checkpoint pools its video to {self.num_frames} frames; pass exactly "
                f"{self.num_frames} frames (got {frames.shape[0]}). PLLaVA would average more frames "
                "in time or repeat fewer, which flowkit does not reproduce."
            )
        return super().prepare(processor, frames, question, candidates, answer_index)
