"""What an export folder already holds, so that exporting an unchanged project again
writes nothing.

After each export, :func:`remember_export` writes a manifest
``.ecotaxa_export_<project>.json`` in the folder: the export's options, its
result, and a digest of its content (:func:`export_digest`: the bundle's TSV
text, which holds every exported value, and the vault file behind each image,
since a file never changes under its name). :func:`previous_export` returns that
result when the options and the digest are the same and the files are still
there, untouched (same size and modification time).

The digest costs one pass over the project's rows without the images (the
TSV alone, into a scratch zip that is then removed): a fraction of an export
with images, which is what it saves.
"""

from __future__ import annotations

import hashlib
import json
import os
import uuid
import zipfile
from pathlib import Path
from typing import Any

from sqlalchemy import select

from ecotaxa_core.db.models import Image, Object
from ecotaxa_core.export_bundle import write_bundle
from ecotaxa_core.instance import Instance

__all__ = ["export_digest", "previous_export", "remember_export", "manifest_path"]


def manifest_path(out_dir: Path, project_id: int) -> Path:
    return Path(out_dir) / f".ecotaxa_export_{int(project_id)}.json"


def export_digest(inst: Instance, project_id: int, out_dir: Path, *,
                  split_by_sample: bool) -> str:
    """A digest of what an export of the project would hold now."""
    digest = hashlib.sha256()
    scratch = Path(out_dir) / f".digest-{uuid.uuid4().hex}.zip"
    try:
        write_bundle(inst, project_id, scratch, with_images=False,
                     split_by_sample=split_by_sample)
        with zipfile.ZipFile(scratch) as z:
            for name in sorted(z.namelist()):
                digest.update(name.encode() + b"\0")
                with z.open(name) as f:
                    for block in iter(lambda: f.read(1 << 20), b""):
                        digest.update(block)
    finally:
        scratch.unlink(missing_ok=True)
    with inst.sessions() as s:
        for image_id, path in s.execute(
                select(Image.id, Image.file_path).join(Object, Object.id == Image.object_id)
                .where(Object.project_id == int(project_id)).order_by(Image.id)):
            digest.update(f"{image_id}\t{path}\n".encode())
    return digest.hexdigest()


def _stamp(path: Path) -> list[int] | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return [st.st_size, st.st_mtime_ns]


def remember_export(out_dir: Path, project_id: int, options: dict[str, Any], digest: str,
                    result: dict[str, Any]) -> None:
    files = {key: _stamp(Path(result[key])) for key in ("bundle", "counts")}
    manifest = {"options": options, "digest": digest, "result": result, "files": files}
    path = manifest_path(out_dir, project_id)
    tmp = path.with_name(path.name + ".part")
    tmp.write_text(json.dumps(manifest, indent=1))
    os.replace(tmp, path)


def previous_export(out_dir: Path, project_id: int, options: dict[str, Any],
                    digest: str) -> dict[str, Any] | None:
    """The result of the folder's last export of the project, if it was made with these
    options, of the same content, and its files are there as it wrote them."""
    try:
        manifest = json.loads(manifest_path(out_dir, project_id).read_text())
    except (OSError, ValueError):
        return None
    if manifest.get("options") != options or manifest.get("digest") != digest:
        return None
    result = manifest.get("result") or {}
    for key, stamp in (manifest.get("files") or {}).items():
        if key not in result or stamp is None or _stamp(Path(result[key])) != stamp:
            return None
    return result
