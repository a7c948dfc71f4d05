"""Copy a bundle built elsewhere (a candidate in .cache/) to where it will ship.

A bundle names its speech embedding by a path relative to itself, so a plain copy into
`models/` would point at the wrong place; this rewrites that path, names the bundle after its
new folder (the name events carry as `model`) and checks the result loads.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from edge.bundle import BundleError, load_bundle

BUNDLE_FILES = ("model.tflite", "manifest.json", "report.md")


def _bundle_file(path: Path) -> bool:
    return path.is_file() and (path.name in BUNDLE_FILES or path.suffix == ".png")


def promote(src: Path, dest: Path) -> Path:
    """Replace `dest` with the bundle at `src` (model, manifest, report, plots); returns `dest`."""
    bundle = load_bundle(src)  # refuse to ship what does not load
    if src.resolve() == dest.resolve():
        raise BundleError(f"'{src}' and '{dest}' are the same bundle")
    if dest.is_dir() and any(dest.iterdir()) and not (dest / "manifest.json").is_file():
        # Its PNGs and report.md would be deleted below: they are somebody's files, not a bundle's.
        raise BundleError(f"'{dest}' holds files but no bundle (no manifest.json); promote replaces a bundle "
                          "or fills an empty folder")
    manifest = json.loads((src / "manifest.json").read_text(encoding="utf-8"))
    dest.mkdir(parents=True, exist_ok=True)
    for old in filter(_bundle_file, dest.iterdir()):
        old.unlink()
    for f in filter(_bundle_file, src.iterdir()):
        if f.name != "manifest.json":  # written below, with the embedding path rewritten
            shutil.copy2(f, dest / f.name)
    if bundle.embedding_path is not None:
        manifest["embedding"]["path"] = os.path.relpath(bundle.embedding_path, dest.resolve())
    renamed = manifest.get("name") != dest.name
    manifest["name"] = dest.name
    (dest / "manifest.json").write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    if renamed and (dest / "report.md").is_file():
        from quantize.report import write_report

        write_report(dest, manifest)
    load_bundle(dest)
    return dest
