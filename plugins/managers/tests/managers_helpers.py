"""Helpers the managers tests share (tiny models, catalogs, run dirs); conftest.py puts this
directory on sys.path so test modules import them by this unique module name."""

from __future__ import annotations

import http.server
import json
import os
import time
from pathlib import Path

from mlplatform.api import sha256_file

FEAT, GROW, BLOCKS = 8, 32, 1  # spandrel expects the official growth of 32


def rrdbnet_state_dict(scale: int = 4, seed: int = 0, feat: int = FEAT, blocks: int = BLOCKS) -> dict:
    """Random weights in Real-ESRGAN's (basicsr RRDBNet) key layout, as RealESRGAN_x4plus.pth has
    (feat=64, blocks=23 is RealESRGAN_x4plus's own size, 67 MB)."""
    import torch

    gen = torch.Generator().manual_seed(seed)

    def conv(out_ch, in_ch, prefix, sd):
        std = (1.0 / (in_ch * 9)) ** 0.5
        sd[f"{prefix}.weight"] = torch.randn(out_ch, in_ch, 3, 3, generator=gen) * std
        sd[f"{prefix}.bias"] = torch.randn(out_ch, generator=gen) * 0.01

    sd: dict = {}
    conv(feat, 3, "conv_first", sd)
    for b in range(blocks):
        for r in (1, 2, 3):
            for c in range(1, 6):
                out_ch = GROW if c < 5 else feat
                conv(out_ch, feat + (c - 1) * GROW, f"body.{b}.rdb{r}.conv{c}", sd)
    for name in ("conv_body", "conv_up1", "conv_up2", "conv_hr"):
        conv(feat, feat, name, sd)
    conv(3, feat, "conv_last", sd)
    sd["conv_last.bias"] += 0.5  # outputs around mid-grey, so value checks mean something
    return sd


def write_catalog(directory: Path, type_: str, entries: list[dict], name: str | None = None) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{name or type_}.json"
    path.write_text(json.dumps({"format": 1, "type": type_, "models": entries}, indent=2))
    return path


def file_entries(root: Path) -> list[dict]:
    return [{"path": p.relative_to(root).as_posix(), "sha256": sha256_file(p), "size": p.stat().st_size}
            for p in sorted(root.rglob("*")) if p.is_file()]


CLIP_MERGES = [("c", "a"), ("ca", "t</w>"), ("d", "o"), ("do", "g</w>"), ("o", "g</w>")]


