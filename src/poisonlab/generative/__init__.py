"""Generative-model poisoning: disguised copyright infringement of latent diffusion models.

Thesis chapter 5 (Lu, Zhang, Kamath, Yu, "Disguised Copyright Infringement of Latent Diffusion
Models", ICML 2024). A latent diffusion model learns from its autoencoder's latents E(x), so an
image x_d that *looks* like an unrelated base image x_b can carry the latent of a copyrighted
image x_c (a "disguise"); training on disguises makes the model reproduce x_c.

Modules (all import ``diffusers`` lazily: ``pip install poisonlab[diffusion]``):

- :mod:`.vae`           build / train / cache / load a diffusers ``AutoencoderKL``
- :mod:`.metrics`       SSIM, MS-SSIM, an LPIPS-style random-feature distance (torch, no downloads)
- :mod:`.disguise`      crafting disguises (unbounded, bounded, flip-robust, detection-evasive)
- :mod:`.detect`        feature-space screening and encoder-decoder examination
- :mod:`.latent_model`  a tiny class-conditional latent diffusion model and textual inversion
"""
