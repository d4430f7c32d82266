"""CivitAI model-version answers -> `ImageConfig` (reference section 7).

    answer = fetch_model_version(128713)                       # GET /api/v1/model-versions/128713
    answer = read_model_version(Path("version.json"))         # or the same answer, saved
    imported = import_model_version(answer, 128713)
    imported.config   # ImageConfig(base_model="SD 1.5", checkpoint_type="lora", trigger_words=[...], ...)
    imported.files    # (MarketplaceFile(name="x.safetensors", sha256="...", autov2="..."), ...)

The fetch uses the standard library only (CivitAI needs no client), with a timeout, and sends
CIVITAI_API_TOKEN as a Bearer token when it is set. CivitAI's schema drifts (`allowCommercialUse`
is a Postgres array literal in one answer and a JSON array in another, image `nsfw` was once a
word), so every field is optional and both shapes are read.
"""

from __future__ import annotations

import os
import posixpath
import re
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from modelyard.errors import InvalidInputError, NotFoundError, RemoteError
from modelyard.marketplace import (
    Answer,
    MarketplaceFile,
    MarketplaceImport,
    Source,
    answer_object,
    hex_digest,
    read_answer,
)
from modelyard.modelconfig import ImagePreview, parse_model_config

SOURCE: Source = "civitai"
API_ROOT = "https://civitai.com/api/v1"
FETCH_TIMEOUT = 30.0
SAVED_FILE = "version.json"
TOKEN_VARIABLE = "CIVITAI_API_TOKEN"

# CivitAI model types -> ImageConfig.checkpoint_type (compared case-insensitively).
CHECKPOINT_TYPES = {
    "checkpoint": "checkpoint",
    "lora": "lora",
    "locon": "lora",
    "dora": "lora",
    "textualinversion": "embedding",
    "hypernetwork": "hypernetwork",
    "vae": "vae",
}
# Model types that run in a text-to-image pipeline (the others: ControlNets, upscalers, ...).
_TEXT_TO_IMAGE = {"checkpoint", "lora", "embedding", "hypernetwork"}
# baseModelType -> ImageConfig.variant; "Standard" means no variant.
VARIANTS = {"inpainting": "inpainting", "refiner": "refiner", "pix2pix": "pix2pix"}
# files[].metadata.fp -> modelyard's dtype names.
FP_DTYPES = {"fp32": "f32", "fp16": "f16", "bf16": "bf16", "fp8": "f8", "nf4": "nf4"}
# files[].metadata.format -> modelyard's format names.
FILE_FORMATS = {"safetensor": "safetensors", "pickletensor": "pytorch", "gguf": "gguf", "onnx": "onnx"}
_SUFFIX_FORMATS = {".safetensors": "safetensors", ".ckpt": "pytorch", ".pt": "pytorch", ".bin": "pytorch"}
# The hashes CivitAI computes per file; SHA256 and AutoV2 have fixed lengths.
HASH_LENGTHS: dict[str, int | None] = {
    "SHA256": 64,
    "AutoV1": None,
    "AutoV2": 10,
    "AutoV3": None,
    "CRC32": None,
    "BLAKE3": None,
}
MAX_SAMPLERS = 5
_VERSION_IN_URL = re.compile(r"modelVersionId=(\d+)")


# -- fetching ---------------------------------------------------------------------------------


def parse_version_id(text: str) -> int:
    """A model version id: the number, or a model page URL carrying `?modelVersionId=N`."""
    stripped = text.strip()
    if stripped.isdigit() and int(stripped) > 0:
        return int(stripped)
    found = _VERSION_IN_URL.search(stripped)
    if found:
        return int(found.group(1))
    raise InvalidInputError(
        f"{text!r} is not a CivitAI model version id: give the number after modelVersionId= in the model page's URL",
        field="VERSION_ID",
    )


def version_url(version_id: int) -> str:
    return f"{API_ROOT}/model-versions/{version_id}"


def save_hint(url: str) -> str:
    """What to do when CivitAI cannot be asked from here: save its answer elsewhere."""
    command = f"curl -fsSL '{url}' -o {SAVED_FILE}"
    return f"on a machine that reaches CivitAI run `{command}` and pass --from-file {SAVED_FILE}"


def fetch_model_version(version_id: int, *, timeout: float = FETCH_TIMEOUT) -> dict[str, Any]:
    """Ask CivitAI for a model version (with CIVITAI_API_TOKEN as Bearer token when set)."""
    from modelyard import __version__
    from modelyard.loaders import MAX_DOCUMENT_BYTES, parse_json

    url = version_url(version_id)
    headers = {"Accept": "application/json", "User-Agent": f"modelyard/{__version__}"}
    token = os.environ.get(TOKEN_VARIABLE)
    if token:
        headers["Authorization"] = f"Bearer {token}"
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout) as response:
            body: bytes = response.read(MAX_DOCUMENT_BYTES + 1)
    except urllib.error.HTTPError as exc:
        raise _http_error(exc.code, version_id, url) from None
    except (urllib.error.URLError, OSError) as exc:  # DNS, refused, TLS, timeout
        reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
        raise RemoteError(f"cannot reach {url} ({reason}); {save_hint(url)}") from None
    if len(body) > MAX_DOCUMENT_BYTES:
        raise RemoteError(f"{url} answered more than {MAX_DOCUMENT_BYTES} bytes; {save_hint(url)}")
    text = body.decode("utf-8", errors="replace")
    return answer_object(parse_json(text, url), url, _answer_hint(version_id))


