"""Site data: NIfTI ingestion, normalisation, slices, split, cached store, bundled cohort.

>>> store = ingest_site("cohort/site-1", modality="ct", out="cache", size=128)
>>> store.train_images().shape   # (n, 128, 128) float32 in [0, 1]
"""

from fedsynth.data.ingest import discover_volumes, ingest_site, patient_id_from_name
from fedsynth.data.nifti import Volume, load_volume
from fedsynth.data.normalise import hu_to_unit, normalise_volume, unit_to_hu
from fedsynth.data.split import split_patients
from fedsynth.data.stack import read_image_stack
from fedsynth.data.store import SliceStore, open_store

__all__ = [
    "SliceStore",
    "Volume",
    "discover_volumes",
    "hu_to_unit",
    "ingest_site",
    "load_volume",
    "normalise_volume",
    "open_store",
    "patient_id_from_name",
    "read_image_stack",
    "split_patients",
    "unit_to_hu",
]
