"""Face restoration around a spandrel face network: one aligned 512 px face through it, and
whole images through facexlib's FaceRestoreHelper (detection, 5-point landmarks, alignment to the
512 px template, inverse-affine paste-back with a soft mask).

The networks take and give [-1, 1] RGB (their training normalisation); spandrel passes tensors
through unchanged, so the scaling happens here."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from mlplatform.api import ConfigError

from .errors import DownloadError

FACE_SIZE = 512

# facexlib's detector names -> the weight files FaceRestoreHelper reads from model_rootpath
# (it always builds the ParseNet face parser too, even when use_parse is off)
DETECTOR_FILES = {
    "retinaface_resnet50": ("detection_Resnet50_Final.pth", "parsing_parsenet.pth"),
    "retinaface_mobile0.25": ("detection_mobilenet0.25_Final.pth", "parsing_parsenet.pth"),
}


def restore_aligned(descriptor: Any, face: Any, fidelity: float | None = None) -> Any:
    """An aligned face (H x W x 3 float RGB in [0, 1], resized to 512 px if needed) restored by
    `descriptor` (a spandrel ImageModelDescriptor): the same layout back, 512 x 512."""
    import numpy as np
    import torch

    if face.shape[:2] != (FACE_SIZE, FACE_SIZE):
        import cv2

        face = cv2.resize(face, (FACE_SIZE, FACE_SIZE), interpolation=cv2.INTER_LANCZOS4)
    x = torch.from_numpy(np.ascontiguousarray(face, dtype=np.float32)).permute(2, 0, 1)[None]
    x = (x * 2 - 1).to(descriptor.device, descriptor.dtype)
    with torch.inference_mode():
        if fidelity is None:
            out = descriptor(x)
        else:  # CodeFormer's fidelity weight w; spandrel's call_fn does not pass it
            out = descriptor.model(x, weight=float(fidelity))[0]
    out = ((out.float() + 1) / 2).clamp(0, 1)
    return out[0].permute(1, 2, 0).cpu().numpy()


def detector_weights_dir(files: Sequence[str], directory: Path, det_model: str) -> Path:
    """`directory` when it holds every file facexlib would otherwise download for `det_model`;
    a clear error naming the missing ones when not (facexlib must never fetch on its own)."""
    needed = DETECTOR_FILES[det_model]
    missing = [name for name in needed if not (directory / name).is_file()]
    if missing:
        raise DownloadError(
            f"face detector weights {', '.join(missing)} are missing from {directory}",
            "put facexlib's files there (github.com/xinntao/facexlib releases), or leave "
            "task.detector_dir unset to fetch the catalog entry task.detector",
        )
    return directory


def face_helper(weights_dir: Path, det_model: str, upscale: int, device: Any) -> Any:
    """facexlib's FaceRestoreHelper reading its detector (and parser) weights from
    `weights_dir` only (torch>=2.6 makes its torch.load weights_only)."""
    import warnings

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # facexlib's torch.jit.script use
            from facexlib.utils.face_restoration_helper import FaceRestoreHelper
    except ImportError as exc:
        raise ConfigError(
            f"task.mode=full needs facexlib for face detection and alignment ({exc})",
            "pip install 'mlplatform-managers[faces]', or pass task.mode=aligned with an "
            "aligned 512 px face crop",
        ) from exc

    return FaceRestoreHelper(upscale, face_size=FACE_SIZE, crop_ratio=(1, 1), det_model=det_model,
                             save_ext="png", use_parse=False, device=device,
                             model_rootpath=str(weights_dir))


def restore_in_image(helper: Any, image: Any, restore: Callable[[Any], Any], *,
                     landmarks: Sequence[Any] | None = None,
                     only_center_face: bool = False) -> tuple[Any, int]:
    """(restored image, faces) for `image` (H x W x 3 uint8 RGB): every face found by the
    helper's detector, or at the given 5-point `landmarks` (eyes, nose, mouth corners in image
    pixels), aligned to 512 px, passed through `restore` (float RGB [0, 1] -> same) and pasted
    back; pixels away from the faces keep their values (background resized by `upscale`)."""
    import numpy as np

    helper.clean_all()
    helper.read_image(np.ascontiguousarray(image[..., ::-1]))  # facexlib works in BGR
    if landmarks is None:
        helper.get_face_landmarks_5(only_center_face=only_center_face, resize=640,
                                    eye_dist_threshold=5)
    else:
        for points in landmarks:
            points = np.asarray(points, dtype=np.float32)
            if points.shape != (5, 2):
                raise ConfigError(f"face landmarks must be 5 (x, y) points, got {points.shape}",
                                  "give left eye, right eye, nose, left and right mouth corner")
            helper.all_landmarks_5.append(points)
    helper.align_warp_face()
    for crop in helper.cropped_faces:
        face = restore(crop[..., ::-1].astype(np.float32) / 255.0)
        helper.add_restored_face((np.clip(face, 0, 1)[..., ::-1] * 255.0).round().astype(np.uint8))
    helper.get_inverse_affine(None)
    pasted = helper.paste_faces_to_input_image()
    return np.ascontiguousarray(pasted[..., ::-1]), len(helper.cropped_faces)