def _http_error(status: int, version_id: int, url: str) -> Exception:
    if status == 404:
        return NotFoundError(f"CivitAI has no model version {version_id} (is it a model id? use the version's id)")
    if status in (401, 403):
        return RemoteError(
            f"CivitAI refused {url} (HTTP {status}): set {TOKEN_VARIABLE} to an API key from your CivitAI "
            f"account settings, or {save_hint(url)}"
        )
    return RemoteError(f"CivitAI answered {url} with HTTP {status}; {save_hint(url)}")


def read_model_version(path: Path) -> dict[str, Any]:
    """A saved model-version answer (strict JSON, an object at the top level)."""
    return read_answer(path, _answer_hint(None))


def _answer_hint(version_id: int | None) -> str:
    return f"pass CivitAI's unmodified answer of GET /api/v1/model-versions/{version_id or 'VERSION_ID'}"


# -- mapping ------------------------------------------------------------------------------------


def import_model_version(
    version: Mapping[str, Any], version_id: int | None = None, source: str = ""
) -> MarketplaceImport:
    """Map a model-version answer to an ImageConfig and the files' stated hashes.

    `source` names where the answer came from in error messages. When `version_id` is given, an
    answer about another version is refused.
    """
    origin = source or f"CivitAI answer for model version {version_id or '?'}"
    answer = Answer(version, origin, _answer_hint(version_id))
    stated_id = answer.count("id")
    if version_id is not None and stated_id is not None and stated_id != version_id:
        raise answer.invalid("id", f"the answer for model version {version_id}", stated_id)
    number = stated_id or version_id
    if number is None:
        raise answer.invalid("id", "the model version id (or pass VERSION_ID)", None)
    model = answer.child("model") or Answer({}, origin, answer.hint, "model")
    files = answer.children("files")
    primary = _primary_file(files)
    checkpoint_type, original_type = checkpoint_type_of(model.text("type"))
    model_id = answer.count("modelId") or model.count("id")
    fields: dict[str, Any] = {
        "model_type": "image",
        "task": "text-to-image" if checkpoint_type in _TEXT_TO_IMAGE else None,
        "format": _format(primary),
        "layout": "diffusers" if primary and _metadata(primary, "format") == "Diffusers" else "single-file",
        "dtype": FP_DTYPES.get((_metadata(primary, "fp") or "").lower()) if primary else None,
        "author": _author(answer, model),
        "files": [name for file in files if (name := file.text("name"))],
        "sources": [answer.text("air") or f"civitai:{model_id or '?'}@{number}"],
        "base_model": answer.text("baseModel"),
        "checkpoint_type": checkpoint_type,
        "original_type": original_type,
        "trigger_words": [word.strip() for word in answer.texts("trainedWords") if word.strip()],
        "nsfw": bool(model.flag("nsfw") or answer.flag("nsfw")),
        "license": _license(answer, model),
        "tags": model.texts("tags") or answer.texts("tags"),
        "preview_images": [preview for image in answer.children("images") if (preview := _preview(image))],
        "downloads": _stat(answer, "downloadCount") or 0,
        "likes": _stat(answer, "thumbsUpCount") or _stat(answer, "favoriteCount") or 0,
        "variant": VARIANTS.get((answer.text("baseModelType") or "").lower()),
        "hashes": _hashes(primary) if primary else {},
        "civitai_model_id": model_id,
        "civitai_version_id": number,
        **_recommended_settings(answer.children("images")),
    }
    config = parse_model_config({k: v for k, v in fields.items() if v is not None}, origin)
    title = " / ".join(part for part in (model.text("name"), answer.text("name")) if part) or None
    return MarketplaceImport(
        source=SOURCE,
        source_id=str(number),
        config=config,
        files=tuple(_stated_files(files)),
        match_by="name",
        title=title,
    )


def checkpoint_type_of(word: str | None) -> tuple[str, str | None]:
    """CivitAI's model type -> (checkpoint_type, original_type); unknown words become "other"."""
    if word is None:
        return "other", None
    known = CHECKPOINT_TYPES.get(word.lower())
    return (known, None) if known else ("other", word)


def commercial_uses(value: Any) -> list[str] | None:
    """`allowCommercialUse`: a Postgres array literal "{Image,RentCivit}", a JSON array, or one
    word. None when the answer does not say; an empty list (or "None") means no commercial use."""
    if value is None:
        return None
    if isinstance(value, str):
        words = [w.strip().strip('"') for w in value.strip().removeprefix("{").removesuffix("}").split(",")]
    elif isinstance(value, list) and all(isinstance(item, str) for item in value):
        words = [w.strip() for w in value]
    else:
        return None
    return [w for w in words if w and w != "None"]


