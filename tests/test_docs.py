"""The documentation keeps up with the code: every CLI command, option and exit code is in
docs/cli.md, every command has help text, and the Python API example runs as printed."""

from __future__ import annotations

import inspect
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import typer

from modelyard import errors
from modelyard.cli import app

DOCS = Path(__file__).resolve().parent.parent / "docs"
CLI_DOC = DOCS / "cli.md"

# A command's section starts at a level-2 heading naming it, e.g. "## `modelyard register`",
# and runs to the next level-2 heading.
_COMMAND_HEADING = re.compile(r"^## `?modelyard (?P<command>[a-z][a-z0-9-]*)`?\s*$")


def _root_group() -> Any:
    return typer.main.get_command(app)


def _commands() -> dict[str, Any]:
    return dict(_root_group().commands)


def _long_options(params: list[Any]) -> list[str]:
    names = []
    for param in params:
        if getattr(param, "param_type_name", None) != "option":
            continue
        names += [opt for opt in [*param.opts, *param.secondary_opts] if opt.startswith("--")]
    return names


def _mentions(text: str, option: str) -> bool:
    """`--to` is mentioned only as itself, not as the start of `--tool` or the end of `x--to`."""
    return re.search(rf"(?<![\w-]){re.escape(option)}(?![\w-])", text) is not None


def command_sections(markdown: str) -> dict[str, str]:
    sections: dict[str, str] = {}
    current: str | None = None
    for line in markdown.splitlines():
        if line.startswith("## "):
            match = _COMMAND_HEADING.match(line)
            current = match["command"] if match else None
            if current is not None:
                sections[current] = ""
            continue
        if current is not None:
            sections[current] += line + "\n"
    return sections


def exit_code_rows(markdown: str) -> dict[int, str]:
    """Rows of the table under '## Exit codes': code -> the whole row."""
    match = re.search(r"^## Exit codes\s*$(?P<body>.*?)(?=^## |\Z)", markdown, re.M | re.S)
    assert match, "docs/cli.md has no '## Exit codes' section"
    rows = {}
    for line in match["body"].splitlines():
        cell = re.match(r"^\|\s*(\d+)\s*\|", line)
        if cell:
            rows[int(cell[1])] = line
    return rows


def error_classes() -> list[type[errors.ModelyardError]]:
    return [
        cls
        for _, cls in inspect.getmembers(errors, inspect.isclass)
        if issubclass(cls, errors.ModelyardError) and cls.__module__ == errors.__name__
    ]


@pytest.fixture(scope="module")
def cli_doc() -> str:
    return CLI_DOC.read_text(encoding="utf-8")


def test_every_command_has_help_text() -> None:
    assert _root_group().help, "the modelyard group has no help text"
    for name, command in _commands().items():
        assert (command.help or "").strip(), f"command {name!r} has no help text"
        for param in command.params:
            if getattr(param, "param_type_name", None) == "option" and "--help" not in param.opts:
                assert (param.help or "").strip(), f"option {param.opts[0]} of {name!r} has no help text"


def test_every_command_has_a_section_in_cli_md(cli_doc: str) -> None:
    sections = command_sections(cli_doc)
    missing = sorted(set(_commands()) - set(sections))
    assert not missing, f"docs/cli.md has no '## `modelyard <command>`' section for: {missing}"


def test_every_long_option_is_documented_under_its_command(cli_doc: str) -> None:
    sections = command_sections(cli_doc)
    undocumented = []
    for name, command in _commands().items():
        section = sections.get(name, "")
        for option in _long_options(command.params):
            if not _mentions(section, option):
                undocumented.append(f"{name} {option}")
    assert not undocumented, f"options missing from their command's section in docs/cli.md: {undocumented}"


def test_top_level_options_are_documented(cli_doc: str) -> None:
    for option in _long_options(_root_group().params):
        assert _mentions(cli_doc, option), f"docs/cli.md does not mention {option}"


def test_every_exit_code_is_in_the_table(cli_doc: str) -> None:
    rows = exit_code_rows(cli_doc)
    classes = error_classes()
    assert {cls.exit_code for cls in classes} >= {1, 3, 4, 5, 6, 7, 8, 9}, "errors.py lost exit codes?"
    for cls in classes:
        row = rows.get(cls.exit_code)
        assert row is not None, f"exit code {cls.exit_code} ({cls.__name__}) is not in the exit-code table"
        assert cls.__name__ in row, f"the row of exit code {cls.exit_code} does not name {cls.__name__}"
    assert 2 in rows, "the exit-code table does not list 2 (usage errors)"
    assert 0 in rows, "the exit-code table does not list 0 (success)"


def test_the_checks_can_fail() -> None:
    """The parsers above find what is missing in a doc that lacks it."""
    doc = (
        "## `modelyard gc`\n\n| `--dry-run` | ... |\n\n## `modelyard demo`\n\n`--home`\n"
        "## Exit codes\n\n| Code | Class |\n|---|---|\n| 3 | `InvalidInputError` |\n"
    )
    sections = command_sections(doc)
    assert set(sections) == {"gc", "demo"}
    assert _mentions(sections["gc"], "--dry-run")
    assert not _mentions(sections["gc"], "--grace")
    assert not _mentions(sections["gc"], "--home"), "an option under another command must not count"
    assert not _mentions("--tool", "--to") and not _mentions("--no-quarantine", "--quarantine")
    assert set(exit_code_rows(doc)) == {3}


def test_python_api_example_runs_as_printed() -> None:
    text = (DOCS / "python-api.md").read_text(encoding="utf-8")
    example = re.search(r"^## Example\s*$.*?```python\n(?P<code>.*?)```", text, re.M | re.S)
    printed = re.search(r"^Output:\s*```text\n(?P<out>.*?)```", text, re.M | re.S)
    assert example and printed, "docs/python-api.md lost its example or its output"
    # The example opens its own temporary home; settings from the environment must not redirect it.
    env = {key: value for key, value in os.environ.items() if not key.startswith("MODELYARD_")}
    result = subprocess.run(
        [sys.executable, "-c", example["code"]], capture_output=True, text=True, timeout=120, check=False, env=env
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == printed["out"]
