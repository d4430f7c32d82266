"""Fleet distribution (seed 004): `fleet init/show/check`, `deploy plan/push/status/rollback/verify`.

Each command calls one Registry method and prints its result; `--json` gives it to programs.
A push, a verification or a fleet check that finds a failed node exits 1.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from modelyard.cli._common import (
    HomeOpt,
    JsonOpt,
    QuietOpt,
    format_bytes,
    open_registry,
    open_registry_or_server,
    plural,
    print_json,
    print_table,
)

if TYPE_CHECKING:
    from modelyard.distribute.install import Outcome
    from modelyard.distribute.plan import DistributionPlan
    from modelyard.distribute.slots import SlotAssignment
    from modelyard.progress import ProgressBoard

FleetOpt = Annotated[
    Path | None,
    typer.Option(
        "--fleet", help="The fleet file (YAML) naming the nodes; default: <home>/fleet.yaml.", show_default=False
    ),
]
NodeOpt = Annotated[list[str] | None, typer.Option("--node", help="Only this node (repeatable).", show_default=False)]

fleet_app = typer.Typer(help="The nodes artifacts are distributed to (the fleet file).", no_args_is_help=True)
deploy_app = typer.Typer(
    help="Distribute artifacts to the fleet: plan, push, status, rollback, verify.", no_args_is_help=True
)


# -- fleet ----------------------------------------------------------------------------------------


@fleet_app.command("init")
def fleet_init(
    template: Annotated[
        str, typer.Option("--template", help="The template to write: distributed-brain (seed 000's 24 nodes).")
    ],
    fleet_file: Annotated[
        Path | None,
        typer.Option("--fleet", help="Where to write the fleet file; default: <home>/fleet.yaml.", show_default=False),
    ] = None,
    models_root: Annotated[
        Path | None,
        typer.Option(
            "--models-root",
            help="The directory holding each local node's models root (DIR/<node>); default: <home>/nodes.",
            show_default=False,
        ),
    ] = None,
    force: Annotated[bool, typer.Option("--force", help="Replace an existing fleet file.")] = False,
    home: HomeOpt = None,
    json_output: JsonOpt = False,
) -> None:
    """Write a fleet file from a template: every node local, with the artifact slots it expects."""
    from modelyard.config import Settings
    from modelyard.distribute.templates import write_template

    registry_home = Settings.load(home).home
    path, fleet = write_template(template, fleet_file, registry_home, models_root=models_root, force=force)
    if json_output:
        print_json({"fleet": str(path), "template": template, "nodes": fleet.model_dump(mode="json")["nodes"]})
        return
    print_table(
        ["NODE", "TYPE", "MODELS ROOT", "SLOTS"],
        [[node.name, node.node_type or "-", node.models_root, ", ".join(node.slots)] for node in fleet.nodes],
    )
    counts: dict[str, int] = {}
    for node in fleet.nodes:
        counts[node.node_type or "-"] = counts.get(node.node_type or "-", 0) + 1
    by_type = ", ".join(f"{node_type} x{count}" for node_type, count in counts.items())
    sys.stdout.write(f"wrote {path}: {plural(len(fleet.nodes), 'node')} ({by_type})\n")


@fleet_app.command("show")
def fleet_show(fleet_file: FleetOpt = None, home: HomeOpt = None, json_output: JsonOpt = False) -> None:
    """List the fleet's nodes as the fleet file describes them."""
    with open_registry_or_server(home) as registry:
        fleet = registry.fleet(fleet_file)
    if json_output:
        print_json(fleet.model_dump(mode="json"))
        return
    rows = [
        [
            node.name,
            "local" if node.is_local else f"{node.address()}:{node.port}",
            node.node_type or "-",
            node.models_root,
            ",".join(f"{k}={v}" for k, v in node.labels.items()) or "-",
            "yes" if node.health else "no",
        ]
        for node in fleet.nodes
    ]
    print_table(["NODE", "ADDRESS", "TYPE", "MODELS ROOT", "LABELS", "HEALTH"], rows)


