"""Artifact names (seed 000 section 2), their vocabularies, and `NAME@REF` references.

Three forms of name are accepted:

* structured: ``[<component>-]<base-model>-<purpose>[-<quant>]-v<major>``, for example
  ``vision-vit-base16-embed-v1`` or ``gpt-small-v1-lm-finetune-int8-v1``. The component appears
  only for modality components (vision, audio, text, spiking); node roles such as ``inference``
  are left out of the name and kept in the manifest.
* short: ``<name>[-<quant>]-v<major>`` with no known purpose, as seed 000 section 1 names its
  artifacts (``gpt-small-v1``, ``sbert-all-mpnet-v1``).
* automatic: ``{node_type}.{model_category}.{model_variant}.{run_name}.{timestamp}``, generated
  when the user gives no name (timestamp in UTC, ``%Y%m%dT%H%M%SZ``).

Components, purposes and quantization suffixes come from vocabularies seeded from seed 000 that
a registry's ``config.toml`` can extend. Parts are matched against them from the ends of the
name, so parts containing hyphens (``vit-base16``, ``lm-finetune``) parse unambiguously.
"""

from __future__ import annotations

import posixpath
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime

from modelyard.errors import InvalidInputError

EXAMPLE_NAME = "vision-vit-base16-embed-v1"
MANIFEST_FILENAME = "artifact_manifest.json"
AUTO_TIMESTAMP_FORMAT = "%Y%m%dT%H%M%SZ"
MAX_NAME_LENGTH = 200
UNSET_PART = "unknown"

# Seed 000 section 1: the node types of the 24-node configuration.
NODE_TYPES: tuple[str, ...] = (
    "sensing",
    "encoder",
    "inference",
    "decision",
    "memory",
    "learning",
    "aggregation",
    "management",
)
# Seed 000 section 3: the learning form's component choices that are modalities. Node roles
# (inference, ...) are also valid components but never appear in a name.
MODALITY_COMPONENTS: tuple[str, ...] = ("vision", "audio", "text", "spiking")
# Seed 000 section 3 tasks, plus the purposes its section 1 artifact names use.
SEED_PURPOSES: tuple[str, ...] = (
    "embed",
    "classification",
    "detection",
    "lm-finetune",
    "preproc",
    "normalizer",
    "proj",
    "schema",
    "ensemble",
)
SEED_QUANT_SUFFIXES: tuple[str, ...] = ("int8", "int4", "fp8", "nf4")
PRECISIONS: tuple[str, ...] = ("fp32", "fp16", "bf16", "int8")
PRIVACY_LEVELS: tuple[str, ...] = ("none", "dp", "secure-agg")

_TOKEN = r"[a-z0-9]+(?:\.[a-z0-9]+)*"
_STRUCTURED_CHARS = re.compile(r"[a-z0-9.-]")
_MAJOR = re.compile(r"^(?P<stem>.+)-v(?P<major>0|[1-9][0-9]*)$")
_TOKEN_RE = re.compile(rf"^{_TOKEN}$")
_AUTO_PART = re.compile(r"^[a-z0-9_-]+$")
_AUTO_TIMESTAMP = re.compile(r"^\d{8}T\d{6}Z$")


@dataclass(frozen=True)
class Vocabulary:
    """The words name parsing recognises; a registry's config.toml can add to each list."""

    components: tuple[str, ...] = MODALITY_COMPONENTS
    purposes: tuple[str, ...] = SEED_PURPOSES
    quant_suffixes: tuple[str, ...] = SEED_QUANT_SUFFIXES

    def extended(
        self,
        components: list[str] | None = None,
        purposes: list[str] | None = None,
        quant_suffixes: list[str] | None = None,
    ) -> Vocabulary:
        """A copy with extra words appended (duplicates ignored), each checked for shape."""
        for word in [*(components or []), *(purposes or []), *(quant_suffixes or [])]:
            if not all(_TOKEN_RE.match(token) for token in word.split("-")):
                raise InvalidInputError(f"vocabulary word {word!r} must be lowercase letters, digits, '.' and '-'")
        return Vocabulary(
            components=_merge(self.components, components),
            purposes=_merge(self.purposes, purposes),
            quant_suffixes=_merge(self.quant_suffixes, quant_suffixes),
        )


