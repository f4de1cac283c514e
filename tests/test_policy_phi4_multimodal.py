"""Phi-4-multimodal (``phi-4-multimodal``) against ``Phi4MultimodalImageProcessor``'s own preprocess.

A whole ``Phi4MultimodalProcessor(images=...)`` call cannot run here: the family's only image
processor is a torchvision-backend class (``requires(backends=("torch", "torchvision"))``, module
top-level ``from torchvision.transforms.v2 import functional``) and this project does not install
torchvision. So the test runs the class's real ``_preprocess`` (crop layout, padding, the global
view, the crop reshape, the attention mask and ``_get_num_image_tokens``) on real image tensors,
with the three pixel operations it borrows from torchvision (``resize``, ``pad``, and the backend's
``resize``/``rescale_and_normalize``) replaced by shape-equivalent torch calls; only pixel values
differ from a torchvision run, never a shape or a count. The placeholder text then comes from the
real ``Phi4MultimodalProcessor.replace_image_token`` and is tokenized by a tiny tokenizer.

Values: the class defaults, which are microsoft/Phi-4-multimodal-instruct's (448 px, patch 14,
``dynamic_hd=36``).
"""

from __future__ import annotations

import sys
import types

import pytest

from tests.processors import EDGE_SIZES_448, count_ids, sampled_sizes, tiny_tokenizer
from uhd_profile.errors import UhdProfileError
from uhd_profile.model.policies import get_policy

NAME = "phi-4-multimodal"
FIXED = [
    *EDGE_SIZES_448,
    (1, 200),  # refused: scales to 2 x 448
    (300, 6),  # refused: 448 x 8
    (300, 7),  # kept: 448 x 10
    (2688, 2688),
    (2689, 2688),
]


SIZES = FIXED + sampled_sizes(20, seed=5)


@pytest.fixture(scope="module")
def ip():
    """The image processor class, imported with a stand-in ``torchvision.transforms.v2.functional``
    (removed from ``sys.modules`` again), and an instance made without ``__init__`` (whose backend
    check needs torchvision) carrying the class defaults and torch resize/normalize."""
    import torch
    import torch.nn.functional as F
    import transformers.image_processing_backends  # noqa: F401  (imported, and torchvision found absent, before the stand-in)
    import transformers.processing_utils  # noqa: F401

    def resize(img, size, **_):
        return F.interpolate(img[None].float(), size=list(size), mode="bilinear", align_corners=False)[0]

    def pad(img, padding, fill=0, **_):
        left, top, right, bottom = padding
        return F.pad(img, (left, right, top, bottom), value=float(fill[0] if isinstance(fill, list) else fill))

    names = ["torchvision", "torchvision.transforms", "torchvision.transforms.v2", "torchvision.transforms.v2.functional"]
    saved = {n: sys.modules.get(n) for n in names}
    fake = {n: types.ModuleType(n) for n in names}
    fake[names[-1]].resize, fake[names[-1]].pad = resize, pad
    fake[names[2]].functional = fake[names[-1]]
    fake[names[1]].v2 = fake[names[2]]
    fake[names[0]].transforms = fake[names[1]]
    sys.modules.update(fake)
    sys.modules.pop("transformers.models.phi4_multimodal.image_processing_phi4_multimodal", None)
    try:
        from transformers.models.phi4_multimodal.image_processing_phi4_multimodal import Phi4MultimodalImageProcessor
    finally:
        for n, m in saved.items():
            if m is None:
                sys.modules.pop(n, None)
            else:
                sys.modules[n] = m
    cls = Phi4MultimodalImageProcessor
    assert (cls.size, cls.patch_size, cls.dynamic_hd) == ({"height": 448, "width": 448}, 14, 36)
    obj = cls.__new__(cls)
    obj.resize = lambda image, size, resample=None, antialias=False: resize(image, (size.height, size.width))
    obj.rescale_and_normalize = lambda image, *a: image.float() / 255.0
    return obj, torch


