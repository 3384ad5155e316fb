"""Case sets: a fixed, versioned list of (instruction, input images, optional mask) edits.

A case set is a folder::

    edit-v1/
        cases.jsonl      # one JSON object per line (the manifest)
        images/*.png     # input images, referenced from the manifest
        masks/*.png      # optional masks: white = the edit may change it, black = must stay
        README.md        # provenance and licenses

Each manifest line has the keys ``id``, ``category``, ``language``, ``instruction``,
``target_caption``, ``images`` (1-3 paths relative to the folder), ``mask`` (path or null) and
``source``, and optionally ``expected_text`` (the text the edited image must show, for the OCR
metrics ``text_accuracy``/``text_found``; since ``edit-v2``).

A **chained case** (since ``edit-v3``) replaces ``instruction``, ``mask`` and ``expected_text`` with
``turns``: a list of 2-10 objects ``{"instruction", "mask" (optional), "expected_text" (optional)}``
applied in order, each turn's output the next turn's input. Its fidelity to the original source is
judged outside the union of the masks of the turns so far (`Case.turn`). `load_case_set` validates everything
up front, so a broken set fails in one clear line before any GPU time is spent, and computes a
fingerprint over the manifest and every referenced file so that results from different set
contents are never compared.

A team's own set may use its own categories: any lower-kebab-case label (``logo-swap``,
``watermark``) is accepted; `CATEGORIES` lists the built-in ones for documentation. The
``target_caption`` may be in Chinese (or any language): ``clip_score``, whose CLIP text encoder
reads English only, is then ``null`` with the reason "target caption is not English"; the other
metrics never read the caption.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path, PurePosixPath

import numpy as np
from PIL import Image, UnidentifiedImageError

from .errors import UserInputError, did_you_mean
from .pixels import ImageModeError, as_rgb

DEFAULT_MAX_IMAGE_PIXELS = 4096 * 4096  # decompression-bomb guard
DEFAULT_MAX_INSTRUCTION_CHARS = 2000
# CLIP's text encoder sees at most 77 tokens; a caption much longer than this is cut off
# silently, so the tail would not count towards CLIP-Score. Refuse it instead.
MAX_CAPTION_CHARS = 300
# OCR reads a short line or two; a paragraph is not a text-edit target.
MAX_EXPECTED_TEXT_CHARS = 100
MAX_IMAGES_PER_CASE = 3  # Qwen-Image-Edit-2509 takes 1-3 input images
MAX_ID_CHARS = 64
MAX_CATEGORY_CHARS = 40

# The built-in categories of the shipped sets (documentation and ordering only: a case set may
# use any lower-kebab-case label, e.g. "logo-swap").
CATEGORIES: tuple[str, ...] = (
    "remove-object",
    "text-replace",
    "text-add",
    "background-change",
    "recolor",
    "material-style",
    "add-object",
    "portrait-retouch",
    "product-retouch",
)
LANGUAGES: tuple[str, ...] = ("en", "zh")
MANIFEST_NAME = "cases.jsonl"

# key -> expected JSON type(s), in the documented order
_KEYS: dict[str, tuple[type, ...]] = {
    "id": (str,),
    "category": (str,),
    "language": (str,),
    "instruction": (str,),
    "target_caption": (str,),
    "images": (list,),
    "mask": (str, type(None)),
    "source": (str,),
}
# optional key -> expected JSON type(s); absent = None
_OPTIONAL_KEYS: dict[str, tuple[type, ...]] = {
    "expected_text": (str,),
    "turns": (list,),
}
# A chained case's turns stand in for these keys.
_TURN_KEYS: dict[str, tuple[type, ...]] = {
    "instruction": (str,),
    "mask": (str, type(None)),
    "expected_text": (str,),
}
MIN_TURNS, MAX_TURNS = 2, 10
TURN_SEP = "@t"  # a turn's id: "<case id>@t<k>", k from 1 (its output is images/<variant>/<id>.png)
_ID_RE = re.compile(r"^[a-z0-9]+(?:-[a-z0-9]+)*$")
_CJK_RE = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")
_LATIN_RE = re.compile(r"[A-Za-z]")
# Modes a mask may have: single channel, or grey stored as RGB(A)/LA/P (checked per pixel).
_MASK_MODES = ("1", "L", "LA", "P", "RGB", "RGBA")

_FINGERPRINT_DOMAIN = b"qie-bench case set v1\0"
# Only plain raster formats are opened. Pillow would otherwise also "open" formats such as EPS
# by running Ghostscript, which a data folder must never be able to trigger.
IMAGE_FORMATS: tuple[str, ...] = ("PNG", "JPEG", "WEBP")


@dataclass(frozen=True)
class Case:
    """One edit: instruction + 1-3 input images (+ optional mask of what may change)."""

    id: str
    category: str
    language: str  # "en" | "zh"
    instruction: str
    target_caption: str  # description of the intended result, for CLIP-Score (which reads English only)
    image_paths: tuple[Path, ...]  # absolute, resolved, inside the set's folder
    mask_path: Path | None
    source: str
    expected_text: str | None = None  # the text the output must show (text cases), for OCR metrics
    turns: tuple[Turn, ...] = ()  # a chained case's turns (empty for a single edit)
    # For a turn of a chain (`Case.turn`): the original first image, the masks of turns 1..k and the
    # file holding the previous turn's output (read from the run directory when the turn runs).
    chain_id: str | None = None
    turn_index: int | None = None  # 1-based
    original_image_path: Path | None = None
    union_mask_paths: tuple[Path | None, ...] = ()
    previous_output: Path | None = None

    @property
    def is_chain(self) -> bool:
        return bool(self.turns)

    def turn(self, k: int, previous_output: Path | None) -> Case:
        """Turn ``k`` (1-based) of this chain as a case of its own: id ``<id>@t<k>``, the turn's
        instruction and expected text; its input is ``previous_output`` (the previous turn's output
        image, None for turn 1) in place of the first image; its mask, for fidelity to the original,
        is the union of the masks of turns 1..k (None, i.e. the whole image may change, as soon as
        one of them has no mask); metrics read the original first image as the source."""
        if not 1 <= k <= len(self.turns):
            raise ValueError(f"case '{self.id}' has {len(self.turns)} turns, not turn {k}")
        if (k == 1) != (previous_output is None):
            raise ValueError("turn 1 reads the case's images; every later turn needs the previous output")
        t = self.turns[k - 1]
        return replace(
            self, id=f"{self.id}{TURN_SEP}{k}", instruction=t.instruction, expected_text=t.expected_text,
            mask_path=t.mask_path, turns=(), chain_id=self.id, turn_index=k, original_image_path=self.image_paths[0],
            union_mask_paths=tuple(u.mask_path for u in self.turns[:k]), previous_output=previous_output)

    def load_source(self) -> Image.Image:
        """The image fidelity metrics compare with: the first input image; for a chain's turn, the
        chain's original first image (not the previous turn's output)."""
        with Image.open(self._source_path, formats=IMAGE_FORMATS) as im:
            im.load()
            return as_rgb(im).copy()  # 16-bit and float grayscale scaled, not clipped (pixels.py)

    def source_size(self) -> tuple[int, int]:
        """(width, height) of the source `load_source` reads (the first input image; a chain's
        original for each of its turns): the aspect ratio a suite's ``area`` gives the output, so
        every turn of a chain is made at the size of its first."""
        with Image.open(self._source_path, formats=IMAGE_FORMATS) as im:
            return im.size

    @property
    def _source_path(self) -> Path:
        return self.original_image_path or self.image_paths[0]

    def load_images(self) -> list[Image.Image]:
        """The input images as fully loaded 8-bit RGB images, in manifest order (picture 1, 2, 3);
        16-bit and float grayscale are scaled as the metrics scale them (`pixels.as_rgb`)."""
        out = []
        paths = self.image_paths
        if self.previous_output is not None:
            if not self.previous_output.is_file():
                raise FileNotFoundError(f"turn {self.turn_index} of '{self.chain_id}' needs the previous turn's "
                                        f"output {self.previous_output}, which is missing (that turn failed)")
            paths = (self.previous_output, *paths[1:])
        for p in paths:
            with Image.open(p, formats=IMAGE_FORMATS) as im:
                im.load()
                out.append(as_rgb(im).copy())  # a copy: detached from the file, even when already RGB
        return out

    def load_mask(self) -> np.ndarray | None:
        """The mask as a bool HxW array (True = the edit may change this pixel), or None."""
        if self.union_mask_paths:  # a chain's turn: every region edited so far
            if any(p is None for p in self.union_mask_paths):
                return None
            union = None
            for p in self.union_mask_paths:
                assert p is not None
                with Image.open(p, formats=IMAGE_FORMATS) as im:
                    m = _mask_to_bool(im)
                union = m if union is None else union | m
            return union
        if self.mask_path is None:
            return None
        with Image.open(self.mask_path, formats=IMAGE_FORMATS) as im:
            return _mask_to_bool(im)

    def seed(self, base_seed: int = 0) -> int:
        """Generation seed derived from the case id only, so it does not depend on run order,
        selection or resume; every variant sees the same noise for the same case."""
        return case_seed(self.id, base_seed)


@dataclass(frozen=True)
class Turn:
    """One turn of a chained case."""

    instruction: str
    mask_path: Path | None = None
    expected_text: str | None = None


def case_seed(case_id: str, base_seed: int = 0) -> int:
    """32-bit seed from ``sha256(f"{base_seed}:{case_id}")`` (big-endian first 4 bytes)."""
    return int.from_bytes(hashlib.sha256(f"{base_seed}:{case_id}".encode()).digest()[:4], "big")


@dataclass(frozen=True)
class CaseSet:
    """A validated case set. ``fingerprint`` identifies its exact content."""

    name: str  # folder name, e.g. "edit-v1"
    root: Path
    cases: tuple[Case, ...]
    # "sha256:<hex>" over the manifest bytes and every referenced file, in manifest order
    fingerprint: str
    _ids: dict[str, Case] = field(default_factory=dict, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        self._ids.update({c.id: c for c in self.cases})

    def __len__(self) -> int:
        return len(self.cases)

    def __iter__(self) -> Iterator[Case]:
        return iter(self.cases)

    def get(self, case_id: str) -> Case:
        try:
            return self._ids[case_id]
        except KeyError:
            hint = did_you_mean(case_id, self._ids)
            raise UserInputError(f"case set '{self.name}'", f"no case {_q(case_id)}", hint) from None

    def select(self, ids_or_categories: Sequence[str]) -> CaseSet:
        """The cases whose id or category is named, in manifest order.

        An empty selection means "all" (a suite's ``select = []``). The subset gets its own
        fingerprint (the full set's plus the selected ids), so a run over a subset is never
        mistaken for a run over the whole set, while the same subset of the same set always
        fingerprints the same.
        """
        if isinstance(ids_or_categories, str):  # a lone string would be iterated per character
            ids_or_categories = [ids_or_categories]
        if not ids_or_categories:
            return self
        used_categories = {c.category for c in self.cases}
        for name in ids_or_categories:
            if name in self._ids or name in used_categories:
                continue
            if name in CATEGORIES:
                raise UserInputError(
                    f"case set '{self.name}'",
                    f"category '{name}' has no cases in this set",
                    f"categories here: {', '.join(sorted(used_categories))}",
                )
            hint = did_you_mean(name, [*self._ids, *used_categories])
            raise UserInputError(
                f"case set '{self.name}'",
                f"no case id or category {_q(name)}",
                hint or "run 'qie-bench cases list DIR' to see the ids",
            )
        wanted = set(ids_or_categories)
        chosen = tuple(c for c in self.cases if c.id in wanted or c.category in wanted)
        if len(chosen) == len(self.cases):
            return self
        h = hashlib.sha256(_FINGERPRINT_DOMAIN + b"subset\0" + self.fingerprint.encode() + b"\0")
        h.update("\n".join(c.id for c in chosen).encode())
        return CaseSet(name=self.name, root=self.root, cases=chosen, fingerprint=f"sha256:{h.hexdigest()}")

    def categories(self) -> tuple[str, ...]:
        """The categories used here: built-in ones in `CATEGORIES` order, then a team's own in
        manifest order."""
        used = dict.fromkeys(c.category for c in self.cases)
        return (*(cat for cat in CATEGORIES if cat in used), *(cat for cat in used if cat not in CATEGORIES))

    def summary(self) -> dict[str, object]:
        """Counts used by `qie-bench cases validate` and run records."""
        langs = {lang: sum(c.language == lang for c in self.cases) for lang in LANGUAGES}
        return {
            "name": self.name,
            "cases": len(self.cases),
            "with_mask": sum(c.mask_path is not None for c in self.cases),
            "multi_image": sum(len(c.image_paths) > 1 for c in self.cases),
            "chains": sum(c.is_chain for c in self.cases),
            "languages": langs,
            "categories": {cat: sum(c.category == cat for c in self.cases) for cat in self.categories()},
            "fingerprint": self.fingerprint,
        }


# ----------------------------------------------------------------------------------------------
# Loading and validation
# ----------------------------------------------------------------------------------------------


@dataclass
class _FileInfo:
    digest: bytes
    size: tuple[int, int] | None  # (width, height) once decoded, None with check_images=False
    mode: str | None


def load_case_set(
    path: str | Path,
    *,
    max_image_pixels: int = DEFAULT_MAX_IMAGE_PIXELS,
    max_instruction_chars: int = DEFAULT_MAX_INSTRUCTION_CHARS,
    check_images: bool = True,
) -> CaseSet:
    """Load and validate the case set in folder ``path``.

    Raises `UserInputError` naming the file, line and case at the first problem. With
    ``check_images`` every referenced image and mask is opened and fully decoded once (so a
    truncated file fails here, not an hour into a run); without it only the manifest, the paths
    and the file bytes (for the fingerprint) are checked.
    """
    shown = Path(path)  # paths in messages are shown as the user gave them
    root_in = Path(path).expanduser()
    if not root_in.exists():
        raise UserInputError(str(shown), "case-set folder does not exist", "pass the folder that holds cases.jsonl")
    if not root_in.is_dir():
        fix = (
            f"pass its folder '{shown.parent}'"
            if root_in.name == MANIFEST_NAME
            else "pass the folder that holds cases.jsonl"
        )
        raise UserInputError(str(shown), "is not a directory", fix)
    root = root_in.resolve()
    manifest = root_in / MANIFEST_NAME
    mshown = str(shown / MANIFEST_NAME)
    if not manifest.is_file():
        raise UserInputError(
            mshown,
            "manifest is missing",
            f"a case set is a folder with a {MANIFEST_NAME} file, one JSON object per line",
        )
    raw = manifest.read_bytes()
    try:
        text = raw.decode("utf-8-sig")  # tolerate a BOM some editors add
    except UnicodeDecodeError as err:
        raise UserInputError(mshown, f"is not UTF-8 text (byte {err.start})", "save it as UTF-8") from None

    cases: list[Case] = []
    seen: dict[str, int] = {}  # id -> line
    # each file is read (and decoded) once even when several cases share it; keyed by role
    # too, because a file used as a mask gets the mask checks
    files: dict[tuple[Path, bool], _FileInfo] = {}
    refs: list[tuple[str, bytes]] = []  # (relative path, digest) in manifest order
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue  # blank lines (e.g. a trailing one) are allowed
        where = f"{mshown}:{lineno}"
        obj = _parse_line(line, where)
        case_id = obj.get("id")
        if isinstance(case_id, str) and case_id:
            where = f"{mshown}:{lineno} (case {_q(case_id)})"
        _check_keys(obj, where)
        if case_id in seen:  # before the images, so a copy-pasted line fails without decoding them
            raise UserInputError(
                where,
                f"duplicate id {_q(str(case_id))} (first used on line {seen[str(case_id)]})",
                "ids must be unique",
            )
        case, case_refs = _validate_case(
            obj, where, root_in, root, files, max_image_pixels, max_instruction_chars, check_images
        )
        seen[case.id] = lineno
        cases.append(case)
        refs.extend(case_refs)
    if not cases:
        raise UserInputError(mshown, "manifest is empty (no cases)", "add one JSON object per line")

    h = hashlib.sha256(_FINGERPRINT_DOMAIN)
    # Length-prefix the manifest and name each file, so no two different sets can hash alike
    # by shifting bytes between manifest and files.
    h.update(len(raw).to_bytes(8, "big") + raw)
    for rel, digest in refs:
        h.update(rel.encode() + b"\0" + digest)
    return CaseSet(name=root.name, root=root, cases=tuple(cases), fingerprint=f"sha256:{h.hexdigest()}")


def _parse_line(line: str, where: str) -> dict[str, object]:
    def no_duplicate_keys(pairs: list[tuple[str, object]]) -> dict[str, object]:
        out: dict[str, object] = {}
        for k, v in pairs:
            if k in out:
                raise UserInputError(where, f"key {_q(k)} appears twice", "keep one")
            out[k] = v
        return out

    try:
        obj = json.loads(line, object_pairs_hook=no_duplicate_keys)
    except json.JSONDecodeError as err:
        raise UserInputError(
            where, f"not valid JSON: {err.msg} at column {err.colno}", "each line must be one JSON object"
        ) from None
    if not isinstance(obj, dict):
        raise UserInputError(
            where, f"expected a JSON object, got {_json_type(obj)}", "each line must be one JSON object {...}"
        )
    return obj


def _check_keys(obj: dict[str, object], where: str) -> None:
    allowed = {**_KEYS, **_OPTIONAL_KEYS}
    if "turns" in obj:  # a chained case: its turns carry the instruction, mask and expected text
        for key in _TURN_KEYS:
            if key in obj:
                raise UserInputError(where, f"has both 'turns' and '{key}'", f"a chained case puts '{key}' in each turn")
        allowed = {k: v for k, v in allowed.items() if k not in _TURN_KEYS}
    for key in obj:
        if key not in allowed:
            hint = did_you_mean(key, allowed)
            raise UserInputError(where, f"unknown key {_q(key)}", hint or f"allowed keys: {', '.join(allowed)}")
    for key, types in allowed.items():
        if key not in obj:
            if key in _OPTIONAL_KEYS:
                continue
            raise UserInputError(where, f"missing key '{key}'", f"every case needs: {', '.join(_KEYS)}")
        if not isinstance(obj[key], types):
            want = " or ".join(_json_type_name(t) for t in types)
            raise UserInputError(where, f"'{key}' must be {want}, got {_json_type(obj[key])}")


def _validate_case(
    obj: dict[str, object],
    where: str,
    root_in: Path,
    root: Path,
    files: dict[tuple[Path, bool], _FileInfo],
    max_image_pixels: int,
    max_instruction_chars: int,
    check_images: bool,
) -> tuple[Case, list[tuple[str, bytes]]]:
    case_id = str(obj["id"])
    if not _ID_RE.match(case_id) or len(case_id) > MAX_ID_CHARS:
        raise UserInputError(
            where,
            f"bad id {_q(case_id)}",
            f"use lowercase letters, digits and single hyphens, at most {MAX_ID_CHARS} characters, e.g. 'rm-watermark-bottle'",
        )
    category = str(obj["category"])
    if not _ID_RE.match(category) or len(category) > MAX_CATEGORY_CHARS:
        kebab = re.sub(r"[\s_]+", "-", category.strip().lower())
        near = f"did you mean '{kebab}'?" if _ID_RE.match(kebab) and len(kebab) <= MAX_CATEGORY_CHARS else None
        raise UserInputError(
            where,
            f"bad category {_q(category)}",
            near
            or f"a category is a label in lowercase letters, digits and single hyphens, at most {MAX_CATEGORY_CHARS} "
            "characters, e.g. 'text-replace' or your own 'logo-swap'",
        )
    language = str(obj["language"])
    if language not in LANGUAGES:
        raise UserInputError(
            where, f"unknown language {_q(language)}", did_you_mean(language, LANGUAGES) or "use 'en' or 'zh'"
        )

    raw_turns = obj.get("turns")
    if raw_turns is not None:
        assert isinstance(raw_turns, list)
        if not MIN_TURNS <= len(raw_turns) <= MAX_TURNS:
            raise UserInputError(where, f"has {len(raw_turns)} turns", f"a chained case takes {MIN_TURNS} to {MAX_TURNS} turns")
        turn_objs: list[tuple[str, dict[str, object]]] = []
        for k, t in enumerate(raw_turns, start=1):
            twhere = f"{where} turn {k}"
            if not isinstance(t, dict):
                raise UserInputError(twhere, f"expected a JSON object, got {_json_type(t)}",
                                     'write {"instruction": ..., "mask": ..., "expected_text": ...}')
            for key in t:
                if key not in _TURN_KEYS:
                    hint = did_you_mean(str(key), _TURN_KEYS)
                    raise UserInputError(twhere, f"unknown key {_q(str(key))}", hint or f"allowed keys: {', '.join(_TURN_KEYS)}")
            if "instruction" not in t:
                raise UserInputError(twhere, "missing key 'instruction'", "every turn needs an instruction")
            for key, types in _TURN_KEYS.items():
                if key in t and not isinstance(t[key], types):
                    want = " or ".join(_json_type_name(ty) for ty in types)
                    raise UserInputError(twhere, f"'{key}' must be {want}, got {_json_type(t[key])}")
            turn_objs.append((twhere, t))
    else:
        turn_objs = [(where, obj)]
    for twhere, t in turn_objs:
        _check_instruction(str(t["instruction"]), language, twhere, max_instruction_chars)
        if t.get("expected_text") is not None:
            _check_expected_text(str(t["expected_text"]), twhere)
    instruction = str(turn_objs[0][1]["instruction"])
    expected_text = obj.get("expected_text")
    caption = str(obj["target_caption"])
    # Any language is accepted; clip_score (English-only text encoder) skips a non-English one.
    _check_text(caption, "target_caption", where, MAX_CAPTION_CHARS)
    source = str(obj["source"])
    if not source.strip():
        raise UserInputError(where, "'source' is empty", "say where the images come from, e.g. 'skimage.data.coffee'")

    images = obj["images"]
    assert isinstance(images, list)
    if not 1 <= len(images) <= MAX_IMAGES_PER_CASE:
        raise UserInputError(
            where, f"has {len(images)} images", f"a case takes 1 to {MAX_IMAGES_PER_CASE} input images"
        )
    for i, p in enumerate(images):
        if not isinstance(p, str):
            raise UserInputError(where, f"images[{i}] must be a string path, got {_json_type(p)}")
    if len(set(images)) != len(images):
        raise UserInputError(where, "lists the same image twice", "each input image once")

    refs: list[tuple[str, bytes]] = []
    image_paths: list[Path] = []
    first_size: tuple[int, int] | None = None
    for i, rel in enumerate(images):
        label = f"image {_q(rel)}"
        p = _resolve(rel, label, where, root_in, root)
        info = _read_file(p, rel, label, where, files, check_images, max_image_pixels, is_mask=False)
        image_paths.append(p)
        refs.append((rel, info.digest))
        if i == 0:
            first_size = info.size

    mask_paths: list[Path | None] = []
    for twhere, t in turn_objs:
        mask_path: Path | None = None
        mask = t.get("mask")
        if mask is not None:
            assert isinstance(mask, str)
            label = f"mask {_q(mask)}"
            mask_path = _resolve(mask, label, twhere, root_in, root)
            info = _read_file(mask_path, mask, label, twhere, files, check_images, max_image_pixels, is_mask=True)
            refs.append((mask, info.digest))
            if check_images and info.size != first_size:
                assert info.size is not None and first_size is not None
                raise UserInputError(
                    twhere,
                    f"{label} is {info.size[0]}x{info.size[1]} but the first image is {first_size[0]}x{first_size[1]}",
                    "a mask must have the first image's size",
                )
        mask_paths.append(mask_path)
    turns = ()
    if raw_turns is not None:
        turns = tuple(Turn(instruction=str(t["instruction"]), mask_path=mp,
                           expected_text=None if t.get("expected_text") is None else str(t["expected_text"]))
                      for (_, t), mp in zip(turn_objs, mask_paths, strict=True))
        expected_text = turns[0].expected_text
    mask_path = mask_paths[0]

    case = Case(
        id=case_id,
        category=category,
        language=language,
        instruction=instruction,
        target_caption=caption,
        image_paths=tuple(image_paths),
        mask_path=mask_path,
        source=source,
        expected_text=expected_text,  # type: ignore[arg-type]
        turns=turns,
    )
    return case, refs


def _check_instruction(instruction: str, language: str, where: str, limit: int) -> None:
    _check_text(instruction, "instruction", where, limit)
    # Catch a mislabelled language: per-language scores would silently mix otherwise.
    n_cjk, n_latin = len(_CJK_RE.findall(instruction)), len(_LATIN_RE.findall(instruction))
    if language == "zh" and n_cjk == 0:
        raise UserInputError(
            where, "language is 'zh' but the instruction has no Chinese characters", "fix 'language' or the instruction"
        )
    if language == "en" and n_cjk > n_latin:
        raise UserInputError(
            where, "language is 'en' but the instruction is mostly Chinese", "fix 'language' or the instruction"
        )


def _check_expected_text(expected_text: str, where: str) -> None:
    _check_text(expected_text, "expected_text", where, MAX_EXPECTED_TEXT_CHARS)
    if not expected_text.isprintable():
        raise UserInputError(
            where, f"'expected_text' {_q(expected_text)} has a line break or control character", "write one line"
        )


def _check_text(value: str, key: str, where: str, limit: int) -> None:
    if not value.strip():
        raise UserInputError(where, f"'{key}' is empty")
    if len(value) > limit:
        raise UserInputError(where, f"'{key}' is {len(value)} characters long, over the limit of {limit}", "shorten it")


def _resolve(rel: str, label: str, where: str, root_in: Path, root: Path) -> Path:
    """Resolve a manifest path, refusing anything that could point outside the set's folder.

    A set is copied, hashed and shipped as one folder; a path outside it would make results
    depend on files that the fingerprint does not cover (or leak arbitrary files into runs).
    """
    if not rel.strip():
        raise UserInputError(where, f"{label}: empty path")
    if "\\" in rel:
        raise UserInputError(
            where, f"{label}: backslash in path", "use '/' separators, relative to the case-set folder"
        )
    pure = PurePosixPath(rel)
    if pure.is_absolute() or re.match(r"^[A-Za-z]:", rel):
        raise UserInputError(
            where, f"{label}: absolute path", "use a path relative to the case-set folder, e.g. 'images/x.png'"
        )
    if ".." in pure.parts:
        raise UserInputError(
            where, f"{label}: path escapes the case-set folder ('..')", "keep images inside the case-set folder"
        )
    resolved = (root_in / pure).resolve()
    if not resolved.is_relative_to(root):
        raise UserInputError(
            where,
            f"{label}: resolves outside the case-set folder (symlink to {resolved})",
            "copy the file into the case-set folder",
        )
    return resolved


def _read_file(
    path: Path,
    rel: str,
    label: str,
    where: str,
    files: dict[tuple[Path, bool], _FileInfo],
    check_images: bool,
    max_pixels: int,
    *,
    is_mask: bool,
) -> _FileInfo:
    cached = files.get((path, is_mask))
    if cached is not None:
        return cached
    if not path.exists():
        raise UserInputError(where, f"{label}: file not found", "check the path, relative to the case-set folder")
    if not path.is_file():
        raise UserInputError(where, f"{label}: not a regular file")
    data = path.read_bytes()
    if not data:
        raise UserInputError(where, f"{label}: file is empty")
    info = _FileInfo(digest=hashlib.sha256(data).digest(), size=None, mode=None)
    if check_images:
        info.size, info.mode = _decode(data, label, where, max_pixels, is_mask=is_mask)
    files[(path, is_mask)] = info
    return info


def _decode(data: bytes, label: str, where: str, max_pixels: int, *, is_mask: bool) -> tuple[tuple[int, int], str]:
    """Open from memory and decode fully; check the pixel count from the header first."""
    try:
        with Image.open(io.BytesIO(data), formats=IMAGE_FORMATS) as im:
            # Image.open only parses the header: refuse oversized images before decoding them.
            w, h = im.size
            if w * h > max_pixels:
                raise UserInputError(
                    where,
                    f"{label} is {w}x{h} = {w * h} pixels, over the limit of {max_pixels}",
                    "resize it (the pipeline works at about 1 megapixel anyway)",
                )
            if w == 0 or h == 0:
                raise UserInputError(where, f"{label} has zero size")
            if getattr(im, "n_frames", 1) > 1:
                raise UserInputError(
                    where, f"{label} has {im.n_frames} frames", "use a single-frame image (PNG or JPEG)"
                )
            mode = im.mode
            if is_mask:
                _check_mask_mode(mode, label, where)
            im.load()  # the full decode: catches truncated and corrupt data
            if is_mask:
                arr = np.asarray(im.convert("RGB") if mode in ("P", "RGB", "RGBA") else im)
                if mode in ("P", "RGB", "RGBA") and not (
                    np.array_equal(arr[..., 0], arr[..., 1]) and np.array_equal(arr[..., 1], arr[..., 2])
                ):
                    raise UserInputError(
                        where,
                        f"{label} has colours, not a grey mask",
                        "save it as a single-channel (L) PNG: white = may change, black = must stay",
                    )
                if not _mask_to_bool(im).any():
                    raise UserInputError(
                        where,
                        f"{label} is all black (nothing may change)",
                        "white marks where the edit may change pixels; drop the mask if everything may change",
                    )
            else:
                as_rgb(im)  # what load_images does: e.g. float values outside [0, 1] fail here
    except ImageModeError as err:
        raise UserInputError(where, f"{label} has image {err.problem}", err.fix) from None
    except UserInputError:
        raise
    except Image.DecompressionBombError as err:
        raise UserInputError(where, f"{label} is too large to open safely ({err})", "resize it") from None
    except UnidentifiedImageError:
        raise UserInputError(where, f"{label} is not a PNG, JPEG or WebP image", "convert it to PNG") from None
    except (OSError, SyntaxError, ValueError, EOFError) as err:
        # Pillow reports truncated/corrupt data as OSError ("image file is truncated") and
        # some broken headers as SyntaxError or ValueError.
        raise UserInputError(
            where, f"{label} is truncated or corrupt: {err}", "regenerate or re-export the file"
        ) from None
    return (w, h), mode


def _check_mask_mode(mode: str, label: str, where: str) -> None:
    if mode not in _MASK_MODES:
        raise UserInputError(
            where,
            f"{label} has image mode {mode}, not a single-channel 8-bit mask",
            "save it as a single-channel (L) PNG: white = may change, black = must stay",
        )


def _mask_to_bool(im: Image.Image) -> np.ndarray:
    """True where the mask is white-ish. Alpha (LA/RGBA) is ignored: only the grey level counts."""
    grey = im.convert("L") if im.mode != "L" else im
    return np.asarray(grey, dtype=np.uint8) >= 128


def _q(text: str) -> str:
    """Quote a string from the manifest for a one-line message: 'text', or a JSON-escaped form
    when it holds newlines or other control characters (or is very long)."""
    if text.isprintable() and len(text) <= 120:
        return f"'{text}'"
    return json.dumps(text if len(text) <= 120 else text[:117] + "...", ensure_ascii=False)


def _json_type(v: object) -> str:
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "a boolean"
    if isinstance(v, (int, float)):
        return "a number"
    if isinstance(v, str):
        return "a string"
    if isinstance(v, list):
        return "a list"
    if isinstance(v, dict):
        return "an object"
    return type(v).__name__


def _json_type_name(t: type) -> str:
    return {str: "a string", list: "a list", type(None): "null", dict: "an object"}.get(t, t.__name__)
