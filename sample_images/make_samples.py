"""Write the bundled synthetic sample cases into ``sample_images/``.

One case folder per ASCO/CAP group (group1..group5), a heterogeneous case and a
z-stack case; each has two fields (OME-TIFF, channels DAPI/HER2/CEP17) with its
truth beside it (label image, spot and cell tables, ``truth.json``). Seeds are
fixed, so running this again reproduces the same files. Also rewrites
``sample_images/README.md`` with the truth of each case.

Usage::

    python sample_images/make_samples.py [--out DIR]
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

from ishcount.synthetic import describe_case, make_case, write_case

#: (folder, preset, seed, lateral size in pixels, number of z planes or None)
SAMPLES: tuple[tuple[str, str, int, int, int | None], ...] = (
    ("group1", "group1", 101, 360, None),
    ("group2", "group2", 102, 360, None),
    ("group3", "group3", 103, 400, None),  # at 360 it had exactly the 20 nuclei to score
    ("group4", "group4", 104, 360, None),
    ("group5", "group5", 105, 360, None),
    ("heterogeneous", "heterogeneous", 106, 360, None),
    ("zstack_group1", "group1", 107, 336, 3),
)
PIXEL_SIZE_UM = 0.16
MIN_SCORABLE = 20

README_HEAD = """# Sample images

Synthetic HER2/CEP17 dual-probe FISH cases made by `ishcount.synthetic` (research use only).
Each folder is one case of two fields (two separate tumour areas) at {pixel} um per pixel:

- `<field>.ome.tif`: uint16 (12-bit data), axes CYX (or CZYX), channels DAPI, HER2, CEP17,
  physical pixel size in the OME metadata, zlib with horizontal predictor;
- `<field>.truth_nuclei.tif`: int32 nucleus labels (2D footprint, top-most where nuclei overlap);
- `<field>.truth_spots.csv`: one row per rendered spot (split signals share `signal_id`,
  cluster copies share `cluster_id`; `label` 0 = outside nuclei);
- `<field>.truth_cells.csv`: per-nucleus counts by the kit's rules and `is_scorable` (not at
  the border, not overlapping, not under debris at half a signal's peak, `is_obscured`);
- `<field>.truth_debris.csv`: autofluorescent debris blobs (bright in every channel; not signals);
- `truth.json`: case truth over scorable nuclei (ratio of sums, means, ASCO/CAP 2018 group),
  preset, seed and generator version.

| case | preset | fields | size | scorable nuclei | mean HER2 | mean CEP17 | ratio | group |
|---|---|---|---|---|---|---|---|---|
"""

README_TAIL = """
Regenerate (same seeds, same files):

```
python sample_images/make_samples.py
```

or one case of any size with the command line, for example
`python -m ishcount.synthetic --preset group3 --out /tmp/group3 --size 1024 --seed 0`.
"""


def _table_row(folder: str, case, size: int, n_z: int | None) -> str:
    t = case.truth
    shape = f"{size}x{size}" + (f"x{n_z}z" if n_z else "")
    return (
        f"| `{folder}` | {case.preset} | {len(case.fields)} | {shape} | {t.n_nuclei} "
        f"| {t.mean_her2:.2f} | {t.mean_cep17:.2f} | {t.ratio:.2f} | {t.group} |"
    )


def main(argv: list[str] | None = None) -> int:
    """Write every sample case and the README; return 1 if a case has too few nuclei."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent)
    args = parser.parse_args(argv)
    rows, status = [], 0
    for folder, preset, seed, size, n_z in SAMPLES:
        case = make_case(
            preset,
            n_fields=2,
            shape=(size, size),
            n_z=n_z,
            spacing_um=PIXEL_SIZE_UM,
            rng=seed,
            name=folder,
        )
        target = args.out / folder
        if target.exists():
            shutil.rmtree(target)
        write_case(case, target)
        print(describe_case(case), end="\n\n")
        rows.append(_table_row(folder, case, size, n_z))
        if case.truth.n_nuclei < MIN_SCORABLE:
            print(
                f"warning: {folder} has only {case.truth.n_nuclei} scorable nuclei", file=sys.stderr
            )
            status = 1
    readme = README_HEAD.format(pixel=PIXEL_SIZE_UM) + "\n".join(rows) + "\n" + README_TAIL
    (args.out / "README.md").write_text(readme, encoding="utf-8")
    return status


if __name__ == "__main__":
    sys.exit(main())
