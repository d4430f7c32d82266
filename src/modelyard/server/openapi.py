"""The server's OpenAPI document, as committed in `docs/openapi.json`.

    scripts/export-openapi                                    # rewrite docs/openapi.json
    .venv/bin/python -m modelyard.server.openapi --check      # exit 1 when it is out of date

The document is what `create_app(...).openapi()` returns (the server serves the same at
/api/v1/openapi.json), written with sorted keys and two-space indents so that a change of the API
shows as a readable diff. Building it touches no catalog and no store.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

REPOSITORY = Path(__file__).resolve().parents[3]
DEFAULT_PATH = REPOSITORY / "docs" / "openapi.json"
REGENERATE = "scripts/export-openapi"


def document() -> dict[str, Any]:
    """The OpenAPI document of the app, on settings that are never opened."""
    from modelyard.config import Settings
    from modelyard.server.app import create_app

    unused = Path("/nonexistent/modelyard-openapi")
    settings = Settings(home=unused, db_url=f"sqlite:///{unused}/catalog.db", store_url=f"file://{unused}/store")
    return create_app(settings).openapi()


def render(openapi: dict[str, Any]) -> str:
    return json.dumps(openapi, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Write the server's OpenAPI document (sorted, indented).")
    parser.add_argument("--output", type=Path, default=DEFAULT_PATH, help=f"(default: {DEFAULT_PATH})")
    parser.add_argument("--check", action="store_true", help="write nothing; exit 1 if the file differs")
    args = parser.parse_args(argv)
    text = render(document())
    current = args.output.read_text(encoding="utf-8") if args.output.exists() else None
    if args.check:
        if current != text:
            sys.stderr.write(f"{args.output} is out of date: run {REGENERATE}\n")
            return 1
        return 0
    if current != text:
        args.output.write_text(text, encoding="utf-8")
        sys.stdout.write(f"wrote {args.output}\n")
    else:
        sys.stdout.write(f"{args.output} is up to date\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
