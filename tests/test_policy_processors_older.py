"""The five older image policies against REAL ``transformers`` processor calls, built offline.

tests/test_policies.py checks these policies against the processors' size and counting helpers;
here each family's whole processor (image processor + placeholder expansion + a tiny tokenizer,
tests/processors.py) is called on real PIL images, with the image processors and configuration
values of tests/test_policies.py's fixtures: ``MiniCPMV4_6ImageProcessorPil()`` (class defaults)
with ``MiniCPMV4_6Processor``; ``Qwen2VLImageProcessorPil()`` with ``Qwen2_5_VLProcessor``;
``LlavaNextImageProcessorPil`` at 336 px with ``LlavaNextProcessor`` and ``LlavaProcessor`` at
their released kwargs (patch 14, one CLS token, "default" strategy); ``GotOcr2ImageProcessorPil``
at 448 px with ``crop_to_patches`` and ``InternVLProcessor(image_seq_length=256)``;
``LlavaImageProcessorPil`` with and without ``do_pad``. For each size: the policy's
``placeholder_tokens`` is the image-placeholder ids in ``input_ids``; its ``special_tokens`` the
wrapper ids (Qwen's ``<|vision_start|>``/``<|vision_end|>`` come from the chat template, so the
prompt carries them); its ``text_tokens`` the plain text ids the processor writes (MiniCPM's
``\\n`` between slice rows and image-id number); every id beyond the prompt's own words is
accounted for by ``llm_tokens``; and the views are what ``pixel_values`` holds.
"""

from __future__ import annotations

import types

import pytest

from tests.processors import build_processor, count_ids, sampled_sizes, tiny_tokenizer
from uhd_profile.model.policies import get_policy

PIL = pytest.importorskip("PIL.Image")

FIXED = [(1, 1), (5, 3), (3, 5), (30, 400), (400, 30), (1, 20), (20, 1), (20, 400), (400, 20), (336, 336)]
FIXED += [(448, 448), (449, 448), (672, 336), (896, 448), (1000, 1000), (1920, 1080), (3840, 2160), (8000, 6000), (8000, 400)]


# the default run: every fixed edge and 12 random sizes up to 2 Mpx (each 8000x6000 call costs ~2 s);
# the slow sweep: 150 more up to ~50 Mpx, and the large edges left out here
SIZES = FIXED + sampled_sizes(12, seed=5, max_log_area=6.3, exclude=FIXED)
IDS = [f"{w}x{h}" for w, h in SIZES]
SWEEP = [(2160, 3840), (400, 8000), (6000, 8000), (7680, 4320), (9000, 450)] + sampled_sizes(150, seed=23, exclude=FIXED)
PROMPT = "describe the image "  # two words before the placeholder: 2 ids that are not the image's


def _call(proc, w, h, placeholder, nested=False, **kwargs):
    img = PIL.new("RGB", (w, h), (90, 120, 30))
    return proc(text=[PROMPT + placeholder], images=[[img]] if nested else [img], return_tensors="np", **kwargs)


def _common(out, tok, v, placeholder, specials, text=()):
    """The checks every family shares; returns nothing, asserts with the size in the message."""
    where = (v.policy, v.image)
    assert v.placeholder_tokens == count_ids(out, tok, placeholder), where
    assert v.special_tokens == sum(count_ids(out, tok, s) for s in specials), where
    assert v.text_tokens == sum(count_ids(out, tok, t) for t in text), where
    assert v.llm_tokens == v.placeholder_tokens + v.special_tokens + v.text_tokens
    assert len(out["input_ids"][0]) == 3 + v.llm_tokens, where  # "describe", "the", "image" + the image's ids
    assert count_ids(out, tok, "[PAD]") == 0


# ---------------------------------------------------------------------------------------------
# minicpm-v-4.6
# ---------------------------------------------------------------------------------------------

MINICPM_SPECIALS = ["<image>", "</image>", "<slice>", "</slice>", "<image_id>", "</image_id>"]


