"""The lifecycle commands (seed 003): validate, promote, approve, alias, deprecate/demote/restore,
lineage, audit, layout and prune. Each calls one Registry method and prints its result."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from modelyard.cli._common import (
    HomeOpt,
    JsonOpt,
    Stage,
    format_bytes,
    open_registry,
    open_registry_or_server,
    plural,
    print_json,
    print_table,
)

PolicyOpt = Annotated[
    Path | None,
    typer.Option(
        "--policy",
        help="A policy file (YAML or JSON) listing the gates; default: files, readability, pickles, manifest.",
    ),
]
ApprovedByOpt = Annotated[
    str | None, typer.Option("--approved-by", help="Who approves (recorded with the OS user running the command).")
]
ReasonOpt = Annotated[str | None, typer.Option("--reason", help="Why (kept in the audit log).")]

alias_app = typer.Typer(
    help="Free aliases such as NAME@champion, set and moved by approvers (audited).", no_args_is_help=True
)


def validate_command(
    reference: Annotated[str, typer.Argument(metavar="NAME@REF", help="The version to validate (usually raw).")],
    checkpoint: Annotated[
        str | None, typer.Option(help="The checkpoint to judge: epoch_70, best, latest (checkpoints/<name>.*).")
    ] = None,
    policy: PolicyOpt = None,
    home: HomeOpt = None,
    json_output: Annotated[bool, typer.Option("--json", help="Print the stored report as JSON.")] = False,
) -> None:
    """Run a policy's gates on a version (and checkpoint) and store the report; exit 1 if a gate fails."""
    with open_registry_or_server(home) as registry:
        outcome = registry.validate(reference, checkpoint=checkpoint, policy=policy)
    report = outcome.report
    if json_output:
        sys.stdout.write(report.to_json())
    else:
        where = f" (checkpoint {report.checkpoint})" if report.checkpoint else ""
        sys.stdout.write(f"{outcome.version.ref}{where}: report {outcome.report_id}\n")
        for line in report.summary_lines():
            sys.stdout.write(f"  {line}\n")
        sys.stdout.write("PASSED\n" if report.passed else f"FAILED: {plural(len(report.failed_checks), 'check')}\n")
    if not report.passed:
        raise typer.Exit(1)


def promote_command(
    reference: Annotated[
        str, typer.Argument(metavar="NAME@REF", help="A raw version (to validated) or a validated one (to production).")
    ],
    to: Annotated[Stage, typer.Option("--to", help="validated or production.")],
    checkpoint: Annotated[
        str | None,
        typer.Option(help="To validated: the checkpoint whose clean weights are kept (default best, else latest)."),
    ] = None,
    policy: PolicyOpt = None,
    force: Annotated[
        bool,
        typer.Option("--force", help="To validated despite failed gates: admins only, with --reason; marked forced."),
    ] = False,
    reason: ReasonOpt = None,
    version: Annotated[
        str | None, typer.Option("--version", help="To production: a new semantic version, e.g. 1.0.0.")
    ] = None,
    approved_by: ApprovedByOpt = None,
    benchmarks: Annotated[Path | None, typer.Option(help="To production: a JSON file of benchmark results.")] = None,
    security_reviewed_by: Annotated[
        str | None, typer.Option(help="To production: who signed the security review (when the policy asks).")
    ] = None,
    home: HomeOpt = None,
    json_output: JsonOpt = False,
) -> None:
    """Promote raw -> validated (every gate must pass) or validated -> production (needs approval)."""
    with open_registry_or_server(home) as registry:
        promoted = registry.promote(
            reference,
            to.value,
            checkpoint=checkpoint,
            policy=policy,
            force=force,
            reason=reason,
            version=version,
            approved_by=approved_by,
            benchmarks=benchmarks,
            security_reviewed_by=security_reviewed_by,
        )
    if json_output:
        print_json(
            {
                "ref": promoted.ref,
                "stage": promoted.stage,
                "label": promoted.label,
                "semver": promoted.semver,
                "forced": promoted.forced,
            }
        )
        return
    forced = " (FORCED past failed gates)" if promoted.forced else ""
    sys.stdout.write(f"promoted {reference} to {promoted.stage}: {promoted.ref} ({promoted.label}){forced}\n")


