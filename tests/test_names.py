"""Artifact names: seed 000's grammar, its examples, its section 1 names, and references."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from modelyard.errors import InvalidInputError
from modelyard.names import (
    SEED_PURPOSES,
    Vocabulary,
    auto_name,
    format_name,
    parse_name,
    parse_reference,
    slug,
)

SEED_SECTION_1_NAMES = [
    "sensing-camera-preproc-v1",
    "sensing-audio-preproc-v1",
    "sensing-iot-normalizer-v1",
    "vit-base16-embed-v1",
    "resnet50-proj-v1",
    "wav2vec2-base-embed-v1",
    "hubert-large-embed-v1",
    "sbert-all-mpnet-v1",
    "snn-dvs-embed-v1",
    "gpt-small-v1",
    "gpt-medium-v1",
    "gpt-large-v1",
    "yolox-s-intel-v1",
    "fasterrcnn-res50-v1",
    "spiking-lm-core-v1",
    "multimodal-ensemble-v1",
    "rag-lite-v1",
    "planner-rl-ppo-v1",
    "motor-controller-dnn-v1",
    "milvus-schema-v1",
    "minio-log-schema-v1",
    "trainer-ddp-manager-v1",
    "federator-agg-v1",
    "result-aggregator-v1",
    "auth-service-v1",
    "monitoring-stack-v1",
]


def test_first_seed_example_round_trips() -> None:
    name = format_name(component="vision", base_model="vit-base16", purpose="embed")
    assert name == "vision-vit-base16-embed-v1"
    parsed = parse_name(name)
    assert (parsed.form, parsed.component, parsed.base_model, parsed.purpose, parsed.quant, parsed.major) == (
        "structured",
        "vision",
        "vit-base16",
        "embed",
        None,
        1,
    )


def test_second_seed_example_drops_the_node_role_and_keeps_the_quant_suffix() -> None:
    name = format_name(component="inference", base_model="gpt-small-v1", purpose="lm-finetune", quant="int8")
    assert name == "gpt-small-v1-lm-finetune-int8-v1"
    parsed = parse_name(name)
    assert (parsed.component, parsed.base_model, parsed.purpose, parsed.quant) == (
        None,
        "gpt-small-v1",
        "lm-finetune",
        "int8",
    )


@pytest.mark.parametrize("name", SEED_SECTION_1_NAMES)
def test_every_seed_section_1_name_is_accepted(name: str) -> None:
    parsed = parse_name(name)
    assert parsed.major == 1
    assert parsed.base_model


def test_short_name_keeps_everything_in_the_base_model() -> None:
    parsed = parse_name("gpt-small-v1")
    assert (parsed.form, parsed.base_model, parsed.purpose) == ("short", "gpt-small", None)


@pytest.mark.parametrize(
    ("name", "fragment"),
    [
        ("", "empty"),
        ("Vision-vit-embed-v1", "invalid character 'V' at position 1"),
        ("vision_vit-embed-v1", "invalid character '_'"),
        ("vit-base16-embed", "must end with the major version '-v<N>'"),
        ("vit-base16-embed-v01", "must end with the major version"),
        ("vision-embed-v1", "base-model part is missing"),
        ("vit--embed-v1", "empty or has a misplaced '.'"),
        ("encoder.embed.vit.run.20251124T1030Z", "timestamp '20251124T1030Z' is not a valid"),
        ("robot.embed.vit.run.20251124T103000Z", "node type 'robot'"),
        ("encoder.embed.vit.20251124T103000Z", "5 dot-separated parts"),
        ("vit.base16-embed", "5 dot-separated parts"),
        ("encoder.embed.vit.r.un.20251124T103000Z", "5 dot-separated parts"),
        ("encoder.embed.vit.run.20251399T103000Z", "not a valid %Y%m%dT%H%M%SZ time"),
        ("x" * 201 + "-v1", "longer than 200"),
    ],
)
def test_bad_names_say_which_part_is_wrong(name: str, fragment: str) -> None:
    with pytest.raises(InvalidInputError) as caught:
        parse_name(name)
    message = str(caught.value)
    assert fragment in message
    assert "vision-vit-base16-embed-v1" in message  # a valid example is shown
    assert caught.value.field == "artifact_name"


def test_auto_name_follows_seed_000_second_form() -> None:
    stamp = datetime(2025, 11, 24, 10, 30, 0, tzinfo=UTC)
    name = auto_name(
        node_type="encoder", task="embed", base_model="ViT-Base16", run_name="v5_5_20251124", timestamp=stamp
    )
    assert name == "encoder.embed.vit-base16.v5_5_20251124.20251124T103000Z"
    parsed = parse_name(name)
    assert (parsed.form, parsed.node_type, parsed.purpose, parsed.base_model, parsed.run_name) == (
        "auto",
        "encoder",
        "embed",
        "vit-base16",
        "v5_5_20251124",
    )
    assert parsed.timestamp == stamp


def test_auto_name_marks_missing_parts_unknown() -> None:
    name = auto_name(
        node_type=None, task=None, base_model=None, run_name="run 1", timestamp=datetime(2026, 1, 2, tzinfo=UTC)
    )
    assert name == "unknown.unknown.unknown.run-1.20260102T000000Z"


def test_hub_style_base_model_is_slugged() -> None:
    assert slug("meta-llama/Llama-3.2-3B-Instruct") == "meta-llama-llama-3.2-3b-instruct"
    name = format_name(base_model="meta-llama/Llama-3.2-3B-Instruct", purpose="lm-finetune")
    assert name == "meta-llama-llama-3.2-3b-instruct-lm-finetune-v1"


def test_ambiguous_combination_is_refused_rather_than_misread() -> None:
    # Without a component, a base model starting with a component word would read back wrongly.
    with pytest.raises(InvalidInputError, match="would read back as component=vision"):
        format_name(base_model="vision-transformer", purpose="embed")


def test_unknown_purpose_points_to_the_vocabulary() -> None:
    with pytest.raises(InvalidInputError, match=r"add it under \[vocabulary\] purposes"):
        format_name(base_model="vit", purpose="segmentation")
    vocab = Vocabulary().extended(purposes=["segmentation"])
    assert parse_name("vit-segmentation-v2", vocab).purpose == "segmentation"


def test_vocabulary_words_are_checked() -> None:
    with pytest.raises(InvalidInputError, match="vocabulary word"):
        Vocabulary().extended(components=["Lidar!"])


_token = st.from_regex(r"[a-z][a-z0-9]{0,5}", fullmatch=True)


@given(
    component=st.sampled_from([None, "vision", "audio", "text", "spiking", "inference", "encoder"]),
    base_tokens=st.lists(_token, min_size=1, max_size=3),
    purpose=st.sampled_from(SEED_PURPOSES),
    quant=st.sampled_from([None, "int8", "int4"]),
    major=st.integers(min_value=0, max_value=99),
)
def test_fields_name_fields_round_trip(
    component: str | None, base_tokens: list[str], purpose: str, quant: str | None, major: int
) -> None:
    base = "-".join(base_tokens)
    try:
        name = format_name(component=component, base_model=base, purpose=purpose, quant=quant, major=major)
    except InvalidInputError as exc:
        # Only ambiguity is refused, and only when a token collides with the vocabulary.
        assert "would read back" in str(exc)
        return
    parsed = parse_name(name)
    shown = component if component in ("vision", "audio", "text", "spiking") else None
    assert (parsed.component, parsed.base_model, parsed.purpose, parsed.quant, parsed.major) == (
        shown,
        base,
        purpose,
        quant,
        major,
    )
    assert (
        format_name(
            component=parsed.component, base_model=parsed.base_model or "", purpose=purpose, quant=quant, major=major
        )
        == name
    )


def test_references() -> None:
    assert str(parse_reference("gpt-small-v1")) == "gpt-small-v1@latest"
    assert parse_reference("gpt-small-v1@3").version_number == 3
    assert parse_reference("a@latest").version_number is None
    for bad in ("@3", "name@", "name@0", "name@007"):
        with pytest.raises(InvalidInputError):
            parse_reference(bad)
