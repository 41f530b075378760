"""Draw sample slices of the bundled cohort, one row per site: docs/img/cohort_{ct,mri,pet}.png.

Runs the real path (make-cohort, then ingestion) so the picture shows exactly
what the generators and networks are trained on.

    python docs/figures/cohort_figure.py
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from fedsynth.data import ingest_site  # noqa: E402
from fedsynth.data.cohort import make_cohort  # noqa: E402

OUT = Path(__file__).resolve().parents[1] / "img"


def figure(modality: str, sites: int = 3, per_site: int = 5) -> Path:
    with tempfile.TemporaryDirectory() as tmp:
        make_cohort(modality, sites=sites, patients=3, out=Path(tmp) / "cohort", progress_bar=False)
        fig, axes = plt.subplots(sites, per_site, figsize=(2 * per_site, 2.1 * sites))
        for k in range(sites):
            store = ingest_site(Path(tmp) / "cohort" / f"site-{k + 1}", modality=modality,
                                out=Path(tmp) / f"cache-{k}", size=128, progress=False)
            pick = np.linspace(0, len(store.images) - 1, per_site).round().astype(int)
            for j, i in enumerate(pick):
                ax = axes[k, j]
                # PET is read as dark uptake on white, as on a PET workstation
                ax.imshow(store.images[i], cmap="gray_r" if modality == "pet" else "gray", vmin=0, vmax=1)
                ax.set_xticks([])
                ax.set_yticks([])
                ax.set_title(f"{store.patient_ids[i]} z{store.slice_indices[i]}", fontsize=7)
            axes[k, 0].set_ylabel(f"site-{k + 1}")
        fig.suptitle(f"bundled {modality.upper()} cohort after ingestion (128×128, [0, 1])", fontsize=9)
        fig.tight_layout()
        OUT.mkdir(parents=True, exist_ok=True)
        path = OUT / f"cohort_{modality}.png"
        fig.savefig(path, dpi=90)
        plt.close(fig)
        return path


if __name__ == "__main__":
    import sys

    for m in sys.argv[1:] or ("ct", "mri", "pet"):
        print(figure(m))
