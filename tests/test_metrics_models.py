"""Model-based metrics (CLIP-IQA, LPIPS, CLIP-Score) against their reference libraries with the
same injected random weights; the real-weights loading paths with stand-in files; the error
when real weights are missing. Nothing is downloaded: the network is refused where it matters."""

from __future__ import annotations

import copy
import hashlib
import math
import time

import numpy as np
import pytest
import torch
from metric_fixtures import (
    empty_caches,
    forbid_network,
    jpeg,
    noisy,
    one_torch_thread,  # noqa: F401  (autouse fixture)
    random_image,
    skimage_photo,
)
from PIL import Image

from qie_bench.errors import UserInputError
from qie_bench.metrics import MetricsConfig, ScoreInputs, Scorer
from qie_bench.metrics import weights as W
from qie_bench.metrics.catalog import clip_iqa as IQA
from qie_bench.metrics.catalog import clip_score as CS
from qie_bench.metrics.catalog import lpips as LP
from qie_bench.metrics.catalog.clip_score import CLIPScore as HarnessCLIPScore
from qie_bench.metrics.catalog.clip_score import clip_score, embedding
from qie_bench.metrics.prepared import Prepared

MODEL_METRICS = ("clip_iqa", "lpips_vs_baseline", "clip_score")


@pytest.fixture(scope="module")
def scorer() -> Scorer:
    return Scorer(MetricsConfig(names=MODEL_METRICS, weights="random", random_seed=0))


def _model(scorer: Scorer, name: str):
    return next(m for m in scorer.metrics if m.name == name).loaded.model


def _photos() -> list[Image.Image]:
    astronaut = skimage_photo("astronaut").reduce(2)
    coffee = skimage_photo("coffee").reduce(2)
    return [astronaut, jpeg(astronaut, 20), coffee, noisy(coffee, 25.0, seed=4), random_image(96, 64, seed=9)]


PHOTOS = _photos()


# -- CLIP-IQA -----------------------------------------------------------------------------


def _sensitive_openai_clip(clip: torch.nn.Module) -> torch.nn.Module:
    """A copy of the tiny random CLIP whose scores actually vary with the image.

    CLIP's own init zeroes every bottleneck's last BatchNorm scale, so a freshly initialised
    ResNet is nearly input-independent and every image scores ~the same: a comparison would pass
    even if the two sides fed different images. Random BN scales and a trained-like logit scale
    (100) spread the scores; both sides get this same copy.
    """
    clip = copy.deepcopy(clip)
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, param in clip.named_parameters():
            if name.endswith("bn3.weight"):
                param.copy_(torch.randn(param.shape, generator=generator))
        clip.logit_scale.fill_(math.log(100.0))
    return clip.eval()


def test_clip_iqa_equals_pyiqa_clipiqa_metric(scorer: Scorer, tmp_path, monkeypatch) -> None:
    import pyiqa

    from qie_bench.metrics.catalog.clip_iqa import CLIPIQA

    clip = _sensitive_openai_clip(_model(scorer, "clip_iqa").clip_model[0])
    ours = CLIPIQA(W.LoadedModel(IQA.CLIP_RN50.key, IQA.build_clipiqa(copy.deepcopy(clip), "cpu"), "tiny", "random", "test"))

    # pyiqa's own metric, end to end: create_metric("clipiqa") reading the PNG files itself, with
    # the same CLIP handed to CLIPIQA through the loader it calls.
    clipiqa_arch = IQA.import_pyiqa_clipiqa()
    monkeypatch.setattr(clipiqa_arch, "load", lambda *args, **kwargs: copy.deepcopy(clip))
    reference = pyiqa.create_metric("clipiqa", device="cpu")

    paths = []
    for i, image in enumerate(PHOTOS):
        paths.append(tmp_path / f"{i}.png")
        image.save(paths[-1])
    expected = [float(reference(str(path))) for path in paths]
    got = [r.value for r in ours([Prepared(ScoreInputs(output=image, source=image)) for image in PHOTOS])]
    np.testing.assert_allclose(got, expected, atol=1e-6, rtol=0)
    # Sensitive: the images' scores differ by far more than the tolerance, so feeding one side a
    # differently converted image (or another image) would fail.
    assert max(expected) - min(expected) > 100 * 1e-6