@fleet_app.command("check")
def fleet_check(
    fleet_file: FleetOpt = None, node: NodeOpt = None, home: HomeOpt = None, json_output: JsonOpt = False
) -> None:
    """Connect to each node: reachable or not, free disk, the tools and hasher modelyard will use."""
    with open_registry_or_server(home) as registry:
        checks = registry.fleet_check(registry.fleet(fleet_file), node)
    if json_output:
        print_json([check.to_dict() for check in checks])
    else:
        for check in checks:
            if not check.reachable:
                sys.stdout.write(f"{check.node:<12} UNREACHABLE  {check.reason}\n")
                continue
            free = format_bytes(check.free_bytes) if check.free_bytes is not None else "?"
            tools = ", ".join(name for name, path in check.tools.items() if path) or "none"
            state = "ok" if check.ok else "PROBLEM"
            sys.stdout.write(
                f"{check.node:<12} {state:<11}  {check.address}  free {free} under {check.models_root}; "
                f"hasher: {check.hasher}; tools: {tools}\n"
            )
            for problem in check.problems():
                sys.stdout.write(f"{'':<12} - {problem}\n")
    if not all(check.ok for check in checks):
        raise typer.Exit(1)


# -- deploy plan ----------------------------------------------------------------------------------


@deploy_app.command("plan")
def deploy_plan(
    out: Annotated[Path, typer.Option("--out", help="Where to write the plan (JSON); a Markdown copy goes beside it.")],
    assignments: Annotated[
        list[str] | None,
        typer.Argument(
            metavar="ASSIGNMENT...",
            help="NAME@REF=TARGETS (TARGETS: node names, type:NODE_TYPE, label:KEY=VALUE, comma-separated), "
            "or a YAML file of assignments (artifact, targets, target_name, base). Required without --from-slots.",
            show_default=False,
        ),
    ] = None,
    fleet_file: FleetOpt = None,
    require_stage: Annotated[
        str,
        typer.Option(
            "--require-stage", help="The stage every version must have reached: raw, validated, production, or any."
        ),
    ] = "production",
    all_files: Annotated[
        bool, typer.Option("--all-files", help="Send every file of each version, not the deploy profile's.")
    ] = False,
    markdown: Annotated[
        Path | None, typer.Option("--markdown", help="Where to write the Markdown manifest (default: OUT with .md).")
    ] = None,
    from_slots: Annotated[
        bool,
        typer.Option(
            "--from-slots",
            help="Assign each production artifact to the nodes whose fleet-file slots it fills; report empty slots.",
        ),
    ] = False,
    home: HomeOpt = None,
    json_output: JsonOpt = False,
) -> None:
    """Make a distribution plan: which version goes to which nodes, the files and their digests."""
    from modelyard.client import remote_configured
    from modelyard.distribute.plan import Assignment, load_assignments, parse_assignment
    from modelyard.distribute.report import plan_markdown
    from modelyard.distribute.slots import assign_slots
    from modelyard.errors import InvalidInputError
    from modelyard.fsutil import write_text_atomically

    if not assignments and not from_slots:
        raise InvalidInputError(
            "give at least one ASSIGNMENT (NAME@REF=TARGETS or an assignments file), or --from-slots",
            field="ASSIGNMENT",
        )
    parsed: list[Assignment] = []
    for text in assignments or []:
        looks_like_file = "=" not in text and text.endswith((".yaml", ".yml", ".json"))
        parsed += load_assignments(Path(text)) if looks_like_file else [parse_assignment(text)]
    if from_slots and home is None and remote_configured():
        raise InvalidInputError(
            "--from-slots reads the registry's vocabulary and fleet file: run it on the server, or give --home",
            field="--from-slots",
        )
    slots: SlotAssignment | None = None
    if from_slots:
        with open_registry(home) as local:
            fleet = local.fleet(fleet_file)
            slots = assign_slots(local, fleet)
            if not parsed:
                slots.require_some_filled()
            parsed += slots.assignments
            plan = local.plan_deployment(parsed, fleet=fleet, require_stage=require_stage, all_files=all_files)
    else:
        with open_registry_or_server(home) as registry:
            fleet = registry.fleet(fleet_file)
            plan = registry.plan_deployment(parsed, fleet=fleet, require_stage=require_stage, all_files=all_files)
    markdown_path = markdown or out.with_suffix(".md")
    write_text_atomically(out, plan.to_json())
    write_text_atomically(markdown_path, plan_markdown(plan, rsync_template()))
    if json_output:
        slot_report = slots.to_dict() if slots is not None else {}
        print_json({"plan": str(out), "markdown": str(markdown_path), **slot_report, **plan.model_dump(mode="json")})
        return
    if slots is not None:
        _print_slots(slots)
    _print_plan(plan)
    sys.stdout.write(f"wrote {out} and {markdown_path}\n")


