"""Stable Diffusion textual inversion code path on a tiny, randomly initialised pipeline saved to a
local directory (CPU, seconds): the same loader and loop a real SD checkpoint goes through."""

import json

import pytest
import torch

from poisonlab.generative.latent_model import LatentTrainConfig, sd_textual_inversion
from poisonlab.generative.vae import load_vae

pytestmark = pytest.mark.needs_extra("stable-diffusion")


def _tiny_pipeline(root):
    from diffusers import AutoencoderKL, DDPMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    chars = list("abcdefghijklmnopqrstuvwxyz<>")
    vocab = {}
    for c in chars:
        vocab.setdefault(c, len(vocab))
        vocab.setdefault(c + "</w>", len(vocab))
    for special in ("<|startoftext|>", "<|endoftext|>"):
        vocab[special] = len(vocab)
    (root / "tok").mkdir()
    (root / "tok" / "vocab.json").write_text(json.dumps(vocab))
    (root / "tok" / "merges.txt").write_text("#version: 0.2\n")
    tok = CLIPTokenizer(str(root / "tok" / "vocab.json"), str(root / "tok" / "merges.txt"), model_max_length=16)
    torch.manual_seed(0)
    text = CLIPTextModel(CLIPTextConfig(vocab_size=len(vocab), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                        num_attention_heads=2, max_position_embeddings=16,
                                        bos_token_id=vocab["<|startoftext|>"], eos_token_id=vocab["<|endoftext|>"]))
    unet = UNet2DConditionModel(sample_size=8, in_channels=4, out_channels=4, block_out_channels=(16, 32), layers_per_block=1,
                                down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
                                cross_attention_dim=32, norm_num_groups=8, attention_head_dim=4)
    vae = AutoencoderKL(block_out_channels=(8, 16), down_block_types=("DownEncoderBlock2D",) * 2,
                        up_block_types=("UpDecoderBlock2D",) * 2, latent_channels=4, norm_num_groups=4, sample_size=16)
    pipe = StableDiffusionPipeline(vae=vae, text_encoder=text, tokenizer=tok, unet=unet, scheduler=DDPMScheduler(num_train_timesteps=100),
                                   safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    pipe.save_pretrained(root / "sd")
    return root / "sd"


def test_sd_textual_inversion_on_tiny_local_pipeline(tmp_path):
    path = _tiny_pipeline(tmp_path)
    vae = load_vae(path)  # the disguise code accepts the pipeline directory directly
    assert vae.encode(torch.rand(1, 3, 16, 16)).shape == (1, 4, 8, 8)
    images = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    pipe, losses = sd_textual_inversion(path, images, placeholder="<x>", initializer="a", device="cpu", progress=False,
                                        config=LatentTrainConfig(steps=6, batch_size=2, lr=0.05), generator=torch.Generator().manual_seed(1))
    assert len(losses) == 6 and all(torch.isfinite(torch.tensor(losses)))
    tok, emb = pipe.tokenizer, pipe.text_encoder.get_input_embeddings().weight
    new_id = tok.convert_tokens_to_ids("<x>")
    init_id = tok.encode("a", add_special_tokens=False)[0]
    assert new_id == emb.shape[0] - 1
    assert not torch.allclose(emb[new_id], emb[init_id])  # the new token's embedding was learned
    out = pipe("a photo of <x>", num_inference_steps=2, height=16, width=16, output_type="pt",
               generator=torch.Generator().manual_seed(2)).images
    assert out.shape == (1, 3, 16, 16)
