"""Structured pruning of the transformer: whole blocks (`method = "depth"`) or MLP hidden
channels (`method = "width"`).

```toml
[[variants]]
name = "depth-20"
kind = "pruned"
blocks = 20                  # remove 20 of the transformer's blocks
importance = "score"         # "score": measured on the suite's cases; "uniform": evenly spaced
# blocks_to_remove = [3, 7]  # or name them

[[variants]]
name = "width-25"
kind = "pruned"
method = "width"
pruning_ratio = 0.25         # of each MLP's hidden channels (at most 0.4)
```

**depth.** Which blocks go is decided by a measured block-influence score (ShortGPT's "block
influence"): for each block, 1 - the mean cosine similarity between the image-stream hidden state
of each token before and after the block, averaged over every transformer call of
`calibration_cases` real pipeline runs of the suite's first cases (the suite's generation
settings; forward hooks on `transformer.transformer_blocks[i]`). A block that barely turns its
input contributes least and goes first. `importance = "uniform"` removes evenly spaced blocks
instead (keeps the first and the last) at no cost. On `random-full` weights the score is
computable but meaningless (random blocks all look alike): use `uniform` there, which gives the
same shapes and therefore the same memory and speed, for capacity planning. The blocks are
removed from `transformer_blocks` (a new `nn.ModuleList`) and `config.num_layers` is updated, so
the pruned transformer round-trips through `save_pretrained` / `from_pretrained`.

**width.** torch-pruning's `MetaPruner` with L1-magnitude group importance
(`tp.importance.MagnitudeImportance(p=1)`) removes `pruning_ratio` of the hidden channels of
each block's `img_mlp` / `txt_mlp` FeedForward: output rows of the first Linear
(`net.0.proj`) together with the matching input columns of the second (`net.2`), which
torch-pruning's dependency graph couples through the GELU. Every other Linear is in
`ignored_layers`, so the residual width, attention and norms keep their sizes. The dependency
graph is traced through the diffusers transformer itself (it traces: autograd-based tracing
follows the RoPE and dynamic shapes) on a small synthetic input; the trace also follows the
last block's text stream, whose output the model discards, so that block's `txt_mlp` is pruned
like the others. The transformer config has no MLP width, so a width-pruned transformer does not
round-trip through `from_pretrained`; it is cheap to rebuild (no data, about a second).

**recovery.** `recovery_steps > 0` trains the pruned transformer to imitate the unpruned one on
the suite's cases (`qie_bench.distill`: reconstruction + temperature-softened KL + feature
matching; hyper-parameters in the `recovery` table), teacher targets computed before pruning so
the unpruned transformer is never copied. It trains in fp32 in memory: meant for the tiny model
and small studies, not a 20B transformer.

Importance scores and recovered weights are cached (`VariantCache`) per base model, options,
case set and generation settings.
"""

from __future__ import annotations

import gc
import logging
import time
import warnings
from typing import Any, Literal

import torch
from torch import nn

from ..distill import surgery
from ..distill.student import small_cpu_threads
from ..distill.surgery import component_dtypes
from ..errors import UserInputError
from ..models import LoadPlan, module_weight_bytes
from .base import DTYPES, VARIANTS, Variant, VariantReport, built_report
from .options import PruneOptions

log = logging.getLogger(__name__)

ALGORITHM_VERSION = 1  # part of cache keys: bump when the score or the pruning changes
# Above this many removed channel indices in total, `changes` records counts and a hash only.
_MAX_LISTED_CHANNELS = 4096


def _transformer_bytes(transformer: nn.Module) -> dict[str, int]:
    b, n = module_weight_bytes(transformer)
    return {"weights_bytes": b, "params": n}


def _where(name: str) -> str:
    return f"variants ('{name}')"