@pytest.fixture(scope="module")
def proc():
    from transformers.models.phi4_multimodal.processing_phi4_multimodal import Phi4MultimodalProcessor

    tok = tiny_tokenizer(["<|image|>"])
    p = Phi4MultimodalProcessor.__new__(Phi4MultimodalProcessor)
    p.image_token = "<|image|>"
    return p, tok


def _run(ip, w, h, dynamic_hd=36):
    from transformers.image_utils import SizeDict

    obj, torch = ip
    image = torch.zeros((3, h, w), dtype=torch.uint8)
    return obj._preprocess(
        [image],
        do_resize=True,
        size=SizeDict(height=448, width=448),
        resample=None,
        do_rescale=True,
        rescale_factor=1 / 255,
        do_normalize=True,
        image_mean=[0.5] * 3,
        image_std=[0.5] * 3,
        patch_size=14,
        dynamic_hd=dynamic_hd,
        return_tensors=None,
    )


def _check(ip, proc, w, h, **params):
    policy = get_policy(NAME)
    try:
        out = _run(ip, w, h, **params)
    except ValueError as exc:
        assert "aspect ratio is very extreme" in str(exc)
        with pytest.raises(UhdProfileError, match="too extreme") as info:
            policy.views(w, h, **params)
        assert "\n" not in str(info.value)
        return False
    v = policy.views(w, h, **params)
    p, tok = proc
    text = p.replace_image_token(out, 0)
    ids = tok(["describe " + text])
    n = out["num_img_tokens"][0]
    assert v.placeholder_tokens == n == count_ids(ids, tok, "<|image|>"), (w, h, params)
    assert v.special_tokens == v.text_tokens == 0 and v.llm_tokens == v.placeholder_tokens
    pv, mask = out["image_pixel_values"], out["image_attention_mask"]
    assert tuple(pv.shape) == (1, len(v.views), 3, 448, 448), (w, h)
    height, width = out["image_sizes"][0].tolist()
    assert v.grid == (width // 448, height // 448) and v.canvas == (width, height), (w, h)
    assert [x.role for x in v.views] == ["global"] + ["crop"] * (len(v.views) - 1)
    # per-view LLM tokens: the kept pooled positions of each crop's mask, as the model drops them
    for view, m in zip(v.views, mask[0]):
        assert view.llm_tokens == int(m[0::2, 0::2].sum()), (w, h, view)
        assert view.vit_tokens == 1024 and view.size == (448, 448)
    return True


def test_processor_default_values(ip, proc):
    assert len(SIZES) >= 30
    ran = [_check(ip, proc, w, h) for w, h in SIZES]
    assert ran.count(False) >= 2 and ran.count(True) >= 30


def test_processor_other_crop_limits(ip, proc):
    for (w, h), hd in zip([(300, 200), (3840, 2160), (1000, 120), (8000, 6000), (2000, 2000)], [1, 4, 9, 16, 64]):
        _check(ip, proc, w, h, dynamic_hd=hd)


@pytest.mark.slow
def test_processor_sweep(ip, proc):
    for w, h in sampled_sizes(200, seed=13):
        _check(ip, proc, w, h)


def test_3840x2160_worked_example():
    v = get_policy(NAME).views(3840, 2160)
    # ceil: 9 x 5 = 45 crops > 36 -> nearest ratio to 1.778 among <= 36 crops: 7x4 (1.75)
    # scale min(3136/3840, 1792/2160) = 0.8167 -> 3136 x int(2160 * 0.8167) = 1764; pad 28 px at the bottom
    assert v.grid == (7, 4) and v.canvas == (3136, 1792) and v.content == (3136, 1764)
    # padding 28 px = 2 patch rows of the last crop row: 30 rows left, 15 pooled rows kept of 16
    # crops: 7 * 16 cols x (16 * 3 + 15) rows = 112 x 63 = 7056; + 63 newlines + 1 separator + 256 + 16
    assert (v.view_llm_tokens, v.extra("crop_newlines"), v.llm_tokens) == (7056 + 256, 63, 7392)
    assert v.vit_tokens == 29 * 1024