def _print_slots(slots: SlotAssignment) -> None:
    """The slot -> artifact -> nodes mapping, what was passed over, and the slots left empty."""
    rows = [
        [fill.slot, fill.takes, ref, ", ".join(fill.nodes)]
        for fill in slots.slots
        for ref in (fill.artifacts or ("(empty)",))
    ]
    print_table(["SLOT", "TAKES", "ARTIFACT", "NODES"], rows)
    for fill in slots.slots:
        for reason in fill.passed_over:
            sys.stdout.write(f"passed over for {fill.slot}: {reason}\n")
    empty = slots.empty_slots
    if empty:
        names = ", ".join(fill.slot for fill in empty)
        sys.stdout.write(f"{len(empty)} of {plural(len(slots.slots), 'slot')} empty: {names}\n")
    else:
        sys.stdout.write(f"all {plural(len(slots.slots), 'slot')} filled\n")


def _print_plan(plan: DistributionPlan) -> None:
    for item in plan.artifacts:
        nodes = ", ".join(target.node for target in item.nodes)
        base = f" (base of {', '.join(item.base_of)})" if item.base_of else ""
        sys.stdout.write(
            f"{item.ref} -> {nodes} as {item.target_name}: {plural(len(item.files), 'file')}, "
            f"{format_bytes(item.bytes)}, {item.profile} profile{base}\n"
        )


def rsync_template() -> str:
    return (
        "rsync -a --partial \\\n"
        "  <registry>/tmp/deploy-*/<version>/ \\\n"
        "  [user]@[node]:<models_root>/.modelyard/<target_name>/.staging/<version>/"
    )


# -- deploy push ----------------------------------------------------------------------------------


@deploy_app.command("push")
def deploy_push(
    plan_file: Annotated[Path, typer.Argument(metavar="PLAN", help="A plan written by `deploy plan`.")],
    parallel: Annotated[int, typer.Option("--parallel", min=1, help="Nodes served at the same time.")] = 4,
    canary: Annotated[
        int, typer.Option("--canary", min=0, help="Push to the first N nodes; continue only when they are healthy.")
    ] = 0,
    repair: Annotated[
        bool,
        typer.Option("--repair", help="Re-hash copies on the nodes and fetch only the damaged blocks of bad files."),
    ] = False,
    node: NodeOpt = None,
    keep: Annotated[
        int | None, typer.Option("--keep", min=1, help="Verified versions kept per node (default: the fleet's, 2).")
    ] = None,
    compress: Annotated[bool, typer.Option("--compress", help="rsync -z (slow links only).")] = False,
    home: HomeOpt = None,
    quiet: QuietOpt = False,
    json_output: JsonOpt = False,
) -> None:
    """Transfer, verify on each node, switch its serving path, activate and check health."""
    from modelyard.distribute.plan import read_plan
    from modelyard.distribute.push import PushOptions

    plan = read_plan(plan_file)
    options = PushOptions(repair=repair, compress=compress, keep=keep, parallel=parallel, canary=canary, nodes=node)
    board = _board(quiet or json_output)
    try:
        with open_registry_or_server(home) as registry:
            report = registry.push(plan, options, board)
    finally:
        board.close()
    if json_output:
        print_json(report.to_dict())
    else:
        for outcome in report.outcomes + report.held_back:
            sys.stdout.write(_outcome_line(outcome) + "\n")
        sys.stdout.write(
            f"{'done' if report.ok else 'FAILED'} in {report.seconds:.1f} s: "
            f"{sum(o.ok for o in report.outcomes)} of {len(report.outcomes) + len(report.held_back)} activated\n"
        )
    if not report.ok:
        raise typer.Exit(1)


def _board(quiet: bool) -> ProgressBoard:
    from modelyard.progress import NullBoard

    if quiet or not sys.stderr.isatty():
        return NullBoard()
    from modelyard.cli._progress import RichBoard

    return RichBoard()


