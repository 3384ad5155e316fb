"""The VLM judge at full size on a GPU: Qwen2.5-VL-7B's architecture, random weights, bf16.

    python benchmarks/judge_gpu.py [--images 2] [--size 1024] [--device cuda]

Builds Qwen2_5_VLForConditionalGeneration from ``qie_bench/models/configs/text_encoder.json``
(the Qwen-Image-Edit-2509 text encoder, LM head included) directly in bf16 on the GPU, with the
offline byte-level tokenizer of ``models/tiny.py`` (special-token ids remapped, the released
152064-row embedding kept, as ``random-full`` does), and judges edit-v2 cases exactly as the
``judge_*`` metrics do (both VIEScore questions, greedy decoding, at most 256 new tokens each).
Random weights: the replies are noise, so every value is null with the reply kept. Prints, per
image, the seconds for both questions and the allocator's peak; then whether a second pass gives
the same replies (greedy decoding agrees with itself). Prints one JSON line per image and a
summary line.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def build_full_judge(device: str = "cuda", max_pixels: int = 1024 * 1024):
    import torch
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    from qie_bench.metrics.catalog.judge import QwenJudge
    from qie_bench.models import full_size_config
    from qie_bench.models.tiny import (
        QWEN_SPECIAL_TOKENS,
        build_processor,
        build_tokenizer,
    )

    tokenizer = build_tokenizer()
    cfg = full_size_config("text_encoder")
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in QWEN_SPECIAL_TOKENS}
    cfg.update(image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"],
               vision_start_token_id=ids["<|vision_start|>"], vision_end_token_id=ids["<|vision_end|>"],
               vision_token_id=ids["<|vision_pad|>"])
    cfg["text_config"] = {**cfg["text_config"], "eos_token_id": ids["<|im_end|>"], "bos_token_id": ids["<|endoftext|>"]}
    torch.manual_seed(0)
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.bfloat16)
    try:
        with torch.device(device):
            model = Qwen2_5_VLForConditionalGeneration(Qwen2_5_VLConfig(**cfg))
    finally:
        torch.set_default_dtype(old)
    model.eval().requires_grad_(False)
    return QwenJudge(model, build_processor(tokenizer, max_pixels), torch.device(device))


def main() -> int:
    import torch
    from PIL import Image, ImageFilter

    from qie_bench.cases import load_case_set
    from qie_bench.metrics.catalog.judge import overall

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=2)
    ap.add_argument("--size", type=int, default=1024, help="edge of the square images judged (the edit model's ~1 MP)")
    ap.add_argument("--device", default="cuda")
    args = ap.parse_args()

    t0 = time.perf_counter()
    judge = build_full_judge(args.device)
    torch.cuda.synchronize()
    build_s = time.perf_counter() - t0
    params = sum(p.numel() for p in judge.model.parameters())
    weights = torch.cuda.memory_allocated()
    print(f"built in {build_s:.1f} s: {params:,} parameters, {weights / 2**30:.2f} GiB allocated", flush=True)

    cases = [c for c in load_case_set(ROOT / "suites" / "cases" / "edit-v2").cases][: args.images]
    rows = []
    for case in cases:
        source = case.load_images()[0].convert("RGB").resize((args.size, args.size))
        output = source.filter(ImageFilter.GaussianBlur(2))  # a stand-in "edit"
        first = judge.judge(source, output, case.instruction)
        again = judge.judge(source, output, case.instruction)
        row = {
            "case": case.id,
            "seconds": round(first.seconds, 2),
            "peak_allocated_gib": round(first.peak_memory_bytes / 2**30, 2),
            "judge_sc": first.sc.value, "judge_pq": first.pq.value, "judge_overall": overall(first.sc.value, first.pq.value),
            "sc_reason": first.sc.reason, "pq_reason": first.pq.reason,
            "sc_reply_head": (first.sc_reply or "")[:60], "pq_reply_head": (first.pq_reply or "")[:60],
            "same_replies_on_rerun": (first.sc_reply, first.pq_reply) == (again.sc_reply, again.pq_reply),
        }
        rows.append(row)
        print(json.dumps(row, ensure_ascii=False), flush=True)
    print(json.dumps({
        "gpu": torch.cuda.get_device_name(), "params": params, "weights_gib": round(weights / 2**30, 2), "build_s": round(build_s, 1),
        "seconds_per_image": [r["seconds"] for r in rows], "peak_allocated_gib": max(r["peak_allocated_gib"] for r in rows),
        "all_null": all(r["judge_overall"] is None for r in rows),
        "greedy_agrees": all(r["same_replies_on_rerun"] for r in rows),
    }), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
