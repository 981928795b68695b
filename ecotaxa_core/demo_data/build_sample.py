"""Build the demo sample shipped in this folder from the NDSB PlanktonSet 1.0 zip.

The demo bundle (``ndsb_demo.zip``) is an EcoTaxa TSV bundle of real ISIIS
images (NOAA NCEI accession 0127422, US government data): 12 classes x 100
images, spread over 3 samples. 70 % of each class is validated (the "classified
by hand" part of the loop), 30 % is unclassified; the true category of those is
kept aside in ``ndsb_demo_truth.tsv`` so the demo can tell how good its
predictions are on images the model never saw.

Run from the project root (with the shared datasets beside it)::

    python -m ecotaxa_core.demo_data.build_sample ../shared/datasets/ndsb_planktonset1_dev.zip
"""

from __future__ import annotations

import io
import random
import sys
import zipfile
from pathlib import Path

HERE = Path(__file__).parent
CLASSES = (
    "acantharia_protist", "appendicularian_s_shape", "chaetognath_other",
    "copepod_cyclopoid_oithona_eggs", "detritus_other", "diatom_chain_string",
    "echinoderm_larva_seastar_brachiolaria", "fecal_pellet", "hydromedusae_solmaris",
    "protist_noctiluca", "trichodesmium_puff", "tunicate_doliolid",
)
PER_CLASS = 100
VALIDATED_FRACTION = 0.7
SAMPLES = ("isiis_2014_station_a", "isiis_2014_station_b", "isiis_2014_station_c")
SEED = 20150101


def build(ndsb_zip: Path, out_dir: Path = HERE) -> tuple[Path, Path]:
    rng = random.Random(SEED)
    rows, truth = [], []
    buf = io.BytesIO()
    with zipfile.ZipFile(ndsb_zip) as src, zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as dst:
        names = sorted(n for n in src.namelist() if n.endswith(".jpg"))
        for cls in CLASSES:
            members = [n for n in names if n.split("/")[1] == cls]
            chosen = sorted(rng.sample(members, PER_CLASS))
            n_validated = round(PER_CLASS * VALIDATED_FRACTION)
            validated = set(rng.sample(chosen, n_validated))
            for member in chosen:
                stem = member.rsplit("/", 1)[1][:-4]
                obj_id = f"ndsb_{stem}"
                dst.writestr(f"images/{stem}.jpg", src.read(member))
                sample = SAMPLES[int(stem) % len(SAMPLES)]
                if member in validated:
                    status, category, person = "validated", cls, "NDSB annotators"
                else:
                    status, category, person = "", "", ""
                    truth.append((obj_id, cls))
                rows.append([obj_id, f"images/{stem}.jpg", "0", status, category, person,
                             sample, "isiis_straits_of_florida_2014", f"{sample}_acq", "ISIIS"])
        header = ["object_id", "img_file_name", "img_rank", "object_annotation_status",
                  "object_annotation_category", "object_annotation_person_name",
                  "sample_id", "sample_cruise", "acq_id", "acq_instrument"]
        types = ["[t]", "[t]", "[f]", "[t]", "[t]", "[t]", "[t]", "[t]", "[t]", "[t]"]
        tsv = "\n".join("\t".join(r) for r in [header, types, *rows]) + "\n"
        dst.writestr("ecotaxa_ndsb_demo.tsv", tsv)
    bundle = out_dir / "ndsb_demo.zip"
    bundle.write_bytes(buf.getvalue())
    truth_path = out_dir / "ndsb_demo_truth.tsv"
    truth_path.write_text("object_id\tcategory\n" + "".join(f"{o}\t{c}\n" for o, c in truth))
    return bundle, truth_path


if __name__ == "__main__":
    print(*build(Path(sys.argv[1])))
