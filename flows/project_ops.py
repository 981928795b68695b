"""Project operation flows: reset, replace a category, edit metadata, delete, subset, merge.

Each flow resolves the acting user (``user_email``, or the first administrator),
runs one core function of :mod:`ecotaxa_core.project_ops` or
:mod:`ecotaxa_core.project_copy` (which check the user's rights and are all or
nothing) and records a job whose result is the returned summary. A metadata
edit's summary lists the old values, so it can be undone. Reset, replace,
delete-objects and subset take a ``filter``: the plain-JSON criteria of
:class:`~ecotaxa_core.object_filter.ObjectFilter` (the job result describes it).
Run as a script (FILTER_JSON is optional)::

    python -m flows.project_ops reset PROJECT_ID [FILTER_JSON]
    python -m flows.project_ops replace PROJECT_ID FROM_TAXON_ID TO_TAXON_ID [FILTER_JSON]
    python -m flows.project_ops delete-objects PROJECT_ID FILTER_JSON
    python -m flows.project_ops delete-project PROJECT_ID
    python -m flows.project_ops subset PROJECT_ID TITLE FRACTION [FILTER_JSON]
    python -m flows.project_ops merge TARGET_ID SOURCE_ID
"""

from __future__ import annotations

import json
import sys
from typing import Any, Literal, Optional, Union

from prefect import flow

from ecotaxa_core.instance import Instance
from ecotaxa_core.object_filter import ObjectFilter
from ecotaxa_core.projects import project_counts
from ecotaxa_core.project_copy import merge_projects, subset_project
from ecotaxa_core.project_ops import (delete_objects, delete_project, edit_metadata,
                                      replace_category, reset_to_predicted)
from ecotaxa_core.users import user_for_cli
from flows._instance import open_instance, stage_job


def _user_id(inst: Instance, user_email: Optional[str]) -> int:
    with inst.sessions() as s:
        return user_for_cli(s, user_email).id


def _filtered(result: dict[str, Any], object_filter: Optional[ObjectFilter]) -> dict[str, Any]:
    """The summary, with the filter's criteria when one was given."""
    return result if object_filter is None else {**result, "filter": object_filter.describe()}


def _object_filter(filter: Optional[dict[str, Any]]) -> Optional[ObjectFilter]:
    return None if filter is None else ObjectFilter.from_mapping(filter)


@flow(name="project-reset-to-predicted", log_prints=True)
def reset_to_predicted_flow(project_id: int, taxon_ids: Optional[list[int]] = None,
                            user_email: Optional[str] = None,
                            filter: Optional[dict[str, Any]] = None) -> dict[str, Any]:
    """Send validated objects (of ``taxon_ids``, kept by ``filter``) back to predicted."""
    with open_instance() as inst:
        user_id = _user_id(inst, user_email)
        with stage_job(inst, "project_reset", project_id,
                       {"taxon_ids": taxon_ids, "filter": filter}) as job:
            object_filter = _object_filter(filter)
            with inst.sessions.begin() as s:
                n = reset_to_predicted(s, project_id, user_id, taxon_ids=taxon_ids,
                                       object_filter=object_filter)
            job["result"] = _filtered({"project_id": project_id, "n_changed": n}, object_filter)
        return job["result"]


@flow(name="project-replace-category", log_prints=True)
def replace_category_flow(project_id: int, from_taxon_id: int, to_taxon_id: int,
                          statuses: Optional[list[str]] = None,
                          user_email: Optional[str] = None,
                          filter: Optional[dict[str, Any]] = None) -> dict[str, Any]:
    """Give every object of one category (with one of ``statuses``, kept by ``filter``)
    another, with history."""
    with open_instance() as inst:
        user_id = _user_id(inst, user_email)
        params = {"from_taxon_id": from_taxon_id, "to_taxon_id": to_taxon_id, "statuses": statuses}
        with stage_job(inst, "project_replace_category", project_id,
                       {**params, "filter": filter}) as job:
            object_filter = _object_filter(filter)
            with inst.sessions.begin() as s:
                n = replace_category(s, project_id, from_taxon_id, to_taxon_id, user_id,
                                     statuses=statuses, object_filter=object_filter)
            job["result"] = _filtered({"project_id": project_id, "n_changed": n, **params},
                                      object_filter)
        return job["result"]