def _outcome_line(outcome: Outcome) -> str:
    if outcome.up_to_date:
        state = "up to date"
    elif outcome.ok:
        state = "activated" + (f" (repaired: {', '.join(outcome.repaired)})" if outcome.repaired else "")
    else:
        state = f"{outcome.status.upper()}: {outcome.reason}"
    return f"{outcome.node:<12} {outcome.ref:<32} {state}"


# -- deploy status --------------------------------------------------------------------------------


@deploy_app.command("status")
def deploy_status(
    name: Annotated[str | None, typer.Argument(help="Only this artifact (or serving target name).")] = None,
    node: Annotated[str | None, typer.Option("--node", help="Only this node.")] = None,
    markdown: Annotated[
        bool, typer.Option("--markdown", help="Seed 004's checklist, boxes ticked from real results.")
    ] = False,
    home: HomeOpt = None,
    json_output: JsonOpt = False,
) -> None:
    """The matrix of artifacts x nodes and each one's status (pending ... activated, failed, rolled_back)."""
    from modelyard.distribute.report import current_deployments, status_markdown, status_matrix

    if markdown:  # the checklist reads versions and the fleet from the registry home
        with open_registry(home) as local:
            sys.stdout.write(status_markdown(local, local.deployments(name=name, node=node)))
            return
    with open_registry_or_server(home) as registry:
        rows = registry.deployments(name=name, node=node)
    if json_output:
        print_json(status_matrix(rows) | {"deployments": [row.to_dict() for row in rows]})
        return
    current = current_deployments(rows)
    if not current:
        sys.stdout.write("nothing deployed yet (modelyard deploy plan, then deploy push)\n")
        return
    nodes = sorted({row.node for row in current})
    targets = sorted({row.target_name for row in current})
    cells = {(row.target_name, row.node): f"{row.status} {row.ref.rsplit('@', 1)[1]}" for row in current}
    print_table(["ARTIFACT", *nodes], [[t, *(cells.get((t, n), "-") for n in nodes)] for t in targets])
    for row in current:
        if row.status == "failed":
            sys.stdout.write(f"{row.node} {row.target_name}: {row.reason}\n")


# -- rollback and verify --------------------------------------------------------------------------


@deploy_app.command("rollback")
def deploy_rollback(
    name: Annotated[str, typer.Argument(help="The artifact (or serving target name) to roll back.")],
    node: Annotated[str, typer.Option("--node", help="The node to roll back.")],
    fleet_file: FleetOpt = None,
    home: HomeOpt = None,
    json_output: JsonOpt = False,
) -> None:
    """Switch a node back to the previous verified version it still holds; activate and check health."""
    with open_registry_or_server(home) as registry:
        outcome = registry.rollback(name, node, registry.fleet(fleet_file))
    if json_output:
        print_json(outcome.to_dict())
    elif outcome.ok:
        sys.stdout.write(f"{node}: {name} serves {outcome.ref} again ({outcome.rolled_back_to})\n")
    else:
        sys.stdout.write(f"{node}: rollback FAILED: {outcome.reason}\n")
    if not outcome.ok:
        raise typer.Exit(1)


@deploy_app.command("verify")
def deploy_verify(
    name: Annotated[str | None, typer.Argument(help="Only this artifact (or serving target name).")] = None,
    node: NodeOpt = None,
    fleet_file: FleetOpt = None,
    home: HomeOpt = None,
    json_output: JsonOpt = False,
) -> None:
    """Re-hash what every node serves and report drift (exit 1 when anything drifted)."""
    with open_registry_or_server(home) as registry:
        report = registry.verify_deployments(registry.fleet(fleet_file), nodes=node, name=name)
    if json_output:
        print_json(report.to_dict())
    else:
        for finding in report.findings:
            state = "ok" if finding.state == "ok" else f"{finding.state.upper()}: {finding.reason}"
            sys.stdout.write(f"{finding.node:<12} {finding.ref:<32} {state}\n")
    if not report.ok:
        raise typer.Exit(1)


# -- pull, and the registry side of it ------------------------------------------------------------


