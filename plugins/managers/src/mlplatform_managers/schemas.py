"""Typed schemas of this plugin's config groups (job/infer, manager/*, model/*, task/*): Hydra
rejects a wrong type or an unknown key before the job runs."""

from __future__ import annotations

from dataclasses import dataclass, field

from mlplatform.api import ComponentConfig, JobConfig


@dataclass
class InferJobConfig(JobConfig):
    """`job=infer`: the task group picks what runs (task=NAME), model=NAME what it runs on."""


@dataclass
class ManagerConfig(ComponentConfig):
    """manager=default: where models live and how they are fetched and budgeted."""

    # null: $MLPLATFORM_MODELS_DIR or ~/.cache/mlplatform/models
    models_dir: str | None = None
    # user catalog directories (*.json), after $MLPLATFORM_CATALOG_PATH; later ones override
    catalog_dirs: list = field(default_factory=list)
    # never touch the network (HF_HUB_OFFLINE=1 does the same)
    offline: bool = False
    # memory budget on the chosen device in bytes; null: free memory minus reserve_bytes
    budget_bytes: int | None = None
    reserve_bytes: int = 1 << 30
    # models whose files may lack a sha256 / may be loaded as full pickles (per model opt-outs)
    allow_unhashed: list = field(default_factory=list)
    allow_pickle: list = field(default_factory=list)
    # models whose restrictive licence you accept (CodeFormer: S-Lab License 1.0, non-commercial)
    accept_licences: list = field(default_factory=list)
    # Hugging Face cache for hf_repo downloads; null: huggingface_hub's default
    hf_cache_dir: str | None = None
    download_timeout: float = 30.0
    download_retries: int = 3
    download_backoff: float = 1.0
    progress: bool = True


@dataclass
class ModelConfig(ComponentConfig):
    """model=NAME: a catalog entry (model.name=NAME selects entries of user catalogs too);
    `none` (the default) selects no model."""

    name: str = "none"


@dataclass
class ListTaskConfig(ComponentConfig):
    # only this catalog type (esrgan, clip, ...); null: all
    type: str | None = None
    # only models whose files are all present
    available_only: bool = False


@dataclass
class UpscaleTaskConfig(ComponentConfig):
    # the image to upscale (PNG, JPEG, WebP; RGB, RGBA, grey or grey + alpha; 8 bit, or 16-bit
    # PNG); required unless batch_file is given
    input: str | None = None
    # tile size in input pixels (0: whole image at once); halved on out-of-memory
    tile: int = 512
    # context pixels around each tile (discarded after the model ran)
    overlap: int = 32
    # output file name in the run dir; empty: <input stem>_x<scale>.png
    output: str = ""
    # 8 or 16 bits per channel in the output PNG; null: the input's
    bit_depth: int | None = None
    # a UTF-8 file with one image path per line (instead of input): every image upscaled with
    # the model loaded once, split across processes under `accelerate launch` / torchrun
    batch_file: str | None = None


@dataclass
class InterrogateTaskConfig(ComponentConfig):
    # the image to interrogate; required unless batch_file is given
    input: str | None = None
    # a UTF-8 file with one image path per line (instead of input): every image interrogated
    # against the same texts, split across processes under `accelerate launch` / torchrun
    batch_file: str | None = None
    # candidate texts
    texts: list = field(default_factory=list)
    # a UTF-8 file with one candidate text per line (added to texts)
    texts_file: str | None = None
    # report cosine similarity per text / a softmax ranking (confidence in percent)
    similarity: bool = True
    rank: bool = True
    # how many ranked texts to keep
    top_count: int = 5


@dataclass
class CaptionTaskConfig(ComponentConfig):
    # the image to caption; required unless batch_file is given
    input: str | None = None
    # a UTF-8 file with one image path per line (instead of input): captions.json for all,
    # split across processes under `accelerate launch` / torchrun
    batch_file: str | None = None
    # text the caption starts with (conditional captioning); empty: unconditional
    prompt: str = ""
    max_new_tokens: int = 30
    # 1: greedy decoding
    num_beams: int = 1


