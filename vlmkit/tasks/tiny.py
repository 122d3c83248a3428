"""Tiny randomly initialised task models saved to a folder, built without network.

They load through exactly the paths real checkpoints take (``save_pretrained`` folders read by
:func:`vlmkit.tasks.load_clipseg` / :func:`vlmkit.tasks.load_answer_model`), so the kit's task
pipelines run end to end offline — in tests, in notebooks' smoke runs and in benchmarks. Their
predictions are noise: they check plumbing, never behaviour.

* :func:`save_tiny_clipseg` — ``CLIPSegForImageSegmentation`` (2-layer 32-wide towers) with the CLIP
  BPE tokenizer that :func:`vlmkit.models.hf.save_offline_clip_tokenizer` writes from open_clip's files;
* :func:`save_tiny_blip2` — ``Blip2ForConditionalGeneration`` (1-layer ViT, Q-Former and OPT) with a
  ``Blip2Processor`` over a word-level tokenizer of the toy world's vocabulary (:func:`word_tokenizer`);
* :func:`save_tiny_llava` — ``LlavaForConditionalGeneration`` (CLIP vision + 1-layer Llama) with a
  ``LlavaProcessor`` and a chat template, to exercise the generic processor adapter.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch

#: Words of the toy world's questions and answers (the word-level tokenizer's vocabulary).
BASE_WORDS: tuple[str, ...] = (
    "question", "answer", "user", "assistant", "is", "are", "there", "a", "an", "the", "in", "image", "of", "what",
    "which", "colour", "color", "shape", "how", "many", "objects", "object", "yes", "no", "zero", "one", "two",
    "three", "four", "photo", "picture", "sign", "that", "says", "word", "on", "left", "right", "top", "bottom",
    "center", "middle", "small", "large", "big", "little", "and", "with", "background",
)
SPECIAL: tuple[str, ...] = ("[PAD]", "[UNK]", "<s>", "</s>")


def _toy_vocabulary() -> list[str]:
    from vlmkit.toyworld import COLOR_NAMES, SHAPES, WORDS

    words = list(SPECIAL) + list(BASE_WORDS) + list(COLOR_NAMES) + list(SHAPES) + list(WORDS)
    words += [f"{s}s" for s in SHAPES] + list("?:.,!\"'") + [str(i) for i in range(10)]
    return list(dict.fromkeys(words))


def word_tokenizer(extra_words: Iterable[str] = (), bos: bool = True, special_tokens: Iterable[str] = ()) -> Any:
    """A whitespace/punctuation word-level ``PreTrainedTokenizerFast`` over the toy vocabulary (offline).

    Args:
        extra_words: Words added to the vocabulary.
        bos: Prepend ``<s>`` to encoded texts (as OPT and Llama tokenizers do).
        special_tokens: Added special tokens matched before pre-tokenisation (e.g. ``"<image>"``).
    """
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {w: i for i, w in enumerate(dict.fromkeys([*_toy_vocabulary(), *extra_words]))}
    tk = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tk.pre_tokenizer = pre_tokenizers.Whitespace()
    if bos:
        tk.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", vocab["<s>"])])
    tok = PreTrainedTokenizerFast(tokenizer_object=tk, unk_token="[UNK]", pad_token="[PAD]", bos_token="<s>",
                                  eos_token="</s>")
    extra = list(special_tokens)
    if extra:
        from tokenizers import AddedToken

        tok.add_tokens([AddedToken(t, normalized=False, special=True) for t in extra], special_tokens=True)
    return tok


def save_tiny_clipseg(folder: str | os.PathLike, seed: int = 0, image_size: int = 64) -> Path:
    """A tiny random ``CLIPSegForImageSegmentation`` + CLIP tokenizer + preprocessor config in ``folder``."""
    from transformers import CLIPSegConfig, CLIPSegForImageSegmentation, ViTImageProcessor

    from vlmkit.models.hf import save_offline_clip_tokenizer

    folder = Path(folder)
    torch.manual_seed(seed)
    cfg = CLIPSegConfig(
        text_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                         vocab_size=49408, max_position_embeddings=77),
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                           image_size=32, patch_size=8),
        projection_dim=16, extract_layers=[0, 1], reduce_dim=16, decoder_num_attention_heads=2,
        decoder_intermediate_size=32,
    )
    CLIPSegForImageSegmentation(cfg).save_pretrained(folder)
    save_offline_clip_tokenizer(folder, context_length=77)
    ViTImageProcessor(size={"height": image_size, "width": image_size}, resample=2,
                      image_mean=[0.485, 0.456, 0.406], image_std=[0.229, 0.224, 0.225]).save_pretrained(folder)
    return folder


def save_tiny_blip2(folder: str | os.PathLike, seed: int = 0, num_query_tokens: int = 4, image_size: int = 32) -> Path:
    """A tiny random ``Blip2ForConditionalGeneration`` (OPT language model) + ``Blip2Processor`` in ``folder``."""
    from transformers import Blip2Config, Blip2ForConditionalGeneration, Blip2Processor, BlipImageProcessor

    folder = Path(folder)
    tok = word_tokenizer()
    ip = BlipImageProcessor(size={"height": image_size, "width": image_size})
    proc = Blip2Processor(image_processor=ip, tokenizer=tok, num_query_tokens=num_query_tokens)  # adds <image>
    tok = proc.tokenizer
    cfg = Blip2Config(
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                           image_size=image_size, patch_size=8),
        qformer_config=dict(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
                            encoder_hidden_size=32),
        text_config=dict(model_type="opt", vocab_size=len(tok), hidden_size=32, num_hidden_layers=1, ffn_dim=64,
                         num_attention_heads=2, max_position_embeddings=128, word_embed_proj_dim=32,
                         pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id),
        num_query_tokens=num_query_tokens, image_token_id=tok.convert_tokens_to_ids("<image>"),
    )
    torch.manual_seed(seed)
    Blip2ForConditionalGeneration(cfg).save_pretrained(folder)
    proc.save_pretrained(folder)
    return folder


LLAVA_TEMPLATE = ("{% for m in messages %}{{ m['role'] }} : {% for c in m['content'] %}{% if c['type'] == 'image' %}"
                  "<image> {% else %}{{ c['text'] }} {% endif %}{% endfor %}{% endfor %}"
                  "{% if add_generation_prompt %}assistant :{% endif %}")


def save_tiny_llava(folder: str | os.PathLike, seed: int = 0, image_size: int = 32) -> Path:
    """A tiny random ``LlavaForConditionalGeneration`` (CLIP vision, Llama text) + ``LlavaProcessor`` in ``folder``."""
    from transformers import CLIPImageProcessor, LlavaConfig, LlavaForConditionalGeneration, LlavaProcessor

    folder = Path(folder)
    tok = word_tokenizer(special_tokens=["<image>"])
    ip = CLIPImageProcessor(size={"shortest_edge": image_size}, crop_size={"height": image_size, "width": image_size})
    proc = LlavaProcessor(image_processor=ip, tokenizer=tok, patch_size=8, vision_feature_select_strategy="default",
                          chat_template=LLAVA_TEMPLATE, num_additional_image_tokens=1)
    cfg = LlavaConfig(
        vision_config=dict(model_type="clip_vision_model", hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                           num_attention_heads=2, image_size=image_size, patch_size=8, projection_dim=32),
        text_config=dict(model_type="llama", vocab_size=len(tok), hidden_size=32, intermediate_size=64,
                         num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=2,
                         max_position_embeddings=256, pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id,
                         eos_token_id=tok.eos_token_id),
        image_token_id=tok.convert_tokens_to_ids("<image>"), vision_feature_layer=-1,
        vision_feature_select_strategy="default",
    )
    torch.manual_seed(seed)
    LlavaForConditionalGeneration(cfg).save_pretrained(folder)
    proc.save_pretrained(folder)
    return folder


__all__ = ["BASE_WORDS", "save_tiny_blip2", "save_tiny_clipseg", "save_tiny_llava", "word_tokenizer"]
