"""The VLM judge at full size (Qwen2.5-VL-7B architecture, random weights, bf16) on a CUDA GPU:
two images judged, replies unparseable -> null with the reply, cost recorded, greedy agrees with
itself. Skipped where there is no CUDA GPU; `python benchmarks/judge_gpu.py` prints the figures."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.gpu

ROOT = Path(__file__).resolve().parent.parent


def test_full_size_random_judge_on_two_images() -> None:
    import torch
    from PIL import ImageFilter

    sys.path.insert(0, str(ROOT / "benchmarks"))
    from judge_gpu import build_full_judge

    from qie_bench.cases import load_case_set

    judge = build_full_judge("cuda")
    params = sum(p.numel() for p in judge.model.parameters())
    assert params > 8_000_000_000  # 7B LM + vision tower + untied 152064-row head
    weights = torch.cuda.memory_allocated()
    for case in load_case_set(ROOT / "suites" / "cases" / "edit-v2").cases[:2]:
        source = case.load_images()[0].convert("RGB").resize((1024, 1024))
        output = source.filter(ImageFilter.GaussianBlur(2))
        first = judge.judge(source, output, case.instruction)
        again = judge.judge(source, output, case.instruction)
        print(f"{case.id}: {first.seconds:.2f} s, peak {first.peak_memory_bytes / 2**30:.2f} GiB "
              f"(weights {weights / 2**30:.2f} GiB)")
        assert first.sc_reply is not None and first.pq_reply is not None
        assert first.sc.value is None and first.pq.value is None and first.sc.reason and first.pq.reason
        assert (first.sc_reply, first.pq_reply) == (again.sc_reply, again.pq_reply), "greedy: same replies"
        assert first.peak_memory_bytes >= weights and first.seconds > 0