def approve_command(
    reference: Annotated[str, typer.Argument(metavar="NAME@REF", help="A validated version.")],
    approved_by: Annotated[str, typer.Option("--approved-by", help="Who approves it for production.")],
    note: Annotated[str | None, typer.Option(help="A note kept with the approval.")] = None,
    home: HomeOpt = None,
) -> None:
    """Record a manual approval of a validated version for production (seed 003)."""
    with open_registry_or_server(home) as registry:
        version = registry.approve(reference, approved_by=approved_by, note=note)
    sys.stdout.write(f"approved {version.ref} for production by {approved_by}\n")


@alias_app.command("set")
def alias_set_command(
    reference: Annotated[str, typer.Argument(metavar="NAME@REF", help="The version the alias points at.")],
    alias: Annotated[str, typer.Argument(help="e.g. champion (not latest, a stage, a number or a version).")],
    approved_by: Annotated[str, typer.Option("--approved-by", help="The approver moving the alias.")],
    reason: ReasonOpt = None,
    home: HomeOpt = None,
) -> None:
    """Point an alias at a version (or move it there)."""
    with open_registry_or_server(home) as registry:
        before = registry.set_alias(reference, alias, approved_by=approved_by, reason=reason)
        version = registry.show(reference)
    moved = f" (was {before})" if before else ""
    sys.stdout.write(f"{version.artifact_name}@{alias} -> {version.ref}{moved}\n")


@alias_app.command("rm")
def alias_remove_command(
    name: Annotated[str, typer.Argument(help="The artifact name.")],
    alias: Annotated[str, typer.Argument(help="The alias to remove.")],
    approved_by: Annotated[str, typer.Option("--approved-by", help="The approver removing it.")],
    reason: ReasonOpt = None,
    home: HomeOpt = None,
) -> None:
    """Remove an alias."""
    with open_registry_or_server(home) as registry:
        pointed = registry.remove_alias(name, alias, approved_by=approved_by, reason=reason)
    sys.stdout.write(f"removed {name}@{alias} (it pointed at {pointed})\n")


@alias_app.command("list")
def alias_list_command(
    name: Annotated[str, typer.Argument(help="The artifact name.")], home: HomeOpt = None, json_output: JsonOpt = False
) -> None:
    """List an artifact's aliases."""
    with open_registry_or_server(home) as registry:
        entries = registry.aliases(name)
    if json_output:
        print_json(
            [{"alias": e.alias, "ref": e.version, "set_by": e.set_by, "set_at": e.set_at.isoformat()} for e in entries]
        )
        return
    if not entries:
        sys.stderr.write(f"{name} has no aliases\n")
        return
    print_table(
        ["ALIAS", "VERSION", "SET BY", "AT"],
        [[e.alias, e.version, e.set_by, f"{e.set_at:%Y-%m-%d %H:%M}"] for e in entries],
    )


def _status_command(status: str, verb: str) -> Any:
    def command(
        reference: Annotated[str, typer.Argument(metavar="NAME@REF", help="The version.")],
        reason: Annotated[str, typer.Option("--reason", help="Why (required; kept in the audit log).")],
        home: HomeOpt = None,
    ) -> None:
        with open_registry_or_server(home) as registry:
            version = registry.set_status(reference, status, reason=reason)
        sys.stdout.write(f"{verb} {version.ref}\n")

    return command


def lineage_command(
    reference: Annotated[str, typer.Argument(metavar="NAME[@REF]", help="Any version.")],
    home: HomeOpt = None,
    json_output: JsonOpt = False,
) -> None:
    """Print the chain production -> validated -> raw checkpoint -> training session."""
    with open_registry_or_server(home) as registry:
        steps = registry.lineage(reference)
    if json_output:
        print_json([{"ref": s.ref, "stage": s.stage, "label": s.label, "detail": s.detail} for s in steps])
        return
    for depth, step in enumerate(steps):
        arrow = "  " * depth + ("<- " if depth else "")
        sys.stdout.write(f"{arrow}{step.ref} [{step.stage}] {step.label or ''}: {step.detail}\n")