def write_clip_vocab(directory: Path) -> dict[str, int]:
    """vocab.json + merges.txt of a tiny CLIP BPE tokenizer: GPT-2's byte-level alphabet (with
    and without the end-of-word mark), a few merges, and the two special tokens."""
    printable = [*range(33, 127), *range(161, 173), *range(174, 256)]
    chars = [chr(b) for b in printable] + [chr(256 + n) for n in range(256 - len(printable))]
    vocab = {c: i for i, c in enumerate(chars)}
    vocab.update({c + "</w>": len(chars) + i for i, c in enumerate(chars)})
    for left, right in CLIP_MERGES:
        vocab[left + right] = len(vocab)
    vocab["<|startoftext|>"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    (directory / "vocab.json").write_text(json.dumps(vocab))
    (directory / "merges.txt").write_text(
        "#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in CLIP_MERGES))
    return vocab


def make_tiny_sd(directory: Path) -> None:
    """A random-weight Stable Diffusion pipeline of the real classes (UNet2DConditionModel,
    AutoencoderKL, CLIPTextModel + CLIPTokenizer, PNDM scheduler), saved with save_pretrained:
    32-wide blocks, VAE scale factor 2, so a 32x32 image is a 16x16 latent."""
    import torch
    from diffusers import (
        AutoencoderKL,
        PNDMScheduler,
        StableDiffusionPipeline,
        UNet2DConditionModel,
    )
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    directory.mkdir(parents=True, exist_ok=True)
    (directory / "tok_src").mkdir(exist_ok=True)
    vocab = write_clip_vocab(directory / "tok_src")
    tokenizer = CLIPTokenizer(str(directory / "tok_src" / "vocab.json"),
                              str(directory / "tok_src" / "merges.txt"), model_max_length=77)
    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        block_out_channels=(32, 64), layers_per_block=1, sample_size=16, in_channels=4,
        out_channels=4, down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), cross_attention_dim=32,
        attention_head_dim=2, norm_num_groups=32)
    vae = AutoencoderKL(
        block_out_channels=(32, 64), in_channels=3, out_channels=3, latent_channels=4,
        down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
        layers_per_block=1, norm_num_groups=32, sample_size=32)
    eos = vocab["<|endoftext|>"]
    text_encoder = CLIPTextModel(CLIPTextConfig(
        vocab_size=len(vocab), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
        num_attention_heads=2, max_position_embeddings=77, bos_token_id=vocab["<|startoftext|>"],
        eos_token_id=eos, pad_token_id=eos))
    scheduler = PNDMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                              skip_prk_steps=True, steps_offset=1)
    pipe = StableDiffusionPipeline(unet=unet, vae=vae, text_encoder=text_encoder,
                                   tokenizer=tokenizer, scheduler=scheduler, safety_checker=None,
                                   feature_extractor=None, requires_safety_checker=False)
    pipe.save_pretrained(directory, safe_serialization=True)
    for leftover in (directory / "tok_src").iterdir():
        leftover.unlink()
    (directory / "tok_src").rmdir()


def make_tiny_open_clip(directory: Path, coca: bool = False) -> None:
    """A random-weight OpenCLIP ViT (1 layer, 32 wide, 32 px) in open_clip's hub layout:
    open_clip_config.json (model_cfg + preprocess_cfg) and open_clip_model.safetensors. The
    tokenizer is open_clip's default (its BPE vocabulary ships inside the package)."""
    import open_clip
    import torch
    from safetensors.torch import save_file

    directory.mkdir(parents=True, exist_ok=True)
    config = {
        "model_cfg": {"embed_dim": 16,
                      "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "patch_size": 8,
                                     "head_width": 16},
                      "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32,
                                   "heads": 2, "layers": 1}},
        "preprocess_cfg": {"mean": [0.48145466, 0.4578275, 0.40821073],
                           "std": [0.26862954, 0.26130258, 0.27577711]},
    }
    if coca:  # CoCa: attentional pooling, a cls token on the text, a multimodal decoder
        model_cfg = config["model_cfg"]
        model_cfg["custom_text"] = True
        model_cfg["embed_dim"] = 32  # image tokens, text tokens and decoder share one width
        model_cfg["vision_cfg"].update(attentional_pool=True, attn_pooler_heads=2,
                                       attn_pooler_queries=8, output_tokens=True)
        model_cfg["text_cfg"].update(context_length=76, embed_cls=True, output_tokens=True)
        model_cfg["multimodal_cfg"] = {"context_length": 76, "vocab_size": 49408, "width": 32,
                                       "heads": 2, "layers": 1, "attn_pooler_heads": 2}
    (directory / "open_clip_config.json").write_text(json.dumps(config))
    torch.manual_seed(0)
    model = open_clip.create_model(f"local-dir:{directory}")  # random init: no weights yet
    save_file({k: v.contiguous() for k, v in model.state_dict().items()},
              str(directory / "open_clip_model.safetensors"))


def make_tiny_clip(directory: Path) -> None:
    import torch
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor, CLIPTokenizer

    directory.mkdir(parents=True, exist_ok=True)
    vocab = write_clip_vocab(directory)
    tokenizer = CLIPTokenizer(str(directory / "vocab.json"), str(directory / "merges.txt"))
    processor = CLIPProcessor(
        image_processor=CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}),
        tokenizer=tokenizer,
    )
    eos = vocab["<|endoftext|>"]
    config = CLIPConfig(
        text_config=dict(vocab_size=len(vocab), hidden_size=32, intermediate_size=64,
                         num_hidden_layers=1, num_attention_heads=2, max_position_embeddings=77,
                         bos_token_id=vocab["<|startoftext|>"], eos_token_id=eos, pad_token_id=eos),
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                           num_attention_heads=2, image_size=32, patch_size=8),
        projection_dim=16,
    )
    torch.manual_seed(0)
    CLIPModel(config).save_pretrained(directory, safe_serialization=True)
    processor.save_pretrained(directory)


