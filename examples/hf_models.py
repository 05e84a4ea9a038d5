"""Hugging Face models built offline from their configs, as factories for ``paramcalc.infer_spec``.

Each factory takes the width assignment (a dict of integers) and returns the model, as a user
would build it; nothing is downloaded. They are the reference users of ``paramcalc infer``::

    paramcalc infer examples.hf_models:gpt2 --widths d_model=256,n_heads=4,vocab=1000 --scale d_model,n_heads

``WIDTHS`` gives each factory's width symbols, ``{"base": N}`` for those that scale.
"""

from __future__ import annotations

WIDTHS = {
    "gpt2": {"d_model": {"base": 64}, "n_heads": {"base": 2}, "vocab": 100, "ctx": 16, "n_layers": 2},
    # Key/value heads grow with the heads (a fixed group of 2 query heads per key/value head). With
    # n_kv_heads fixed, k_proj and v_proj map d_model to a fixed width: by the counting rule they are
    # readouts, whose features at init shrink like d_model^-1/2 (docs/your-model.md).
    "llama": {"d_model": {"base": 64}, "n_heads": {"base": 4}, "n_kv_heads": {"base": 2}, "vocab": 100,
              "n_layers": 2},
    "vit": {"d_model": {"base": 64}, "n_heads": {"base": 2}, "image": 16, "patch": 4, "n_classes": 10,
            "n_layers": 2},
    "resnet": {"width": {"base": 16}, "n_classes": 10},
}


def gpt2(w: dict[str, int]):
    """GPT-2 (``Conv1D`` projections stored ``(fan_in, fan_out)``, fused ``c_attn``, tied ``lm_head``)."""
    from transformers import GPT2Config, GPT2LMHeadModel

    return GPT2LMHeadModel(GPT2Config(
        n_embd=w["d_model"], n_head=w["n_heads"], n_layer=w["n_layers"], vocab_size=w["vocab"],
        n_positions=w["ctx"], bos_token_id=0, eos_token_id=0,
        attn_pdrop=0.0, embd_pdrop=0.0, resid_pdrop=0.0,
    ))


def llama(w: dict[str, int]):
    """Llama (grouped-query attention: ``n_kv_heads`` key/value heads, RMSNorm, SwiGLU, untied head)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    return LlamaForCausalLM(LlamaConfig(
        hidden_size=w["d_model"], intermediate_size=4 * w["d_model"], num_attention_heads=w["n_heads"],
        num_key_value_heads=w["n_kv_heads"], num_hidden_layers=w["n_layers"], vocab_size=w["vocab"],
        max_position_embeddings=64, tie_word_embeddings=False,
        head_dim=w["d_model"] // w["n_heads"], bos_token_id=0, eos_token_id=0,
    ))


def vit(w: dict[str, int]):
    """ViT (a convolution as patch embedding, raw ``cls_token`` and ``position_embeddings``)."""
    from transformers import ViTConfig, ViTForImageClassification

    return ViTForImageClassification(ViTConfig(
        hidden_size=w["d_model"], num_attention_heads=w["n_heads"], intermediate_size=4 * w["d_model"],
        num_hidden_layers=w["n_layers"], image_size=w["image"], patch_size=w["patch"],
        num_labels=w["n_classes"], hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
    ))


def resnet(w: dict[str, int]):
    """ResNet (bottleneck convolutions, batch norm, a linear head)."""
    from transformers import ResNetConfig, ResNetForImageClassification

    d = w["width"]
    return ResNetForImageClassification(ResNetConfig(
        embedding_size=d, hidden_sizes=[4 * d, 8 * d], depths=[1, 1], num_labels=w["n_classes"],
    ))
