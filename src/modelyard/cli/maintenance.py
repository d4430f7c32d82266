"""`modelyard verify` and `modelyard gc`: keeping the store honest and lean."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from modelyard.cli._common import (
    HomeOpt,
    JsonOpt,
    QuietOpt,
    format_bytes,
    make_progress,
    open_registry,
    plural,
    print_json,
)


def verify_command(
    target: Annotated[
        str | None,
        typer.Argument(metavar="[NAME[@REF]]", help="An artifact, or one version; default: everything."),
    ] = None,
    no_quarantine: Annotated[
        bool, typer.Option("--no-quarantine", help="Report corrupt blobs but leave them in place.")
    ] = False,
    home: HomeOpt = None,
    quiet: QuietOpt = False,
    json_output: JsonOpt = False,
) -> None:
    """Re-hash stored blobs; report every missing or corrupt one (exit 6 if any)."""
    with open_registry(home) as registry:
        report = registry.verify(target, quarantine=not no_quarantine, progress=make_progress(quiet or json_output))
    if json_output:
        print_json(
            {
                "ok": report.ok,
                "versions": report.versions,
                "blobs_checked": report.blobs_checked,
                "bytes_checked": report.bytes_checked,
                "problems": [
                    {
                        "sha256": p.sha256,
                        "status": p.status,
                        "actual_sha256": p.actual_sha256,
                        "quarantined_to": p.quarantined_to,
                        "used_by": [str(use) for use in p.uses],
                    }
                    for p in report.problems
                ],
            }
        )
    else:
        for problem in report.problems:
            used = ", ".join(str(use) for use in problem.uses[:3])
            more = f" and {len(problem.uses) - 3} more" if len(problem.uses) > 3 else ""
            line = f"{problem.status}: sha256:{problem.sha256} used by {used}{more}"
            if problem.quarantined_to:
                line += f" (moved to {problem.quarantined_to})"
            sys.stdout.write(line + "\n")
        summary = (
            f"{plural(report.blobs_checked, 'blob')} ({format_bytes(report.bytes_checked)}) of "
            f"{plural(report.versions, 'version')} checked"
        )
        if report.ok:
            sys.stdout.write(f"ok: {summary}\n")
        else:
            sys.stdout.write(
                f"FAILED: {len(report.problems)} problem(s); {summary}. Register the original files "
                "again to restore missing blobs.\n"
            )
    if not report.ok:
        from modelyard.errors import CorruptionError

        raise typer.Exit(CorruptionError.exit_code)


def gc_command(
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Show what would be removed; remove nothing.")] = False,
    grace: Annotated[
        str | None,
        typer.Option(help="Keep unreferenced blobs younger than this (e.g. 30m, 2h); default from config, 1h."),
    ] = None,
    home: HomeOpt = None,
    json_output: JsonOpt = False,
) -> None:
    """Remove blobs that no version references (older than the grace period)."""
    from modelyard.config import parse_duration

    grace_seconds = parse_duration(grace, "--grace") if grace is not None else None
    with open_registry(home) as registry:
        report = registry.gc(dry_run=dry_run, grace_seconds=grace_seconds)
    if json_output:
        print_json(
            {
                "dry_run": report.dry_run,
                "grace_seconds": report.grace_seconds,
                "blobs_total": report.blobs_total,
                "blobs_referenced": report.blobs_referenced,
                "removed" if not report.dry_run else "would_remove": [b.sha256 for b in report.removable],
                "temporaries": [name for name, _ in report.temporaries],
                "bytes": report.bytes_removable,
                "kept_young": report.kept_young,
            }
        )
        return
    verb = "would remove" if report.dry_run else "removed"
    for blob in report.removable:
        sys.stdout.write(f"{verb} sha256:{blob.sha256} ({format_bytes(blob.size)})\n")
    for name, size in report.temporaries:
        sys.stdout.write(f"{verb} temporary {name} ({format_bytes(size)})\n")
    sys.stdout.write(
        f"{verb} {plural(len(report.removable), 'blob')} and {len(report.temporaries)} temporaries, "
        f"{format_bytes(report.bytes_removable)}; {report.blobs_referenced} of {report.blobs_total} blobs "
        f"referenced; {report.kept_young} unreferenced kept (younger than the {report.grace_seconds:g} s grace)\n"
    )


def install(app: typer.Typer) -> None:
    app.command("verify")(verify_command)
    app.command("gc")(gc_command)
