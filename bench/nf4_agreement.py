"""How close 4-bit NF4 is to full precision: next-token logits on real SmolLM2 weights.

    python bench/nf4_agreement.py [--questions 24]

Loads the kit's SmolLM2-based LLaVA-NeXT-Video model (the shipped one if present) in
fp32 and in NF4, asks both the same bench questions, and prints the cosine similarity
of the last-position logits, the agreement of the top next token and of the predicted
option, and the mean |Δp| over the option letters.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import setup_torch, smol_video_model  # noqa: E402

from flowkit.data import shipped_questions_root, load_question_set  # noqa: E402


TEXT_PROMPTS = (
    "The capital of France is",
    "Which colour is the sky? Options:\n(A) green\n(B) blue\nBest option:(",
    "def fibonacci(n):",
    "The red square moves to the",
    "One, two, three,",
    "Water boils at a temperature of",
    "The opposite of up is",
    "A triangle has three",
)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--questions", type=int, default=24)
    args = parser.parse_args(argv)
    setup_torch()
    full, label = smol_video_model("fp32")
    quant, _ = smol_video_model("nf4")
    bench = load_question_set(shipped_questions_root(), num_frames=8)
    samples = bench[:: max(1, len(bench) // args.questions)][: args.questions]
    cos, top1, option, dp = [], 0, 0, []
    for sample in samples:
        a, b = full.prepare_sample(sample), quant.prepare_sample(sample)
        la, lb = full.last_logits(a), quant.last_logits(b)
        cos.append(float(torch.nn.functional.cosine_similarity(la, lb, dim=0)))
        top1 += int(la.argmax() == lb.argmax())
        da, db = full.answer(a), quant.answer(b)
        option += int(da.predicted == db.predicted)
        dp.append(max(abs(x - y) for x, y in zip(da.probs, db.probs)))
    n = len(samples)
    text_agree, text_cos, text_kl = 0, [], []
    for prompt in TEXT_PROMPTS:  # the language model alone, no video tokens
        ids = full.tokenizer(prompt, return_tensors="pt")
        with torch.inference_mode():
            a, b = full.model(**ids).logits[0, -1].float(), quant.model(**ids).logits[0, -1].float()
        text_agree += int(a.argmax() == b.argmax())
        text_cos.append(float(torch.nn.functional.cosine_similarity(a, b, dim=0)))
        text_kl.append(
            float(torch.nn.functional.kl_div(b.log_softmax(-1), a.log_softmax(-1), log_target=True, reduction="sum"))
        )
    t = len(TEXT_PROMPTS)
    print(
        f"text prompts ({t}): same top next token {text_agree}/{t}, cosine {sum(text_cos) / t:.4f}, "
        f"KL(fp32 || nf4) {sum(text_kl) / t:.3f} nats"
    )
    print(f"model: {label}; {n} bench questions")
    print(f"cosine(logits nf4, fp32): mean {sum(cos) / n:.4f}, min {min(cos):.4f}")
    print(f"same top next token:      {top1}/{n}")
    print(f"same predicted option:    {option}/{n}")
    print(f"max |Δp(option)|:         mean {sum(dp) / n:.4f}, worst {max(dp):.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
