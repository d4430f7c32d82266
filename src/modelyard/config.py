"""Settings: where the registry lives and how it behaves, resolved once when a process starts.

Precedence, highest first: explicit arguments (CLI flags, `Settings.load(...)` keywords),
environment variables (`MODELYARD_HOME`, `MODELYARD_DB_URL`, `MODELYARD_STORE_URL`), the
registry's `config.toml` in its home, then defaults. Nothing here runs at import time.

`config.toml` (optional) looks like::

    [catalog]
    url = "postgresql://registry@db.internal/modelyard"

    [gc]
    grace = "2h"            # blobs younger than this are never collected

    [vocabulary]            # extends the name grammar's word lists (seed 000)
    components = ["lidar"]
    purposes = ["segmentation"]
    quant_suffixes = ["q4"]

    [lifecycle]
    admins = ["alice"]      # OS users who may --force a promotion (default: anyone local)
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from modelyard.errors import InvalidInputError
from modelyard.names import Vocabulary

CONFIG_FILENAME = "config.toml"
DEFAULT_GC_GRACE_SECONDS = 3600.0
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}


def parse_duration(text: str, field_name: str = "duration") -> float:
    """'90', '90s', '15m', '2h', '7d' -> seconds."""
    match = _DURATION.match(str(text))
    if not match:
        raise InvalidInputError(
            f"{text!r} is not a duration; use a number with ms, s, m, h or d (for example 30m)", field=field_name
        )
    return float(match[1]) * _UNIT_SECONDS[match[2]]


def default_home(env: Mapping[str, str]) -> Path:
    if env.get("MODELYARD_HOME"):
        return Path(env["MODELYARD_HOME"]).expanduser()
    return Path.home() / ".modelyard"


@dataclass(frozen=True)
class Settings:
    """Everything a Registry needs to know about its environment."""

    home: Path
    db_url: str
    store_url: str
    gc_grace_seconds: float = DEFAULT_GC_GRACE_SECONDS
    vocabulary: Vocabulary = field(default_factory=Vocabulary)
    hash_workers: int = 2
    admins: tuple[str, ...] = ()  # [lifecycle] admins: OS users who may force a promotion locally

    @property
    def stat_cache_path(self) -> Path:
        return self.home / "cache" / "stat.sqlite3"

    @classmethod
    def load(
        cls,
        home: str | Path | None = None,
        db_url: str | None = None,
        store_url: str | None = None,
        env: Mapping[str, str] | None = None,
    ) -> Settings:
        """Resolve settings from arguments, the environment and the home's config.toml."""
        env = os.environ if env is None else env
        home_path = Path(home).expanduser() if home else default_home(env)
        home_path = home_path.absolute()
        file_settings = _read_config_file(home_path / CONFIG_FILENAME)
        catalog = _table(file_settings, "catalog")
        gc = _table(file_settings, "gc")
        vocab = _table(file_settings, "vocabulary")
        return cls(
            home=home_path,
            db_url=db_url
            or env.get("MODELYARD_DB_URL")
            or _str(catalog, "url")
            or f"sqlite:///{home_path / 'catalog.db'}",
            store_url=store_url
            or env.get("MODELYARD_STORE_URL")
            or _str(_table(file_settings, "store"), "url")
            or f"file://{home_path / 'store'}",
            gc_grace_seconds=parse_duration(str(gc.get("grace", DEFAULT_GC_GRACE_SECONDS)), "gc.grace"),
            vocabulary=Vocabulary().extended(
                components=_str_list(vocab, "components"),
                purposes=_str_list(vocab, "purposes"),
                quant_suffixes=_str_list(vocab, "quant_suffixes"),
            ),
            hash_workers=max(1, min(4, os.cpu_count() or 1)),
            admins=tuple(_admins(_table(file_settings, "lifecycle"))),
        )


def _read_config_file(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as handle:
            return tomllib.load(handle)
    except FileNotFoundError:
        return {}
    except tomllib.TOMLDecodeError as exc:
        raise InvalidInputError(f"invalid TOML: {exc}", path=path) from None
    except OSError as exc:
        raise InvalidInputError(f"cannot read: {exc.strerror}", path=path) from None


def _table(data: dict[str, Any], key: str) -> dict[str, Any]:
    value = data.get(key, {})
    if not isinstance(value, dict):
        raise InvalidInputError(f"[{key}] must be a table", path=CONFIG_FILENAME)
    return value


def _str(table: dict[str, Any], key: str) -> str | None:
    value = table.get(key)
    if value is not None and not isinstance(value, str):
        raise InvalidInputError(f"{key} must be a string", path=CONFIG_FILENAME)
    return value


def _admins(table: dict[str, Any]) -> list[str]:
    value = table.get("admins", [])
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise InvalidInputError("lifecycle.admins must be a list of user names", path=CONFIG_FILENAME)
    return value


def _str_list(table: dict[str, Any], key: str) -> list[str]:
    value = table.get(key, [])
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise InvalidInputError(f"vocabulary.{key} must be a list of strings", path=CONFIG_FILENAME)
    return value
