"""Fast tokens and labels for recipe B's conversations: :func:`dense.encode_conversation`'s result, cheaper.

:func:`flowkit.smol_video.training.dense.encode_conversation` is the reference: it renders the chat
template, calls the processor (which expands the video placeholder, tokenizes and preprocesses the
frames of one clip), then tokenizes the text after the video again for character offsets, and
tokenizes the option letters for every answer. Profiled on the kit's model it is about three
quarters of the time of building a dense batch. :class:`ConversationEncoder` gives the same
tensors, byte for byte (``tests/test_training_pool.py`` checks it against the reference):

- the chat template is rendered once per number of turns with placeholders, then filled in
  (checked against the real template the first time each shape is used; a template that
  rewrites its content falls back to rendering every conversation);
- the text is tokenized once, with offsets, with the video as its *one* placeholder token; the
  placeholder is expanded afterwards to as many video tokens as the processor would write for
  frames of that shape (asked once per shape). So the encoding does not depend on the model's
  frame size or tokens per frame: :class:`Encoded` is what a training pool stores;
- option letters' token ids are cached; labels are found with array operations;
- the frames of a whole batch are preprocessed in one call of the processor's video processor.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from flowkit.families.llava_next_video import LlavaNextVideoAdapter
from flowkit.smol_video.training.dense import (
    ANSWER_TEXT,
    CAPTION,
    IGNORE,
    LETTER,
    Conversation,
    DenseSupervisionError,
    conversation_text,
    encode_conversation,
)

#: placeholder characters for the template skeleton (never in a conversation's text)
_MARK = "\x00"


@dataclass(frozen=True, eq=False)
class Encoded:
    """One conversation's tokens with the video as a single placeholder token at ``video_at``.

    ``kinds`` holds the token kinds of :mod:`~flowkit.smol_video.training.dense` (0 = not
    supervised); labels are the ids where ``kinds`` is not 0. ``letters`` lists, per answer turn,
    (position of the option letter, number of options, answer index), positions in ``ids``.
    """

    ids: np.ndarray
    kinds: np.ndarray
    video_at: int
    letters: tuple[tuple[int, int, int], ...]
    task: str


class ConversationEncoder:
    """Encodes :class:`~flowkit.smol_video.training.dense.Conversation` objects for one processor."""

    def __init__(self, processor, adapter=None):

        if not getattr(processor, "chat_template", None):
            raise DenseSupervisionError(
                "dense supervision needs a processor with a chat template (multi-turn prompts); this one has none"
            )
        self.processor = processor
        self.tokenizer = processor.tokenizer
        self.adapter = adapter or LlavaNextVideoAdapter()
        self.video_token, self.video_id = processor.video_token, int(processor.video_token_id)
        self.end_marker = self.tokenizer.eos_token or ""
        self.pad_id = self.tokenizer.pad_token_id or 0
        backend = (
            getattr(self.tokenizer, "backend_tokenizer", None) if getattr(self.tokenizer, "is_fast", False) else None
        )
        # the Rust tokenizer alone gives the wrapper's encoding where it neither truncates nor pads by itself
        self._backend = (
            backend if backend is not None and backend.truncation is None and backend.padding is None else None
        )
        self._skeletons: dict[int, list[str] | None] = {}
        self._checked: set[int] = set()
        self._prompt: list[str] | None = None
        self._letter_ids: dict[int, tuple[int, ...]] = {}
        self._video_tokens: dict[tuple[int, ...], int] = {}

    # ------------------------------------------------------------------ text
    def _skeleton(self, turns: int) -> list[str] | None:
        """The chat template for ``turns`` turns as literal pieces around user and reply fields."""
        if turns not in self._skeletons:
            fields = [f"{_MARK}{i}{_MARK}" for i in range(2 * turns)]
            messages = [
                {"role": "user", "content": [{"type": "video"}, {"type": "text", "text": fields[0]}]},
                {"role": "assistant", "content": fields[1]},
            ]
            for i in range(1, turns):
                messages += [
                    {"role": "user", "content": fields[2 * i]},
                    {"role": "assistant", "content": fields[2 * i + 1]},
                ]
            self._skeletons[turns] = _split(self.processor.apply_chat_template(messages, tokenize=False), fields)
        return self._skeletons[turns]

    def text(self, conversation) -> str:
        """The conversation as the processor's chat template writes it (:func:`dense.conversation_text`)."""

        pieces = self._skeleton(len(conversation.turns))
        if pieces is None:
            return conversation_text(self.processor, conversation)
        parts = [pieces[0]]
        for i, turn in enumerate(conversation.turns):
            parts += [turn.user, pieces[2 * i + 1], turn.reply, pieces[2 * i + 2]]
        text = "".join(parts)
        if len(conversation.turns) not in self._checked:  # the first time: the real template must agree
            if text != conversation_text(self.processor, conversation):
                self._skeletons[len(conversation.turns)] = None
                return conversation_text(self.processor, conversation)
            self._checked.add(len(conversation.turns))
        return text

    def prompt(self, body: str) -> str:
        """:meth:`LlavaNextVideoAdapter.prompt_text` of ``body``, from a cached skeleton."""
        if self._prompt is None:
            field = f"{_MARK}0{_MARK}"
            pieces = _split(self.adapter.prompt_text(self.processor, field), [field])
            self._prompt = pieces if pieces is not None else []
        if not self._prompt:
            return self.adapter.prompt_text(self.processor, body)
        return self._prompt[0] + body + self._prompt[1]

    def letter_ids(self, num_options: int) -> tuple[int, ...]:
        if num_options not in self._letter_ids:
            self._letter_ids[num_options] = tuple(self.adapter.letter_token_ids(self.tokenizer, num_options))
        return self._letter_ids[num_options]

    # ------------------------------------------------------------------ tokens
    def encode(self, conversation) -> Encoded:
        """Tokens, kinds and letters of one conversation, the video as one placeholder token.

        Raises :class:`~flowkit.smol_video.training.dense.DenseSupervisionError` where
        :func:`dense.encode_conversation` does."""

        text = self.text(conversation)
        prompt = self.prompt(conversation.turns[0].user)
        if not text.startswith(prompt):
            raise DenseSupervisionError(
                "the first turn of a training conversation is not the evaluation prompt; "
                f"expected it to start with {prompt!r}, got {text[: len(prompt)]!r}"
            )
        spans = []
        cursor = 0
        for turn in conversation.turns:
            at = text.find(turn.reply, cursor)
            if at < 0:
                raise DenseSupervisionError(f"the chat template changed the reply {turn.reply[:40]!r}; cannot find it")
            end = at + len(turn.reply)
            if self.end_marker and text.startswith(self.end_marker, end):
                end += len(self.end_marker)
            spans.append((at + turn.supervised_from, end, turn))
            cursor = end
        ids, offsets = self._tokenize(text)
        video = np.flatnonzero(ids == self.video_id)
        if len(video) != 1:
            raise DenseSupervisionError("expected one contiguous run of video tokens in a training conversation")
        video_at = int(video[0])
        starts, ends = offsets[:, 0], offsets[:, 1]
        after = np.arange(len(ids)) > video_at
        kinds = np.zeros(len(ids), dtype=np.uint8)
        letters = []
        for first, end, turn in spans:
            inside = np.flatnonzero(after & (starts >= first) & (ends <= end) & (ends > starts))
            if not len(inside) or starts[inside[0]] != first or ends[inside[-1]] != end:
                raise DenseSupervisionError(f"the reply {turn.reply[:40]!r} does not start and end on token boundaries")
            if turn.kind == "answer":
                kinds[inside] = ANSWER_TEXT
                kinds[inside[0]] = LETTER
                if int(ids[inside[0]]) != self.letter_ids(turn.num_options)[turn.answer_index]:
                    raise DenseSupervisionError("the option letter of an answer is not the token evaluation reads")
                letters.append((int(inside[0]), turn.num_options, turn.answer_index))
            else:
                kinds[inside] = CAPTION
        return Encoded(ids, kinds, video_at, tuple(letters), conversation.task)

    def _tokenize(self, text: str) -> tuple[np.ndarray, np.ndarray]:
        """Ids and character offsets as ``tokenizer(text)`` gives them (the Rust tokenizer directly, where
        there is one: the same encoding without the Python wrapper's overhead)."""
        if self._backend is not None:
            encoding = self._backend.encode(text)
            ids, offsets = encoding.ids, encoding.offsets
        else:
            encoded = self.tokenizer(text, return_offsets_mapping=True)
            ids, offsets = encoded["input_ids"], encoded["offset_mapping"]
        return np.asarray(ids, dtype=np.int64), np.asarray(offsets, dtype=np.int64).reshape(-1, 2)

    def video_tokens(self, frames_shape: tuple[int, ...]) -> int:
        """How many video tokens the processor writes for one clip of ``frames_shape`` ``(T, H, W, 3)``."""
        key = tuple(int(n) for n in frames_shape)
        if key not in self._video_tokens:
            out = self.processor(text=self.video_token, videos=[np.zeros(key, dtype=np.uint8)], return_tensors="pt")
            self._video_tokens[key] = int((out["input_ids"][0] == self.video_id).sum())
        return self._video_tokens[key]

    def pixels(self, clips: list[np.ndarray]) -> torch.Tensor:
        """``pixel_values_videos`` of clips of one shape, preprocessed in one call."""
        return self.processor.video_processor(videos=list(clips), return_tensors="pt")["pixel_values_videos"]

    # ------------------------------------------------------------------ batches
    def collate(self, encoded: list[Encoded], clips: list[np.ndarray]) -> dict:
        """The batch :func:`dense.collate_conversations` builds, from encodings and their frames."""

        shapes = {c.shape for c in clips}
        if len(shapes) != 1:
            raise ValueError(f"a batch holds clips of one shape, got {sorted(shapes)}")
        n_video = self.video_tokens(clips[0].shape)
        lengths = [len(e.ids) - 1 + n_video for e in encoded]
        n = max(lengths)
        rows = len(encoded)
        ids = np.full((rows, n), self.pad_id, dtype=np.int64)
        kinds = np.zeros((rows, n), dtype=np.int64)
        mask = np.zeros((rows, n), dtype=np.int64)
        letters, spans = [], []
        for row, (e, length) in enumerate(zip(encoded, lengths)):
            v = e.video_at
            ids[row, :v] = e.ids[:v]
            ids[row, v : v + n_video] = self.video_id
            ids[row, v + n_video : length] = e.ids[v + 1 :]
            kinds[row, v + n_video : length] = e.kinds[v + 1 :]
            kinds[row, :v] = e.kinds[:v]
            mask[row, :length] = 1
            letters.append([(p + n_video - 1 if p > v else p, self.letter_ids(k), a) for p, k, a in e.letters])
            spans.append((v, v + n_video))
        labels = np.where(kinds != 0, ids, IGNORE)
        labels[mask == 0] = IGNORE
        return {
            "input_ids": torch.from_numpy(ids),
            "attention_mask": torch.from_numpy(mask),
            "labels": torch.from_numpy(labels),
            "kinds": torch.from_numpy(kinds),
            "pixel_values_videos": self.pixels(clips),
            "letters": letters,
            "video_spans": spans,
            "tasks": [e.task for e in encoded],
        }

    def collate_conversations(self, conversations) -> dict:
        return self.collate(
            [self.encode(c) for c in conversations], [self.adapter.check_frames(c.frames) for c in conversations]
        )


