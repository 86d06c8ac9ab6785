"""Stage 0: teach the vision side to write in the language model's own word embeddings.

Before any language-model-in-the-loop step, each of a frame's four video tokens (one per
quadrant) is regressed onto the mean input embedding of the words describing that
quadrant (``"red" "square"``, or ``"nothing"``; the scene's name on a scene picture).
No language model forward is needed, so thousands of frames train in a minute, and the
video tokens start out readable by SmolLM2 — which also gives the embedding lens on
video tokens a meaning. Stage 1 (``align``) then fine-tunes through the frozen LM.
"""

from __future__ import annotations

import numpy as np
import torch

from flowkit.data.render import COLOURS, SCENES, SHAPES, plain_background, render, scene_image
from flowkit.data.synthetic import OBJECT_RADIUS
from flowkit.smol_video.training.frames import FRAME_TASKS, _sprite, make_frame

#: the words whose embeddings carry an object's place in the frame (``positions=True``)
POSITION_WORDS = ("left", "right", "top", "bottom")
POSITION_WEIGHT = 10.0


def word_embedding(model, tokenizer, word: str) -> torch.Tensor:
    """SmolLM2's input embedding of a word as it appears mid-sentence (mean over its tokens)."""
    ids = tokenizer(" " + word, add_special_tokens=False)["input_ids"]
    table = model.model.language_model.get_input_embeddings().weight
    return table[ids].mean(0).detach()


def targets_for(model, tokenizer, quadrant_words: list[list[list[str]]], cache: dict) -> torch.Tensor:
    """``(B, 4, d)`` targets: mean word embedding per quadrant."""
    out = []
    for frame in quadrant_words:
        rows = []
        for words in frame:
            key = tuple(words)
            if key not in cache:
                cache[key] = torch.stack([word_embedding(model, tokenizer, w) for w in words]).mean(0)
            rows.append(cache[key])
        out.append(torch.stack(rows))
    return torch.stack(out)


def make_position_frame(rng: np.random.Generator, size: int = 64):
    """A frame like the temporal question set's: one to three objects anywhere in the picture (in
    distinct quadrants, never touching), sometimes on a scene. Returns ``(frame, quadrants)``; each quadrant is
    ``(words, xy)``: the words describing it and its object's centre as fractions of the frame
    (``None`` for an empty quadrant)."""
    radius = OBJECT_RADIUS * size
    scene = str(SCENES[int(rng.integers(len(SCENES)))]) if rng.random() < 0.3 else None
    background = scene_image(scene, size) if scene else plain_background(size)
    count = int(rng.integers(1, 4))
    shapes = [str(x) for x in rng.choice(SHAPES, size=count)]
    colours = [str(x) for x in rng.choice(COLOURS, size=count, replace=False)]
    while True:
        radii = radius * rng.choice([1.0, 1.0, 1.0, 1.5, 1.8], size=count)
        centres = [rng.uniform(r * 1.15, size - r * 1.15, 2) for r in radii]
        quadrants = [int(y >= size / 2) * 2 + int(x >= size / 2) for x, y in centres]
        apart = all(
            np.hypot(*(centres[i] - centres[j])) > 1.5 * (radii[i] + radii[j]) for i in range(count) for j in range(i)
        )
        if len(set(quadrants)) == count and apart:
            break
    sprites = [_sprite(s, c, x, y, r) for s, c, (x, y), r in zip(shapes, colours, centres, radii)]
    frame = render(background, sprites, size)
    empty = [scene] if scene else ["nothing"]
    out = [(list(empty), None) for _ in range(4)]
    for shape, colour, (x, y), q, r in zip(shapes, colours, centres, quadrants, radii):
        out[q] = ([colour, shape] + (["large"] if r > radius else []), (x / size, y / size))
    return frame, out


def _word_table(model, tokenizer, words) -> torch.Tensor:
    return torch.stack([word_embedding(model, tokenizer, w) for w in words])


