"""The build folder's manifest.json: its name, format version and a validating reader.

Kept free of heavy imports (no IR, no schema, no TensorFlow), because the staged runtime reads it
in the process whose memory we measure.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from compiler.errors import BuildFolderError

MANIFEST = "manifest.json"
FORMAT = 1


def read_manifest(build_dir: str | os.PathLike) -> dict:
    d = Path(build_dir)
    if not d.exists():
        raise BuildFolderError(f"{d}: no such build folder")
    if not d.is_dir():
        raise BuildFolderError(f"{d}: not a folder (expected a build folder with {MANIFEST})")
    p = d / MANIFEST
    if not p.is_file():
        raise BuildFolderError(f"{d}: no {MANIFEST}; is this a tflc build folder?")
    try:
        manifest = json.loads(p.read_text())
    except (OSError, ValueError) as e:
        raise BuildFolderError(f"{p}: unreadable manifest ({e})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT or "stages" not in manifest:
        raise BuildFolderError(f"{p}: not a tflc manifest of format {FORMAT}")
    return manifest