@pytest.fixture(scope="module")
def minicpm():
    from transformers.models.minicpmv4_6.image_processing_pil_minicpmv4_6 import MiniCPMV4_6ImageProcessorPil
    from transformers.models.minicpmv4_6.processing_minicpmv4_6 import MiniCPMV4_6Processor

    ip = MiniCPMV4_6ImageProcessorPil()
    assert (ip.max_slice_nums, ip.scale_resolution, ip.use_image_id, ip.slice_mode) == (9, 448, True, True)
    names = ("image_start", "image_end", "slice_start", "slice_end", "image_id_start", "image_id_end")
    tok = tiny_tokenizer(
        ["<unk>", *MINICPM_SPECIALS, "<video>"],
        keep_newlines=True,  # the "\n" between slice rows stays a token
        image_token="<unk>",
        video_token="<video>",
        **{f"{n}_token": s for n, s in zip(names, MINICPM_SPECIALS)},
    )
    tok.image_token_id, tok.video_token_id = tok.convert_tokens_to_ids("<unk>"), tok.convert_tokens_to_ids("<video>")
    # the video processor needs torchvision: a stand-in with the two attributes __init__ reads (no video is processed)
    video = types.SimpleNamespace(slice_mode=True, downsample_mode="16x")
    return build_processor(MiniCPMV4_6Processor, image_processor=ip, video_processor=video, tokenizer=tok)


