"""epam_data: raw action-recognition videos -> COCO-17 poses + RGB crops -> HDF5 shards -> split
manifests.

Each stage is a module usable from Python; `epam_data.cli` is a thin typer layer over them.
"""

__version__ = "0.1.0"
