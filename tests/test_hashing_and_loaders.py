"""training_config_hash (RFC 8785 + SHA-256) and the strict JSON / YAML 1.2 readers."""

from __future__ import annotations

import contextlib
import hashlib
import json
import random
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from modelyard.digest import canonical_json, sha256_file, training_config_hash
from modelyard.errors import InvalidInputError
from modelyard.loaders import load_document, load_mapping, parse_json, parse_yaml


def test_issue_test_vectors() -> None:
    assert (
        training_config_hash({"batch_size": 256, "epochs": 10})
        == "59738042985061074085391cf63e2205a91c99e7173ba6c8c003996c2462ace1"
    )
    assert (
        training_config_hash({"epochs": 3, "learning_rate": 2e-5})
        == "7fcf80618eac01fba1c2d90bcbaa6c6dd4ea5a0b8a035bf3505b949513e7590b"
    )


def test_yaml_1_2_reads_exponents_as_numbers_and_hashes_like_json(tmp_path: Path) -> None:
    yaml_file = tmp_path / "c.yaml"
    yaml_file.write_text("learning_rate: 1e-4\nepochs: 3\n")
    json_file = tmp_path / "c.json"
    json_file.write_text('{ "epochs" : 3,\n  "learning_rate": 0.0001 }')
    from_yaml = load_mapping(yaml_file, "config")
    assert from_yaml["learning_rate"] == pytest.approx(0.0001)
    assert isinstance(from_yaml["learning_rate"], float)
    assert training_config_hash(from_yaml) == training_config_hash(load_mapping(json_file, "config"))


# JSON values: integers in the exactly-representable range, finite floats, text, nesting.
_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**53) + 1, max_value=2**53 - 1)
    | st.floats(allow_nan=False, allow_infinity=False, width=64)
    | st.text(max_size=20)
)
_json = st.recursive(
    _scalars,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=25,
)


def _shuffled(value: object, rng: random.Random) -> object:
    if isinstance(value, dict):
        items = list(value.items())
        rng.shuffle(items)
        return {k: _shuffled(v, rng) for k, v in items}
    if isinstance(value, list):
        return [_shuffled(v, rng) for v in value]
    return value


def _respell(value: object) -> object:
    """Integral floats written as integers, and back: JSON numbers are numbers either way."""
    if isinstance(value, dict):
        return {k: _respell(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_respell(v) for v in value]
    if isinstance(value, float) and value.is_integer() and abs(value) < 2**53:
        return int(value)
    return value


@settings(max_examples=200)
@given(value=st.dictionaries(st.text(max_size=8), _json, max_size=6), seed=st.integers())
def test_hash_ignores_key_order_whitespace_and_number_spelling(value: dict, seed: int) -> None:
    reference = training_config_hash(value) if value else None
    if reference is None:
        return
    rng = random.Random(seed)
    reordered = _shuffled(value, rng)
    assert training_config_hash(reordered) == reference  # type: ignore[arg-type]
    # The same document as pretty-printed text, read back.
    pretty = json.dumps(reordered, indent=rng.choice([None, 1, 4]), separators=None)
    assert training_config_hash(parse_json(pretty)) == reference
    assert training_config_hash(_respell(value)) == reference  # type: ignore[arg-type]


@given(mantissa=st.integers(min_value=1, max_value=9), exponent=st.integers(min_value=-12, max_value=12))
def test_exponent_and_decimal_spellings_hash_alike(mantissa: int, exponent: int) -> None:
    spelled_e = parse_json(f'{{"x": {mantissa}e{exponent}}}')
    spelled_yaml = parse_yaml(f"x: {mantissa}.0e{exponent:+d}\n")
    decimal = parse_json(json.dumps({"x": float(f"{mantissa}e{exponent}")}))
    assert training_config_hash(spelled_e) == training_config_hash(spelled_yaml) == training_config_hash(decimal)


def _as_doubles(value: object) -> object:
    """JSON numbers are doubles: compare them as such."""
    if isinstance(value, dict):
        return {k: _as_doubles(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_as_doubles(v) for v in value]
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    return value


def _key_orders(text: str) -> list[list[str]]:
    orders: list[list[str]] = []
    json.loads(text, object_pairs_hook=lambda pairs: orders.append([k for k, _ in pairs]) or dict(pairs))
    return orders


@given(value=_json)
def test_canonical_json_is_the_same_value_with_sorted_keys_and_no_whitespace(value: object) -> None:
    text = canonical_json(value).decode()
    assert _as_doubles(json.loads(text)) == _as_doubles(value)
    for keys in _key_orders(text):
        assert keys == sorted(keys, key=lambda k: k.encode("utf-16-be"))


def test_integers_beyond_double_precision_are_refused() -> None:
    with pytest.raises(InvalidInputError, match="outside the range JSON numbers hold exactly"):
        training_config_hash({"seed": 2**60})


def test_sha256_file_streams(tmp_path: Path) -> None:
    data = random.Random(1).randbytes(3 * 1024 * 1024 + 17)
    path = tmp_path / "f"
    path.write_bytes(data)
    assert sha256_file(path) == (hashlib.sha256(data).hexdigest(), len(data))


@pytest.mark.parametrize(
    ("name", "text", "fragment"),
    [
        ("bad.json", '{"a": 1,}', "invalid JSON at line 1 column 9"),
        ("dup.json", '{"a": 1, "a": 2}', "duplicate key 'a'"),
        ("nan.json", '{"a": NaN}', "NaN is not valid JSON"),
        ("inf.json", '{"a": Infinity}', "Infinity is not valid JSON"),
        ("deep.json", "[" * 200 + "]" * 200, "nested deeper than 128 levels"),
        ("bad.yaml", "a: [1, 2\nb: 3\n", "invalid YAML at line"),
        ("dup.yaml", "a: 1\na: 2\n", "invalid YAML"),
        ("date.yaml", "when: 2025-01-01\n", "key 'when' holds a YAML date"),
        ("nan.yaml", "lr: .nan\n", "key 'lr' is nan"),
        ("key.yaml", "1: one\n", "keys must be strings"),
        ("latin1.yaml", None, "not UTF-8"),
    ],
)
def test_bad_documents_name_the_file_and_the_problem(
    tmp_path: Path, name: str, text: str | None, fragment: str
) -> None:
    path = tmp_path / name
    if text is None:
        path.write_bytes("lr: caf\xe9\n".encode("latin-1"))
    else:
        path.write_text(text)
    with pytest.raises(InvalidInputError) as caught:
        load_document(path)
    assert fragment in str(caught.value)
    assert str(path) in str(caught.value)


def test_top_level_must_be_a_mapping(tmp_path: Path) -> None:
    path = tmp_path / "list.yaml"
    path.write_text("- 1\n- 2\n")
    with pytest.raises(InvalidInputError, match="must hold a mapping at the top level, found list"):
        load_mapping(path, "training config")


def test_missing_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(InvalidInputError, match="file not found"):
        load_document(tmp_path / "nope.yaml")


@given(st.binary(max_size=200))
def test_arbitrary_bytes_never_escape_as_another_exception(data: bytes) -> None:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return
    for parse in (parse_json, parse_yaml):
        with contextlib.suppress(InvalidInputError):
            parse(text)
