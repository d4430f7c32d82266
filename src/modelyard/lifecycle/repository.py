"""`ArtifactRepository`: seed 003's Python API, on the registry's one store and one catalog.

    from modelyard import ArtifactRepository

    repo = ArtifactRepository("artifacts")          # the layout root; store and catalog from settings
    repo.register_training_session(
        session_id="v5_5_20251124",
        checkpoint_dir=Path("sandbox-training/checkpoints/v5_5"),
        config=config,
        metrics={"best_val_loss": 0.38, "coverage": 0.99},
    )
    validated_id = repo.promote_to_validated(
        session_id="v5_5_20251124", checkpoint_name="epoch_70", validation_results={...}
    )                                                 # "v5_5_20251124_epoch_70_validated"
    repo.promote_to_production(
        validated_id=validated_id, version="1.0.0", deployment_config={...}, approved_by="alice"
    )

Session ids, validated ids and production ids are the names of the layout's directories; the
registry keeps them as each version's label, so they resolve to versions without a second index.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import Any

from modelyard.domain import VersionRecord
from modelyard.errors import InvalidInputError, NotFoundError
from modelyard.lifecycle.layout import LayoutReport, sync_layout
from modelyard.lifecycle.scratch import scratch_dir
from modelyard.names import MANIFEST_FILENAME
from modelyard.registry import Registry

# Files seed 003 keeps from a training run when they sit beside (or in) the checkpoint directory.
KEPT_FILES = ("training.log", "README.md")


class ArtifactRepository:
    """Seed 003's repository: raw training sessions, validated and production versions, on disk
    as `root/{raw,validated,production}/...` and in the registry as versions of one artifact."""

    def __init__(self, root: str | Path = "artifacts", *, registry: Registry | None = None) -> None:
        self.root = Path(root)
        self._owns_registry = registry is None
        self.registry = registry or Registry.open()

    def close(self) -> None:
        if self._owns_registry:
            self.registry.close()

    def __enter__(self) -> ArtifactRepository:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # -- raw --------------------------------------------------------------------------------------

    def register_training_session(
        self,
        session_id: str,
        checkpoint_dir: Path,
        config: Mapping[str, Any] | Path | None = None,
        metrics: Mapping[str, Any] | None = None,
        *,
        artifact_name: str | None = None,
        **fields: Any,
    ) -> VersionRecord:
        """Register a training session's outputs as a raw version, laid out as seed 003's
        `raw/{session_id}/`: `checkpoints/` (every file of `checkpoint_dir`: manifest.json,
        latest.pt, best.pt, epoch_*.pt), `config.yaml` and `metrics/training_metrics.json` from the
        objects passed, and `training.log` / `README.md` when present. `fields` are further
        manifest fields (base_model, task, node_type, ...), as RegisterOptions takes them."""
        from modelyard.register.metadata import RegisterOptions

        _check_session_id(session_id)
        checkpoint_dir = Path(checkpoint_dir)
        if not checkpoint_dir.is_dir():
            raise InvalidInputError("not a directory of checkpoints", path=checkpoint_dir)
        with scratch_dir(self.registry.settings.home, "session-") as scratch:
            run = scratch / session_id
            self._assemble_run(run, session_id, checkpoint_dir, config, metrics, artifact_name)
            options = RegisterOptions(
                artifact_name=artifact_name, source_label=str(checkpoint_dir.absolute()), **fields
            )
            result = self.registry.register(run, options)
        self.sync(result.version.artifact_name)
        return result.version

    def _assemble_run(
        self,
        run: Path,
        session_id: str,
        checkpoint_dir: Path,
        config: Mapping[str, Any] | Path | None,
        metrics: Mapping[str, Any] | None,
        artifact_name: str | None,
    ) -> None:
        (run / "checkpoints").mkdir(parents=True)
        for source in sorted(checkpoint_dir.iterdir()):
            if source.is_file() and source.name not in KEPT_FILES:
                _link_or_copy(source, run / "checkpoints" / source.name)
        for name in KEPT_FILES:
            for folder in (checkpoint_dir, checkpoint_dir.parent):
                if (folder / name).is_file():
                    _link_or_copy(folder / name, run / name)
                    break
        if config is not None:
            _write_config(run / "config.yaml", config)
        if metrics is not None:
            (run / "metrics").mkdir()
            (run / "metrics" / "training_metrics.json").write_text(json.dumps(dict(metrics), indent=2) + "\n")
        manifest: dict[str, Any] = {"run_name": session_id}
        if artifact_name:
            manifest["artifact_name"] = artifact_name
        if config is not None:
            manifest["training_config"] = _config_mapping(config)
        if metrics is not None:
            manifest["metrics"] = {k: v for k, v in dict(metrics).items() if isinstance(v, int | float | str | bool)}
        (run / MANIFEST_FILENAME).write_text(json.dumps(manifest, indent=2) + "\n")

    def session(self, session_id: str) -> VersionRecord:
        """The newest raw version of a training session."""
        found = self.registry.catalog.lifecycle.find_by_label(session_id, "raw")
        if found is None:
            raise NotFoundError(f"no training session {session_id!r} is registered (register_training_session)")
        return found

    # -- validated --------------------------------------------------------------------------------

    def validate(
        self,
        session_id: str,
        checkpoint_name: str | None = None,
        validation_results: dict[str, Any] | None = None,
        policy: Path | None = None,
    ) -> Any:
        """Run the gates on a session's checkpoint; the stored report (ValidationReport)."""
        outcome = self.registry.validate(
            self.session(session_id).ref,
            checkpoint=checkpoint_name,
            policy=policy,
            validation_results=validation_results,
        )
        return outcome.report

    def promote_to_validated(
        self,
        session_id: str,
        checkpoint_name: str,
        validation_results: dict[str, Any] | None = None,
        *,
        policy: Path | None = None,
        force: bool = False,
        reason: str | None = None,
    ) -> str:
        """Validate a session's checkpoint and promote it; returns the validated id,
        `{session_id}_{checkpoint_name}_validated`."""
        version = self.registry.promote(
            self.session(session_id).ref,
            "validated",
            checkpoint=checkpoint_name,
            policy=policy,
            validation_results=validation_results,
            force=force,
            reason=reason,
        )
        self.sync(version.artifact_name)
        assert version.label is not None
        return version.label

    def validated(self, validated_id: str) -> VersionRecord:
        found = self.registry.catalog.lifecycle.find_by_label(validated_id, "validated")
        if found is None:
            raise NotFoundError(f"no validated version {validated_id!r} (promote_to_validated returns the ids)")
        return found

    def approve(self, validated_id: str, approved_by: str, note: str | None = None) -> None:
        """Record a manual approval for production (seed 003)."""
        self.registry.approve(self.validated(validated_id).ref, approved_by=approved_by, note=note)

    # -- production -------------------------------------------------------------------------------

    def promote_to_production(
        self,
        validated_id: str,
        version: str,
        deployment_config: dict[str, Any] | None = None,
        *,
        approved_by: str | None = None,
        benchmarks: Path | None = None,
        policy: Path | None = None,
        security_reviewed_by: str | None = None,
    ) -> str:
        """Promote an approved validated version; returns the production id,
        `{session_id}_prod_v{version}`. Without an approval (here or by `approve`) it is refused."""
        promoted = self.registry.promote(
            self.validated(validated_id).ref,
            "production",
            version=version,
            approved_by=approved_by,
            deployment_config=deployment_config,
            benchmarks=benchmarks,
            policy=policy,
            security_reviewed_by=security_reviewed_by,
        )
        self.sync(promoted.artifact_name)
        assert promoted.label is not None
        return promoted.label

    # -- layout -----------------------------------------------------------------------------------

    def sync(self, name: str | None = None) -> LayoutReport:
        """Bring the layout root up to date (one artifact's directories, or all)."""
        return sync_layout(self.registry, self.root, [name] if name else None)


def _check_session_id(session_id: str) -> None:
    if not session_id or "/" in session_id or "\\" in session_id or session_id.startswith(".") or "\x00" in session_id:
        raise InvalidInputError(
            f"session id {session_id!r} must be one plain directory name, e.g. v5_5_20251124", field="session_id"
        )


def _link_or_copy(source: Path, target: Path) -> None:
    """The run is assembled from hardlinks (no bytes copied); the registry then copies into the
    store, so the user's files keep their modes."""
    try:
        os.link(source, target)
    except OSError:
        shutil.copy2(source, target)


def _config_mapping(config: Mapping[str, Any] | Path) -> dict[str, Any]:
    if isinstance(config, Mapping):
        return dict(config)
    from modelyard.loaders import load_mapping

    return load_mapping(Path(config), "training config")


def _write_config(path: Path, config: Mapping[str, Any] | Path) -> None:
    if not isinstance(config, Mapping):
        shutil.copy2(config, path)
        return
    from io import StringIO

    from ruamel.yaml import YAML

    yaml = YAML(typ="safe", pure=True)
    yaml.default_flow_style = False
    buffer = StringIO()
    yaml.dump(dict(config), buffer)
    path.write_text(buffer.getvalue())