@dataclass
class SafetyCheckTaskConfig(ComponentConfig):
    # the image to check; required unless batch_file is given
    input: str | None = None
    # a UTF-8 file with one image path per line (instead of input and output): each saved as
    # <stem>_checked.png, safety.json a list; split across processes under `accelerate launch`
    batch_file: str | None = None
    # output file name in the run dir (the image, or a black one when flagged);
    # empty: <input stem>_checked.png
    output: str = ""


@dataclass
class Txt2ImgTaskConfig(ComponentConfig):
    # the prompt (ignored when batch_file is given)
    prompt: str = ""
    negative_prompt: str = ""
    # a file of work items: .txt (one prompt per line) or .jsonl (one object per line with
    # prompt, negative_prompt, seed, and for img2img / inpaint input and mask); split across
    # processes under `accelerate launch`
    batch_file: str | None = None
    # null: the top-level seed; item i, image b gets seed + i * images_per_prompt + b
    seed: int | None = None
    steps: int = 30
    guidance: float = 7.5
    # default (the model's own), ddim, pndm, euler, euler_a, heun, lms, dpmpp_2m, dpm_2, unipc, ddpm
    scheduler: str = "default"
    images_per_prompt: int = 1
    # pixels, multiples of 8; null: 512 (txt2img) or the input image's size (img2img, inpaint)
    width: int | None = None
    height: int | None = None
    # a safety_checker catalog model applied to every image (flagged: replaced by black, marked)
    safety_checker: str | None = None
    # output names: <prefix><item index>_<image>.png; empty: the task name and '_'
    output_prefix: str = ""
    # compiled catalog models (job=build artifacts: vae_decode, clip_text, unet) swapped into the
    # pipeline in place of its eager VAE decoder / text encoder / UNet for this run
    compiled: list = field(default_factory=list)


@dataclass
class Img2ImgTaskConfig(Txt2ImgTaskConfig):
    # the starting image (items of a .jsonl batch_file may give their own)
    input: str | None = None
    # how much of the input is re-noised (0: unchanged, 1: fully)
    strength: float = 0.75


@dataclass
class InpaintTaskConfig(Img2ImgTaskConfig):
    # the mask: white pixels are repainted, black kept (items of a .jsonl batch_file may give their own)
    mask: str | None = None
    strength: float = 1.0


@dataclass
class FaceRestoreTaskConfig(ComponentConfig):
    # the image (PNG, JPEG, WebP; alpha is dropped, output is 8-bit RGB); required unless
    # batch_file is given
    input: str | None = None
    # full: detect faces (facexlib), align each to 512 px, restore, paste back into the image;
    # aligned: the input already is an aligned face crop (resized to 512 px), restored directly
    mode: str = "full"
    # face_detector catalog entry for mode=full (fetched and verified like any model; the
    # MobileNet one is unhashed and needs manager.allow_unhashed=[facexlib_retinaface_mobilenet])
    detector: str = "facexlib_retinaface_resnet50"
    # a directory already holding facexlib's weight files (facexlib's model_rootpath); replaces
    # the catalog entry's download (nothing is fetched; missing files are an error)
    detector_dir: str | None = None
    # restore only the face nearest the image centre (mode=full)
    only_center_face: bool = False
    # background scale factor (Lanczos resize) the restored faces are pasted into (mode=full)
    upscale: int = 1
    # CodeFormer only: 0 favours quality, 1 fidelity to the input; null: CodeFormer's 0.5
    fidelity: float | None = None
    # output file name in the run dir; empty: <input stem>_restored.png
    output: str = ""
    # a UTF-8 file with one image path per line (instead of input): every image restored with the
    # model loaded once (outputs <stem>_restored.png, records restored.json), resumable, split
    # across processes under `accelerate launch` / torchrun
    batch_file: str | None = None
