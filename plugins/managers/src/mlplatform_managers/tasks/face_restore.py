"""task=face_restore: faces restored with a gfpgan or codeformer model, either in a whole image
(facexlib detection, alignment, paste-back) or on an already aligned face crop."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from mlplatform.api import ConfigError, sha256_file

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
        import numpy as np

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
        name = options.output or f"{Path(options.input).stem}_restored.png"
        if Path(name).name != name:
            raise ConfigError(f"task.output {name!r} must be a file name, not a path",
                              "the output goes to the run dir; pass task.output=NAME.png")
        image = np.asarray(load_image(options.input).convert("RGB"))
        weights_dir = det_model = None
        if options.mode == "full":  # the detector first: a missing one fails before the model loads
            weights_dir, det_model = self.detector(ctx, options)
        with ctx.manager.use(ctx.model, device=ctx.device, dtype=ctx.dtype) as model:
            def restore(face):
                return restore_aligned(model, face, options.fidelity)

            if options.mode == "aligned":
                result, faces = restore(image.astype(np.float32) / 255.0), 1
            else:
                helper = face_helper(weights_dir, det_model, options.upscale, model.device)
                pasted, faces = restore_in_image(helper, image, restore,
                                                 only_center_face=options.only_center_face)
                result = pasted.astype(np.float32) / 255.0
                if faces == 0:
                    log.warning("no face found in %s; the output is the input%s", options.input,
                                " resized" if options.upscale > 1 else "")
            device, dtype = str(model.device), str(model.dtype).removeprefix("torch.")
        parameters = {
            "task": "face_restore", "model": ctx.model, "model_type": entry.type,
            "mode": options.mode, "faces": faces, "fidelity": options.fidelity,
            "upscale": options.upscale if options.mode == "full" else None,
            "detector": (options.detector_dir or options.detector) if options.mode == "full" else None,
            "input": str(options.input), "input_sha256": sha256_file(options.input),
            "device": device, "dtype": dtype,
        }
        path = save_array(result, ctx.output_dir / name, parameters, 8)
        height, width = result.shape[:2]
        print(f"restored {faces} face(s) in {options.input} ({options.mode}) with {ctx.model} "
              f"-> {path} ({width}x{height})")
        return {"output": str(path), "faces": faces, "width": width, "height": height,
                "parameters": parameters}

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
