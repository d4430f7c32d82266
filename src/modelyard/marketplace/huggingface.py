"""Hugging Face Hub model-info answers -> typed configurations (reference section 8).

    info = fetch_model_info("meta-llama/Llama-3.2-1B-Instruct")        # GET /api/models/...?blobs=true
    info = read_model_info(Path("model_info.json"))                    # or the same answer, saved
    imported = import_model_info(info, "meta-llama/Llama-3.2-1B-Instruct")
    imported.config     # LlmConfig(architecture="LlamaForCausalLM", gated=True, downloads=..., ...)
    imported.hashes     # {"model.safetensors": "<sha256 of the LFS file>", ...}

The fetch goes through huggingface_hub's own HTTP session, so the user's token, proxy, endpoint
(HF_ENDPOINT) and offline setting (HF_HUB_OFFLINE) apply exactly as for their other Hub tools.
The model type comes from the answer's evidence, most specific first: an adapter_config.json
sibling or the peft library (adapter), a diffusers pipeline (image or video), the pipeline tag,
the sentence-transformers library, config.json's family and architecture, a GGUF summary.
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import quote

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
from modelyard.modelconfig import CONFIG_CLASSES, TokenizerConfig, parse_model_config

SOURCE: Source = "huggingface"
FETCH_TIMEOUT = 30.0
MAX_LISTED_FILES = 2000
SAVED_FILE = "model_info.json"
# A repository id: an optional namespace and a name, of letters, digits, '-', '_' and '.'.
_REPO_ID = re.compile(r"^(?:[A-Za-z0-9][\w.-]{0,95}/)?[A-Za-z0-9][\w.-]{0,95}$")

# Pipeline tag -> (modelyard model type, modelyard task). Tags missing here fall back to what
# config.json's family and architecture say (modelyard.inspect.families), as inspection does.
PIPELINE_TYPES: dict[str, tuple[str, str]] = {
    "text-generation": ("llm", "text-generation"),
    "text2text-generation": ("llm", "text2text-generation"),
    "conversational": ("llm", "text-generation"),
    "summarization": ("llm", "summarization"),
    "translation": ("llm", "translation"),
    "sentence-similarity": ("embedding", "embed"),
    "feature-extraction": ("embedding", "embed"),
    "text-to-image": ("image", "text-to-image"),
    "image-to-image": ("image", "image-to-image"),
    "unconditional-image-generation": ("image", "image-generation"),
    "text-to-video": ("video", "text-to-video"),
    "image-to-video": ("video", "image-to-video"),
    "video-classification": ("video", "classification"),
    "automatic-speech-recognition": ("audio", "speech-recognition"),
    "text-to-speech": ("audio", "text-to-speech"),
    "text-to-audio": ("audio", "text-to-audio"),
    "voice-activity-detection": ("audio", "voice-activity-detection"),
    "image-classification": ("vision", "classification"),
    "object-detection": ("vision", "detection"),
    "zero-shot-object-detection": ("vision", "detection"),
    "image-segmentation": ("vision", "segmentation"),
    "mask-generation": ("vision", "segmentation"),
    "depth-estimation": ("vision", "depth-estimation"),
    "keypoint-detection": ("vision", "keypoint-detection"),
    "image-feature-extraction": ("vision", "embed"),
    "image-text-to-text": ("multimodal", "image-text-to-text"),
    "image-to-text": ("multimodal", "image-to-text"),
    "visual-question-answering": ("multimodal", "visual-question-answering"),
    "document-question-answering": ("multimodal", "document-question-answering"),
    "zero-shot-image-classification": ("multimodal", "zero-shot-classification"),
    "any-to-any": ("multimodal", "any-to-any"),
    "reinforcement-learning": ("policy", "reinforcement-learning"),
    "robotics": ("policy", "robotics"),
}
# Modalities a multimodal pipeline tag implies.
_MODALITIES = {"any-to-any": ["text", "image", "audio"]}
# Other pipeline tags whose task has a modelyard name (the rest keep the Hub's word).
_TASKS = {"text-classification": "classification", "token-classification": "token-classification"}
# Weights suffix -> format, in the order that decides a repository's main format.
_WEIGHT_FORMATS = (
    (".safetensors", "safetensors"),
    (".gguf", "gguf"),
    (".bin", "pytorch"),
    (".pt", "pytorch"),
    (".pth", "pytorch"),
    (".ckpt", "pytorch"),
    (".onnx", "onnx"),
)
# config.json keys holding the context length (reference section 3), most common first.
_CONTEXT_KEYS = ("max_position_embeddings", "n_positions", "max_seq_len", "context_length")


# -- fetching ---------------------------------------------------------------------------------


def check_repo_id(repo_id: str) -> str:
    """A repository id such as `meta-llama/Llama-3.2-1B-Instruct` (namespace optional)."""
    if not _REPO_ID.match(repo_id) or ".." in repo_id or "--" in repo_id:
        raise InvalidInputError(
            f"{repo_id!r} is not a Hub repository id; write it as NAMESPACE/NAME, e.g. meta-llama/Llama-3.2-1B",
            field="REPO_ID",
        )
    return repo_id


def model_info_url(repo_id: str, revision: str | None = None, endpoint: str | None = None) -> str:
    """The model-info URL with blobs (sizes and LFS SHA-256s of every file)."""
    if endpoint is None:
        from huggingface_hub import constants

        endpoint = constants.ENDPOINT
    url = f"{endpoint.rstrip('/')}/api/models/{check_repo_id(repo_id)}"
    if revision:
        url += f"/revision/{quote(revision, safe='')}"  # refs/pr/1 is one path segment
    return url + "?blobs=true"


def save_hint(url: str) -> str:
    """What to do when the Hub cannot be asked from here: save its answer elsewhere."""
    return (
        f"on a machine that reaches the Hub run `curl -fsSL '{url}' -o {SAVED_FILE}` "
        f"(add -H 'Authorization: Bearer <token>' for a private repository) and pass --from-file {SAVED_FILE}"
    )


def fetch_model_info(repo_id: str, revision: str | None = None, *, timeout: float = FETCH_TIMEOUT) -> dict[str, Any]:
    """Ask the Hub for a repository's model info, through huggingface_hub's configured session."""
    from huggingface_hub import constants, get_session, hf_raise_for_status
    from huggingface_hub.errors import HfHubHTTPError, RepositoryNotFoundError, RevisionNotFoundError

    # Public in huggingface_hub.utils, whose lazy facade hides it from type checkers.
    from huggingface_hub.utils import build_hf_headers  # type: ignore[attr-defined,unused-ignore]

    url = model_info_url(repo_id, revision)
    if constants.HF_HUB_OFFLINE:
        raise RemoteError(f"HF_HUB_OFFLINE is set, so the Hub is not contacted; {save_hint(url)}")
    try:
        response = get_session().get(url, headers=build_hf_headers(), timeout=timeout)
        hf_raise_for_status(response)
    except RevisionNotFoundError:
        raise NotFoundError(f"{repo_id} has no revision {revision!r} on the Hub", field="--revision") from None
    except RepositoryNotFoundError:
        raise NotFoundError(
            f"no model {repo_id} on the Hub (or it is private: log in with `hf auth login` or set HF_TOKEN)"
        ) from None
    except HfHubHTTPError as exc:
        status = exc.response.status_code if exc.response is not None else "?"
        raise RemoteError(f"the Hub answered {url} with HTTP {status}; {save_hint(url)}") from None
    except _transport_errors() as exc:
        raise RemoteError(f"cannot reach {url} ({_first_line(exc)}); {save_hint(url)}") from None
    from modelyard.loaders import parse_json

    return answer_object(parse_json(response.text, url), url, _answer_hint(repo_id))


def _transport_errors() -> tuple[type[BaseException], ...]:
    """Network failures of the session: requests' (huggingface_hub 0.x) are OSErrors, httpx's
    (1.x) are not. The offline refusal is a ConnectionError, hence an OSError, in both."""
    errors: list[type[BaseException]] = [OSError]
    try:
        import httpx
    except ImportError:  # pragma: no cover - huggingface_hub 0.x without httpx
        pass
    else:
        errors.append(httpx.HTTPError)
    return tuple(errors)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def read_model_info(path: Path) -> dict[str, Any]:
    """A saved model-info answer (strict JSON, an object at the top level)."""
    return read_answer(path, _answer_hint(None))


def _answer_hint(repo_id: str | None) -> str:
    where = f"/api/models/{repo_id}" if repo_id else "/api/models/REPO_ID"
    return f"pass the Hub's unmodified answer of GET {where}?blobs=true"


# -- mapping ------------------------------------------------------------------------------------


def import_model_info(info: Mapping[str, Any], repo_id: str | None = None, source: str = "") -> MarketplaceImport:
    """Map a model-info answer to a typed configuration and the files' stated SHA-256s.

    `source` names where the answer came from (file or URL) in error messages. When `repo_id`
    is given, an answer about another repository is refused: its hashes and facts would be
    merged into the wrong version.
    """
    origin = source or f"Hub answer for {repo_id or 'a repository'}"
    answer = Answer(info, origin, _answer_hint(repo_id))
    stated_id = answer.text("id") or answer.text("modelId")
    if repo_id and stated_id and stated_id.lower() != repo_id.lower():
        raise answer.invalid("id", f"the answer for {repo_id}", stated_id)
    name = stated_id or repo_id
    if name is None:
        raise answer.invalid("id", "the repository id (or pass REPO_ID)", None)
    files = _siblings(answer)
    fields = _fields(answer, name, files)
    model_type = _model_type(answer, [f.name for f in files], fields)
    fields["model_type"] = model_type
    if model_type == "unknown":
        fields["reason"] = _unknown_reason(fields)
    cls = CONFIG_CLASSES[model_type]
    kept = {key: value for key, value in fields.items() if key in cls.model_fields and value is not None}
    config = parse_model_config(kept, origin)
    return MarketplaceImport(source=SOURCE, source_id=name, config=config, files=tuple(files), match_by="path")


def _siblings(answer: Answer) -> list[MarketplaceFile]:
    files = []
    for sibling in answer.children("siblings"):
        path = sibling.text("rfilename")
        if path is None:
            raise sibling.invalid("rfilename", "the file's path", None)
        lfs = sibling.child("lfs")
        files.append(MarketplaceFile(name=path, sha256=hex_digest(lfs, "sha256", 64) if lfs else None))
    return files


def _fields(answer: Answer, repo_id: str, files: list[MarketplaceFile]) -> dict[str, Any]:
    """Every configuration field the answer states; the model type's class keeps its own."""
    card = answer.child("cardData") or Answer({}, answer.source, answer.hint, "cardData")
    config = answer.child("config") or Answer({}, answer.source, answer.hint, "config")
    gguf = answer.child("gguf")
    paths = [f.name for f in files]
    warnings: list[str] = []
    if len(paths) > MAX_LISTED_FILES:
        warnings.append(f"the repository lists {len(paths)} files; the first {MAX_LISTED_FILES} are kept")
    sha = answer.text("sha")
    context_length, context_source = _context_length(config, gguf)
    architectures = config.texts("architectures")
    pipeline_tag = _pipeline_tag(answer, card)
    tags = answer.texts("tags") or card.texts("tags")
    fields: dict[str, Any] = {
        "pipeline_tag": pipeline_tag,
        "library_name": answer.text("library_name") or card.text("library_name"),
        "format": _format(paths),
        "layout": _layout(paths),
        "author": answer.text("author") or (repo_id.split("/")[0] if "/" in repo_id else None),
        "files": paths[:MAX_LISTED_FILES],
        "sources": [f"{SOURCE}:{repo_id}" + (f"@{sha}" if sha else "")],
        "warnings": warnings,
        "architecture": architectures[0] if architectures else None,
        "model_family": config.text("model_type") or (gguf.text("architecture") if gguf else None),
        "tokenizer": _tokenizer(config, gguf),
        "context_length": context_length,
        "context_length_source": context_source,
        "languages": card.texts("language"),
        "datasets": card.texts("datasets"),
        "base_model": _base_model(answer, card),
        "license": _license(card, tags),
        "tags": tags,
        "sha": sha,
        "gated": _gated(answer),
        "downloads": answer.count("downloads") or 0,
        "likes": answer.count("likes") or 0,
        "custom_code": config.child("auto_map") is not None,
        "nsfw": "not-for-all-audiences" in tags,
        "trigger_words": card.texts("instance_prompt"),  # diffusers DreamBooth/LoRA cards
    }
    fields.update(_parameters(answer, gguf))
    fields.update(_quantization(config))
    fields.update(_pipeline(config))
    return fields


