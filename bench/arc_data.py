"""Prepared ARC data: build time, peak memory, size on disk, and how fast training batches are made.

Builds the arc1 or arc2 preset's data mix (K augmentations per task) from a folder of Kaggle JSON
files into a fresh directory, opens it as the Trainer does, and times `batches` training batches
of `batch` examples drawn by the TrainSampler (augment, translate, encode).

    python bench/arc_data.py KAGGLE_DIR --preset arc1
    python bench/arc_data.py KAGGLE_DIR --preset arc2 --augmentations 1000 --batch 768
"""

from __future__ import annotations

import argparse
import json
import resource
import tempfile
import time
from pathlib import Path

from recur.config import load_config
from recur.data import Dataset, TrainSampler, prepare


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("kaggle_dir")
    p.add_argument("--preset", default="arc1", choices=["arc1", "arc2"])
    p.add_argument("--augmentations", type=int, default=1000)
    p.add_argument("--batch", type=int, default=768)
    p.add_argument("--batches", type=int, default=20)
    a = p.parse_args()
    cfg = load_config(a.preset, [f"data.arc.kaggle_dir={a.kaggle_dir}", f"data.arc.augmentations={a.augmentations}"])
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        path = prepare(cfg.data, Path(tmp) / "arc")
        prepare_s = time.perf_counter() - t0
        ds = Dataset(path)
        sampler = TrainSampler(ds.splits["train"], a.batch, seed=0)
        sampler.next()  # first touch of the memory-mapped arrays
        t0 = time.perf_counter()
        for _ in range(a.batches):
            sampler.next()
        per_s = a.batches * a.batch / (time.perf_counter() - t0)
        disk = sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
        print(json.dumps({"preset": a.preset, "augmentations": a.augmentations, "prepare_s": round(prepare_s, 2),
                          "disk_mb": round(disk / 2**20, 1), "splits": ds.meta["splits"],
                          "num_puzzle_ids": ds.info["num_puzzle_ids"], "batch": a.batch,
                          "examples_per_s": round(per_s),
                          "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)}, indent=1))


if __name__ == "__main__":
    main()
