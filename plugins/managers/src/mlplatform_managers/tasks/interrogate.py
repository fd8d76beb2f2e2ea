"""task=interrogate: how well candidate texts describe an image, by CLIP similarity and rank
(Nataili's Interrogator: cosine similarity per text, and softmax(100 * similarity) * 100 as a
confidence ranking); embeddings are cached by content hash on the loaded model."""

from __future__ import annotations

import hashlib
import io
from pathlib import Path
from typing import Any

from mlplatform.api import ConfigError, atomic_write_json

from ..batch import BatchRun, process_device, read_image_list, run_settings, single_or_batch
from ..images import load_image
from ..schemas import InterrogateTaskConfig
from . import Task, TaskContext


def _features(output: Any) -> Any:
    """transformers returns a tensor, or (in newer versions) an output object with pooler_output."""
    import torch

    if isinstance(output, torch.Tensor):
        return output
    return getattr(output, "pooler_output", None) if getattr(output, "pooler_output", None) is not None \
        else output[0]


def image_embedding(clip: Any, image: Any) -> Any:
    """The normalised embedding of a PIL image, cached by the sha256 of its pixels."""
    import torch

    buffer = io.BytesIO()
    image.convert("RGB").save(buffer, format="PNG")
    key = hashlib.sha256(buffer.getvalue()).hexdigest()
    if key not in clip.image_cache and hasattr(clip, "encode_images"):  # open_clip
        with torch.inference_mode():
            features = clip.encode_images([image])
        clip.image_cache[key] = torch.nn.functional.normalize(features, dim=-1)[0].cpu()
    if key not in clip.image_cache:
        inputs = clip.processor(images=image.convert("RGB"), return_tensors="pt")
        pixels = inputs["pixel_values"].to(clip.device, clip.dtype)
        with torch.inference_mode():
            features = _features(clip.model.get_image_features(pixel_values=pixels)).float()
        clip.image_cache[key] = torch.nn.functional.normalize(features, dim=-1)[0].cpu()
    return clip.image_cache[key]


def text_embeddings(clip: Any, texts: list[str]) -> Any:
    """Normalised embeddings of `texts` ([len, dim]), each cached by the sha256 of its text."""
    import torch

    keys = [hashlib.sha256(t.encode("utf-8")).hexdigest() for t in texts]
    todo = [t for t, k in zip(texts, keys, strict=True) if k not in clip.text_cache]
    if todo and hasattr(clip, "encode_texts"):  # open_clip
        with torch.inference_mode():
            features = torch.nn.functional.normalize(clip.encode_texts(todo), dim=-1).cpu()
        for text, row in zip(todo, features, strict=True):
            clip.text_cache[hashlib.sha256(text.encode("utf-8")).hexdigest()] = row
        todo = []
    if todo:
        inputs = clip.processor(text=todo, return_tensors="pt", padding=True, truncation=True)
        inputs = {k: v.to(clip.device) for k, v in inputs.items()}
        with torch.inference_mode():
            features = _features(clip.model.get_text_features(**inputs)).float()
        features = torch.nn.functional.normalize(features, dim=-1).cpu()
        for text, row in zip(todo, features, strict=True):
            clip.text_cache[hashlib.sha256(text.encode("utf-8")).hexdigest()] = row
    return torch.stack([clip.text_cache[k] for k in keys])


def interrogate(clip: Any, image: Any, texts: list[str], *, similarity: bool = True,
                rank: bool = True, top_count: int = 5) -> dict[str, Any]:
    """{"similarity": {text: cosine}, "rank": [{"text", "confidence"}]} for one image."""
    import torch

    image_vec = image_embedding(clip, image)
    text_vecs = text_embeddings(clip, texts)
    cosine = text_vecs @ image_vec
    result: dict[str, Any] = {}
    if similarity:
        result["similarity"] = {t: round(float(c), 6) for t, c in zip(texts, cosine, strict=True)}
    if rank:
        confidence = torch.softmax(100.0 * cosine, dim=0) * 100.0
        order = torch.argsort(confidence, descending=True)[:top_count]
        result["rank"] = [{"text": texts[i], "confidence": round(float(confidence[i]), 4)}
                          for i in order.tolist()]
    return result