def _pipeline_tag(answer: Answer, card: Answer) -> str | None:
    info = answer.child("transformersInfo")
    return answer.text("pipeline_tag") or card.text("pipeline_tag") or (info.text("pipeline_tag") if info else None)


def _format(paths: list[str]) -> str:
    lowered = [p.lower() for p in paths]
    for suffix, name in _WEIGHT_FORMATS:
        if any(p.endswith(suffix) for p in lowered):
            return name
    return "none"


def _layout(paths: list[str]) -> str:
    """The repository's layout, named as inspection names a folder's (marker files at the root)."""
    root = set(paths)
    for marker, layout in (
        ("adapter_config.json", "peft"),
        ("model_index.json", "diffusers"),
        ("modules.json", "sentence-transformers"),
        ("config.json", "huggingface"),
    ):
        if marker in root:
            return layout
    weights = [p for p in paths if p.lower().endswith(tuple(suffix for suffix, _ in _WEIGHT_FORMATS))]
    if weights and all(p.lower().endswith(".gguf") for p in weights):
        return "gguf"
    return "single-file" if len(weights) == 1 else "files"


def _gated(answer: Answer) -> bool:
    """`gated` is false, "auto" or "manual" (both mean gated); older answers may say true."""
    value = answer.raw("gated")
    if value is None or value is False:
        return False
    if value is True:
        return True
    if isinstance(value, str):
        return value.lower() not in ("", "false")
    raise answer.invalid("gated", 'false, "auto" or "manual"', value)


