"""The mlplatform entry point: managers and tasks, the `infer` job, and the config groups.

Imports stay light (no torch) so listing plugins is fast; heavy modules load on first use.
"""

from __future__ import annotations

from mlplatform.api import hookimpl


def _tasks():
    from .tasks.caption import CaptionTask
    from .tasks.diffusion import Img2ImgTask, InpaintTask, Txt2ImgTask
    from .tasks.face_restore import FaceRestoreTask
    from .tasks.interrogate import InterrogateTask
    from .tasks.listing import ListTask
    from .tasks.safety import SafetyCheckTask
    from .tasks.upscale import UpscaleTask

    return [ListTask(), UpscaleTask(), InterrogateTask(), CaptionTask(),
            SafetyCheckTask(), Txt2ImgTask(), Img2ImgTask(), InpaintTask(), FaceRestoreTask()]


def _managers():
    from .types.blip import BlipManager
    from .types.clip import ClipManager
    from .types.compiled import CompiledManager
    from .types.esrgan import EsrganManager
    from .types.face_restore import CodeFormerManager, FaceRestoreManager
    from .types.open_clip import OpenClipManager
    from .types.safety_checker import SafetyCheckerManager
    from .types.stable_diffusion import StableDiffusionManager

    return {"esrgan": EsrganManager, "clip": ClipManager, "blip": BlipManager,
            "safety_checker": SafetyCheckerManager, "stable_diffusion": StableDiffusionManager,
            "compiled": CompiledManager, "open_clip": OpenClipManager,
            "gfpgan": FaceRestoreManager, "codeformer": CodeFormerManager}


@hookimpl
def register_model_managers(registry):
    for name, cls in _managers().items():
        registry.add("manager", name, cls, description=cls.description)
    for task in _tasks():
        registry.add("task", task.name, task, description=task.description)


@hookimpl
def register_jobs(registry):
    from .job import run_infer_job

    registry.add_job("infer", run_infer_job,
                     "run a model from the catalog: task=NAME model=NAME (task=list shows them)")


@hookimpl
def register_config_groups(registry):
    from .schemas import InferJobConfig, ManagerConfig, ModelConfig

    registry.add_config_package("mlplatform_managers.conf")
    registry.add_config_schema("job", "infer", InferJobConfig)
    registry.add_config_schema("manager", "default", ManagerConfig)
    # every model option (one per packaged catalog entry, plus `none`) shares one schema
    registry.add_config_schema("model", "base", ModelConfig)
    for task in _tasks():
        registry.add_config_schema("task", task.name, task.schema)
