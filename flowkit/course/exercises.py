"""Check functions for the chapters' exercises (ARENA style).

Each chapter leaves a function for the student to write; its blank raises
``NotImplementedError``. ``check(name, fn)`` runs the student's function on several
cases and compares it with the kit's own implementation, raising an ``AssertionError``
that says what differed; ``show_solution(name)`` prints the reference solution (kept once,
in :mod:`flowkit.course.solutions`) and checks it.

In a chapter, ``exercise(name, fn)`` runs the same check but never raises (✓, or ✗ and what
differed), so Run All goes through; later cells call ``use(name)``: the student's function once
it has passed, the reference until then, and a line saying which.

>>> from flowkit.course.exercises import check, show_solution
>>> check("percent_change", lambda p_base, p_new: 100 * (p_new - p_base) / p_base)
✓ percent_change: 4 cases passed
"""

from __future__ import annotations

import inspect
import math

import torch

from flowkit.course import solutions
from flowkit.prompts.spans import Spans


def _spans_cases() -> list[Spans]:
    """Small prompts of different shapes (frames of different sizes, separators, one frame)."""
    return [
        Spans(
            seq_len=30,
            frame_spans=((3, 7), (7, 11), (11, 15)),
            question_text=(16, 22),
            option_spans=((23, 25), (25, 27)),
            last=29,
            true_option=0,
        ),
        Spans(
            seq_len=48,
            frame_spans=((2, 8), (9, 15), (16, 22), (23, 29)),
            question_text=(30, 38),
            option_spans=((39, 41), (41, 43), (43, 45)),
            last=47,
            true_option=2,
            video_span=(1, 30),
        ),
        Spans(seq_len=20, frame_spans=((1, 9),), question_text=(10, 14), option_spans=((15, 16), (16, 17)), last=19),
    ]


def _fail(name: str, case: str, expected, got) -> None:
    raise AssertionError(f"{name}: wrong on {case}.\n  expected: {expected!r}\n  got:      {got!r}")


def _done(name: str, cases: int) -> None:
    print(f"✓ {name}: {cases} cases passed")


# ----------------------------------------------------------------------- checks
def _check_frame_positions(fn) -> int:
    n = 0
    for spans in _spans_cases():
        for frame in range(spans.num_frames):
            got = list(fn(spans, frame))
            expected = spans.positions(f"frame:{frame}")
            if got != expected:
                _fail("frame_positions", f"frame {frame} of spans {spans.frame_spans}", expected, got)
            n += 1
    return n


def _check_option_probabilities(fn) -> int:
    cases = [torch.tensor([2.0, 1.0, 0.5, -1.0]), torch.tensor([0.0, 0.0]), torch.tensor([30.0, -5.0, 12.0])]
    for logits in cases:
        got = torch.as_tensor(fn(logits.clone())).float()
        expected = torch.softmax(logits, -1)
        if got.shape != expected.shape or not torch.allclose(got, expected, atol=1e-6):
            _fail("option_probabilities", f"logits {logits.tolist()}", expected.tolist(), got.tolist())
    return len(cases)


def _check_cross_frame_mask(fn) -> int:
    from flowkit.intervention.masks import edge_block_mask

    cases = _spans_cases()
    for spans in cases:
        got = torch.as_tensor(fn(spans))
        expected = edge_block_mask("cross_frame", spans)
        if got.shape != expected.shape or got.dtype != torch.bool:
            _fail(
                "cross_frame_mask",
                f"spans {spans.frame_spans}",
                f"bool tensor {tuple(expected.shape)}",
                f"{got.dtype} tensor {tuple(got.shape)}",
            )
        if not torch.equal(got, expected):
            wrong = (got != expected).nonzero()[0].tolist()
            _fail(
                "cross_frame_mask",
                f"spans {spans.frame_spans}, edge query {wrong[0]} <- key {wrong[1]}",
                bool(expected[wrong[0], wrong[1]]),
                bool(got[wrong[0], wrong[1]]),
            )
    return len(cases)


def _check_percent_change(fn) -> int:
    from flowkit.prompts.readout import percent_change

    cases = [(0.5, 0.25), (0.2, 0.3), (0.8, 0.8), (0.01, 0.0)]
    for p_base, p_new in cases:
        got, expected = fn(p_base, p_new), percent_change(p_base, p_new)
        if not math.isclose(got, expected, abs_tol=1e-9):
            _fail("percent_change", f"p_base={p_base}, p_new={p_new}", expected, got)
    return len(cases)


