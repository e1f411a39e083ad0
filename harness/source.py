"""Training batches in a deterministic order: the same (epoch, step) always gives the same images and flips,
so a resumed run continues exactly where the killed one stopped."""
from __future__ import annotations

import torch

from harness.data import (
    PREPROCESSING,
    RecordIODataset,
    batch_to_tensor,
    image_folder,
    list_file,
    load_or_generate,
    random_hflip,
)

CPU = torch.device("cpu")


class TrainSource:
    def __init__(self, cfg, faces=None):
        self.cfg = cfg
        d = cfg.data
        if d.source == "synthetic":
            self.split = faces.train
            self.dataset = None
            self.num_classes = faces.num_classes
            self.image_size = faces.config.size
        else:
            self.dataset = {"recordio": RecordIODataset, "folder": image_folder, "list": list_file}[d.source](d.path)
            if d.source == "recordio":   # image folders and lists were scanned when listed (harness.data.folders)
                self.dataset.check_labels()
            self.num_classes = self.dataset.num_classes
            self.image_size = self.dataset[0][0].shape[-1]
        self.preprocessing = dict(PREPROCESSING)

    def __len__(self):
        return len(self.split) if self.dataset is None else len(self.dataset)

    def steps_per_epoch(self, batch_size: int) -> int:
        steps = len(self) // batch_size
        if steps < 1:
            raise ValueError(f"train.batch_size={batch_size} is larger than the training set ({len(self)} images)")
        return steps

    def batches(self, epoch: int, start_step: int, batch_size: int, seed: int, rank: int = 0, world_size: int = 1,
                device: torch.device = CPU):
        """Yield (step, images float [b, 3, H, W], labels int64 [b]) on `device`, from start_step to the end of the
        epoch. batch_size is the global batch; rank r of world_size N gets rows [r*b, (r+1)*b) of it (b = B/N), with
        the same images and flips those rows have in a single-process run, so N ranks together see exactly its batch.
        For a GPU the batch travels from pinned memory without blocking, and the built-in data's uint8 pixels are
        converted and flipped there (4x fewer bytes to copy, no float work on the main thread); the same operations
        in the same order on the CPU, so a CPU run is unchanged."""
        order = torch.randperm(len(self), generator=torch.Generator().manual_seed(seed * 100_003 + epoch))
        steps = self.steps_per_epoch(batch_size)
        b = batch_size // world_size
        rows = slice(rank * b, (rank + 1) * b)
        index_batches = [order[s * batch_size:(s + 1) * batch_size][rows] for s in range(start_step, steps)]
        pin = device.type == "cuda"
        if self.dataset is None:
            split = self.split
            loaded = ((torch.from_numpy(split.images[idx.numpy()]), torch.as_tensor(split.labels[idx.numpy()]))
                      for idx in index_batches)
        else:
            loaded = iter(torch.utils.data.DataLoader(self.dataset, batch_sampler=[b.tolist() for b in index_batches],
                                                      num_workers=self.cfg.data.workers, pin_memory=pin))
        for step, (images, labels) in zip(range(start_step, steps), loaded, strict=True):
            flips = torch.Generator().manual_seed(seed * 1_000_003 + epoch * 10_007 + step)
            flip = (torch.rand(batch_size, generator=flips) < 0.5)[rows]
            labels = labels.long()
            if pin:   # a copy from pageable memory would block until the GPU finished the previous step
                images, labels, flip = (t if t.is_pinned() else t.pin_memory() for t in (images, labels, flip))
            images, labels, flip = (t.to(device, non_blocking=True) for t in (images, labels, flip))
            if self.dataset is None:
                images = batch_to_tensor(images)
            yield step, random_hflip(images, flip=flip), labels


def synthetic_faces(cfg):
    """The built-in data set of cfg.data.synthetic, from the cache (generated on first use)."""
    return load_or_generate(cfg.data.synthetic, cache_dir=cfg.data.cache_dir or None, verbose=True)


__all__ = ["TrainSource", "synthetic_faces"]