@VARIANTS.register
class PrunedVariant(Variant):
    kind = "pruned"
    Options = PruneOptions
    description = "transformer blocks (depth) or MLP hidden channels (width) removed, optionally distilled back"
    options: PruneOptions

    def load_plan(self, source: str) -> LoadPlan:
        return LoadPlan(dtype=DTYPES[self.options.dtype])

    # -- depth ---------------------------------------------------------------------------------

    def _blocks_to_remove(self, loaded: Any, total: int) -> tuple[list[int], dict[str, Any]]:
        o, where = self.options, _where(self.name)
        if o.blocks_to_remove is not None:
            bad = [i for i in o.blocks_to_remove if i >= total]
            if bad:
                raise UserInputError(f"{where}.blocks_to_remove", f"block {bad[0]} does not exist: the transformer has "
                                     f"{total} blocks (0..{total - 1})")
            if len(o.blocks_to_remove) >= total:
                raise UserInputError(f"{where}.blocks_to_remove", f"would remove all {total} blocks", "keep at least one")
            return sorted(o.blocks_to_remove), {"chosen_by": "blocks_to_remove"}
        assert o.blocks is not None
        if o.blocks >= total:
            raise UserInputError(f"{where}.blocks", f"cannot remove {o.blocks} blocks: the transformer has {total}",
                                 f"remove at most {total - 1}")
        if o.importance == "uniform":
            kept = surgery.evenly_spaced(total, total - o.blocks)
            return [i for i in range(total) if i not in kept], {"chosen_by": "uniform (evenly spaced)"}
        scores, status = self._influence(loaded)
        order = sorted(range(total), key=lambda i: (scores["image"][i], i))
        removed = sorted(order[: o.blocks])
        info = {"chosen_by": "score (lowest block influence first)", "block_influence": scores, "score_cache": status}
        if loaded.source == "random-full":
            info["note"] = "random weights: the score is computed but meaningless; importance = 'uniform' is cheaper"
        return removed, info

    def _influence(self, loaded: Any) -> tuple[dict[str, Any], str]:
        """The block-influence score on the suite's first `calibration_cases` cases, cached."""
        from ..distill import context
        from ..distill.capture import block_influence
        from .cache import VariantCache, cache_key, cacheable

        o = self.options
        ctx = context.current(f"{_where(self.name)}.importance", "importance = 'score'")
        cases = list(ctx.case_set.cases)[: o.calibration_cases]
        extra = {"what": "block-influence", "algorithm": ALGORITHM_VERSION, "cases": [c.id for c in cases],
                 "case_set": ctx.case_set.fingerprint, "generation": ctx.generation.model_dump(mode="json"),
                 "calibration_steps": o.calibration_steps, "dtype": o.dtype}
        # Keyed on what the score depends on, not on how many blocks then go.
        ok, _why = cacheable(loaded.identity)
        key = cache_key(loaded.identity, "pruned/block-influence", extra) if ok else None
        cache = VariantCache()

        def build() -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
            with small_cpu_threads(loaded):
                scores = block_influence(loaded, cases, ctx.generation, steps=o.calibration_steps)
            return {}, {"block_influence": scores.as_record()}

        if key is None or not cache.enabled:
            return build()[1]["block_influence"], "not cached"
        _sd, meta, status = cache.get_or_build(key, build)
        return meta["block_influence"], status

    def _apply_depth(self, loaded: Any) -> dict[str, Any]:
        transformer = loaded.pipe.transformer
        total = len(transformer.transformer_blocks)
        removed, info = self._blocks_to_remove(loaded, total)
        kept = [i for i in range(total) if i not in set(removed)]
        before = _transformer_bytes(transformer)
        per_block = surgery.block_params(transformer)
        recovery = None
        if self.options.recovery_steps:
            block_map = dict(enumerate(surgery.segment_ends(kept, total)))
            recovery = self._recover(loaded, block_map, lambda: surgery.keep_blocks(transformer, kept))
        else:
            surgery.keep_blocks(transformer, kept)
        after = _transformer_bytes(loaded.pipe.transformer)
        changes = {
            "method": "depth",
            "blocks_before": total,
            "blocks_after": len(kept),
            "removed_blocks": removed,
            "kept_blocks": kept,
            "config_num_layers": loaded.pipe.transformer.config.num_layers,
            "params_per_block": per_block,
            "transformer_before": before,
            "transformer_after": after,
            **info,
        }
        if recovery is not None:
            changes["recovery"] = recovery
        return changes

    # -- width ---------------------------------------------------------------------------------

    def _apply_width(self, loaded: Any) -> dict[str, Any]:
        transformer = loaded.pipe.transformer
        before = _transformer_bytes(transformer)
        recovery = None
        if self.options.recovery_steps:
            holder: dict[str, Any] = {}

            def prune() -> None:
                holder.update(prune_mlp_width(transformer, self.options.pruning_ratio, self.options.mlps, self.options.round_to))

            n = len(transformer.transformer_blocks)
            recovery = self._recover(loaded, {i: i for i in range(n)}, prune)
            pruned = holder
        else:
            pruned = prune_mlp_width(transformer, self.options.pruning_ratio, self.options.mlps, self.options.round_to)
        changes = {"method": "width", **pruned, "transformer_before": before,
                   "transformer_after": _transformer_bytes(loaded.pipe.transformer)}
        if recovery is not None:
            changes["recovery"] = recovery
        return changes

    # -- recovery ------------------------------------------------------------------------------

    def _recover(self, loaded: Any, block_map: dict[int, int], prune: Any) -> dict[str, Any]:
        """Prune with `prune()` and train the result to imitate the unpruned transformer (targets
        recorded before pruning). Recovered weights are cached."""
        from ..distill import context
        from ..distill.student import StudentPlan, distill
        from .cache import VariantCache, variant_cache_key

        ctx = context.current(f"{_where(self.name)}.recovery_steps", "recovery training")
        cfg = self.options.recovery.model_copy(update={"steps": self.options.recovery_steps})
        transformer = loaded.pipe.transformer
        dtype = surgery.transformer_dtype(transformer)
        extra = {"what": "recovered-weights", "algorithm": ALGORITHM_VERSION, "case_set": ctx.case_set.fingerprint,
                 "generation": ctx.generation.model_dump(mode="json")}
        key = variant_cache_key(self, loaded, extra=extra)
        cache = VariantCache()
        found = cache.load(key, loaded.device) if key is not None and cache.enabled else None
        if found is not None:
            prune()
            state_dict, meta = found
            transformer.load_state_dict(state_dict, strict=True)
            transformer.to(dtype=dtype)
            return {**meta.get("recovery", {}), "cache": "hit"}

        def build() -> nn.Module:
            prune()
            return transformer

        plan = StudentPlan(block_map=block_map, build=build, info={})
        with small_cpu_threads(loaded):
            result = distill(loaded, ctx, cfg, lambda _influence: plan, log=log.info)
        result.student.to(dtype=dtype).requires_grad_(False).eval()
        record = {k: v for k, v in result.record.items() if k in ("errors", "history", "seconds", "training", "data")}
        status = "not cached"
        if key is not None and cache.enabled:
            cache.store(key, transformer.state_dict(), {"recovery": record})
            status = "miss (stored)"
        return {**record, "cache": status}

    def apply(self, loaded: Any) -> VariantReport:
        t0 = time.perf_counter()
        changes = self._apply_depth(loaded) if self.options.method == "depth" else self._apply_width(loaded)
        # Free the removed blocks/channels now, so memory measured after the build is the
        # pruned model's.
        gc.collect()
        if loaded.device.type == "cuda":
            torch.cuda.empty_cache()
        changes["prune_s"] = round(time.perf_counter() - t0, 3)
        changes["component_dtypes"] = component_dtypes(loaded.pipe)
        unmodelled = ("width pruning changes the MLP widths, which the floor model does not follow"
                      if self.options.method == "width" else None)
        return built_report(loaded.pipe, changes, unmodelled_structure=unmodelled)