class InterrogateTask(Task):
    name = "interrogate"
    description = "rank candidate texts for an image by CLIP similarity"
    schema = InterrogateTaskConfig
    model_types = ("clip", "open_clip")

    def run(self, ctx: TaskContext, options: InterrogateTaskConfig) -> dict[str, Any]:
        from safetensors.torch import save_file

        texts = [str(t) for t in options.texts]
        if options.texts_file:
            path = Path(options.texts_file).expanduser()
            try:
                texts += [line.strip() for line in path.read_text(encoding="utf-8").splitlines()
                          if line.strip()]
            except (OSError, UnicodeDecodeError) as exc:
                raise ConfigError(f"task.texts_file {path} cannot be read: {exc}",
                                  "pass a UTF-8 text file with one text per line") from exc
        if not texts:
            raise ConfigError("task=interrogate needs candidate texts",
                              "pass task.texts='[a cat,a dog]' or task.texts_file=FILE")
        if options.top_count < 1:
            raise ConfigError(f"task.top_count is {options.top_count}; it must be >= 1",
                              "pass task.top_count=5")
        if not (options.similarity or options.rank):
            raise ConfigError("task.similarity and task.rank are both false: nothing to report",
                              "leave one of them true")
        single_or_batch("interrogate", options.input, options.batch_file)
        if options.batch_file:
            return self.run_batch(ctx, options, texts)
        image = load_image(options.input)
        with ctx.manager.use(ctx.model, device=ctx.device, dtype=ctx.dtype) as clip:
            result = interrogate(clip, image, texts, similarity=options.similarity,
                                 rank=options.rank, top_count=options.top_count)
            embeddings = {"image": image_embedding(clip, image).unsqueeze(0).contiguous(),
                          "texts": text_embeddings(clip, texts).contiguous()}
        result.update({"model": ctx.model, "input": str(options.input), "texts": texts})
        json_path = atomic_write_json(ctx.output_dir / "interrogation.json", result)
        emb_path = ctx.output_dir / "embeddings.safetensors"
        save_file(embeddings, str(emb_path), metadata={"model": ctx.model or "",
                                                       "texts": "\n".join(texts)})
        for item in result.get("rank", []):
            print(f"{item['confidence']:8.3f}%  {item['text']}")
        print(f"saved {json_path} and {emb_path}")
        return {**result, "path": str(json_path), "embeddings": str(emb_path)}

    def run_batch(self, ctx: TaskContext, options: InterrogateTaskConfig,
                  texts: list[str]) -> dict[str, Any]:
        """interrogations.json ([{item, input, similarity, rank}] in item order) and
        embeddings.safetensors ("images" [N, dim] in item order, "texts" [T, dim]) for every
        image of the batch file; each process does its share with the model loaded once."""
        import torch
        from safetensors.torch import save_file

        items = read_image_list(options.batch_file)
        settings = {**run_settings(ctx, options), "texts": texts}
        batch = BatchRun(items, ctx.output_dir, "interrogations.json", settings)
        records = []
        with ctx.manager.use(ctx.model, device=process_device(ctx.device), dtype=ctx.dtype) as clip:
            text_vecs = text_embeddings(clip, texts).contiguous()
            for index, source in batch.share:
                image = load_image(source)
                result = interrogate(clip, image, texts, similarity=options.similarity,
                                     rank=options.rank, top_count=options.top_count)
                records.append({**result, "item": index, "input": source})
                # the image's embedding travels with its progress line (exact float32 bytes)
                batch.done(index, [records[-1]],
                           embedding=_to_text(image_embedding(clip, image)))
                best = result.get("rank", [{}])[0].get("text", "")
                print(f"[{batch.rank}/{batch.world}] {source}: {best}")
        emb_path = ctx.output_dir / "embeddings.safetensors"

        def save_embeddings(lines: list[dict[str, Any]]) -> None:  # process 0, items in order
            images = torch.stack([_from_text(line["embedding"]) for line in lines])
            save_file({"images": images.contiguous(), "texts": text_vecs}, str(emb_path),
                      metadata={"model": ctx.model or "", "texts": "\n".join(texts),
                                "inputs": "\n".join(items)})

        if batch.finish(also=save_embeddings) is not None:
            print(f"saved {batch.path} and {emb_path}")
        return {"images": records, "texts": texts, "items": len(items), "resumed": batch.resumed,
                "processes": batch.world, "process": batch.rank}


def _to_text(vector: Any) -> str:
    """A float32 vector as base64 of its bytes: exact, and a quarter the size of JSON numbers."""
    import base64

    return base64.b64encode(vector.detach().float().cpu().contiguous().numpy().tobytes()).decode()


def _from_text(text: str) -> Any:
    import base64

    import numpy as np
    import torch

    return torch.from_numpy(np.frombuffer(base64.b64decode(text), dtype=np.float32).copy())