def _merge(base: tuple[str, ...], extra: list[str] | None) -> tuple[str, ...]:
    return tuple(dict.fromkeys([*base, *(extra or [])]))


@dataclass(frozen=True)
class ParsedName:
    """What a name says about its artifact. Fields a form does not carry are None."""

    name: str
    form: str  # "structured", "short" or "auto"
    major: int | None = None
    component: str | None = None
    base_model: str | None = None
    purpose: str | None = None
    quant: str | None = None
    node_type: str | None = None
    run_name: str | None = None
    timestamp: datetime | None = None
    extra: dict[str, str] = field(default_factory=dict)


def _name_error(name: str, problem: str) -> InvalidInputError:
    return InvalidInputError(
        f"artifact name {name!r}: {problem} (valid examples: {EXAMPLE_NAME}, gpt-small-v1, "
        "inference.lm-finetune.gpt-small-v1.run42.20251124T103000Z)",
        field="artifact_name",
    )


def parse_name(name: str, vocabulary: Vocabulary | None = None) -> ParsedName:
    """Parse and validate an artifact name; raise InvalidInputError naming the wrong part."""
    vocab = vocabulary or Vocabulary()
    if not name:
        raise _name_error(name, "the name is empty")
    if len(name) > MAX_NAME_LENGTH:
        raise _name_error(name, f"the name is longer than {MAX_NAME_LENGTH} characters")
    if "." in name and not _MAJOR.match(name):
        return _parse_auto(name)  # no '-v<N>' ending: it can only be the automatic form
    return _parse_structured(name, vocab)


def _parse_auto(name: str) -> ParsedName:
    parts = name.split(".")
    if len(parts) != 5:
        raise _name_error(
            name,
            f"an automatic name has 5 dot-separated parts "
            f"(node_type.model_category.model_variant.run_name.timestamp), this one has {len(parts)}",
        )
    node_type, category, variant, run_name, stamp = parts
    if not _AUTO_TIMESTAMP.match(stamp):
        raise _name_error(name, f"timestamp {stamp!r} is not a valid %Y%m%dT%H%M%SZ time")
    if node_type not in (*NODE_TYPES, UNSET_PART):
        raise _name_error(name, f"node type {node_type!r} is not one of {', '.join(NODE_TYPES)} (or '{UNSET_PART}')")
    for label, part in (("model_category", category), ("model_variant", variant), ("run_name", run_name)):
        if not _AUTO_PART.match(part):
            raise _name_error(name, f"{label} part {part!r} may hold only a-z, 0-9, '_' and '-'")
    try:
        timestamp = datetime.strptime(stamp, AUTO_TIMESTAMP_FORMAT).replace(tzinfo=UTC)
    except ValueError:
        raise _name_error(name, f"timestamp {stamp!r} is not a valid %Y%m%dT%H%M%SZ time") from None
    return ParsedName(
        name=name,
        form="auto",
        node_type=None if node_type == UNSET_PART else node_type,
        purpose=None if category == UNSET_PART else category,
        base_model=None if variant == UNSET_PART else variant,
        run_name=run_name,
        timestamp=timestamp,
    )


def _parse_structured(name: str, vocab: Vocabulary) -> ParsedName:
    for position, char in enumerate(name, start=1):
        if not _STRUCTURED_CHARS.match(char):
            raise _name_error(
                name,
                f"invalid character {char!r} at position {position}; names use lowercase letters, digits, '-' and '.'",
            )
    match = _MAJOR.match(name)
    if not match:
        raise _name_error(name, "the name must end with the major version '-v<N>' (for example '-v1')")
    tokens = match["stem"].split("-")
    for token in tokens:
        if not _TOKEN_RE.match(token):
            raise _name_error(name, f"part {token!r} is empty or has a misplaced '.'; separate words with one '-'")
    quant = None
    if len(tokens) > 1 and tokens[-1] in vocab.quant_suffixes:
        quant = tokens.pop()
    purpose = _longest_suffix(tokens, vocab.purposes)
    if purpose is None:
        return ParsedName(name=name, form="short", major=int(match["major"]), base_model="-".join(tokens), quant=quant)
    tokens = tokens[: len(tokens) - len(purpose.split("-"))]
    component = None
    if tokens[0] in vocab.components:
        component = tokens.pop(0)
    if not tokens:
        raise _name_error(name, f"the base-model part is missing before the purpose {purpose!r} (as in 'vit-base16')")
    return ParsedName(
        name=name,
        form="structured",
        major=int(match["major"]),
        component=component,
        base_model="-".join(tokens),
        purpose=purpose,
        quant=quant,
    )


