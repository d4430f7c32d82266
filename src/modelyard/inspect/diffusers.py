"""diffusers pipeline folders: model_index.json and its component folders (section 5)."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass

from modelyard.errors import InvalidModelFileError
from modelyard.inspect._bounded import ByteSource, read_json_object
from modelyard.inspect._fields import opt_int, opt_str

OpenFile = Callable[[str], AbstractContextManager[ByteSource]]

# Pipeline class name -> (base family, task); matched by prefix, longest first.
_PIPELINE_FAMILIES = (
    ("StableDiffusionXL", "SDXL", "text-to-image"),
    ("StableDiffusion3", "SD3", "text-to-image"),
    ("StableVideoDiffusion", "SVD", "image-to-video"),
    ("StableDiffusion", None, "text-to-image"),  # SD 1.x or 2.x: the UNet's cross-attention width says
    ("Flux2", "Flux", "text-to-image"),
    ("Flux", "Flux", "text-to-image"),
    ("PixArt", "PixArt", "text-to-image"),
    ("Kandinsky", "Kandinsky", "text-to-image"),
    ("AnimateDiff", "SD 1.5", "text-to-video"),
    ("TextToVideo", None, "text-to-video"),
    ("I2VGenXL", None, "image-to-video"),
    ("CogVideoX", None, "text-to-video"),
    ("HunyuanVideo", None, "text-to-video"),
    ("Wan", None, "text-to-video"),
    ("LTX", None, "text-to-video"),
)
_VIDEO_TASKS = {"text-to-video", "image-to-video"}


@dataclass(frozen=True)
class DiffusersPipeline:
    pipeline_class: str
    diffusers_version: str | None
    components: dict[str, str]  # component -> class ("" when absent)
    base_model: str | None
    task: str
    variant: str | None
    prediction_type: str | None
    resolution: int | None

    @property
    def is_video(self) -> bool:
        return self.task in _VIDEO_TASKS


def read_pipeline(folder: str, paths: set[str], open_file: OpenFile) -> DiffusersPipeline:
    index_path = f"{folder}/model_index.json" if folder else "model_index.json"
    with open_file(index_path) as source:
        raw = read_json_object(source)
        name = source.name
    class_name = raw.get("_class_name")
    if isinstance(class_name, list) and len(class_name) == 2 and all(isinstance(p, str) for p in class_name):
        class_name = class_name[1]  # a custom pipeline: [module_file, class]
    if not isinstance(class_name, str) or not class_name:
        raise InvalidModelFileError("missing or not a class name", path=name, field="_class_name")
    components = _components(raw, name, folder, paths)
    base, task = _family(class_name)
    variant = (
        "inpainting" if "Inpaint" in class_name else ("refiner" if "Img2Img" in class_name and base == "SDXL" else None)
    )
    unet_context, sample_size = _unet_facts(folder, paths, open_file)
    if base is None and "Stable" in class_name and unet_context is not None:
        base = {768: "SD 1.5", 1024: "SD 2", 2048: "SDXL"}.get(unet_context)
    prediction = _prediction_type(folder, paths, open_file)
    return DiffusersPipeline(
        pipeline_class=class_name,
        diffusers_version=opt_str(raw, "_diffusers_version", name),
        components=components,
        base_model=base,
        task=task,
        variant=variant,
        prediction_type=prediction,
        resolution=sample_size * 8 if sample_size else None,  # latents are 1/8 of the image
    )


def _components(raw: dict[str, object], name: str, folder: str, paths: set[str]) -> dict[str, str]:
    components: dict[str, str] = {}
    for key, value in raw.items():
        if key.startswith("_") or not isinstance(value, list):
            continue  # plain pipeline options (requires_safety_checker, ...)
        if len(value) != 2 or not all(part is None or isinstance(part, str) for part in value):
            raise InvalidModelFileError("a component must be a [library, class] pair", path=name, field=key)
        if "/" in key or "\\" in key or ".." in key:
            raise InvalidModelFileError(f"component name {key!r} is not a plain folder name", path=name)
        library, class_name = value
        if library is None or class_name is None:
            components[key] = ""  # declared absent ([null, null])
            continue
        prefix = f"{folder}/{key}/" if folder else f"{key}/"
        if not any(path.startswith(prefix) for path in paths):
            raise InvalidModelFileError(f"names component {key!r}, but the folder {prefix} is missing", path=name)
        components[key] = class_name
    return components


def _family(class_name: str) -> tuple[str | None, str]:
    for prefix, base, task in _PIPELINE_FAMILIES:
        if class_name.startswith(prefix):
            if "Img2Img" in class_name or "Image2Image" in class_name:
                task = "image-to-image"
            if "Inpaint" in class_name:
                task = "inpainting"
            return base, task
    return None, "image-to-video" if "Video" in class_name else "text-to-image"


def _unet_facts(folder: str, paths: set[str], open_file: OpenFile) -> tuple[int | None, int | None]:
    path = f"{folder}/unet/config.json" if folder else "unet/config.json"
    if path not in paths:
        path = f"{folder}/transformer/config.json" if folder else "transformer/config.json"
        if path not in paths:
            return None, None
    with open_file(path) as source:
        raw = read_json_object(source)
        context = raw.get("cross_attention_dim")
        sample = opt_int(raw, "sample_size", source.name, maximum=65536)
    return (context if isinstance(context, int) and not isinstance(context, bool) else None), sample


def _prediction_type(folder: str, paths: set[str], open_file: OpenFile) -> str | None:
    path = f"{folder}/scheduler/scheduler_config.json" if folder else "scheduler/scheduler_config.json"
    if path not in paths:
        return None
    with open_file(path) as source:
        return opt_str(read_json_object(source), "prediction_type", source.name)