def audit_command(
    target: Annotated[
        str | None, typer.Argument(metavar="[NAME[@REF]]", help="One artifact or version; default all.")
    ] = None,
    limit: Annotated[int, typer.Option(help="How many events, newest first.", min=1)] = 50,
    home: HomeOpt = None,
    json_output: JsonOpt = False,
) -> None:
    """Print the append-only audit log: who did what to which version, when, and why."""
    with open_registry_or_server(home) as registry:
        events = registry.audit(target, limit=limit)
    if json_output:
        print_json(events)
        return
    rows: list[list[str]] = []
    for event in events:
        details: Any = event["details"]
        why = (details.get("reason") or details.get("note")) if isinstance(details, dict) else None
        version = (
            f"{event['artifact_name']}@{event['version_number']}"
            if event["version_number"]
            else str(event["artifact_name"] or "-")
        )
        rows.append(
            [
                str(event["at"])[:19].replace("T", " "),
                str(event["actor"]),
                str(event["action"]),
                version,
                str(why or ""),
            ]
        )
    print_table(["AT (UTC)", "WHO", "WHAT", "VERSION", "WHY"], rows)


def layout_command(
    directory: Annotated[Path, typer.Argument(help="The layout root (seed 003's artifacts/).")],
    name: Annotated[list[str] | None, typer.Option("--name", help="Only this artifact (repeatable).")] = None,
    home: HomeOpt = None,
) -> None:
    """Materialise raw/, validated/ and production/ directories of every version (hardlinks, atomic swaps)."""
    with open_registry(home) as registry:
        report = registry.layout(directory, name)
    for written in report.written:
        sys.stdout.write(f"wrote {directory / written}\n")
    for removed in report.removed:
        sys.stdout.write(f"removed {directory / removed}\n")
    copied = f", {plural(report.copied_files, 'file')} copied (no hardlink possible)" if report.copied_files else ""
    counts = f"{len(report.written)} written, {report.unchanged} unchanged, {len(report.removed)} removed"
    sys.stdout.write(f"layout {directory}: {counts}{copied}\n")


def prune_command(
    name: Annotated[str, typer.Argument(help="The artifact whose old raw versions go.")],
    keep_last: Annotated[int, typer.Option("--keep-last", help="Keep the newest N raw versions.", min=1)],
    older_than: Annotated[
        str | None, typer.Option("--older-than", help="Only versions older than this (30m, 12h, 7d).")
    ] = None,
    yes: Annotated[bool, typer.Option("--yes", help="Remove them (default: a dry run that only lists).")] = False,
    home: HomeOpt = None,
    json_output: JsonOpt = False,
) -> None:
    """Remove raw versions that are not promoted, not aliased and not deployed (dry run by default)."""
    from modelyard.config import parse_duration

    seconds = parse_duration(older_than, "older_than") if older_than else None
    with open_registry(home) as registry:
        report = registry.prune(name, keep_last=keep_last, older_than_seconds=seconds, dry_run=not yes)
    if json_output:
        print_json(
            {
                "dry_run": report.dry_run,
                "removed": [v.ref for v in report.removed],
                "kept": [{"ref": ref, "why": why} for ref, why in report.kept],
                "bytes_at_most": report.bytes_freed_at_most,
            }
        )
        return
    verb = "would remove" if report.dry_run else "removed"
    for version in report.removed:
        sys.stdout.write(f"{verb} {version.ref} ({format_bytes(version.manifest.total_size)})\n")
    for ref, why in report.kept:
        sys.stdout.write(f"kept {ref}: {why}\n")
    tail = " (dry run: add --yes to remove them, then run modelyard gc)" if report.dry_run and report.removed else ""
    sys.stdout.write(f"{verb} {plural(len(report.removed), 'raw version')}{tail}\n")


def install(app: typer.Typer) -> None:
    app.command("validate")(validate_command)
    app.command("promote")(promote_command)
    app.command("approve")(approve_command)
    app.add_typer(alias_app, name="alias")
    app.command("deprecate", help="Mark a version deprecated (a recorded event; stage references skip it).")(
        _status_command("deprecated", "deprecated")
    )
    app.command(
        "demote", help="Demote a validated or production version (NAME@production then names the previous one)."
    )(_status_command("demoted", "demoted"))
    app.command("restore", help="Undo a demotion or deprecation (a new recorded event).")(
        _status_command("restored", "restored")
    )
    app.command("lineage")(lineage_command)
    app.command("audit")(audit_command)
    app.command("layout")(layout_command)
    app.command("prune")(prune_command)
