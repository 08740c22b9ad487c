"""The diffusers generator backend, on a tiny Stable Diffusion pipeline this test builds (random weights, no download).

Runs where the ``images-diffusers`` extra (torch, diffusers, transformers) is
installed; skipped otherwise. It checks the plumbing — a local pipeline
folder chosen by configuration, its denoising steps reported, the seed
honoured, the result labelled — not the pictures, which are noise.
"""

from __future__ import annotations

import json
import string
import warnings
from pathlib import Path

import pytest

pytest.importorskip("cv2")
pytest.importorskip("torch")
pytest.importorskip("diffusers")
pytest.importorskip("transformers")

from fastapi.testclient import TestClient

from conveyor.api.main import create_app
from tests.conftest import AppFactory
from tests.workloads.images import samples
from tests.workloads.images.test_api import poll


def build_tiny_pipeline(folder: Path) -> Path:
    """A two-block UNet, VAE and one-layer CLIP text encoder over a character vocabulary, saved to ``folder``."""
    import torch
    from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    torch.manual_seed(0)
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for c in string.ascii_lowercase + string.digits:
        vocab[c] = len(vocab)
        vocab[c + "</w>"] = len(vocab)
    tok = folder / "tokenizer-src"
    tok.mkdir(parents=True)
    (tok / "vocab.json").write_text(json.dumps(vocab))
    (tok / "merges.txt").write_text("#version: 0.2\n")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the libraries' notices about accelerate and configs, not ours
        tokenizer = CLIPTokenizer(
            str(tok / "vocab.json"),
            str(tok / "merges.txt"),
            unk_token="<|endoftext|>",
            pad_token="<|endoftext|>",
            model_max_length=16,
        )
        text = CLIPTextModel(
            CLIPTextConfig(
                vocab_size=len(vocab),
                hidden_size=16,
                intermediate_size=32,
                num_attention_heads=2,
                num_hidden_layers=1,
                max_position_embeddings=16,
                bos_token_id=0,
                eos_token_id=1,
                pad_token_id=1,
                projection_dim=16,
            )
        )
        unet = UNet2DConditionModel(
            sample_size=8,
            in_channels=4,
            out_channels=4,
            block_out_channels=(8, 16),
            layers_per_block=1,
            down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
            up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
            cross_attention_dim=16,
            attention_head_dim=2,
            norm_num_groups=4,
        )
        vae = AutoencoderKL(
            in_channels=3,
            out_channels=3,
            block_out_channels=(8, 16),
            latent_channels=4,
            norm_num_groups=4,
            down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
            up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
        )
        pipe = StableDiffusionPipeline(
            vae=vae,
            text_encoder=text,
            tokenizer=tokenizer,
            unet=unet,
            scheduler=DDIMScheduler(clip_sample=False),
            safety_checker=None,
            feature_extractor=None,
            requires_safety_checker=False,
        )
        pipe.save_pretrained(str(folder / "pipeline"))
    return folder / "pipeline"


def test_a_local_diffusers_pipeline_runs_as_the_generator_when_configured(make_app: AppFactory, tmp_path: Path) -> None:
    """GENERATOR=diffusers + a pipeline folder: the seed's flow returns its image, steps reported, seed honoured."""
    model = build_tiny_pipeline(tmp_path / "model")
    settings = {"generator": "diffusers", "diffusers_model_dir": str(model)}
    app = make_app(start=False, workloads=["system", "images"], workload_settings={"images": settings})
    body = {
        "task_type": "image_generation",
        "prompt": "a red fox",
        "parameters": {"width": 96, "height": 64, "steps": 4, "seed": 3},
    }
    with TestClient(create_app(app, scheduler=False)) as c:
        results = []
        for _ in range(2):
            task_id = c.post("/api/v1/tasks/submit/", json=body).json()["task_id"]
            assert poll(c, task_id, timeout=120)[-1]["status"] == "SUCCESS"
            results.append(c.get(f"/api/v1/tasks/{task_id}/result/").json()["result"])
            steps = [e["message"] for e in c.get(f"/api/v1/tasks/{task_id}/timeline").json()["data"]]
            assert any(m.startswith("Denoising step") for m in steps), steps
        meta = results[0]["metadata"]
        assert (meta["generator"], meta["model"], meta["width"], meta["height"]) == ("diffusers", str(model), 96, 64)
        assert samples.decode_png(results[0]["image_data"]).size == (96, 64)
        assert results[0]["image_data"] == results[1]["image_data"]  # same prompt, same seed
        assert results[0]["prompt_used"] == "a red fox"