def _longest_suffix(tokens: list[str], words: tuple[str, ...]) -> str | None:
    """The longest vocabulary word that the tokens end with, leaving at least one token before it."""
    best: str | None = None
    for word in words:
        word_tokens = word.split("-")
        matches = len(word_tokens) < len(tokens) and tokens[-len(word_tokens) :] == word_tokens
        if matches and (best is None or len(word_tokens) > len(best.split("-"))):
            best = word
    return best


def slug(value: str) -> str:
    """Lowercase a free-form value (e.g. 'meta-llama/Llama-3.2-3B') into a name part."""
    lowered = re.sub(r"[^a-z0-9.]+", "-", value.lower())
    lowered = re.sub(r"\.{2,}", ".", lowered)
    return "-".join(part.strip(".") for part in lowered.split("-") if part.strip("."))


def format_name(
    *,
    base_model: str,
    purpose: str,
    component: str | None = None,
    quant: str | None = None,
    major: int = 1,
    vocabulary: Vocabulary | None = None,
) -> str:
    """Build a structured name from manifest fields, and prove it parses back to them.

    ``component`` is dropped unless it is a modality component; ``quant`` (e.g. 'int8') is
    appended for quantized artifacts. A combination whose name would parse differently (say, a
    base model that itself starts with 'vision-') is refused rather than produce an ambiguous name.
    """
    vocab = vocabulary or Vocabulary()
    if purpose not in vocab.purposes:
        raise InvalidInputError(
            f"task {purpose!r} is not a known purpose ({', '.join(vocab.purposes)}); add it under "
            "[vocabulary] purposes in the registry's config.toml",
            field="task",
        )
    if quant is not None and quant not in vocab.quant_suffixes:
        raise InvalidInputError(
            f"quantization suffix {quant!r} is not one of {', '.join(vocab.quant_suffixes)}",
            field="precision",
        )
    base = slug(base_model)
    if not base:
        raise InvalidInputError(f"base model {base_model!r} has no usable characters", field="base_model")
    shown_component = component if component in vocab.components else None
    parts = [p for p in (shown_component, base, purpose, quant) if p]
    name = "-".join([*parts, f"v{major}"])
    parsed = parse_name(name, vocab)
    if (parsed.component, parsed.base_model, parsed.purpose, parsed.quant) != (
        shown_component,
        base,
        purpose,
        quant,
    ):
        raise InvalidInputError(
            f"the name {name!r} would read back as component={parsed.component}, "
            f"base_model={parsed.base_model}, purpose={parsed.purpose}; give --artifact-name explicitly",
            field="artifact_name",
        )
    return name


def auto_name(
    *,
    node_type: str | None,
    task: str | None,
    base_model: str | None,
    run_name: str,
    timestamp: datetime,
) -> str:
    """Seed 000's generated form: node_type.model_category.model_variant.run_name.timestamp."""

    def part(value: str | None) -> str:
        cleaned = re.sub(r"[^a-z0-9_-]+", "-", (value or "").lower()).strip("-_")
        return cleaned or UNSET_PART

    stamp = timestamp.astimezone(UTC).strftime(AUTO_TIMESTAMP_FORMAT)
    name = ".".join([part(node_type), part(task), part(base_model), part(run_name), stamp])
    return parse_name(name).name