def _token(answer: Answer, key: str) -> str | None:
    """A special token: a string, or an AddedToken object whose `content` is the string."""
    value = answer.raw(key)
    if isinstance(value, dict):
        content = answer.child(key)
        return content.text("content") if content else None
    return answer.text(key)


def _chat_templates(answer: Answer, key: str) -> dict[str, str]:
    """`chat_template` as a string (the default) or a list of {name, template} objects."""
    value = answer.raw(key)
    if value is None or isinstance(value, str):
        text = answer.text(key)
        return {"default": text} if text else {}
    if not isinstance(value, list):
        raise answer.invalid(key, "a string or a list of {name, template} objects", value)
    templates: dict[str, str] = {}
    for entry in answer.children(key):
        name, template = entry.text("name"), entry.text("template")
        if name is None or template is None:
            raise answer.invalid(key, "a list of {name, template} objects", value)
        templates[name] = template
    return templates


def _tokenizer(config: Answer, gguf: Answer | None) -> TokenizerConfig:
    """Special tokens and chat templates: config.tokenizer_config first, the GGUF summary next."""
    sources = [s for s in (config.child("tokenizer_config"), gguf) if s is not None]
    tokens: dict[str, str] = {}
    templates: dict[str, str] = {}
    for source in sources:
        for key in ("bos_token", "eos_token", "pad_token", "unk_token"):
            token = _token(source, key)
            if token is not None:
                tokens.setdefault(key, token)
        for name, template in _chat_templates(source, "chat_template").items():
            templates.setdefault(name, template)
    jinja = config.text("chat_template_jinja")  # chat_template.jinja wins over the config's copy
    if jinja:
        templates["default"] = jinja
    default = templates.pop("default", None)
    return TokenizerConfig(chat_template=default, chat_templates=templates, **tokens)


