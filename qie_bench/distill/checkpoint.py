"""Student checkpoints: `save_pretrained` of the student transformer (config.json + safetensors)
plus `qie_student.json`: what it was distilled from, how, its measured errors, and the sha256 of
every file, checked on every load."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import uuid
from pathlib import Path
from typing import Any

import torch

from ..errors import UserInputError
from ..fingerprint import file_sha256  # noqa: F401  (also this module's public name)

META_NAME = "qie_student.json"
FORMAT = "qie-bench-student/1"


def json_sha256(obj: Any) -> str:
    return "sha256:" + hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


def teacher_config(transformer: Any) -> dict[str, Any]:
    """The transformer's architecture config without bookkeeping keys and without num_layers:
    what a student must share with its teacher."""
    cfg = {k: v for k, v in dict(transformer.config).items() if not k.startswith("_") and k != "num_layers"}
    return json.loads(json.dumps(cfg, default=list))


def save_student(student: Any, out_dir: Path, meta: dict[str, Any]) -> Path:
    """Write the checkpoint into a fresh folder next to `out_dir`, then move it into place, so a
    reader never sees half a checkpoint. An existing `out_dir` is replaced only if it is a
    checkpoint itself (holds `qie_student.json`) or empty."""
    out_dir = Path(out_dir)
    if out_dir.exists() and any(out_dir.iterdir()) and not (out_dir / META_NAME).exists():
        raise UserInputError(str(out_dir), "exists and is not a student checkpoint", "choose a new or empty folder")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_dir.parent / f".{out_dir.name}.tmp-{uuid.uuid4().hex[:8]}"
    try:
        student.save_pretrained(tmp, safe_serialization=True)
        files = {p.name: file_sha256(p) for p in sorted(tmp.iterdir()) if p.is_file()}
        meta = {"format": FORMAT, **meta, "files": files}
        (tmp / META_NAME).write_text(json.dumps(meta, indent=1, sort_keys=False, default=str) + "\n")
        if out_dir.exists():
            old = out_dir.parent / f".{out_dir.name}.old-{uuid.uuid4().hex[:8]}"
            os.replace(out_dir, old)
            os.replace(tmp, out_dir)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, out_dir)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return out_dir / META_NAME


def read_meta(ckpt: Path, where: str) -> dict[str, Any]:
    path = Path(ckpt) / META_NAME
    try:
        meta = json.loads(path.read_text())
    except FileNotFoundError:
        raise UserInputError(where, f"'{ckpt}' is not a student checkpoint (no {META_NAME})",
                             "make one with `qie-bench distill SUITE --student-layers K --out DIR`") from None
    except (OSError, ValueError) as err:
        raise UserInputError(where, f"cannot read {path}: {err}") from None
    if meta.get("format") != FORMAT:
        raise UserInputError(where, f"{path} has format {meta.get('format')!r}, expected '{FORMAT}'")
    return meta


def verify_files(ckpt: Path, meta: dict[str, Any], where: str) -> None:
    files = meta.get("files") or {}
    if not files:
        raise UserInputError(where, f"{Path(ckpt) / META_NAME} lists no files")
    for name, digest in files.items():
        path = Path(ckpt) / name
        if not path.is_file():
            raise UserInputError(where, f"checkpoint file {path} is missing")
        got = file_sha256(path)
        if got != digest:
            raise UserInputError(where, f"checkpoint file {path} does not match its sha256 in {META_NAME}",
                                 "the checkpoint is corrupt or was modified; rebuild it")


def load_student(ckpt: Path, teacher: Any, dtype: torch.dtype, device: torch.device, where: str) -> tuple[Any, dict[str, Any]]:
    """Load and verify a student; it must be a smaller copy of `teacher`'s architecture.

    A folder made by `qie-bench distill` (with `qie_student.json`) is verified file by file. A
    plain `save_pretrained` transformer folder made elsewhere (a published depth-pruned
    transformer, say) is accepted too: its files' sha256 are computed and returned in the
    metadata, so results record exactly which weights ran, but nothing vouches for them.
    """
    from diffusers import QwenImageTransformer2DModel

    ckpt = Path(ckpt)
    if (ckpt / META_NAME).is_file():
        meta = read_meta(ckpt, where)
        verify_files(ckpt, meta, where)
        got = (meta.get("teacher") or {}).get("config")
    elif (ckpt / "config.json").is_file():
        files = {p.name: file_sha256(p) for p in sorted(ckpt.iterdir()) if p.is_file() and p.suffix in (".json", ".safetensors")}
        meta = {"format": "external save_pretrained folder (no qie_student.json: unverified)", "files": files}
        try:
            cfg = json.loads((ckpt / "config.json").read_text())
        except (OSError, ValueError) as err:
            raise UserInputError(where, f"cannot read {ckpt / 'config.json'}: {err}") from None
        got = {k: v for k, v in cfg.items() if not k.startswith("_") and k != "num_layers"}
        meta["student"] = {"layers": cfg.get("num_layers")}
    else:
        raise UserInputError(where, f"'{ckpt}' is neither a student checkpoint ({META_NAME}) nor a transformer folder "
                             "(config.json)", "make one with `qie-bench distill SUITE --student-layers K --out DIR`")
    want = teacher_config(teacher)
    if got is not None:
        # Keys the folder leaves out take diffusers' defaults; a wrong one then fails to load.
        got = json.loads(json.dumps(got, default=list))
        diff = sorted(k for k in got if want.get(k) != got[k])
        if diff:
            raise UserInputError(where, f"checkpoint '{ckpt}' was distilled from a different transformer (differs in: "
                                 f"{', '.join(diff)})", "distill a student from this suite's model")
    try:
        student = QwenImageTransformer2DModel.from_pretrained(str(ckpt), torch_dtype=dtype, use_safetensors=True)
    except (OSError, ValueError, RuntimeError) as err:
        raise UserInputError(where, f"cannot load the transformer in '{ckpt}': {str(err).splitlines()[0][:300]}") from None
    return student.to(device).eval().requires_grad_(False), meta

