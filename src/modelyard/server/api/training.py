"""The learning form over HTTP: its live preview, its choices, and saved job definitions.

`POST /training/preview` takes the form's fields as JSON and returns the artifact name, manifest
and training_config_hash a job run from it will produce: the web UI calls it as the user types,
and programs get the same answer. A field out of range, unknown, or not among its choices is a
422 whose `details.field` names it. Saving a definition needs `jobs.submit`; reading needs `read`.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path

from modelyard.access import Principal
from modelyard.server.security import RegistryDep, require
from modelyard.training.form import FormChoices, LearningForm, Preview, form_choices, preview
from modelyard.training.jobs import JobDefinition, JobDefinitionRecord, define_job, job_definition, job_definitions

router = APIRouter(prefix="/api/v1", tags=["training"])
Reader = Annotated[Principal, Depends(require("read"))]
Submitter = Annotated[Principal, Depends(require("jobs.submit"))]
MAX_ID = 2**31 - 1


@router.post(
    "/training/preview",
    response_model=Preview,
    summary="The artifact name, manifest and training_config_hash a learning form produces",
)
def training_preview(form: LearningForm, registry: RegistryDep, principal: Reader) -> Preview:
    with registry.acting_as(principal):
        return preview(form, registry)


@router.get("/training/choices", response_model=FormChoices, summary="The choices of the form's selection fields")
def training_choices(registry: RegistryDep, principal: Reader) -> FormChoices:
    return form_choices(registry)


@router.post(
    "/training/definitions",
    response_model=JobDefinitionRecord,
    status_code=201,
    summary="Save a job definition: the learning form plus what to run, where, and its limits",
)
def create_definition(definition: JobDefinition, registry: RegistryDep, principal: Submitter) -> JobDefinitionRecord:
    with registry.acting_as(principal):
        return define_job(registry, definition, created_by=principal.name)


@router.get(
    "/training/definitions", response_model=list[JobDefinitionRecord], summary="The saved job definitions, oldest first"
)
def list_definitions(registry: RegistryDep, principal: Reader) -> list[JobDefinitionRecord]:
    return job_definitions(registry)


@router.get(
    "/training/definitions/{definition_id}", response_model=JobDefinitionRecord, summary="One saved job definition"
)
def show_definition(
    definition_id: Annotated[int, Path(ge=1, le=MAX_ID)], registry: RegistryDep, principal: Reader
) -> JobDefinitionRecord:
    return job_definition(registry, definition_id)