def train_stage0(
    trainable,
    processor,
    steps: int = 1500,
    batch_size: int = 64,
    lr: float = 1e-3,
    seed: int = 11,
    progress: bool = True,
    positions: bool = False,
) -> list[float]:
    """Make each video token *read as* its quadrant's words; returns the loss curve.

    Two terms: a regression of the token onto the mean embedding of its words (so its
    scale and direction suit the LM), and a discriminative term — each token, scored
    against the embeddings of all candidate words (centred, like a lens), must pick its
    own colour/shape/scene word over the others. The second term is what forces the
    tokens to depend on the picture: a constant token already has a high cosine with
    every target, because SmolLM2's word embeddings share a large common direction.

    With ``positions`` the frames are :func:`make_position_frame`'s (objects anywhere, as in
    the temporal question set) and an object's token also carries *where* it is, in words: its
    target adds ``(1-x)·"left" + x·"right"`` and ``(1-y)·"top" + y·"bottom"``, and a third term
    asks the token's coordinate along ``"right" - "left"`` (and ``"bottom" - "top"``) to
    match — so motion becomes a drift from "left" to "right" that the language model can
    read with the words it already knows.
    """
    from tqdm.auto import tqdm

    from flowkit.data.render import COLOURS, SCENES, SHAPES

    model, tokenizer = trainable.model, processor.tokenizer
    vocab = list(COLOURS) + list(SHAPES) + list(SCENES) + ["nothing", "large"]
    table = _word_table(model, tokenizer, vocab)
    place = {w: word_embedding(model, tokenizer, w) for w in POSITION_WORDS}
    axes = torch.stack([place["right"] - place["left"], place["bottom"] - place["top"]])  # (2, d)
    centred = table - table.mean(0, keepdim=True)
    index = {w: i for i, w in enumerate(vocab)}
    params = [p for p in trainable.vision_parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    cache: dict = {}
    losses = []
    trainable.train()
    for step in tqdm(range(steps), desc="stage 0", disable=not progress):
        rng = np.random.default_rng([seed, step])
        frames, words, places = [], [], []
        for _ in range(batch_size):
            if positions:
                frame, quadrants = make_position_frame(rng)
                frames.append(frame)
                words.append([w for w, _ in quadrants])
                places.append([xy for _, xy in quadrants])
            else:
                sample, quadrants = make_frame(FRAME_TASKS[int(rng.integers(len(FRAME_TASKS)))], rng)
                frames.append(sample.frames)
                words.append(quadrants)
        pixels = processor.video_processor(videos=frames, return_tensors="pt")["pixel_values_videos"]
        tokens = model.model.get_video_features(pixel_values_videos=pixels).pooler_output  # (B, 4, d)
        target = targets_for(model, tokenizer, words, cache)
        placed = []
        if positions:
            target = target.clone()
            for b, frame_places in enumerate(places):
                for q, xy in enumerate(frame_places):
                    if xy is not None:
                        n = len(words[b][q])
                        x, y = xy
                        where = (
                            (1 - x) * place["left"] + x * place["right"] + (1 - y) * place["top"] + y * place["bottom"]
                        )
                        target[b, q] = (n * target[b, q] + where) / (n + 2)
                        placed.append((b, q))
        regression = (1 - torch.nn.functional.cosine_similarity(tokens, target, dim=-1)).mean()
        regression = regression + 0.1 * ((tokens.norm(dim=-1) - target.norm(dim=-1)) ** 2).mean()
        scores = (tokens - table.mean(0)) @ centred.T  # (B, 4, V)
        flat = scores.reshape(-1, len(vocab))
        labels = torch.tensor([index[q[0]] for frame in words for q in frame])  # colour, "nothing" or scene
        discriminative = torch.nn.functional.cross_entropy(flat, labels)
        shape_rows = [(i, index[q[1]]) for i, q in enumerate(q for frame in words for q in frame) if len(q) > 1]
        if shape_rows:
            rows, shape_labels = zip(*shape_rows)
            discriminative = discriminative + torch.nn.functional.cross_entropy(
                flat[list(rows)], torch.tensor(shape_labels)
            )
        loss = regression + discriminative
        if placed:
            rows = torch.stack([tokens[b, q] - target[b, q] for b, q in placed])  # (P, d)
            # error along each axis, in units of the full left-to-right (top-to-bottom) range
            spread = torch.tensor([[len(words[b][q]) + 2.0] for b, q in placed])  # target = mean of n+2 parts
            along = (rows @ axes.T) * spread / axes.norm(dim=-1) ** 2
            # a constant token already scores var(x) ~ 0.05 here; the weight brings the term level
            # with the others (at weight 1 the tokens never learn where things are)
            loss = loss + POSITION_WEIGHT * (along**2).mean()
        for group in optimizer.param_groups:
            group["lr"] = lr * min(1.0, (step + 1) / 50) * 0.5 * (1 + np.cos(np.pi * step / steps))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    return losses