BLIP_WORDS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "[DEC]",
              "a", "photo", "of", "cat", "dog", "the", "picture"]


def make_tiny_blip(directory: Path) -> None:
    import torch
    from transformers import (
        BertTokenizer,
        BlipConfig,
        BlipForConditionalGeneration,
        BlipImageProcessor,
        BlipProcessor,
    )

    directory.mkdir(parents=True, exist_ok=True)
    (directory / "vocab.txt").write_text("\n".join(BLIP_WORDS) + "\n")
    tokenizer = BertTokenizer(str(directory / "vocab.txt"), bos_token="[DEC]")
    processor = BlipProcessor(image_processor=BlipImageProcessor(size={"height": 32, "width": 32}),
                              tokenizer=tokenizer)
    config = BlipConfig(
        text_config=dict(vocab_size=len(BLIP_WORDS), hidden_size=32, intermediate_size=64,
                         num_hidden_layers=1, num_attention_heads=2, encoder_hidden_size=32,
                         bos_token_id=5, pad_token_id=0, sep_token_id=3, eos_token_id=3,
                         max_position_embeddings=64),
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                           num_attention_heads=2, image_size=32, patch_size=8),
        projection_dim=16,
    )
    torch.manual_seed(0)
    BlipForConditionalGeneration(config).save_pretrained(directory, safe_serialization=True)
    processor.save_pretrained(directory)


def make_tiny_safety_checker(directory: Path, threshold: float) -> None:
    """A random-weight SD safety checker whose 17 concept thresholds are `threshold`: -10 flags
    every image (cosine - threshold > 0), +10 none."""
    import torch
    from diffusers.pipelines.stable_diffusion.safety_checker import StableDiffusionSafetyChecker
    from transformers import CLIPConfig, CLIPImageProcessor

    config = CLIPConfig(
        text_config=dict(vocab_size=100, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                         num_attention_heads=2),
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                           num_attention_heads=2, image_size=32, patch_size=8),
        projection_dim=16,
    )
    torch.manual_seed(0)
    checker = StableDiffusionSafetyChecker(config)
    with torch.no_grad():
        checker.concept_embeds_weights.fill_(threshold)
        checker.special_care_embeds_weights.fill_(10.0)
    checker.save_pretrained(directory, safe_serialization=True)
    CLIPImageProcessor(size={"shortest_edge": 32},
                       crop_size={"height": 32, "width": 32}).save_pretrained(directory)