def _split(text: str, fields: list[str]) -> list[str] | None:
    """``text`` cut at each of ``fields`` (each once, in order): the literal pieces, or ``None``."""
    pieces, rest = [], text
    for field in fields:
        if rest.count(field) != 1:
            return None
        before, rest = rest.split(field)
        pieces.append(before)
    if _MARK in "".join(pieces) + rest:
        return None
    return pieces + [rest]


_ENCODERS: dict[int, ConversationEncoder] = {}


def encoder_for(processor) -> ConversationEncoder:
    """One cached encoder per processor object (per process)."""
    key = id(processor)
    cached = _ENCODERS.get(key)
    if cached is None or cached.processor is not processor:
        cached = _ENCODERS[key] = ConversationEncoder(processor)
    return cached


def collate_conversations(processor, conversations: list[Conversation], fast: bool = True) -> dict:
    """Right-padded batch of encoded conversations (labels ``-100`` on padding).

    ``fast`` builds the same tensors with :class:`ConversationEncoder`
    (several times cheaper); ``fast=False`` is the reference,
    :func:`~flowkit.smol_video.training.dense.encode_conversation` per row."""
    if fast:
        return encoder_for(processor).collate_conversations(conversations)
    encoded = [encode_conversation(processor, c) for c in conversations]
    n = max(len(e["input_ids"]) for e in encoded)
    pad = processor.tokenizer.pad_token_id or 0
    ids = torch.full((len(encoded), n), pad, dtype=torch.long)
    labels = torch.full((len(encoded), n), IGNORE, dtype=torch.long)
    kinds = torch.zeros((len(encoded), n), dtype=torch.long)
    mask = torch.zeros((len(encoded), n), dtype=torch.long)
    for row, e in enumerate(encoded):
        length = len(e["input_ids"])
        ids[row, :length], labels[row, :length], kinds[row, :length] = e["input_ids"], e["labels"], e["kinds"]
        mask[row, :length] = 1
    return {
        "input_ids": ids,
        "attention_mask": mask,
        "labels": labels,
        "kinds": kinds,
        "pixel_values_videos": torch.cat([e["pixel_values_videos"] for e in encoded]),
        "letters": [e["letters"] for e in encoded],
        "video_spans": [e["video_span"] for e in encoded],
        "tasks": [e["task"] for e in encoded],
    }