def _context_length(config: Answer, gguf: Answer | None) -> tuple[int | None, str | None]:
    if gguf is not None and gguf.count("context_length"):
        return gguf.count("context_length"), "gguf.context_length"
    for key in _CONTEXT_KEYS:
        value = config.count(key)
        if value:
            return value, f"config.{key}"
    return None, None


def _base_model(answer: Answer, card: Answer) -> str | None:
    """cardData.base_model (a string or a list), else the Hub's baseModels."""
    named = card.texts("base_model")
    if named:
        return named[0]
    relations = _base_models(answer)
    return relations[0] if relations else None


def _base_models(answer: Answer) -> list[str]:
    """`baseModels` as a list of ids, of {id} objects, or an object {relation, models: [...]}."""
    value = answer.raw("baseModels")
    holder, key = answer, "baseModels"
    if isinstance(value, dict):
        child = answer.child("baseModels")
        if child is None:
            return []
        holder, key, value = child, "models", child.raw("models")
    if value is None:
        return []
    if isinstance(value, list) and all(isinstance(item, str | None) for item in value):
        return holder.texts(key)
    return [model for entry in holder.children(key) if (model := entry.text("id"))]


def _license(card: Answer, tags: list[str]) -> str | None:
    """The card's license; `other` is replaced by its license_name when the card gives one."""
    licenses = card.texts("license")
    license_ = licenses[0] if licenses else None
    if license_ == "other":
        license_ = card.text("license_name") or license_
    if license_ is None:
        license_ = next((tag.removeprefix("license:") for tag in tags if tag.startswith("license:")), None)
    return license_