def _check_embedding_lens_scores(fn) -> int:
    generator = torch.Generator().manual_seed(0)
    cases = [
        (torch.randn(n, d, generator=generator), torch.randn(v, d, generator=generator))
        for n, d, v in ((3, 8, 11), (1, 16, 5), (6, 4, 9))
    ]
    for hidden, embedding in cases:
        got = torch.as_tensor(fn(hidden.clone(), embedding.clone())).float()
        expected = hidden @ embedding.T
        if got.shape != expected.shape or not torch.allclose(got, expected, atol=1e-4):
            _fail(
                "embedding_lens_scores",
                f"hidden {tuple(hidden.shape)}, embedding {tuple(embedding.shape)}",
                f"{tuple(expected.shape)} tensor of dot products",
                f"{tuple(got.shape)} tensor",
            )
    return len(cases)


def _check_temporal_share(fn) -> int:
    temporal = {"left", "right", "first", "appears"}
    cases = [
        ([["left", "red"], ["first", "circle"]], 0.5),
        ([["red", "blue"]], 0.0),
        ([["left"], ["right"], ["appears"]], 1.0),
        ([["sea", "left", "space"], []], 1 / 3),
    ]
    for top_words, expected in cases:
        got = fn(top_words, temporal)
        if not math.isclose(got, expected, abs_tol=1e-9):
            _fail("temporal_share", f"top words {top_words}", expected, got)
    return len(cases)


def _check_first_layer_above(fn) -> int:
    cases = [
        ([0.1, 0.3, 0.6, 0.9], 0.5, 2),
        ([0.1, 0.2], 0.5, None),
        ([0.7, 0.2, 0.9], 0.5, 0),
        ([0.2, 0.5, 0.51], 0.5, 2),
        ([0.1, 0.35, 0.2], 0.3, 1),
    ]
    for probs, threshold, expected in cases:
        got = fn(probs, threshold)
        if got != expected:
            _fail("first_layer_above", f"p by layer {probs}, threshold {threshold}", expected, got)
    return len(cases)