def test_clip_iqa_batches_by_size(scorer: Scorer) -> None:
    """score_many stacks same-size outputs; results equal one-at-a-time scoring."""
    batch = [ScoreInputs(output=image, source=image) for image in PHOTOS + PHOTOS[:2]]
    assert [r["clip_iqa"] for r in scorer.score_many(batch)] == pytest.approx(
        [scorer.score(item)["clip_iqa"] for item in batch], abs=1e-6
    )


# -- LPIPS --------------------------------------------------------------------------------

LPIPS_PAIRS = [(jpeg(PHOTOS[0], 20), PHOTOS[0]), (PHOTOS[3], PHOTOS[2]), (random_image(96, 64, 1), PHOTOS[4])]


def _alexnet_returning(features_state: dict):
    """A stand-in for ``torchvision.models.alexnet`` that ignores ``weights`` (no download) and
    carries the given feature weights."""
    import torchvision

    def alexnet(*args, **kwargs):
        model = torchvision.models.AlexNet()
        model.features.load_state_dict(features_state)
        return model

    return alexnet


def _features_state(net: torch.nn.Module) -> dict:
    return {k.split(".", 1)[1]: v for k, v in net.net.state_dict().items()}  # slice2.3.weight -> 3.weight


def _harness_lpips(scorer: Scorer) -> list[float]:
    return [
        scorer.score(ScoreInputs(output=out, source=base, baseline_output=base))["lpips_vs_baseline"]
        for out, base in LPIPS_PAIRS
    ]


def test_lpips_equals_torchmetrics_class(scorer: Scorer, monkeypatch) -> None:
    import torchvision
    from torchmetrics.image import LearnedPerceptualImagePatchSimilarity

    from qie_bench.metrics.images import to_tensor

    net = _model(scorer, "lpips_vs_baseline")
    monkeypatch.setattr(torchvision.models, "alexnet", _alexnet_returning(_features_state(net)))
    forbid_network(monkeypatch)
    reference = LearnedPerceptualImagePatchSimilarity(net_type="alex", normalize=True, reduction="none")
    assert all(torch.equal(a, b) for a, b in zip(reference.net.state_dict().values(), net.state_dict().values(), strict=True))
    expected = [float(reference(to_tensor(out), to_tensor(base))) for out, base in LPIPS_PAIRS]
    np.testing.assert_allclose(_harness_lpips(scorer), expected, atol=1e-6, rtol=0)


def test_lpips_equals_pyiqa_lpips_arch(scorer: Scorer, monkeypatch) -> None:
    """Cross-implementation: pyiqa's LPIPS (from the original repo too) with identical weights.

    The two differ only in the feature-normalisation epsilon (x / (|x| + 1e-10) vs
    x / sqrt(|x|^2 + 1e-8)), hence 1e-5 rather than 1e-6.
    """
    from pyiqa.archs import lpips_arch

    from qie_bench.metrics.images import to_tensor

    net = _model(scorer, "lpips_vs_baseline")
    monkeypatch.setattr(lpips_arch.models, "alexnet", _alexnet_returning(_features_state(net)))
    reference = lpips_arch.LPIPS(pretrained=False, net="alex", version="0.1")
    missing, unexpected = reference.load_state_dict(net.state_dict(), strict=False)
    assert set(missing) <= {"scaling_layer.shift", "scaling_layer.scale"} and not unexpected
    with torch.no_grad():
        expected = [float(reference(to_tensor(out), to_tensor(base), normalize=True)) for out, base in LPIPS_PAIRS]
    np.testing.assert_allclose(_harness_lpips(scorer), expected, atol=1e-5, rtol=0)