# -- width pruning with torch-pruning -----------------------------------------------------------


def _example_inputs(transformer: nn.Module) -> dict[str, Any]:
    """A minimal input for tracing: a 2x2-token output image, one 2x2-token reference, 4 text
    tokens. Shapes only matter for the trace, not values."""
    cfg = transformer.config
    p = next(transformer.parameters())
    g = torch.Generator(device="cpu").manual_seed(0)
    hidden = torch.randn(1, 8, cfg.in_channels, generator=g).to(p.device, p.dtype)
    text = torch.randn(1, 4, cfg.joint_attention_dim, generator=g).to(p.device, p.dtype)
    return {
        "hidden_states": hidden,
        "encoder_hidden_states": text,
        "encoder_hidden_states_mask": torch.ones(1, 4, dtype=torch.long, device=p.device),
        "timestep": torch.full((1,), 0.5, device=p.device, dtype=p.dtype),
        "img_shapes": [[(1, 2, 2), (1, 2, 2)]],
        "attention_kwargs": {},
        "return_dict": False,
    }


def _mlp_pairs(transformer: nn.Module, mlps: tuple[str, ...]) -> list[tuple[str, nn.Linear, nn.Linear]]:
    pairs = []
    for i, block in enumerate(transformer.transformer_blocks):
        for s in mlps:
            ff = getattr(block, f"{s}_mlp")
            pairs.append((f"transformer_blocks.{i}.{s}_mlp", ff.net[0].proj, ff.net[2]))
    return pairs