@flow(name="project-edit-metadata", log_prints=True)
def edit_metadata_flow(project_id: int, level: Literal["sample", "acquisition", "process"],
                       field: str, value: Union[float, str, None],
                       orig_ids: Optional[list[str]] = None,
                       user_email: Optional[str] = None) -> dict[str, Any]:
    """Set one sample/acquisition/process column in bulk; the result holds the old values."""
    with open_instance() as inst:
        user_id = _user_id(inst, user_email)
        params = {"level": level, "field": field, "value": value, "orig_ids": orig_ids}
        with stage_job(inst, "project_edit_metadata", project_id, params) as job:
            with inst.sessions.begin() as s:
                edit = edit_metadata(s, project_id, user_id, level=level, orig_ids=orig_ids,
                                     field=field, value=value)
            job["result"] = {"project_id": project_id, **edit.to_dict()}
        return job["result"]


@flow(name="project-delete-objects", log_prints=True)
def delete_objects_flow(project_id: int, object_ids: Optional[list[int]] = None,
                        user_email: Optional[str] = None,
                        filter: Optional[dict[str, Any]] = None) -> dict[str, Any]:
    """Delete objects (``object_ids``, or those ``filter`` keeps) with their images,
    history and feature rows."""
    with open_instance() as inst:
        user_id = _user_id(inst, user_email)
        params = {"n_objects": None if object_ids is None else len(object_ids), "filter": filter}
        with stage_job(inst, "project_delete_objects", project_id, params) as job:
            object_filter = _object_filter(filter)
            n = delete_objects(inst, project_id, user_id, object_ids=object_ids,
                               object_filter=object_filter)
            job["result"] = _filtered({"project_id": project_id, "n_deleted": n}, object_filter)
        return job["result"]


@flow(name="project-delete", log_prints=True)
def delete_project_flow(project_id: int, user_email: Optional[str] = None) -> dict[str, Any]:
    """Delete a whole project; its jobs, this one included, outlive it (``project_ref``)."""
    with open_instance() as inst:
        user_id = _user_id(inst, user_email)
        with stage_job(inst, "project_delete", project_id, {"project_id": project_id}) as job:
            job["result"] = delete_project(inst, project_id, user_id)
        return job["result"]


@flow(name="project-subset", log_prints=True)
def subset_flow(project_id: int, title: str, fraction_per_category: Optional[float] = None,
                object_ids: Optional[list[int]] = None, seed: int = 0,
                user_email: Optional[str] = None,
                filter: Optional[dict[str, Any]] = None) -> dict[str, Any]:
    """Copy some objects (ids, or those ``filter`` keeps, or a stable fraction per category
    of those) into a new project."""
    with open_instance() as inst:
        user_id = _user_id(inst, user_email)
        params = {"title": title, "fraction_per_category": fraction_per_category,
                  "n_object_ids": None if object_ids is None else len(object_ids), "seed": seed,
                  "filter": filter}
        with stage_job(inst, "project_subset", project_id, params) as job:
            object_filter = _object_filter(filter)
            new_id = subset_project(inst, project_id, user_id, title=title,
                                    fraction_per_category=fraction_per_category,
                                    object_ids=object_ids, object_filter=object_filter,
                                    seed=seed)
            with inst.sessions() as s:
                counts = project_counts(s, new_id)
            job["result"] = _filtered({"project_id": project_id, "new_project_id": new_id,
                                       "n_objects": counts["total"]}, object_filter)
        return job["result"]


@flow(name="project-merge", log_prints=True)
def merge_flow(target_id: int, source_id: int, user_email: Optional[str] = None) -> dict[str, Any]:
    """Move every object of ``source_id`` into ``target_id`` and delete the source."""
    with open_instance() as inst:
        user_id = _user_id(inst, user_email)
        with stage_job(inst, "project_merge", target_id, {"source_id": source_id}) as job:
            job["result"] = merge_projects(inst, target_id, source_id, user_id)
        return job["result"]


def _main(argv: list[str]) -> dict[str, Any]:
    cmd, args = argv[0], argv[1:]

    def filter_at(i: int) -> Optional[dict[str, Any]]:
        return json.loads(args[i]) if len(args) > i else None

    if cmd == "reset":
        return reset_to_predicted_flow(int(args[0]), filter=filter_at(1))
    if cmd == "replace":
        return replace_category_flow(int(args[0]), int(args[1]), int(args[2]),
                                     filter=filter_at(3))
    if cmd == "delete-objects":
        return delete_objects_flow(int(args[0]), filter=filter_at(1))
    if cmd == "delete-project":
        return delete_project_flow(int(args[0]))
    if cmd == "subset":
        return subset_flow(int(args[0]), args[1], float(args[2]), filter=filter_at(3))
    if cmd == "merge":
        return merge_flow(int(args[0]), int(args[1]))
    raise SystemExit(__doc__)


if __name__ == "__main__":
    if len(sys.argv) < 3:
        raise SystemExit(__doc__)
    print(json.dumps(_main(sys.argv[1:]), indent=1, default=str))