def test_lpips_of_identical_images_is_zero(scorer: Scorer) -> None:
    image = PHOTOS[2]
    assert scorer.score(ScoreInputs(output=image, source=image, baseline_output=image.copy()))["lpips_vs_baseline"] == 0.0


# -- CLIP-Score ---------------------------------------------------------------------------

CAPTIONS = [
    "an astronaut in a white suit in front of a flag",
    "a blurry photo of an astronaut",
    "an espresso cup on a red saucer on a wooden table",
    "一只放在红色碟子上的咖啡杯",  # Chinese: byte-level BPE must handle it
    "random noise, don't look!",
]


def test_offline_clip_tokenizer_matches_openai_clip_tokenize() -> None:
    IQA.import_pyiqa_clipiqa()  # imports openai-clip (with the pkg_resources shim if needed)
    import clip

    tokenizer = CS.build_clip_tokenizer()
    assert len(tokenizer) == 49408
    for caption in CAPTIONS + ["A   MULTI\tspace  Caption", "x" * 300]:
        expected = clip.tokenize([caption], truncate=True)[0]
        ids = tokenizer(caption, truncation=True, max_length=77)["input_ids"]
        assert ids == expected[: len(ids)].tolist() and expected[len(ids):].eq(0).all(), caption


def _sensitive_hf_clip(model):
    """A copy of the tiny random CLIPModel with positive, input-dependent image-text cosines.

    Fresh random towers give cosines around 0, which CLIPScore clamps to 0 — equal on both sides
    whatever they compute. Giving both final layer norms the same large bias and both projections
    the same weights makes every cosine clearly positive while keeping it input-dependent.
    """
    model = copy.deepcopy(model)
    generator = torch.Generator().manual_seed(2)
    bias = torch.randn(model.vision_model.post_layernorm.bias.shape, generator=generator)
    with torch.no_grad():
        for norm in (model.vision_model.post_layernorm, model.text_model.final_layer_norm):
            norm.weight.fill_(0.5)
            norm.bias.copy_(bias)
        model.text_projection.weight.copy_(model.visual_projection.weight)
    return model.eval()


class _TensorFeatures(torch.nn.Module):
    """Adapter so torchmetrics 1.9's CLIPScore works with transformers 5 (features as tensors)."""

    def __init__(self, model) -> None:
        super().__init__()
        self.model = model
        self.config = model.config

    def get_image_features(self, *args, **kwargs):
        return embedding(self.model.get_image_features(*args, **kwargs))

    def get_text_features(self, *args, **kwargs):
        return embedding(self.model.get_text_features(*args, **kwargs))


def test_clip_score_equals_torchmetrics_clipscore(scorer: Scorer) -> None:
    from torchmetrics.multimodal import CLIPScore

    model, processor = _model(scorer, "clip_score")
    model = _sensitive_hf_clip(model)
    ours = HarnessCLIPScore(W.LoadedModel(CS.CLIP_VIT_L14.key, (model, processor), "tiny", "random", "test"))
    batch = [Prepared(ScoreInputs(output=img, source=img, caption=cap)) for img, cap in zip(PHOTOS, CAPTIONS, strict=True)]
    got = [result.value for result in ours(batch)]

    reference = CLIPScore(model_name_or_path=lambda: (_TensorFeatures(model), processor))
    expected = []
    for image, caption in zip(PHOTOS, CAPTIONS, strict=True):
        reference.reset()
        reference.update(torch.from_numpy(np.asarray(image).copy()).permute(2, 0, 1), caption)  # uint8 CHW, as documented
        expected.append(float(reference.compute()))
    # The metric does not score the Chinese caption (CLIP's text encoder is English-only); the
    # function still handles its bytes exactly as torchmetrics does.
    chinese = CAPTIONS.index("一只放在红色碟子上的咖啡杯")
    assert got[chinese] is None
    function = clip_score(PHOTOS, CAPTIONS, model, processor).tolist()
    np.testing.assert_allclose(function, expected, atol=1e-4, rtol=0)  # scores are on a 0..100 scale
    np.testing.assert_allclose([v for i, v in enumerate(got) if i != chinese],
                               [v for i, v in enumerate(expected) if i != chinese], atol=1e-4, rtol=0)
    assert min(expected) > 0 and max(expected) - min(expected) > 0.1  # sensitive, not clamped