def _check_window_layers(fn) -> int:
    """Against :class:`flowkit.LayerWindow`: centres at both ends and in the middle, odd and even sizes."""
    from flowkit.intervention.spec import LayerWindow

    n = 0
    for num_layers, size in ((30, 9), (32, 9), (12, 4), (5, 9), (8, 1)):
        for center in sorted({0, 1, num_layers // 2, num_layers - 2, num_layers - 1}):
            expected = list(LayerWindow(center, size).resolve(num_layers))
            got = [int(layer) for layer in fn(center, num_layers, size)]
            if got != expected:
                hint = ""
                if got and (got[0] < 0 or got[-1] >= num_layers):
                    hint = " (clip the window at the model's ends: layers are 0..num_layers-1)"
                elif len(got) == size + 1:
                    hint = " (one layer too many: the window has `size` layers)"
                _fail("window_layers", f"centre {center}, size {size}, {num_layers} layers{hint}", expected, got)
            n += 1
    return n


def _check_window_from_curve(fn) -> int:
    """Against :func:`flowkit.analysis.experiments.window_from_curve` on troughs in the middle and at both
    ends, a curve with two dips, a flat one, and the fractions 0.25 / 0.5 / 0.75."""
    from flowkit.analysis.experiments import window_from_curve

    cases = [
        [0.0, -2.0, -8.0, -20.0, -12.0, -9.0, -3.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0],
        [-30.0, -25.0, -10.0, -2.0] + [0.0] * 12,
        [0.0] * 12 + [-1.0, -6.0, -40.0],
        [-12.0, -3.0, -12.5, -11.0, -2.0] + [0.0] * 8,
        [1.0, 0.5, 2.0, 0.0] * 3,
    ]
    n = 0
    for curve in cases:
        for fraction in (0.25, 0.5, 0.75):
            expected = tuple(window_from_curve(curve, fraction))
            got = tuple(int(v) for v in fn(list(curve), fraction))
            if got != expected:
                _fail("window_from_curve", f"curve {curve}, fraction {fraction}", expected, got)
            n += 1
    return n


def _check_sweep_curve(fn) -> int:
    """Against :func:`flowkit.analysis.experiments.curves_with_ci`: the same means over the correctly
    answered questions; intervals that bracket them and match the kit's bootstrap to within a quarter
    of its width (any correct percentile bootstrap does), one ``n`` per question."""
    import numpy as np
    import pandas as pd

    from flowkit.analysis.experiments import curves_with_ci

    rng = np.random.default_rng(3)
    n = 0
    for questions, centers in ((12, 5), (30, 3), (7, 8)):
        rows = pd.DataFrame(
            [
                {
                    "sample": f"q{q}",
                    "task": "t",
                    "edge_group": "cross_frame",
                    "center": c,
                    "pct_change": float(rng.normal(-10 * (c == 1), 6)),
                    "correct_base": q % 5 != 4,
                }
                for q in range(questions)
                for c in range(centers)
            ]
        )
        expected = curves_with_ci(rows).set_index("center")
        got = pd.DataFrame(fn(rows.copy()))
        missing = [c for c in ("center", "pct_change", "lo", "hi") if c not in got.columns]
        if missing:
            _fail(
                "sweep_curve", f"{questions} questions", "columns center, pct_change, lo, hi (and n)", list(got.columns)
            )
        got = got.set_index("center")
        for center, row in expected.iterrows():
            if center not in got.index:
                _fail("sweep_curve", f"{questions} questions", f"a row for centre {center}", sorted(got.index))
            mine = got.loc[center]
            if not math.isclose(float(mine["pct_change"]), row["pct_change"], rel_tol=1e-9, abs_tol=1e-9):
                hint = (
                    " (average only the questions answered correctly: correct_base)"
                    if math.isclose(
                        float(mine["pct_change"]), rows[rows["center"] == center]["pct_change"].mean(), abs_tol=1e-9
                    )
                    else ""
                )
                _fail("sweep_curve", f"the mean at centre {center}{hint}", row["pct_change"], float(mine["pct_change"]))
            width = row["hi"] - row["lo"]
            if (
                not (float(mine["lo"]) <= float(mine["pct_change"]) <= float(mine["hi"]))
                or max(abs(float(mine["lo"]) - row["lo"]), abs(float(mine["hi"]) - row["hi"])) > 0.25 * width + 1e-9
            ):
                _fail(
                    "sweep_curve",
                    f"the 95 % interval at centre {center} (resample the questions, then take the 2.5th and 97.5th percentiles of the means)",
                    (round(row["lo"], 2), round(row["hi"], 2)),
                    (round(float(mine["lo"]), 2), round(float(mine["hi"]), 2)),
                )
            n += 1
    return n


def _check_deepest_window(fn) -> int:
    cases = [{0: -1.0, 1: -12.5, 2: -3.0}, {4: 2.0, 5: 1.0, 6: 3.0}, {10: -40.0}]
    for curve in cases:
        expected = (min(curve, key=curve.get), min(curve.values()))
        got = tuple(fn(dict(curve)))
        if got != expected:
            _fail("deepest_window", f"curve {curve}", expected, got)
    return len(cases)


def _check_kept_fraction(fn) -> int:
    from flowkit.intervention.spec import KnockoutSpec, LayerWindow
    from flowkit.intervention.masks import block_masks, count_edges

    n = 0
    for spans in _spans_cases()[:2]:
        for spec in (
            KnockoutSpec.single("video->question", LayerWindow(3, 3)),
            KnockoutSpec.single("cross_frame", LayerWindow(1, 2)).plus(
                KnockoutSpec.single("question->last", LayerWindow(5, 3))
            ),
            KnockoutSpec(),
        ):
            masks = block_masks(spec, spans, 8)
            expected = count_edges(spec, spans, 8)["kept_fraction"]
            got = fn(masks, spans.seq_len, 8)
            if not math.isclose(got, expected, abs_tol=1e-12):
                _fail("kept_fraction", f"{spec} on {spans.seq_len} tokens, 8 layers", expected, got)
            n += 1
    return n


def _pathway_rules(windows) -> dict:
    """What each of the pathway mask's edge groups keeps, in words (for a check's message)."""

    def kept(window):
        return f"kept in layers {window[0]}-{window[1]}, cut in every other layer"

    return {
        "cross_frame": kept(windows.cross_frame),
        "video->question": kept(windows.video_to_question),
        "question->last": kept(windows.question_to_last),
        "video->last": "cut in every layer",
        "last->last": "cut in every layer",
        "video->video": f"kept up to layer {windows.video_to_video_until}, cut after it",
        "question->question": f"kept up to layer {windows.question_to_question_until}, cut after it",
    }


def _check_pathway_cuts(fn) -> int:
    """Against :func:`flowkit.analysis.pathways.pathway_spec`: the same edges cut in every layer, on several prompts."""
    from flowkit.intervention.masks import block_masks, edge_block_mask
    from flowkit.analysis.pathways import PathwayWindows, pathway_spec
    from flowkit.intervention.spec import KnockoutSpec

    cases = [
        (PathwayWindows((0, 1), (1, 2), (2, 3), 2, 3), 4),
        (PathwayWindows((1, 4), (2, 6), (5, 9), 6, 8), 10),
        (PathwayWindows((0, 5), (0, 5), (0, 5), 5, 5), 6),
    ]  # windows over every layer: nothing of theirs is cut
    n = 0
    for windows, num_layers in cases:
        spec = fn(windows, num_layers)
        if not isinstance(spec, KnockoutSpec):
            _fail(
                "pathway_cuts",
                f"{windows} on {num_layers} layers (its type)",
                "a flowkit.KnockoutSpec",
                type(spec).__name__,
            )
        rules = _pathway_rules(windows)
        for spans in _spans_cases():
            expected = block_masks(pathway_spec(windows, num_layers), spans, num_layers)
            got = block_masks(spec, spans, num_layers)
            none = torch.zeros(spans.seq_len, spans.seq_len, dtype=torch.bool)
            for layer in range(num_layers):
                a, b = expected.get(layer, none), got.get(layer, none)
                if not torch.equal(a, b):
                    q, k = (a != b).nonzero()[0].tolist()
                    groups = [f"{g}: {rule}" for g, rule in rules.items() if edge_block_mask(g, spans)[q, k]]
                    _fail(
                        "pathway_cuts",
                        f"{windows} on {num_layers} layers, layer {layer}, edge query {q} <- key {k} "
                        f"({'; '.join(groups) or 'in none of the pathway groups'})",
                        "cut" if a[q, k] else "kept",
                        "cut" if b[q, k] else "kept",
                    )
            n += 1
    return n


def _check_random_cut_like(fn) -> int:
    from flowkit.intervention.masks import causal_mask, edge_block_mask

    n = 0
    for spans in _spans_cases()[:2]:
        block = edge_block_mask("video->question", spans) | edge_block_mask("cross_frame", spans)
        previous = None  # seed 0's mask, compared with seed 1's
        for seed in (0, 1):
            got = torch.as_tensor(fn(block, seed))
            case = f"{int(block.sum())} cut edges on {spans.seq_len} tokens, seed {seed}"
            if got.shape != block.shape or got.dtype != torch.bool:
                _fail("random_cut_like", case, f"bool tensor {tuple(block.shape)}", f"{got.dtype} {tuple(got.shape)}")
            if int(got.sum()) != int(block.sum()):
                _fail("random_cut_like", case + " (number of cut edges)", int(block.sum()), int(got.sum()))
            if (got & ~causal_mask(spans.seq_len)).any():
                _fail(
                    "random_cut_like",
                    case + " (edges outside the causal triangle)",
                    0,
                    int((got & ~causal_mask(spans.seq_len)).sum()),
                )
            if got.diagonal().any():
                _fail("random_cut_like", case + " (a token's edge to itself cut)", 0, int(got.diagonal().sum()))
            if seed == 1 and torch.equal(got, previous):
                _fail("random_cut_like", "seeds 0 and 1", "different masks", "the same mask")
            if not torch.equal(got, torch.as_tensor(fn(block, seed))):
                _fail("random_cut_like", case + " called twice", "the same mask for the same seed", "a different one")
            previous = got
            n += 1
    return n


def _check_hypothesis_spec(fn) -> int:
    from flowkit.intervention.spec import KnockoutSpec
    from flowkit.intervention.masks import block_masks

    got = fn()
    if not isinstance(got, KnockoutSpec):
        _fail("hypothesis_spec", "its type", "a flowkit.KnockoutSpec", type(got).__name__)
    expected = solutions.hypothesis_spec()
    spans = _spans_cases()[0]
    got_masks, expected_masks = block_masks(got, spans, 24), block_masks(expected, spans, 24)
    for layer in range(24):
        a, b = expected_masks.get(layer), got_masks.get(layer)
        if (a is None) != (b is None) or (a is not None and not torch.equal(a, b)):
            _fail(
                "hypothesis_spec",
                f"layer {layer}",
                "cuts" if a is not None else "no cut",
                "cuts" if b is not None else "no cut",
            )
    if KnockoutSpec.from_json(got.to_json()) != got:
        _fail("hypothesis_spec", "a JSON round trip", "the same spec", KnockoutSpec.from_json(got.to_json()))
    return 2


def _check_trough_shift(fn) -> int:
    cases = [
        ({0: -1, 1: -5, 2: 0}, {0: 0, 1: -1, 2: -4}, 1),
        ({3: -2, 4: -9}, {3: -7, 4: -1}, -1),
        ({5: -3, 6: -1}, {5: -8, 6: 0}, 0),
    ]
    for a, b, expected in cases:
        got = fn(dict(a), dict(b))
        if got != expected:
            _fail("trough_shift", f"curves {a} and {b}", expected, got)
    return len(cases)


def _check_knockout_attention(fn) -> int:
    """Against flowkit's own path: the additive causal mask, the block mask applied by
    ``flowkit.intervention.attention._with_block`` (what every knocked-out attention layer does), then softmax."""
    from flowkit.intervention.attention import _with_block
    from flowkit.intervention.masks import edge_block_mask

    n = 0
    generator = torch.Generator().manual_seed(0)
    for spans in _spans_cases():
        size = spans.seq_len
        for group in ("cross_frame", "video->question", "question->last"):
            cut = edge_block_mask(group, spans)
            scores = torch.randn(2, size, size, generator=generator) * 3
            causal = torch.zeros(1, 1, size, size).masked_fill(
                ~torch.ones(size, size, dtype=torch.bool).tril(), float("-inf")
            )
            shape = torch.zeros(1, 2, size, 4)
            expected = torch.softmax(scores[None] + _with_block(causal, cut, shape, shape), dim=-1)[0]
            got = fn(scores.clone(), cut.clone())
            if not isinstance(got, torch.Tensor) or got.shape != expected.shape:
                _fail(
                    "knockout_attention",
                    f"{group} on spans {spans.frame_spans}",
                    f"a tensor of shape {tuple(expected.shape)}",
                    getattr(got, "shape", got),
                )
            got = got.float()
            leaked = float(got[..., cut].abs().max()) if bool(cut.any()) else 0.0
            if leaked > 0:
                _fail(
                    "knockout_attention",
                    f"{group}: cut edges must get exactly zero weight",
                    0.0,
                    f"up to {leaked:.3g} on a cut edge",
                )
            if not torch.allclose(got, expected, atol=1e-6):
                row = int((got - expected).abs().amax(dim=(0, 2)).argmax())
                _fail(
                    "knockout_attention",
                    f"{group}, query row {row} (rows must sum to 1 over allowed keys only)",
                    expected[0, row, : row + 1].tolist()[:6],
                    got[0, row, : row + 1].tolist()[:6],
                )
            n += 1
    return n


def _check_logit_lens_probs(fn) -> int:
    torch.manual_seed(0)
    d, vocab = 16, 50
    final_norm, lm_head = torch.nn.RMSNorm(d), torch.nn.Linear(d, vocab, bias=False)
    with torch.no_grad():
        final_norm.weight.uniform_(0.5, 2.0)
    cases = [(torch.randn(5, d) * 4, (3, 7)), (torch.randn(2, d), (10, 11, 12, 40))]
    for hidden, letters in cases:
        with torch.no_grad():
            expected = torch.softmax(lm_head(final_norm(hidden)).float(), -1)[:, list(letters)]
            got = fn(hidden.clone(), final_norm, lm_head, letters)
        got = torch.as_tensor(got).float()
        if got.shape != expected.shape:
            _fail(
                "logit_lens_probs",
                f"{hidden.shape[0]} layers, {len(letters)} letters",
                tuple(expected.shape),
                tuple(got.shape),
            )
        if not torch.allclose(got, expected, atol=1e-6):
            hint = (
                " (the softmax must run over the whole vocabulary, then pick the letters; these rows sum to 1)"
                if torch.allclose(got.sum(-1), torch.ones(got.shape[0]), atol=1e-4)
                else ""
            )
            _fail(
                "logit_lens_probs",
                f"{hidden.shape[0]} layers, letters {letters}{hint}",
                expected[0].tolist(),
                got[0].tolist(),
            )
    return len(cases)


def _check_bootstrap_interval(fn) -> int:
    """Any correct bootstrap passes: the interval brackets the mean, is reproducible from its seed,
    and is within a quarter of its width of flowkit's (another random stream moves it a little)."""
    import numpy as np

    from flowkit.analysis.stats import bootstrap_ci

    rng = np.random.default_rng(3)
    cases = {
        "20 accuracies (0/1)": (rng.random(20) < 0.7).astype(float),
        "60 % changes": rng.normal(-25, 15, 60),
        "200 p(answer)": rng.beta(5, 2, 200),
    }
    for name, values in cases.items():
        lo, hi = fn(values.copy(), seed=1)
        ref_lo, ref_hi = bootstrap_ci(values)
        if not lo <= values.mean() <= hi:
            _fail(
                "bootstrap_interval",
                f"{name}: the interval must contain the mean {values.mean():.3f}",
                (round(ref_lo, 3), round(ref_hi, 3)),
                (lo, hi),
            )
        if fn(values.copy(), seed=1) != (lo, hi):
            _fail(
                "bootstrap_interval",
                f"{name}: the same seed must give the same interval",
                (lo, hi),
                fn(values.copy(), seed=1),
            )
        width = ref_hi - ref_lo
        if abs(lo - ref_lo) > width / 4 or abs(hi - ref_hi) > width / 4:
            _fail(
                "bootstrap_interval",
                f"{name} (resample the values with replacement, take the mean of each "
                "resample, and the 2.5th and 97.5th percentiles of those means)",
                (round(ref_lo, 3), round(ref_hi, 3)),
                (round(lo, 3), round(hi, 3)),
            )
    return len(cases)


def _check_gate_bias(fn) -> int:
    """The gate of the pathway search on several prompts: log g on each group's edges, g clamped at
    1e-6, 0 elsewhere, and the gradient must reach the gate values."""
    from flowkit.analysis.pathway_search import EPSILON
    from flowkit.analysis.pathway_search import gate_bias as kit_gate_bias
    from flowkit.analysis.pathway_search import gate_masks

    groups = ("cross_frame", "within_frame", "video->question", "question->last", "other_text->last", "last->last")
    generator = torch.Generator().manual_seed(0)
    n = 0
    for spans in _spans_cases()[:2]:
        masks = gate_masks(spans, groups)
        for name, values in (
            ("every gate open (g = 1)", torch.ones(len(groups))),
            ("every gate shut (g = 0)", torch.zeros(len(groups))),
            ("random gates", torch.rand(len(groups), generator=generator, dtype=torch.float64).float()),
        ):
            expected = kit_gate_bias(values[:, None], masks)[0]
            got = fn(values.clone(), masks.clone())
            if not isinstance(got, torch.Tensor) or tuple(got.shape) != tuple(expected.shape):
                _fail(
                    "gate_bias", f"{name}, {spans.seq_len} tokens: the bias is one (N, N) tensor", expected.shape, got
                )
            if not torch.allclose(got.float(), expected, atol=1e-5):
                where = (got.float() - expected).abs().argmax()
                q, k = divmod(int(where), spans.seq_len)
                _fail(
                    "gate_bias",
                    f"{name}, {spans.seq_len} tokens, edge query {q} <- key {k} "
                    f"(log g on the group's edges, at least log {EPSILON:g}; 0 on other edges)",
                    float(expected[q, k]),
                    float(got[q, k]),
                )
            n += 1
        values = torch.full((len(groups),), 0.5, requires_grad=True)
        got = fn(values, masks)
        if not got.requires_grad:
            _fail(
                "gate_bias", "gate values that require grad (the search differentiates through the bias)", True, False
            )
        (grad,) = torch.autograd.grad(got.sum(), values)
        expected = masks.sum(dim=(1, 2)).float() / 0.5  # d/dg of log g summed over the group's edges
        if not torch.allclose(grad, expected, atol=1e-4):
            _fail("gate_bias", "the gradient of the bias's sum with respect to each gate", expected, grad)
        n += 1
    return n


_TOY_MODEL: dict = {}


def _toy_model():
    """A tiny random VideoLLM of a real class (4 layers), built and loaded once per process.

    Its answers are meaningless but its prompts, spans and knockouts are real, so flowkit's
    own sweep on it is the reference a student's sweep is compared with (a few seconds)."""
    if "model" not in _TOY_MODEL:
        import tempfile
        from pathlib import Path

        from flowkit.model.videollm import load_videollm
        from flowkit.testing.tiny_models import build_toy_llava_next_video

        folder = tempfile.TemporaryDirectory(prefix="flowkit-exercise-")
        with torch.random.fork_rng():  # building seeds torch; leave the caller's random stream alone
            checkpoint = build_toy_llava_next_video(Path(folder.name) / "toy", seed=0)
            _TOY_MODEL["model"] = load_videollm(checkpoint, quant="fp32")
        _TOY_MODEL["folder"] = folder  # removed when the process ends
    return _TOY_MODEL["model"]


def _window_sweep_hint(session, edge_group: str, size: int, center: int, got) -> str:
    """Name the likely slip when a student's % change at ``center`` matches a common wrong formula."""
    from flowkit.prompts.readout import percent_change
    from flowkit.intervention.spec import KnockoutSpec, LayerWindow

    clean = session.clean_answer
    true = clean.true_option
    right, default_window = session.answers(
        [
            KnockoutSpec.single(edge_group, LayerWindow(center, size)),
            KnockoutSpec.single(edge_group, LayerWindow(center)),
        ]
    )
    base = clean.probs[true]
    candidates = {
        "renormalised over the options (option_probs); use p over the whole vocabulary (.probs or .p())": percent_change(
            clean.option_probs[true], right.option_probs[true]
        ),
        "an absolute change; the paper's metric is relative: 100 * (p_new - p_base) / p_base": right.probs[true] - base,
        "a fraction; multiply by 100 for percent": percent_change(base, right.probs[true]) / 100,
        f"a 9-layer window; use LayerWindow(centre, size) with size={size}": percent_change(
            base, default_window.probs[true]
        ),
        "the p of the predicted option after the knockout; follow the true option": percent_change(
            base, right.probs[right.predicted]
        ),
    }
    for hint, value in candidates.items():
        if isinstance(got, (int, float)) and math.isclose(got, value, rel_tol=1e-4, abs_tol=1e-6):
            return f" (this value is {hint})"
    return ""


def _plain_number(value, as_float: bool = False):
    """A number a student may return as a Python, NumPy or one-element torch number, as a plain one
    (anything else is returned as it is, for the check to report)."""
    if torch.is_tensor(value) and value.numel() == 1:
        value = value.item()
    elif hasattr(value, "item") and getattr(value, "size", None) == 1:  # a NumPy scalar
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return value
    return float(value) if as_float else value


def _check_window_sweep(fn) -> int:
    """Against flowkit's own sweep (:func:`flowkit.analysis.sweep.sweep`) on a tiny random model, on questions it
    answers correctly (there p(true option) is the p(answer) the sweep follows)."""
    from flowkit.data import generate
    from flowkit.analysis.sweep import sweep

    model = _toy_model()
    candidates = generate("scene_transition", 24, seed=5, num_frames=8, size=32)  # a random model: take enough
    # the option-letter rule: the random model's top token is rarely a letter, and what the check needs
    # is a question whose most likely letter is the true one (p(true option) is then what the sweep follows)
    questions = [s for s in candidates if model.answer(model.prepare_sample(s)).is_correct("options")][:2]
    if not questions:
        raise RuntimeError(
            "window_sweep's check found no question its tiny model answers correctly; "
            "the tiny model has changed, so this check cannot run here"
        )
    cases = [("video->last", [0, 1, 2, 3], 3), ("question->last", [1, 3], 1), ("cross_frame", [2, 0], 2)]
    n = 0
    for edge_group, centers, size in cases:
        reference = sweep(model, questions, edge_groups=[edge_group], centers=centers, size=size, progress=False)
        for question in questions:
            expected = reference[reference["sample"] == question.id].set_index("center")["pct_change"].to_dict()
            case = f"{edge_group}, centres {centers}, size {size}, question {question.id}"
            session = model.session(question)
            got = fn(session, edge_group, list(centers), size)
            if not isinstance(got, dict) or {_plain_number(k) for k in got} != set(expected):
                _fail(
                    "window_sweep",
                    case + " (a dict {centre: % change}, one entry per centre)",
                    {c: round(v, 3) for c, v in expected.items()},
                    got,
                )
            got = {_plain_number(k): v for k, v in got.items()}
            for center in centers:
                value = _plain_number(got[center], as_float=True)
                if not isinstance(value, float) or not math.isclose(
                    value, expected[center], rel_tol=1e-4, abs_tol=1e-4
                ):
                    hint = _window_sweep_hint(session, edge_group, size, center, value)
                    _fail(
                        "window_sweep",
                        f"{case}, window centre {center}{hint}",
                        f"{expected[center]:.4f} % change in p(true option)",
                        value,
                    )
            n += 1
    return n


_CHECKS = {name[len("_check_") :]: f for name, f in globals().items() if name.startswith("_check_")}


def check(name: str, fn) -> None:
    """Run exercise ``name``'s cases on ``fn``; print ✓ or raise an AssertionError saying what differed."""
    if name not in _CHECKS:
        raise KeyError(f"no exercise called {name!r}; the exercises are {', '.join(sorted(_CHECKS))}")
    _done(name, _CHECKS[name](fn))


def _outcome(name: str, fn) -> tuple[bool, str]:
    """``(passed, what to print)``: exercise ``name``'s check on ``fn``, never raising."""
    import contextlib
    import io

    out = io.StringIO()
    try:
        with contextlib.redirect_stdout(out):
            check(name, fn)
    except NotImplementedError:
        return False, "not written yet"
    except AssertionError as why:
        message = str(why).strip() or "it does not pass its check"
        return False, message.removeprefix(f"{name}: ")
    except Exception as why:  # noqa: BLE001 - a student's function may fail in any way
        return False, f"it raised {type(why).__name__}: {why}".strip()
    return True, out.getvalue().strip()


#: exercise name -> the student's function, once it has passed (filled by :func:`exercise`)
_PASSED: dict = {}


def exercise(name: str, fn) -> None:
    """A chapter's exercise cell: check the student's ``fn`` and say how it went, never raising.

    ✓ and the cases passed, or ✗ and what differed (or "not written yet"), then which function
    later cells get from :func:`use` -- yours once it passes, the reference until then -- so Run
    All goes through a chapter whether or not its exercises are done.
    """
    passed, message = _outcome(name, fn)
    if passed:
        _PASSED[name] = fn
        print(f"{message}\nlater cells use your {name}")
        return
    _PASSED.pop(name, None)
    first, *rest = message.splitlines()
    print("\n".join([f"✗ {name}: {first}", *rest]))
    print(f"later cells use the reference {name} until yours passes (show_solution({name!r}) prints it)")


def use(name: str):
    """The function a later cell should call for exercise ``name``: the student's once
    :func:`exercise` has passed it, else the reference solution; prints one line saying which."""
    if name not in _CHECKS:
        raise KeyError(f"no exercise called {name!r}; the exercises are {', '.join(sorted(_CHECKS))}")
    if name in _PASSED:
        print(f"(your {name})")
        return _PASSED[name]
    print(f"(the reference {name}: yours has not passed exercise {name!r} yet)")
    return getattr(solutions, name)


def solution_source(name: str) -> str:
    """The reference solution's source code."""
    if name not in _CHECKS:
        raise KeyError(f"no exercise called {name!r}; the exercises are {', '.join(sorted(_CHECKS))}")
    return inspect.getsource(getattr(solutions, name))


def show_solution(name: str) -> None:
    """Print the reference solution to exercise ``name`` and check it."""
    print(solution_source(name))
    check(name, getattr(solutions, name))


__all__ = ["check", "exercise", "show_solution", "solution_source", "use"]