def _parameters(answer: Answer, gguf: Answer | None) -> dict[str, Any]:
    """Parameter count and dominant dtype from the safetensors summary, else the GGUF total."""
    from modelyard.inspect.weights import normalise_dtype

    summary = answer.child("safetensors")
    per_dtype = summary.counts("parameters") if summary else {}
    total = (summary.count("total") if summary else None) or (sum(per_dtype.values()) or None)
    if total is None and gguf is not None:
        total = gguf.count("total")
    dominant = max(per_dtype, key=lambda name: per_dtype[name]) if per_dtype else None
    return {"parameter_count": total, "dtype": normalise_dtype(dominant) if dominant else None}


def _quantization(config: Answer) -> dict[str, Any]:
    settings = config.child("quantization_config")
    if settings is None:
        return {}
    method = settings.text("quant_method")
    bits = settings.count("bits")
    return {"quantization_method": method, "quantization": f"{method}-{bits}bit" if method and bits else method}


def _pipeline(config: Answer) -> dict[str, Any]:
    """A diffusers repository's config subset names its pipeline class."""
    diffusers = config.child("diffusers")
    pipeline_class = diffusers.text("_class_name") if diffusers else None
    if pipeline_class is None:
        return {}
    family = "stable-diffusion" if "StableDiffusion" in pipeline_class else pipeline_class
    return {"pipeline_class": pipeline_class, "architecture": pipeline_class, "model_family": family}


def _model_type(answer: Answer, paths: list[str], fields: dict[str, Any]) -> str:
    """Decide the class; sets `task` (and image/adapter specifics) in `fields` on the way."""
    from modelyard.inspect.families import model_type_of, task_of

    tag = fields["pipeline_tag"]
    library = fields["library_name"]
    names = {posixpath.basename(p) for p in paths}
    mapped = PIPELINE_TYPES.get(tag or "") or (("audio", tag) if tag and tag.startswith("audio-") else None)
    fields["task"] = mapped[1] if mapped else _TASKS.get(tag or "", tag)
    if "adapter_config.json" in names or library == "peft":
        fields["adapter_format"] = "peft"
        return "adapter"
    if library == "diffusers" or "model_index.json" in paths:
        if mapped and mapped[0] == "video":
            return "video"
        fields["checkpoint_type"] = "lora" if _is_lora(answer, fields) else "checkpoint"
        fields["task"] = fields["task"] or "text-to-image"
        return "image"
    if mapped:
        if mapped[0] == "multimodal":
            fields["modalities"] = _MODALITIES.get(tag or "", ["text", "image"])
        return mapped[0]
    if library == "sentence-transformers" or "modules.json" in paths:
        fields["task"] = "embed"
        return "embedding"
    by_config = model_type_of(fields["model_family"], fields["architecture"], False, False)
    if by_config is not None:
        fields["task"] = fields["task"] or task_of(fields["architecture"], fields["model_family"])
        return by_config
    if answer.child("gguf") is not None:
        fields["task"] = fields["task"] or "text-generation"
        return "llm"
    return "unknown"


def _is_lora(answer: Answer, fields: dict[str, Any]) -> bool:
    """A diffusers LoRA: tagged `lora`, or an adapter of its base model."""
    relation = answer.child("baseModels") if isinstance(answer.raw("baseModels"), dict) else None
    return "lora" in fields["tags"] or (relation is not None and relation.text("relation") == "adapter")


def _unknown_reason(fields: dict[str, Any]) -> str:
    named = [f"pipeline tag {fields['pipeline_tag']}" if fields["pipeline_tag"] else ""]
    named.append(f"library {fields['library_name']}" if fields["library_name"] else "")
    named.append(f"architecture {fields['architecture']}" if fields["architecture"] else "")
    said = ", ".join(part for part in named if part)
    if said:
        return f"the Hub answer names {said}, which modelyard does not map to a model type"
    return "the Hub answer names no pipeline tag, library or architecture"


def load_model_info(
    repo_id: str, *, revision: str | None = None, from_file: Path | None = None
) -> tuple[MarketplaceImport, list[str]]:
    """A repository's model info as a typed import: from a saved answer, else from the Hub.
    Returns the import and any warnings about the request."""
    check_repo_id(repo_id)
    if from_file is not None:
        warnings = []
        if revision is not None:
            warnings.append("--revision is not used with --from-file: the saved answer names its own commit (sha)")
        return import_model_info(read_model_info(from_file), repo_id, str(from_file)), warnings
    # The Hub answered for REPO_ID itself: a renamed repository answers under its new id.
    info = fetch_model_info(repo_id, revision)
    return import_model_info(info, source=model_info_url(repo_id, revision)), []