def test_clip_score_long_caption_is_truncated_not_an_error(scorer: Scorer) -> None:
    long_caption = "a very detailed caption " * 40  # ~160 tokens
    value = scorer.score(ScoreInputs(output=PHOTOS[0], source=PHOTOS[0], caption=long_caption))["clip_score"]
    assert 0.0 <= value <= 100.0


def test_missing_caption_and_baseline_give_none(scorer: Scorer) -> None:
    results, _ = scorer.score_detailed(ScoreInputs(output=PHOTOS[0], source=PHOTOS[0], caption="  "))
    assert results["clip_score"].value is None and results["clip_score"].reason == "no target caption"
    assert results["lpips_vs_baseline"].value is None
    assert results["clip_iqa"].value is not None


# -- random weights: reproducible, stamped ----------------------------------------------------


def test_random_weights_are_seeded_and_stamped(scorer: Scorer) -> None:
    inputs = ScoreInputs(output=PHOTOS[1], source=PHOTOS[0], baseline_output=PHOTOS[0], caption=CAPTIONS[0])
    again = Scorer(MetricsConfig(names=MODEL_METRICS, weights="random", random_seed=0))
    other = Scorer(MetricsConfig(names=("lpips_vs_baseline",), weights="random", random_seed=1))
    assert again.score(inputs) == scorer.score(inputs)
    assert other.score(inputs)["lpips_vs_baseline"] != scorer.score(inputs)["lpips_vs_baseline"]
    assert scorer.weights_kind == "random"
    for name, info in scorer.describe().items():
        assert info["weights"] == "random" and info["weights_source"] == "random init (seed 0)", name
        assert info["version"] and info["backbone"]


def test_building_random_models_leaves_the_global_rng_alone() -> None:
    torch.manual_seed(1234)
    expected = torch.rand(3)
    torch.manual_seed(1234)
    Scorer(MetricsConfig(names=("clip_iqa",), weights="random", random_seed=5))  # tiny CLIP init draws from torch's RNG
    assert torch.equal(torch.rand(3), expected)


def test_timings_random_scorer_build_and_scoring(capsys) -> None:
    """The runner builds a Scorer per run and scores every output: both must be cheap on CPU.

    Measured here with imports already done (the runner imports torch/transformers anyway).
    Bounds are loose (shared CI machines); the printed numbers are the information.
    """
    started = time.perf_counter()
    scorer = Scorer(MetricsConfig(weights="random"))
    build = time.perf_counter() - started
    source = skimage_photo("astronaut").reduce(2)  # 256 x 256
    inputs = ScoreInputs(
        output=jpeg(source, 30), source=source, baseline_output=noisy(source, 5.0, 1),
        mask=np.zeros((256, 256), dtype=bool) | (np.arange(256)[:, None] < 64), caption=CAPTIONS[0],
    )
    scorer.score(inputs)  # warm-up (first-call allocations)
    started = time.perf_counter()
    for _ in range(3):
        scorer.score(inputs)
    per_output = (time.perf_counter() - started) / 3
    with capsys.disabled():
        print(f"\n[metrics timing] Scorer(weights='random') build {build:.2f} s; "
              f"all 9 metrics on one 256x256 output {per_output * 1000:.0f} ms ({torch.get_num_threads()} torch thread)")
    assert build < 30 and per_output < 5


# -- real weights: loading paths (with stand-in files) and the missing-weights error ------------


