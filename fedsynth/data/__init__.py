"""Site data: NIfTI ingestion, normalisation, slices, split, cached store, bundled cohort.

>>> store = ingest_site("cohort/site-1", modality="ct", out="cache", size=128)
>>> store.train_images().shape   # (n, 128, 128) float32 in [0, 1]

Names are imported on first use (:func:`fedsynth.lazy.lazy_exports`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from fedsynth.lazy import lazy_exports

exports = {
    "SliceStore": "fedsynth.data.store",
    "Volume": "fedsynth.data.nifti",
    "discover_volumes": "fedsynth.data.ingest",
    "hu_to_window": "fedsynth.data.normalise",
    "ingest_configured_site": "fedsynth.data.ingest",
    "ingest_site": "fedsynth.data.ingest",
    "load_volume": "fedsynth.data.nifti",
    "normalise_volume": "fedsynth.data.normalise",
    "open_store": "fedsynth.data.store",
    "patient_id_from_name": "fedsynth.data.ingest",
    "read_image_stack": "fedsynth.data.stack",
    "split_patients": "fedsynth.data.split",
    "window_to_hu": "fedsynth.data.normalise",
}

__getattr__, __dir__, __all__ = lazy_exports(__name__, exports)

if TYPE_CHECKING:  # pragma: no cover
    from fedsynth.data.ingest import (  # noqa: F401
        discover_volumes,
        ingest_configured_site,
        ingest_site,
        patient_id_from_name,
    )
    from fedsynth.data.nifti import Volume, load_volume  # noqa: F401
    from fedsynth.data.normalise import hu_to_window, normalise_volume, window_to_hu  # noqa: F401
    from fedsynth.data.split import split_patients  # noqa: F401
    from fedsynth.data.stack import read_image_stack  # noqa: F401
    from fedsynth.data.store import SliceStore, open_store  # noqa: F401
