"""A small project with real NDSB images, predictions and scores, for dashboard tests."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from PIL import Image as PILImage

from ecotaxa_core.db.models import Image, Object
from ecotaxa_core.projects import create_project
from ecotaxa_core.taxonomy import get_or_create_taxon

# (NDSB class folder, how many images, predicted category or None, scores)
PLAN = [
    ("chaetognath_other", "Chaetognatha", [0.97, 0.88, 0.52, None]),
    ("copepod_cyclopoid_oithona_eggs", "Copepoda", [0.93, 0.81, 0.64, 0.33]),
    ("diatom_chain_string", "Bacillariophyta", [0.76, 0.45, 0.21, None]),
]


@dataclass(frozen=True)
class ValidationProject:
    project_id: int
    taxa: dict[str, int]  # display name -> taxon id
    objects: dict[str, int]  # orig_id -> object id
    scores: dict[str, float | None]  # orig_id -> score


def make_validation_project(inst, ndsb_dir: Path, title: str = "validation demo") -> ValidationProject:
    """12 objects, 4 per class: 10 predicted in their true class (with top-3), 2 unclassified.

    Objects are named ``<class>_<n>``; the images are stored in the vault with
    their thumbnails, as an import would.
    """
    with inst.sessions.begin() as s:
        root = get_or_create_taxon(s, "Biota")
        taxa = {name: get_or_create_taxon(s, name, root) for _, name, _ in PLAN}
        project = create_project(s, title, instrument="ISIIS")
        objects, scores = {}, {}
        for folder, name, plan_scores in PLAN:
            files = sorted((ndsb_dir / folder).glob("*.jpg"))[:len(plan_scores)]
            others = [t for n, t in taxa.items() if n != name]
            for n, (path, score) in enumerate(zip(files, plan_scores)):
                orig = f"{folder}_{n}"
                obj = Object(project_id=project.id, orig_id=orig)
                if score is not None:
                    rest = (1.0 - score) / 2
                    obj.status, obj.taxon_id, obj.score = "predicted", taxa[name].id, score
                    obj.top_predictions = [[taxa[name].id, score], [others[0].id, rest],
                                           [others[1].id, rest]]
                s.add(obj)
                s.flush()
                with PILImage.open(path) as im:
                    width, height = im.size
                image = Image(object_id=obj.id, rank=0, file_path="", original_name=path.name,
                              width=width, height=height)
                s.add(image)
                s.flush()
                image.file_path, image.thumb_path = inst.vault.store(path, image.id, 0)
                objects[orig], scores[orig] = obj.id, score
        return ValidationProject(project.id, {n: t.id for n, t in taxa.items()}, objects, scores)