def test_real_weights_missing_raise_user_error_listing_where_it_looked(tmp_path, monkeypatch) -> None:
    empty_caches(monkeypatch, tmp_path)
    forbid_network(monkeypatch)
    weights_dir = tmp_path / "no-such-dir"
    started = time.perf_counter()
    with pytest.raises(UserInputError) as info:
        Scorer(MetricsConfig(weights="real", weights_dir=str(weights_dir)))
    assert time.perf_counter() - started < 10  # file checks only: no timeout, no retry
    message = str(info.value)
    for expected in (
        str(weights_dir / "RN50.pt"),
        str(tmp_path / "torch" / "hub" / "clip" / "RN50.pt"),
        str(tmp_path / "home" / ".cache" / "clip" / "RN50.pt"),
        str(tmp_path / "torch" / "hub" / "checkpoints" / "alexnet-owt-7be5be79.pth"),
        str(tmp_path / "hf" / "hub" / "models--openai--clip-vit-large-patch14"),
        f"weights_dir {weights_dir} does not exist",
        "clip_iqa", "lpips_vs_baseline", "clip_score", "--weights random",
    ):
        assert expected in message, expected


def test_real_weights_only_needed_for_requested_metrics(tmp_path, monkeypatch) -> None:
    empty_caches(monkeypatch, tmp_path)
    forbid_network(monkeypatch)
    scorer = Scorer(MetricsConfig(names=("ssim", "psnr"), weights="real"))  # nothing to load
    assert scorer.score(ScoreInputs(output=PHOTOS[0], source=PHOTOS[0]))["psnr"] == math.inf


def test_real_clip_rn50_file_is_verified_and_loaded(tmp_path, monkeypatch) -> None:
    empty_caches(monkeypatch, tmp_path)
    forbid_network(monkeypatch)
    weights_dir = tmp_path / "weights"
    weights_dir.mkdir()
    # A stand-in RN50.pt: the tiny CLIP as a plain state dict (pyiqa's own loader fails on those).
    saved = IQA.tiny_openai_clip(seed=3).state_dict()
    torch.save(saved, weights_dir / "RN50.pt")
    monkeypatch.setattr(IQA, "CLIP_RN50_SHA256", hashlib.sha256((weights_dir / "RN50.pt").read_bytes()).hexdigest())

    scorer = Scorer(MetricsConfig(names=("clip_iqa",), weights="real", weights_dir=str(weights_dir)))
    info = scorer.describe()["clip_iqa"]
    assert info["weights"] == "real" and info["weights_source"] == str(weights_dir / "RN50.pt")
    loaded = _model(scorer, "clip_iqa").clip_model[0].state_dict()
    for key, value in saved.items():  # pyiqa's build_model rounds through fp16, as for real RN50
        expected = value.half().float() if value.is_floating_point() and key in loaded and value.dim() > 1 else value
        assert torch.equal(loaded[key].to(expected.dtype), expected) or torch.allclose(loaded[key], value, atol=1e-3), key
    assert 0.0 <= scorer.score(ScoreInputs(output=PHOTOS[0], source=PHOTOS[0]))["clip_iqa"] <= 1.0

    # A file with the right name but the wrong content is reported, not used (nor re-downloaded).
    monkeypatch.setattr(IQA, "CLIP_RN50_SHA256", "0" * 64)
    with pytest.raises(UserInputError, match="SHA-256 does not match"):
        Scorer(MetricsConfig(names=("clip_iqa",), weights="real", weights_dir=str(weights_dir)))


def test_real_alexnet_file_is_loaded_into_lpips(tmp_path, monkeypatch) -> None:
    import torchvision

    empty_caches(monkeypatch, tmp_path)
    forbid_network(monkeypatch)
    name, _ = LP.alexnet_file()
    checkpoints = tmp_path / "torch" / "hub" / "checkpoints"  # torchvision's cache, via TORCH_HOME
    checkpoints.mkdir(parents=True)
    # Random tensors under torchvision's key names; only `features.*` matter to LPIPS (the real
    # file's 58M classifier weights would just make the test slow).
    generator = torch.Generator().manual_seed(7)
    features = torchvision.models.alexnet().features.state_dict()
    state = {f"features.{k}": torch.randn(v.shape, generator=generator) for k, v in features.items()}
    torch.save(state, checkpoints / name)
    monkeypatch.setattr(LP, "alexnet_file", lambda: (name, ""))  # stand-in file: skip the hash check

    scorer = Scorer(MetricsConfig(names=("lpips_vs_baseline",), weights="real"))
    trunk = _model(scorer, "lpips_vs_baseline").net.state_dict()
    for key, value in trunk.items():
        assert torch.equal(value, state["features." + key.split(".", 1)[1]]), key
    assert scorer.describe()["lpips_vs_baseline"]["weights_source"] == str(checkpoints / name)