def prune_mlp_width(transformer: nn.Module, ratio: float, mlps: tuple[str, ...] = ("img", "txt"),
                    round_to: int | None = None) -> dict[str, Any]:
    """Remove `ratio` of the hidden channels of each block's chosen MLPs with torch-pruning
    (MetaPruner, L1 magnitude importance), in place. Returns what changed."""
    import hashlib
    import json

    import torch_pruning as tp

    pairs = _mlp_pairs(transformer, mlps)
    roots = {id(first): name for name, first, _second in pairs}
    hidden_before = {name: first.out_features for name, first, _ in pairs}
    ignored = [m for m in transformer.modules() if isinstance(m, nn.Linear) and id(m) not in roots]
    last_block = transformer.transformer_blocks[-1]

    def forward_fn(model: nn.Module, inputs: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
        # Also return the last block's text stream (discarded by the model) so the trace
        # reaches that block's txt_mlp.
        seen: dict[str, torch.Tensor] = {}
        h = last_block.register_forward_hook(lambda _m, _a, out: seen.__setitem__("txt", out[0]))
        try:
            out = model(**inputs)[0]
        finally:
            h.remove()
        return out, seen["txt"]

    flags = [p.requires_grad for p in transformer.parameters()]
    transformer.requires_grad_(True)  # torch-pruning traces the graph through autograd
    removed: dict[str, list[int]] = {}
    try:
        with warnings.catch_warnings(), torch.enable_grad():
            # diffusers' RMSNorm weights (q/k norms, txt_norm) are parameters torch-pruning does
            # not wrap; no MLP hidden channel reaches them, so its warning about them is noise.
            warnings.filterwarnings("ignore", message="Unwrapped parameters detected")
            pruner = tp.pruner.MetaPruner(
                transformer,
                example_inputs=_example_inputs(transformer),
                importance=tp.importance.MagnitudeImportance(p=1),
                pruning_ratio=ratio,
                ignored_layers=ignored,
                round_to=round_to,
                root_module_types=[nn.Linear],
                forward_fn=forward_fn,
            )
            for group in pruner.step(interactive=True):
                dep, idxs = group[0]
                name = roots.get(id(dep.target.module))
                if name is None:
                    raise RuntimeError(f"torch-pruning proposed a group outside the MLPs: {group}")
                removed[name] = sorted(int(i) for i in idxs)
                group.prune()
    finally:
        for p, flag in zip(transformer.parameters(), flags):
            p.requires_grad_(flag)
    missing = [name for name, first, _ in pairs if name not in removed and first.out_features == hidden_before[name]]
    if missing:
        raise RuntimeError(f"torch-pruning's trace did not reach {missing[:3]}{'...' if len(missing) > 3 else ''}")
    for name, first, second in pairs:
        assert second.in_features == first.out_features, name
    hidden_after = {name: first.out_features for name, first, _ in pairs}
    total_removed = sum(len(v) for v in removed.values())
    changes: dict[str, Any] = {
        "library": f"torch-pruning {_tp_version()}: MetaPruner + MagnitudeImportance(p=1)",
        "pruning_ratio": ratio,
        "mlps": list(mlps),
        "round_to": round_to,
        "mlp_hidden_before": sorted(set(hidden_before.values())),
        "mlp_hidden_after": sorted(set(hidden_after.values())),
        "pruned_layers": len(removed),
        "removed_channels_total": total_removed,
        "removed_channels_sha256": "sha256:" + hashlib.sha256(json.dumps(removed, sort_keys=True).encode()).hexdigest(),
    }
    if total_removed <= _MAX_LISTED_CHANNELS:
        changes["removed_channels"] = removed
    else:
        changes["removed_channels_per_layer"] = {k: len(v) for k, v in removed.items()}
    return changes


def _tp_version() -> str:
    import importlib.metadata

    try:
        return importlib.metadata.version("torch-pruning")
    except importlib.metadata.PackageNotFoundError:  # pragma: no cover
        import torch_pruning as tp

        return str(getattr(tp, "__version__", "unknown"))