def _primary_file(files: list[Answer]) -> Answer | None:
    """The file CivitAI marks primary, else the first model file, else the first file."""
    for file in files:
        if file.flag("primary"):
            return file
    models = [f for f in files if (f.text("type") or "").lower() in ("model", "pruned model")]
    candidates = models or files
    return candidates[0] if candidates else None


def _metadata(file: Answer, key: str) -> str | None:
    metadata = file.child("metadata")
    return metadata.text(key) if metadata else None


def _format(primary: Answer | None) -> str:
    if primary is None:
        return "none"
    declared = FILE_FORMATS.get((_metadata(primary, "format") or "").lower())
    if declared:
        return declared
    suffix = posixpath.splitext((primary.text("name") or "").lower())[1]
    return _SUFFIX_FORMATS.get(suffix, "none")


def _hashes(file: Answer) -> dict[str, str]:
    """The file's hashes under CivitAI's own key names, as lower-case hex."""
    stated = file.child("hashes")
    if stated is None:
        return {}
    hashes = {}
    for key, length in HASH_LENGTHS.items():
        value = hex_digest(stated, key, length)
        if value is not None:
            hashes[key] = value
    return hashes


def _stated_files(files: list[Answer]) -> list[MarketplaceFile]:
    stated = []
    for file in files:
        name = file.text("name")
        if name is None:
            continue
        hashes = _hashes(file)
        stated.append(MarketplaceFile(name=name, sha256=hashes.get("SHA256"), autov2=hashes.get("AutoV2")))
    return stated


def _author(answer: Answer, model: Answer) -> str | None:
    creator = model.child("creator") or answer.child("creator")
    return creator.text("username") if creator else None


def _license(answer: Answer, model: Answer) -> str | None:
    """CivitAI's permissions in one line: commercial uses, derivatives, credit."""
    holder = model if model.raw("allowCommercialUse") is not None else answer
    raw = holder.raw("allowCommercialUse")
    uses = commercial_uses(raw)
    if raw is not None and uses is None:
        raise holder.invalid("allowCommercialUse", 'an array of words or a string like "{Image,RentCivit}"', raw)
    terms = []
    if uses is not None:
        terms.append(f"commercial use: {', '.join(uses)}" if uses else "no commercial use")
    if holder.flag("allowDerivatives") is False:
        terms.append("no derivatives")
    if holder.flag("allowNoCredit") is False:
        terms.append("credit required")
    return f"civitai ({'; '.join(terms)})" if terms else None


def _stat(answer: Answer, key: str) -> int | None:
    stats = answer.child("stats")
    return stats.count(key) if stats else None


def _preview(image: Answer) -> ImagePreview | None:
    """A preview image; nsfw when its nsfwLevel is above 1 (PG) or it says nsfw."""
    url = image.text("url")
    if url is None:
        return None
    return ImagePreview(url=url, width=image.count("width"), height=image.count("height"), nsfw=_image_nsfw(image))


def _image_nsfw(image: Answer) -> bool:
    level, flag = image.raw("nsfwLevel"), image.raw("nsfw")
    if isinstance(level, str):  # older answers: None, Soft, Mature, X
        return level != "None"
    if level is not None and image.count("nsfwLevel") not in (0, 1):
        return True
    if isinstance(flag, str):
        return flag != "None"
    return bool(image.flag("nsfw"))


def _recommended_settings(images: list[Answer]) -> dict[str, Any]:
    """Settings the author's own previews were generated with (images[].meta, free-form: values
    of unexpected types are skipped, not refused)."""
    samplers: list[str] = []
    steps: Counter[int] = Counter()
    scales: Counter[float] = Counter()
    skips: Counter[int] = Counter()
    for image in images:
        meta = image.raw("meta")
        if not isinstance(meta, dict):
            continue
        sampler = meta.get("sampler")
        if isinstance(sampler, str) and sampler and sampler not in samplers:
            samplers.append(sampler)
        _tally(steps, meta.get("steps"), int)
        _tally(scales, meta.get("cfgScale"), float)
        _tally(skips, meta.get("clipSkip"), int)
    return {
        "samplers": samplers[:MAX_SAMPLERS],
        "steps": _most_common(steps),
        "cfg_scale": _most_common(scales),
        "clip_skip": _most_common(skips),
    }


def _tally(counter: Counter[Any], value: Any, kind: type[int] | type[float]) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        return
    if kind is int and not float(value).is_integer():
        return
    counter[kind(value)] += 1


def _most_common(counter: Counter[Any]) -> Any:
    return counter.most_common(1)[0][0] if counter else None


def load_model_version(version_id: str | int | None = None, *, from_file: Path | None = None) -> MarketplaceImport:
    """A model version as a typed import: from a saved answer, else from CivitAI."""
    number = parse_version_id(str(version_id)) if version_id is not None else None
    if from_file is not None:
        return import_model_version(read_model_version(from_file), number, str(from_file))
    if number is None:
        raise InvalidInputError("give a VERSION_ID to fetch, or --from-file with a saved answer", field="VERSION_ID")
    return import_model_version(fetch_model_version(number), number, version_url(number))