class _Handler(http.server.BaseHTTPRequestHandler):
    """Serves `server.files` {path: bytes}; `server.behaviour[path]` may say: 'cut' (first
    request sends half the body, then drops), 'slow' (first request stalls), 'norange'."""

    def log_message(self, *args):
        pass

    def do_GET(self):
        server = self.server
        server.requests.append((self.path, self.headers.get("Range")))
        data = server.files.get(self.path)
        if data is None:
            self.send_error(404, "Not Found")
            return
        behaviour = server.behaviour.get(self.path)
        count = sum(1 for p, _ in server.requests if p == self.path)
        start = 0
        rng = self.headers.get("Range")
        if rng and behaviour != "norange":
            start = int(rng.split("=")[1].split("-")[0])
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        body = data[start:]
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if behaviour == "slow" and count == 1:
            time.sleep(server.stall)
            return
        if behaviour == "cut" and count == 1:
            self.wfile.write(body[: len(body) // 2])
            self.wfile.flush()
            self.connection.shutdown(2)
            return
        self.wfile.write(body)


def hydra_dir(tmp_path: Path) -> str:
    return f"hydra.run.dir={tmp_path / 'run'}"


os.environ.setdefault("HF_HUB_OFFLINE", "1")



# --- face restoration -------------------------------------------------------------------------

# facexlib's 5-point template of a 512 px aligned face (eyes, nose tip, mouth corners)
FACE_TEMPLATE_512 = [[192.98138, 239.94708], [318.90277, 240.1936], [256.63416, 314.01935],
                     [201.26117, 371.41043], [313.08905, 371.15118]]


def make_tiny_gfpgan(path: Path) -> None:
    """Random weights of the real GFPGANv1Clean (the configuration of GFPGANv1.4, which spandrel
    fixes: 512 px, 512 style features), saved as the official checkpoint is: a torch pickle of
    {"params_ema": state_dict}."""
    import torch
    from spandrel.architectures.GFPGAN import GFPGAN

    torch.manual_seed(0)
    model = GFPGAN(out_size=512, num_style_feat=512, channel_multiplier=2, decoder_load_path=None,
                   fix_decoder=False, num_mlp=8, input_is_latent=True, different_w=True,
                   narrow=1, sft_half=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"params_ema": model.state_dict()}, path)


def make_tiny_codeformer(path: Path) -> None:
    """Random weights of the real CodeFormer architecture, shrunk where spandrel reads the size
    from the weights (1 transformer layer, a 16-entry codebook), in the official checkpoint
    layout {"params_ema": state_dict}."""
    import torch
    from spandrel_extra_arches.architectures.CodeFormer import CodeFormer

    torch.manual_seed(0)
    model = CodeFormer(dim_embd=512, n_head=8, n_layers=1, codebook_size=16, latent_size=256,
                       connect_list=["32", "64", "128", "256"], fix_modules=["quantize", "generator"])
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"params_ema": model.state_dict()}, path)


def make_face_detector_weights(directory: Path, find_faces: bool = False) -> None:
    """Random weights for facexlib's RetinaFace-MobileNet-0.25 detector and its ParseNet, under
    the file names FaceRestoreHelper reads from model_rootpath. Random weights detect nothing;
    `find_faces` sets the output heads so that every 256 px anchor of the coarsest level is a
    face (confidence ~1) whose box is the anchor and whose 5 landmarks are the 512 px template
    scaled to it (the rest of the network still runs, its outputs zeroed by the heads)."""
    import torch
    from facexlib.detection.retinaface import RetinaFace
    from facexlib.parsing.parsenet import ParseNet

    directory.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    detector = RetinaFace(network_name="mobile0.25", half=False, device="cpu")
    state = detector.state_dict()
    if find_faces:
        for head in ("ClassHead", "BboxHead", "LandmarkHead"):
            for level in range(3):
                state[f"{head}.{level}.conv1x1.weight"].zero_()
                state[f"{head}.{level}.conv1x1.bias"].zero_()
        # per anchor (256 px, 512 px): (background, face) logits; only the 256 px anchor is a face
        state["ClassHead.0.conv1x1.bias"][:] = torch.tensor([10.0, -10.0] * 2)
        state["ClassHead.1.conv1x1.bias"][:] = torch.tensor([10.0, -10.0] * 2)
        state["ClassHead.2.conv1x1.bias"][:] = torch.tensor([-10.0, 10.0, 10.0, -10.0])
        # a landmark is anchor centre + offset * 0.1 (variance) * anchor size
        offsets = [(v - 256.0) / 512.0 / 0.1 for point in FACE_TEMPLATE_512 for v in point]
        state["LandmarkHead.2.conv1x1.bias"][:10] = torch.tensor(offsets)
    torch.save(state, directory / "detection_mobilenet0.25_Final.pth")
    parser = ParseNet(in_size=512, out_size=512, parsing_ch=19)
    torch.save(parser.state_dict(), directory / "parsing_parsenet.pth")