def _check_minicpm(proc, w, h):
    out = _call(proc, w, h, "<unk>", nested=True)
    v = get_policy("minicpm-v-4.6").views(w, h)
    # text: "\n" between slice rows, and the image id "0" (the only word the tiny vocabulary lacks)
    _common(out, proc.tokenizer, v, "<unk>", MINICPM_SPECIALS, text=("\n", "[UNK]"))
    assert v.extra("row_separators") == count_ids(out, proc.tokenizer, "\n")
    assert count_ids(out, proc.tokenizer, "<slice>") == len(v.views) - 1
    # views: thumbnail then slices, each a [patch rows, patch cols] target size; pixel_values packs
    # every view's 14 px patches side by side
    assert out["target_sizes"].tolist() == [[vh // 14, vw // 14] for vw, vh in v.sizes], (w, h)
    patches = sum(x.patches[0] * x.patches[1] for x in v.views)
    assert tuple(out["pixel_values"].shape) == (1, 3, 14, 14 * patches) and v.vit_tokens == patches


@pytest.mark.parametrize("size", SIZES, ids=IDS)
def test_minicpm_v_4_6(minicpm, size):
    _check_minicpm(minicpm, *size)


# ---------------------------------------------------------------------------------------------
# qwen2.5-vl
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def qwen():
    from transformers.models.qwen2_5_vl.processing_qwen2_5_vl import Qwen2_5_VLProcessor
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    ip = Qwen2VLImageProcessorPil()
    assert (ip.size["shortest_edge"], ip.size["longest_edge"], ip.patch_size, ip.merge_size) == (3136, 1003520, 14, 2)
    tok = tiny_tokenizer(["<|vision_start|>", "<|image_pad|>", "<|vision_end|>", "<|video_pad|>"])
    return build_processor(Qwen2_5_VLProcessor, image_processor=ip, tokenizer=tok)


def _check_qwen(proc, w, h):
    # <|vision_start|>/<|vision_end|> are the chat template's: the prompt carries them
    out = _call(proc, w, h, "<|vision_start|><|image_pad|><|vision_end|>")
    v = get_policy("qwen2.5-vl").views(w, h)
    _common(out, proc.tokenizer, v, "<|image_pad|>", ["<|vision_start|>", "<|vision_end|>"])
    assert v.special_tokens == 2 and all(e.added_by == "chat template" for e in v.extras)
    # one view: one image_grid_thw row; pixel_values one row per 14 px patch (3 * 2 * 14 * 14 values)
    assert len(v.views) == len(out["image_grid_thw"]) == 1
    t, gh, gw = out["image_grid_thw"][0].tolist()
    assert (t, (gw, gh)) == (1, v.views[0].patches) and v.sizes == ((gw * 14, gh * 14),), (w, h)
    assert tuple(out["pixel_values"].shape) == (v.vit_tokens, 1176)


@pytest.mark.parametrize("size", SIZES, ids=IDS)
def test_qwen2_5_vl(qwen, size):
    _check_qwen(qwen, *size)


# ---------------------------------------------------------------------------------------------
# llava-next
# ---------------------------------------------------------------------------------------------

LLAVA_KWARGS = dict(patch_size=14, num_additional_image_tokens=1, vision_feature_select_strategy="default")


@pytest.fixture(scope="module")
def llava_next():
    from transformers.models.llava_next.image_processing_pil_llava_next import LlavaNextImageProcessorPil
    from transformers.models.llava_next.processing_llava_next import LlavaNextProcessor

    ip = LlavaNextImageProcessorPil(size={"shortest_edge": 336}, crop_size={"height": 336, "width": 336})
    assert ip.image_grid_pinpoints == [[336, 672], [672, 336], [672, 672], [1008, 336], [336, 1008]]
    tok = tiny_tokenizer(["<image>"], image_token="<image>")
    return build_processor(LlavaNextProcessor, image_processor=ip, tokenizer=tok, **LLAVA_KWARGS)


def _check_llava_next(proc, w, h):
    out = _call(proc, w, h, "<image>")
    v = get_policy("llava-next").views(w, h)
    _common(out, proc.tokenizer, v, "<image>", [])  # the newlines are placeholder ids too (learned embeddings)
    # pixel_values: (images, base + tiles, 3, 336, 336)
    assert tuple(out["pixel_values"].shape) == (1, len(v.views), 3, 336, 336), (w, h)
    assert out["image_sizes"].tolist() == [[h, w]]


@pytest.mark.parametrize("size", SIZES, ids=IDS)
def test_llava_next(llava_next, size):
    _check_llava_next(llava_next, *size)


# ---------------------------------------------------------------------------------------------
# internvl
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def internvl():
    from transformers.models.got_ocr2.image_processing_pil_got_ocr2 import GotOcr2ImageProcessorPil
    from transformers.models.internvl.processing_internvl import InternVLProcessor

    ip = GotOcr2ImageProcessorPil(size={"height": 448, "width": 448}, crop_to_patches=True)
    assert (ip.min_patches, ip.max_patches) == (1, 12)
    marks = dict(start_image_token="<img>", end_image_token="</img>", context_image_token="<IMG_CONTEXT>")
    tok = tiny_tokenizer([*marks.values(), "<video>"], video_token="<video>", **marks)
    for name, token in marks.items():
        setattr(tok, f"{name}_id", tok.convert_tokens_to_ids(token))
    p = build_processor(InternVLProcessor, image_processor=ip, tokenizer=tok, image_seq_length=256)
    assert p.images_kwargs == {"crop_to_patches": True}
    return p


def _check_internvl(proc, w, h):
    from transformers.models.got_ocr2.image_processing_pil_got_ocr2 import get_optimal_tiled_canvas

    out = _call(proc, w, h, "<IMG_CONTEXT>")
    v = get_policy("internvl").views(w, h)
    _common(out, proc.tokenizer, v, "<IMG_CONTEXT>", ["<img>", "</img>"])
    # pixel_values: tiles (+ thumbnail when tiled), each 448 px
    assert tuple(out["pixel_values"].shape) == (len(v.views), 3, 448, 448), (w, h)
    assert v.grid == get_optimal_tiled_canvas((h, w), (448, 448), 1, 12)


@pytest.mark.parametrize("size", SIZES, ids=IDS)
def test_internvl(internvl, size):
    _check_internvl(internvl, *size)


# ---------------------------------------------------------------------------------------------
# llava-1.5 (centre crop, and padded to square)
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def llava():
    from transformers.models.llava.image_processing_pil_llava import LlavaImageProcessorPil
    from transformers.models.llava.processing_llava import LlavaProcessor

    def make(do_pad):
        ip = LlavaImageProcessorPil(size={"shortest_edge": 336}, crop_size={"height": 336, "width": 336}, do_pad=do_pad)
        assert ip.do_pad is do_pad
        tok = tiny_tokenizer(["<image>"], image_token="<image>")
        return build_processor(LlavaProcessor, image_processor=ip, tokenizer=tok, **LLAVA_KWARGS)

    return {False: make(False), True: make(True)}


def _check_llava(procs, w, h, pad):
    proc = procs[pad]
    out = _call(proc, w, h, "<image>")
    v = get_policy("llava-1.5").views(w, h, pad_to_square=pad)
    _common(out, proc.tokenizer, v, "<image>", [])
    assert tuple(out["pixel_values"].shape) == (len(v.views), 3, 336, 336) and v.sizes == ((336, 336),)


@pytest.mark.parametrize("pad", [False, True], ids=["crop", "pad"])
@pytest.mark.parametrize("size", SIZES, ids=IDS)
def test_llava_1_5(llava, size, pad):
    _check_llava(llava, *size, pad)


# ---------------------------------------------------------------------------------------------
# A bigger sweep, kept out of the default run
# ---------------------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("family", ["minicpm", "qwen", "llava_next", "internvl", "llava"])
def test_sweep(request, family):
    proc = request.getfixturevalue(family)
    for w, h in SWEEP:
        if family == "llava":
            _check_llava(proc, w, h, pad=False)
            _check_llava(proc, w, h, pad=True)
        else:
            globals()[f"_check_{family}"](proc, w, h)