@dataclass(frozen=True)
class Reference:
    """A parsed `NAME[@REF]`; ref is 'latest' when omitted.

    REF is a version number, `latest`, a stage (`raw`, `validated`, `production`: the newest
    version in that stage), a production version's semantic version (`1.0.0`), or a free alias."""

    name: str
    ref: str

    @property
    def version_number(self) -> int | None:
        return int(self.ref) if self.ref.isdigit() else None

    @property
    def kind(self) -> str:
        """number, latest, stage, semver or alias."""
        if self.ref.isdigit():
            return "number"
        if self.ref == "latest":
            return "latest"
        if self.ref in STAGES:
            return "stage"
        if SEMVER.match(self.ref):
            return "semver"
        return "alias"

    def __str__(self) -> str:
        return f"{self.name}@{self.ref}"


# Seed 003's lifecycle stages, in order.
STAGES = ("raw", "validated", "production")
RESERVED_REFS = ("latest", *STAGES)
# Semantic Versioning 2.0.0 (major.minor.patch, optional pre-release and build metadata).
SEMVER = re.compile(
    r"^(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)"
    r"(?:-(?:0|[1-9][0-9]*|[0-9]*[A-Za-z-][0-9A-Za-z-]*)(?:\.(?:0|[1-9][0-9]*|[0-9]*[A-Za-z-][0-9A-Za-z-]*))*)?"
    r"(?:\+[0-9A-Za-z-]+(?:\.[0-9A-Za-z-]+)*)?$"
)
_ALIAS = re.compile(r"^[a-z][a-z0-9_-]{0,62}$")


def check_semver(version: str) -> str:
    if not SEMVER.match(version):
        raise InvalidInputError(
            f"{version!r} is not a semantic version (MAJOR.MINOR.PATCH, e.g. 1.0.0 or 2.1.0-rc.1)", field="version"
        )
    return version


def check_alias(alias: str) -> str:
    """A free alias: lowercase, starts with a letter; not a reserved reference or a version."""
    if alias in RESERVED_REFS:
        raise InvalidInputError(
            f"{alias!r} is reserved: it moves only by registration or promotion; choose another alias", field="alias"
        )
    if not _ALIAS.match(alias):
        raise InvalidInputError(
            f"alias {alias!r} must start with a lowercase letter and hold only a-z, 0-9, '_' and '-' "
            "(at most 63 characters), e.g. champion",
            field="alias",
        )
    return alias


def parse_reference(text: str) -> Reference:
    """Split `NAME@REF`; `NAME` alone means `NAME@latest`."""
    name, sep, ref = text.rpartition("@")
    if not sep:
        name, ref = text, "latest"
    if not name:
        raise InvalidInputError(f"reference {text!r} has no artifact name before '@'")
    if not ref:
        raise InvalidInputError(
            f"reference {text!r} has nothing after '@' (use a version number, latest, a stage, a semantic version "
            "or an alias)"
        )
    if ref.isdigit() and ((ref != "0" and ref.startswith("0")) or int(ref) == 0):
        raise InvalidInputError(f"reference {text!r}: version numbers start at 1 and have no leading zeros")
    return Reference(name=name, ref=ref)


# Anything that could make a path unsafe or ambiguous: a leading or trailing '/', an empty, '.'
# or '..' part, a backslash or a NUL. Paths without any of it are accepted in one C-speed
# search (manifests hold tens of thousands); the rest get the precise message below.
_SUSPICIOUS_PATH = re.compile(r"^/|/$|//|(?:^|/)\.\.?(?:/|$)|[\\\x00]|^$")


def check_relative_path(value: str) -> str:
    """A path inside an artifact: relative, '/'-separated, no '..', '.', empty parts or NUL."""
    if not _SUSPICIOUS_PATH.search(value):
        return value
    if "\x00" in value:
        raise ValueError("path contains a NUL byte")
    if "\\" in value:
        raise ValueError(f"path {value!r} contains a backslash; use '/'")
    if value.startswith("/"):
        raise ValueError(f"path {value!r} is absolute")
    parts = value.split("/")
    if any(part in ("", ".", "..") for part in parts):
        raise ValueError(f"path {value!r} has an empty, '.' or '..' part")
    if posixpath.normpath(value) != value:
        raise ValueError(f"path {value!r} is not normalised")
    return value