def pull_command(
    reference: Annotated[str, typer.Argument(metavar="NAME[@REF]", help="The version to fetch (default @latest).")],
    to: Annotated[Path, typer.Option("--to", help="The models root on this node: the model appears at DIR/<target>.")],
    source: Annotated[
        str,
        typer.Option(
            "--from",
            help="The registry: https://host:port (its server; MODELYARD_API_KEY), "
            "ssh://[user@]host[:port]/path/to/home, [user@]host:/path/to/home, or a local path.",
        ),
    ],
    target_name: Annotated[
        str | None, typer.Option("--target-name", help="The serving directory name (default: the artifact name).")
    ] = None,
    node_name: Annotated[
        str | None, typer.Option("--node", help="This node's name in the status report (default: the hostname).")
    ] = None,
    identity_file: Annotated[str | None, typer.Option("--identity-file", help="SSH key for the registry.")] = None,
    known_hosts: Annotated[
        str | None,
        typer.Option("--known-hosts", help="File holding the registry's host key (default ~/.ssh/known_hosts)."),
    ] = None,
    remote_command: Annotated[
        str, typer.Option("--remote-command", help="How to run modelyard on the registry host.")
    ] = "modelyard",
    require_stage: Annotated[
        str, typer.Option("--require-stage", help="raw, validated, production, or any.")
    ] = "production",
    all_files: Annotated[bool, typer.Option("--all-files", help="Every file, not the deploy profile's.")] = False,
    keep: Annotated[int, typer.Option("--keep", min=1, help="Verified versions kept for rollback.")] = 2,
    repair: Annotated[
        bool, typer.Option("--repair", help="Re-hash the copy here; fetch only the differing blocks of damaged files.")
    ] = False,
    quiet: QuietOpt = False,
    json_output: JsonOpt = False,
) -> None:
    """Fetch a version from a registry this node can reach; verify every file before it is served."""
    from modelyard.cli._common import make_progress
    from modelyard.distribute.pull import parse_source, pull

    registry_source = parse_source(
        source, identity_file=identity_file, known_hosts=known_hosts, remote_command=remote_command
    )
    report = pull(
        registry_source,
        reference,
        to,
        target_name=target_name,
        node_name=node_name,
        require_stage=require_stage,
        all_files=all_files,
        keep=keep,
        repair=repair,
        progress=make_progress(quiet or json_output),
    )
    if json_output:
        print_json(report.to_dict())
    else:
        if report.up_to_date:
            state = "up to date"
        elif report.ok and report.repaired:
            state = f"repaired {', '.join(report.repaired)} ({format_bytes(report.repair_bytes)} fetched)"
        elif report.ok:
            state = f"activated ({plural(report.fetched_files, 'file')} fetched)"
        else:
            state = f"FAILED: {report.reason}"
        sys.stdout.write(f"{report.ref} at {report.serving_path}: {state}\n")
        if report.report_problem:
            sys.stdout.write(f"(could not report to the registry: {report.report_problem})\n")
    if not report.ok:
        raise typer.Exit(1)


@deploy_app.command("describe", hidden=True)
def deploy_describe(
    reference: str,
    require_stage: Annotated[str, typer.Option("--require-stage")] = "production",
    all_files: Annotated[bool, typer.Option("--all-files")] = False,
    home: HomeOpt = None,
) -> None:
    """For `modelyard pull`: the files a node fetches for a version, as JSON."""
    with open_registry(home) as registry:
        print_json(registry.describe_for_pull(reference, require_stage=require_stage, all_files=all_files))


@deploy_app.command("record", hidden=True)
def deploy_record(home: HomeOpt = None) -> None:
    """For `modelyard pull`: a node's status report, as JSON on standard input."""
    import json

    from modelyard.errors import InvalidInputError

    try:
        record = json.loads(sys.stdin.read())
    except json.JSONDecodeError as exc:
        raise InvalidInputError(f"the pull record is not JSON: {exc.msg}", field="stdin") from None
    if not isinstance(record, dict):
        raise InvalidInputError("the pull record is a JSON object", field="stdin")
    with open_registry(home) as registry:
        registry.record_pull(record)


def install(app: typer.Typer) -> None:
    app.add_typer(fleet_app, name="fleet")
    app.add_typer(deploy_app, name="deploy")
    app.command("pull")(pull_command)
