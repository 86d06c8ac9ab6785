"""Recipe B, dense supervision: several questions and a caption per clip, one conversation each.

Recipe A (``--supervision letters``, the default) learns from one option letter per clip.
Recipe B (``--supervision dense``) turns every training clip into one multi-turn ChatML
conversation, LLaVA-style::

    user:       <video> + the question (exactly the evaluation prompt)
    assistant:  Best option:(B) from sea to forest
    user:       a second question about the same clip (question-set format)
    assistant:  Best option:(A) left
    ...
    user:       Describe what happens in the video.
    assistant:  The video starts at sea. At the start there is one object: ...

- The first turn is token for token the evaluation prompt (:meth:`LlavaNextVideoAdapter.prompt_text`),
  and its clip is the very clip recipe A trains on at the same (seed, step): both arms see the
  same clips and the same questions (:func:`conversation_batch`).
- Loss only on the assistant's tokens after the prompt part they are given: the option
  letter, the rest of the answer (``") from sea to forest"`` and the end-of-turn token) and the
  caption. Nothing at or before the video, nothing on user turns, no loss at video positions.
- Caption turns always come last: no question ever sees a caption of its own clip (at
  evaluation the question follows the video directly). :class:`Conversation` refuses any
  other order.
- Single-frame batches (stage 1 style) become the frame question, further questions about
  the frame, and a frame caption (:func:`flowkit.smol_video.training.captions.frame_caption`).

The loss is ``mean CE over option letters + caption_weight * mean CE over the other
supervised tokens`` (answer text and captions), so the letters — what evaluation reads —
are not drowned by the many caption tokens.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from flowkit.data import TASKS, uniform_frame_indices
from flowkit.data.synthetic import make_scene_sample
from flowkit.errors import FlowkitError
from flowkit.families.base import ANSWER_PREFIX, question_body
from flowkit.families.llava_next_video import LlavaNextVideoAdapter
from flowkit.smol_video.training import captions
from flowkit.smol_video.training.frames import FRAME_TASKS, make_frame
from flowkit.prompts.spans import OPTION_LETTERS


class DenseSupervisionError(FlowkitError, ValueError):
    """A training conversation that cannot be built or labelled as recipe B requires."""


IGNORE = -100
#: token kinds in a batch's ``kinds`` tensor
NOT_SUPERVISED, LETTER, ANSWER_TEXT, CAPTION = 0, 1, 2, 3
KIND_NAMES = {LETTER: "letter", ANSWER_TEXT: "answer_text", CAPTION: "caption"}
#: seed-sequence tag of the random stream that picks extra questions (the clip stream stays recipe A's)
_EXTRA_STREAM = 17


@dataclass(frozen=True)
class Turn:
    """One user turn and the assistant's reply.

    ``kind`` is ``"answer"`` (a multiple-choice answer ``Best option:(B) text``; the loss
    starts at the letter) or ``"caption"`` (the loss covers the whole reply).
    """

    user: str
    reply: str
    kind: str
    answer_index: int | None = None
    num_options: int = 0
    question: str | None = None  # answers: the question and its options, so a pool can re-order them
    candidates: tuple[str, ...] = ()

    @property
    def supervised_from(self) -> int:
        """Characters of the reply that are prompt, not target (``Best option:(`` for answers)."""
        return len(ANSWER_PREFIX) if self.kind == "answer" else 0


def answer_turn(question: str, candidates, answer_index: int, adapter=None) -> Turn:
    """A multiple-choice turn in the question set's format (as ``adapter`` writes it for evaluation,
    LLaVA-NeXT-Video's by default), answered with the option letter and its text."""
    adapter = adapter or LlavaNextVideoAdapter()
    separator = getattr(adapter, "instruction_separator", None)  # the instruction's separator, where set
    body = (
        question_body(question, candidates) if separator is None else question_body(question, candidates, separator)
    )[0]
    letter = OPTION_LETTERS[answer_index]
    reply = f"{ANSWER_PREFIX}{letter}) {' '.join(str(candidates[answer_index]).split())}"
    return Turn(body, reply, "answer", answer_index, len(candidates), str(question), tuple(str(c) for c in candidates))


def caption_turn(request: str, caption: str) -> Turn:
    return Turn(request, caption, "caption")


@dataclass(frozen=True, eq=False)
class Conversation:
    """A clip (or one frame) and its turns; the first turn is the question, captions last."""

    task: str
    frames: np.ndarray
    turns: tuple[Turn, ...]

    def __post_init__(self):
        if not self.turns or self.turns[0].kind != "answer":
            raise DenseSupervisionError("a training conversation starts with a question (the evaluation prompt)")
        kinds = [t.kind for t in self.turns]
        if "caption" in kinds and "answer" in kinds[kinds.index("caption") :]:
            raise DenseSupervisionError(
                f"turn order {kinds}: a question after a caption of its own clip would see the caption, "
                "which evaluation never gives; put caption turns after all questions"
            )


def sample_conversation(
    sample, extra: list[captions.Question], caption: str | None, caption_request: str, rng: np.random.Generator
) -> Conversation:
    """The question set ``sample``'s question, then the ``extra`` questions, then the caption (if any)."""
    turns = [answer_turn(sample.question, sample.candidates, sample.answer_index)]
    for question in extra:
        candidates, index = question.shuffled(rng)
        turns.append(answer_turn(question.question, candidates, index))
    if caption:
        turns.append(caption_turn(caption_request, caption))
    return Conversation(sample.task, sample.frames, tuple(turns))


def clip_conversation(
    task: str,
    rng: np.random.Generator,
    extra_rng: np.random.Generator,
    questions_per_clip: int = 3,
    with_caption: bool = True,
) -> Conversation:
    """A training clip as a conversation. ``rng`` draws the clip exactly as recipe A's
    :func:`flowkit.smol_video.training.clips.video_sample` does; ``extra_rng`` the extra questions' choice."""
    from flowkit.smol_video.training.clips import NUM_FRAMES, video_sample

    if task not in TASKS:  # a curriculum task: no scene record, so its question only
        sample = video_sample(task, rng)
        return sample_conversation(sample, [], None, "", extra_rng)
    sample, scene = make_scene_sample(task, rng, num_frames=16, size=64)
    index = uniform_frame_indices(sample.frames.shape[0], NUM_FRAMES)
    sample = type(sample)(
        id=sample.id,
        task=sample.task,
        frames=sample.frames[index],
        question=sample.question,
        candidates=sample.candidates,
        answer=sample.answer,
        answer_text=sample.answer_text,
    )
    scene = scene.at_frames(index)
    extra = captions.pick_questions(captions.clip_questions(scene, extra_rng), questions_per_clip - 1, extra_rng)
    caption = captions.clip_caption(scene) if with_caption else None
    return sample_conversation(sample, extra, caption, captions.CLIP_CAPTION_REQUEST, extra_rng)


def frame_conversation(
    task: str,
    rng: np.random.Generator,
    extra_rng: np.random.Generator,
    questions_per_clip: int = 3,
    with_caption: bool = True,
) -> Conversation:
    """A single-frame question as a conversation (``rng`` draws the frame as recipe A does)."""
    from flowkit.smol_video.training.clips import frame_sample as _frame_sample

    if task not in FRAME_TASKS:  # a curriculum task: its question only
        return sample_conversation(_frame_sample(task, rng), [], None, "", extra_rng)
    sample, quadrant_words = make_frame(task, rng)
    pool = captions.frame_questions(quadrant_words, extra_rng, primary_question=sample.question)
    extra = captions.pick_questions(pool, questions_per_clip - 1, extra_rng)
    caption = captions.frame_caption(quadrant_words) if with_caption else None
    return sample_conversation(sample, extra, caption, captions.FRAME_CAPTION_REQUEST, extra_rng)


def conversation_batch(config, step: int) -> list[Conversation]:
    """Recipe B's batch at ``step``: recipe A's samples (same seed, same step, same draws),
    each grown into a conversation. A pure function of (seed, step), so resuming is exact."""
    rng = np.random.default_rng([config.seed, step])
    extra_rng = np.random.default_rng([config.seed, step, _EXTRA_STREAM])
    single_frame = config.stage == "align" or (config.frame_batch_every and step % config.frame_batch_every == 0)
    if single_frame:
        tasks = [config.frame_tasks[int(rng.integers(len(config.frame_tasks)))] for _ in range(config.batch_size)]
        return [frame_conversation(t, rng, extra_rng, config.questions_per_clip, config.captions) for t in tasks]
    tasks = [config.video_tasks[int(rng.integers(len(config.video_tasks)))] for _ in range(config.batch_size)]
    return [clip_conversation(t, rng, extra_rng, config.questions_per_clip, config.captions) for t in tasks]


# ----------------------------------------------------------------------------- tokens and labels
def conversation_text(processor, conversation: Conversation) -> str:
    """The conversation rendered by the processor's chat template (one video placeholder)."""
    if not getattr(processor, "chat_template", None):
        raise DenseSupervisionError(
            "dense supervision needs a processor with a chat template (multi-turn prompts); this one has none"
        )
    first = conversation.turns[0]
    messages = [
        {"role": "user", "content": [{"type": "video"}, {"type": "text", "text": first.user}]},
        {"role": "assistant", "content": first.reply},
    ]
    for turn in conversation.turns[1:]:
        messages += [{"role": "user", "content": turn.user}, {"role": "assistant", "content": turn.reply}]
    return processor.apply_chat_template(messages, tokenize=False)


def encode_conversation(processor, conversation: Conversation, adapter=None) -> dict:
    """Input ids, labels and token kinds of one conversation.

    Returns ``input_ids``, ``labels`` (``-100`` except on supervised reply tokens),
    ``kinds`` (:data:`LETTER`, :data:`ANSWER_TEXT`, :data:`CAPTION` or 0), ``letters``
    (per answer turn: the letter's position, its option letters' token ids, the answer
    index), ``video_span`` and ``pixel_values_videos``. Raises :class:`FlowkitError` when
    the first turn is not the evaluation prompt or a reply does not start on a token boundary.
    """
    adapter = adapter or LlavaNextVideoAdapter()
    frames = adapter.check_frames(conversation.frames)
    text = conversation_text(processor, conversation)
    prompt = adapter.prompt_text(processor, conversation.turns[0].user)
    if not text.startswith(prompt):
        raise DenseSupervisionError(
            "the first turn of a training conversation is not the evaluation prompt; "
            f"expected it to start with {prompt!r}, got {text[: len(prompt)]!r}"
        )
    end_marker = processor.tokenizer.eos_token or ""
    spans = []  # (first char, end char, turn)
    cursor = 0
    for turn in conversation.turns:
        at = text.find(turn.reply, cursor)
        if at < 0:
            raise DenseSupervisionError(f"the chat template changed the reply {turn.reply[:40]!r}; cannot find it")
        end = at + len(turn.reply)
        if end_marker and text.startswith(end_marker, end):
            end += len(end_marker)
        spans.append((at + turn.supervised_from, end, turn))
        cursor = end
    inputs = processor(text=text, videos=[frames], return_tensors="pt")
    ids = inputs["input_ids"][0]
    video_positions = (ids == processor.video_token_id).nonzero().flatten().tolist()
    if not video_positions or video_positions[-1] + 1 - video_positions[0] != len(video_positions):
        raise DenseSupervisionError("expected one contiguous run of video tokens in a training conversation")
    video_end = video_positions[-1] + 1
    split_at = text.index(processor.video_token) + len(processor.video_token)
    after = text[split_at:]
    encoded = processor.tokenizer(after, add_special_tokens=False, return_offsets_mapping=True)
    if encoded["input_ids"] != ids[video_end:].tolist():
        raise DenseSupervisionError("could not align the conversation text with the input ids after the video")
    offsets = [(s + split_at, e + split_at) for s, e in encoded["offset_mapping"]]
    labels = torch.full_like(ids, IGNORE)
    kinds = torch.zeros_like(ids)
    letters = []
    for first, end, turn in spans:
        inside = [i for i, (s, e) in enumerate(offsets) if s >= first and e <= end and e > s]
        if not inside or offsets[inside[0]][0] != first or offsets[inside[-1]][1] != end:
            raise DenseSupervisionError(f"the reply {turn.reply[:40]!r} does not start and end on token boundaries")
        positions = [video_end + i for i in inside]
        labels[positions] = ids[positions]
        if turn.kind == "answer":
            kinds[positions] = ANSWER_TEXT
            kinds[positions[0]] = LETTER
            letter_ids = adapter.letter_token_ids(processor.tokenizer, turn.num_options)
            if int(ids[positions[0]]) != letter_ids[turn.answer_index]:
                raise DenseSupervisionError("the option letter of an answer is not the token evaluation reads")
            letters.append((positions[0], letter_ids, turn.answer_index))
        else:
            kinds[positions] = CAPTION
    return {
        "input_ids": ids,
        "labels": labels,
        "kinds": kinds,
        "letters": letters,
        "video_span": (video_positions[0], video_end),
        "pixel_values_videos": inputs["pixel_values_videos"],
        "task": conversation.task,
    }


def dense_loss(trainable, batch: dict, caption_weight: float = 1.0) -> tuple[torch.Tensor, dict[str, float]]:
    """Next-token loss on the supervised reply tokens only (LLaVA-style).

    Returns the loss (``mean over letters + caption_weight * mean over answer text and
    captions``) and, for the log, the mean loss per token kind and of the first (bench)
    question's letter over the whole vocabulary (recipe A's loss, for comparison).
    """
    out = trainable.model.model(
        input_ids=batch["input_ids"],
        attention_mask=batch["attention_mask"],
        pixel_values_videos=batch["pixel_values_videos"],
    )
    hidden = out.last_hidden_state[:, :-1]
    targets, kinds = batch["labels"][:, 1:], batch["kinds"][:, 1:]
    supervised = targets != IGNORE
    if not bool(supervised.any()):
        raise DenseSupervisionError("a dense batch has no supervised token")
    logits = trainable.model.lm_head(hidden[supervised]).float()
    per_token = nn.functional.cross_entropy(logits, targets[supervised], reduction="none")
    token_kinds = kinds[supervised]
    letters = token_kinds == LETTER
    text = token_kinds != LETTER
    loss = per_token[letters].mean() if bool(letters.any()) else per_token.new_zeros(())
    if bool(text.any()):
        loss = loss + caption_weight * per_token[text].mean()
    parts = {
        name: float(per_token[token_kinds == kind].mean().detach())
        for kind, name in KIND_NAMES.items()
        if bool((token_kinds == kind).any())
    }
    # the question's letter: the first supervised letter of each row
    device = batch["input_ids"].device
    rows = torch.arange(len(batch["letters"]), device=device)
    first_letter = torch.tensor([letters_[0][0] for letters_ in batch["letters"]], device=device)
    with torch.no_grad():
        primary = nn.functional.cross_entropy(
            trainable.model.lm_head(out.last_hidden_state[rows, first_letter - 1]).float(),
            batch["input_ids"][rows, first_letter],
        )
    parts["bench_letter"] = float(primary)
    return loss, parts
