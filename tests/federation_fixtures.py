"""Helpers for the federation tests: smooth synthetic images and real signed bundles."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from scipy.ndimage import gaussian_filter


def blobs(n: int, size: int = 32, seed: int = 0) -> np.ndarray:
    """``n`` smooth random images (n, size, size) float32 in [0, 1]."""
    rng = np.random.default_rng(seed)
    x = gaussian_filter(rng.random((n, size, size)), sigma=(0, 3, 3))
    x -= x.min(axis=(1, 2), keepdims=True)
    x /= x.max(axis=(1, 2), keepdims=True) + 1e-8
    return x.astype(np.float32)


def signed_bundle(keydir: Path, n: int = 6, size: int = 32, seed: int = 1):
    """A real gate run (absolute pixel-RMSE threshold) on blobs, signed with a fresh site key.

    Returns ``(images, signed_certificate, public_key_path, private_key_path)``.
    """
    from fedsynth.privacy import (
        GateConfig,
        PrivacyGate,
        generate_site_key,
        load_private_key,
        sign_certificate,
    )

    priv, pub = generate_site_key(keydir)
    refs = blobs(12, size, seed=seed + 100)
    cands = blobs(n, size, seed=seed)
    cfg = GateConfig(metrics=["pixel_rmse"], mode="absolute", thresholds={"pixel_rmse": 0.0})
    gate = PrivacyGate(refs, cfg)
    batches = iter([cands])
    res = gate.run(lambda k: next(batches, None), quota=n, max_attempts=n, generator_hash="test")
    return res.accepted, sign_certificate(res.certificate, load_private_key(priv)), pub, priv


TINY_SCENARIO = """
name = "tiny"
min_sites = 2
site_timeout_s = 600
[cohort]
modality = "ct"
sites = 3
patients = 3
slices = 6
size = 32
train_fraction = 0.67
[generator]
profile = "tiny"
sample_steps = 5
[generator.overrides]
image_size = 32
[gate]
metrics = ["pixel_rmse", "ncc_robust"]
max_shift = 2
[publish]
quota = 12
chunk_images = 5
[task]
task = "ldct"
network = "rednet"
channels = 8
patch_size = 24
patches_per_image = 2
[training]
epochs = 2
rounds = 2
"""


def _children(root: int) -> set[int]:
    parents: dict[int, int] = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                stat = (d / "stat").read_text()
                parents[int(d.name)] = int(stat.rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
    tree, grew = {root}, True
    while grew:
        new = {p for p, pp in parents.items() if pp in tree} - tree
        grew = bool(new)
        tree |= new
    return tree


def _socket_inodes(pids: set[int]) -> set[str]:
    inodes = set()
    for pid in pids:
        try:
            for fd in Path(f"/proc/{pid}/fd").iterdir():
                try:
                    target = str(fd.readlink())
                except OSError:
                    continue
                if target.startswith("socket:["):
                    inodes.add(target[8:-1])
        except OSError:
            continue
    return inodes


def _addr(hex_addr: str) -> str:
    ip, port = hex_addr.split(":")
    if len(ip) == 8:
        return ".".join(str(int(ip[i : i + 2], 16)) for i in (6, 4, 2, 0)) + f":{int(port, 16)}"
    words = [ip[i : i + 8] for i in range(0, 32, 8)]
    raw = b"".join(bytes.fromhex(w)[::-1] for w in words)
    import ipaddress

    return f"[{ipaddress.IPv6Address(raw)}]:{int(port, 16)}"


def listening_addresses(root_pid: int) -> set[str]:
    """``ip:port`` of every TCP socket in LISTEN state owned by ``root_pid`` or its descendants."""
    inodes = _socket_inodes(_children(root_pid))
    out = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            f = line.split()
            if len(f) > 9 and f[3] == "0A" and f[9] in inodes:
                out.add(_addr(f[1]))
    return out
