"""Knowledge distillation and block surgery for the Qwen-Image transformer.

Shared by the `pruned` variant (block importance, block removal, optional recovery training),
the `distilled` variant (student checkpoints, `train_if_missing`) and `qie-bench distill`.

- `surgery`: which blocks to keep, rebuilding `transformer_blocks`, parameter counts.
- `capture`: running the real pipeline over cases with hooks: the transformer's inputs at every
  denoising call, and the per-block cosine "block influence" score.
- `train`: teacher targets (computed once per sample), the distillation loss, training and
  held-out evaluation.
- `student`: one distillation run (record, targets, build, train, held-out before/after).
- `checkpoint`: saving and verifying student checkpoints (safetensors + JSON with sha256).
- `context`: how a variant's `apply()` reaches the suite's case set and generation settings.
"""
