"""task=face_restore: faces restored with a gfpgan or codeformer model, either in a whole image
(facexlib detection, alignment, paste-back) or on an already aligned face crop; one image
(task.input) or a file of image paths (task.batch_file, resumable, split across processes)."""

from __future__ import annotations

import contextlib
import dataclasses
import logging
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from mlplatform.api import ConfigError, sha256_file

from ..batch import BatchRun, process_device, read_image_list, run_settings, single_or_batch
from ..faces import (
    DETECTOR_FILES,
    detector_weights_dir,
    face_helper,
    restore_aligned,
    restore_in_image,
)
from ..images import load_image, save_array
from ..schemas import FaceRestoreTaskConfig
from . import Task, TaskContext

log = logging.getLogger(__name__)
MODES = ("full", "aligned")


class FaceRestoreTask(Task):
    name = "face_restore"
    description = "restore faces with a gfpgan/codeformer model (detect + paste back, or aligned)"
    schema = FaceRestoreTaskConfig
    model_types = ("gfpgan", "codeformer")

    def run(self, ctx: TaskContext, options: FaceRestoreTaskConfig) -> dict[str, Any]:
        if options.mode not in MODES:
            raise ConfigError(f"task.mode is {options.mode!r}; use full or aligned",
                              "full detects faces in a photo; aligned takes a 512 px face crop")
        if options.upscale < 1 or options.upscale > 8:
            raise ConfigError(f"task.upscale is {options.upscale}; use 1 to 8", "pass task.upscale=1")
        entry = ctx.manager.entry(ctx.model)
        if options.fidelity is not None:
            if entry.type != "codeformer":
                raise ConfigError(f"task.fidelity applies to codeformer models; {ctx.model} is "
                                  f"{entry.type}", "drop task.fidelity")
            if not 0.0 <= options.fidelity <= 1.0:
                raise ConfigError(f"task.fidelity is {options.fidelity}; it must be in [0, 1]",
                                  "0 favours quality, 1 fidelity to the input")
        single_or_batch("face_restore", options.input, options.batch_file, (options.output,))
        if options.batch_file:
            items = read_image_list(options.batch_file)
        else:
            name = options.output or f"{Path(options.input).stem}_restored.png"
            if Path(name).name != name:
                raise ConfigError(f"task.output {name!r} must be a file name, not a path",
                                  "the output goes to the run dir; pass task.output=NAME.png")
            image = _rgb(options.input)  # an unreadable input fails before any model loads
        detector = None
        if options.mode == "full":  # the detector first: a missing one fails before the model loads
            detector = self.detector(ctx, options)
        if not options.batch_file:
            with self.restorer(ctx, options, entry.type, detector) as restore:
                return restore(image, options.input, name)
        batch = BatchRun(items, ctx.output_dir, "restored.json", run_settings(ctx, options))
        records = []
        with self.restorer(dataclasses.replace(ctx, device=process_device(ctx.device)), options,
                           entry.type, detector) as restore:
            for index, source in batch.share:
                records.append({**restore(_rgb(source), source,
                                          f"{Path(source).stem}_restored.png"),
                                "item": index, "input": source})
                batch.done(index, [records[-1]])
        batch.finish()
        return {"images": records, "items": len(items), "resumed": batch.resumed,
                "processes": batch.world, "process": batch.rank}

    @contextlib.contextmanager
    def restorer(self, ctx: TaskContext, options: FaceRestoreTaskConfig, model_type: str,
                 detector: tuple[Path, str] | None) -> Iterator[Callable[..., dict]]:
        """restore(RGB array, source path, output name) -> report, with the model (and, in full
        mode, facexlib's helper) loaded once for every image."""
        import numpy as np

        with ctx.manager.use(ctx.model, device=ctx.device, dtype=ctx.dtype) as model:
            helper = None
            if detector is not None:
                helper = face_helper(detector[0], detector[1], options.upscale, model.device)

            def restore(image: Any, source: str, name: str) -> dict[str, Any]:
                def one_face(face):
                    return restore_aligned(model, face, options.fidelity)

                if helper is None:
                    result, faces = one_face(image.astype(np.float32) / 255.0), 1
                else:
                    pasted, faces = restore_in_image(helper, image, one_face,
                                                     only_center_face=options.only_center_face)
                    result = pasted.astype(np.float32) / 255.0
                    if faces == 0:
                        log.warning("no face found in %s; the output is the input%s", source,
                                    " resized" if options.upscale > 1 else "")
                parameters = {
                    "task": "face_restore", "model": ctx.model, "model_type": model_type,
                    "mode": options.mode, "faces": faces, "fidelity": options.fidelity,
                    "upscale": options.upscale if options.mode == "full" else None,
                    "detector": ((options.detector_dir or options.detector)
                                 if options.mode == "full" else None),
                    "input": str(source), "input_sha256": sha256_file(source),
                    "device": str(model.device), "dtype": str(model.dtype).removeprefix("torch."),
                }
                path = save_array(result, ctx.output_dir / name, parameters, 8)
                height, width = result.shape[:2]
                print(f"restored {faces} face(s) in {source} ({options.mode}) with {ctx.model} "
                      f"-> {path} ({width}x{height})")
                return {"output": str(path), "faces": faces, "width": width, "height": height,
                        "parameters": parameters}

            yield restore

    def detector(self, ctx: TaskContext, options: FaceRestoreTaskConfig) -> tuple[Path, str]:
        """(directory holding facexlib's weights, facexlib detector name): task.detector_dir as
        given, or the face_detector catalog entry task.detector fetched and verified."""
        if options.detector_dir:
            names = [n for n, files in DETECTOR_FILES.items()
                     if (Path(options.detector_dir).expanduser() / files[0]).is_file()]
            det_model = names[0] if names else "retinaface_resnet50"
            return detector_weights_dir(DETECTOR_FILES[det_model],
                                        Path(options.detector_dir).expanduser(), det_model), det_model
        entry = ctx.manager.entry(options.detector)
        if entry.type != "face_detector":
            raise ConfigError(f"task.detector {options.detector!r} is a {entry.type} model",
                              "name a face_detector entry, e.g. facexlib_retinaface_resnet50")
        det_model = entry.settings().det_model
        files = ctx.manager.download(options.detector)  # verified; offline: a clear error
        directories = {p.parent for p in files.values()}
        if len(directories) != 1:
            raise ConfigError(f"face detector {options.detector!r}: its files must share one "
                              "directory", "list them without sub-directories in the entry")
        return detector_weights_dir(DETECTOR_FILES[det_model], directories.pop(), det_model), det_model


def _rgb(path: str) -> Any:
    """The image at `path` as an H x W x 3 uint8 RGB array (alpha dropped)."""
    import numpy as np

    return np.asarray(load_image(path).convert("RGB"))