@pytest.mark.parametrize("layout", ["weights_dir", "hf_cache"])
def test_real_hf_clip_folder_is_loaded_offline(scorer: Scorer, tmp_path, monkeypatch, layout: str) -> None:
    model, processor = _model(scorer, "clip_score")
    if layout == "weights_dir":
        folder = tmp_path / "weights" / "clip-vit-large-patch14"
        config_kwargs = {"weights_dir": str(tmp_path / "weights")}
    else:  # a hub-cache snapshot under $HF_HOME/hub, found through refs/main
        repo = tmp_path / "hf" / "hub" / "models--openai--clip-vit-large-patch14"
        folder = repo / "snapshots" / "0123abcd"
        (repo / "refs").mkdir(parents=True)
        (repo / "refs" / "main").write_text("0123abcd")
        config_kwargs = {}
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    empty_caches(monkeypatch, tmp_path)
    forbid_network(monkeypatch)

    real = Scorer(MetricsConfig(names=("clip_score",), weights="real", **config_kwargs))
    assert real.describe()["clip_score"]["weights_source"] == str(folder)
    inputs = ScoreInputs(output=PHOTOS[0], source=PHOTOS[0], caption=CAPTIONS[0])
    loaded_model, _ = _model(real, "clip_score")
    sensitive = _sensitive_hf_clip(loaded_model)
    reference = _sensitive_hf_clip(model)
    from qie_bench.metrics.catalog.clip_score import clip_score

    with torch.no_grad():
        assert float(clip_score([PHOTOS[0]], [CAPTIONS[0]], sensitive, _model(real, "clip_score")[1])) == pytest.approx(
            float(clip_score([PHOTOS[0]], [CAPTIONS[0]], reference, processor)), abs=1e-4
        )
    assert real.score(inputs)["clip_score"] == pytest.approx(scorer.score(inputs)["clip_score"], abs=1e-4)


def test_incomplete_hf_folder_is_reported(tmp_path, monkeypatch) -> None:
    empty_caches(monkeypatch, tmp_path)
    forbid_network(monkeypatch)
    folder = tmp_path / "weights" / "clip-vit-large-patch14"
    folder.mkdir(parents=True)
    (folder / "config.json").write_text("{}")
    with pytest.raises(UserInputError, match="incomplete .missing model.safetensors"):
        Scorer(MetricsConfig(names=("clip_score",), weights="real", weights_dir=str(tmp_path / "weights")))


def test_openai_clip_loading_policy(tmp_path) -> None:
    """A state-dict file loads through torch.load(weights_only=True) into the same model; a
    TorchScript archive that is not OpenAI's published RN50 is refused before it is opened."""
    model = IQA.tiny_openai_clip(seed=3)
    plain = tmp_path / "clip-state.pt"
    torch.save(model.state_dict(), plain)
    loaded = IQA.load_openai_clip(plain)
    # pyiqa's build_model stores matmul weights in fp16 (as openai's CLIP does); the rest as is
    for (name, a), (_, b) in zip(model.state_dict().items(), loaded.state_dict().items()):
        assert torch.equal(a.float(), b) or torch.equal(a.half().float(), b), name

    class Scaled(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x * 2

    scripted = tmp_path / "RN50.pt"
    torch.jit.save(torch.jit.script(Scaled()), str(scripted))
    assert IQA.is_torchscript_archive(scripted) and not IQA.is_torchscript_archive(plain)
    with pytest.raises(UserInputError, match="not OpenAI's published RN50"):
        IQA.load_openai_clip(scripted)
