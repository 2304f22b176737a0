"""Trains edgecam's plate recogniser on rendered plates and exports it to ONNX.

    python3 train/train.py --out models/edgecam-plate-rec.onnx

Renders its data with train/render.py (seeded: --seed, shards of --shard plates,
cached under --work), trains a small convolutional CTC recogniser for --steps
batches (CPU threads, or CUDA where torch finds a GPU), reports exact-match accuracy
on plates rendered with other seeds in the training fonts and in fonts it never
saw, and writes the ONNX model (input 1x3x32x192 BGR in [-1, 1], output 1x48x37
probabilities: blank, 0-9, A-Z) with its recipe, version and accuracy in the model's
metadata and in a JSON file beside it.

Reproducible: the same arguments, torch version and thread count give the same
weights.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import subprocess
import sys
import time

import numpy as np
import torch
from torch import nn

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import render  # noqa: E402

VERSION = "1"
CLASSES = 1 + len(render.SYMBOLS)


def block(i, o):
    return [nn.Conv2d(i, o, 3, padding=1, bias=False), nn.BatchNorm2d(o), nn.ReLU(inplace=True)]


class Net(nn.Module):
    """32x192 -> 48 steps of 37 classes: a VGG-like stack, then 1-D context."""

    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(
            *block(3, 24), nn.MaxPool2d(2),  # 16x96
            *block(24, 48), nn.MaxPool2d(2),  # 8x48
            *block(48, 64), *block(64, 64), nn.MaxPool2d((2, 1)),  # 4x48
            *block(64, 96), nn.MaxPool2d((2, 1)),  # 2x48
            nn.Conv2d(96, 128, (2, 1), bias=False), nn.BatchNorm2d(128), nn.ReLU(inplace=True),
        )
        self.context = nn.Sequential(
            nn.Conv1d(128, 128, 3, padding=1), nn.ReLU(inplace=True), nn.Dropout(0.1),
            nn.Conv1d(128, 128, 3, padding=2, dilation=2), nn.ReLU(inplace=True),
        )
        self.head = nn.Conv1d(128, CLASSES, 1)

    def forward(self, x):  # x: N,3,32,192 -> N,48,37 logits
        f = self.features(x).squeeze(2)
        f = f + self.context(f)
        return self.head(f).permute(0, 2, 1)


class Probabilities(nn.Module):
    def __init__(self, net):
        super().__init__()
        self.net = net

    def forward(self, x):
        return torch.softmax(self.net(x), dim=2)


def tensor(images: np.ndarray) -> torch.Tensor:
    """uint8 N,H,W,RGB -> float N,3,H,W BGR in [-1, 1] (the daemon's normalisation)."""
    t = torch.from_numpy(images[..., ::-1].copy()).permute(0, 3, 1, 2).float()
    return t / 127.5 - 1.0


def encode(labels):
    idx = {c: i + 1 for i, c in enumerate(render.SYMBOLS)}
    targets = torch.tensor([idx[c] for lb in labels for c in lb], dtype=torch.long)
    lengths = torch.tensor([len(lb) for lb in labels], dtype=torch.long)
    return targets, lengths


def greedy(logits: torch.Tensor) -> list[str]:
    out = []
    for row in logits.argmax(2).tolist():
        s, prev = [], 0
        for k in row:
            if k != prev and k != 0:
                s.append(render.SYMBOLS[k - 1])
            prev = k
        out.append("".join(s))
    return out


def shard_path(work, seed, count, fonts):
    """A rendered shard's cache file: named by its seed, size and the fonts'
    list, so that a changed recipe never reuses an old shard."""
    names = render.TRAIN_FONTS if fonts == "train" else render.TEST_FONTS
    tag = hashlib.sha256(("\n".join(names) + f"\n{count}").encode()).hexdigest()[:8]
    return os.path.join(work, f"shard-{seed}-{tag}.npz")


def render_shards(work, wanted):
    """Renders the missing shards of `wanted` [(seed, count, fonts)], as many at
    once as there are CPUs."""
    todo = [w for w in wanted if not os.path.exists(shard_path(work, *w))]
    running = []
    while todo or running:
        while todo and len(running) < (os.cpu_count() or 1):
            seed, count, fonts = todo.pop(0)
            print(f"rendering {count} plates, seed {seed}...", flush=True)
            running.append(subprocess.Popen(
                [sys.executable, os.path.join(os.path.dirname(os.path.abspath(__file__)), "render.py"),
                 "--seed", str(seed), "--count", str(count), "--fonts", fonts,
                 "--out", shard_path(work, seed, count, fonts)]))
        done = running.pop(0)
        if done.wait() != 0:
            sys.exit("rendering failed")


def shard(work, seed, count, fonts):
    z = np.load(shard_path(work, seed, count, fonts))
    return z["images"], [str(s) for s in z["labels"]]


def accuracy(net, images, labels, device):
    net.eval()
    right = 0
    with torch.no_grad():
        for i in range(0, len(labels), 256):
            pred = greedy(net(tensor(images[i:i + 256]).to(device)))
            right += sum(p == t for p, t in zip(pred, labels[i:i + 256]))
    net.train()
    return right / len(labels)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--work", default="target/train/data", help="rendered shards are cached here")
    ap.add_argument("--seed", type=int, default=100, help="first training shard's seed")
    ap.add_argument("--shards", type=int, default=5)
    ap.add_argument("--shard", type=int, default=20000, help="plates per shard")
    ap.add_argument("--steps", type=int, default=10000)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--eval", type=int, default=2000, help="plates in each accuracy check")
    a = ap.parse_args()
    torch.manual_seed(a.seed)
    rng = np.random.default_rng(a.seed)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    os.makedirs(a.work, exist_ok=True)
    render_shards(a.work, [(a.seed + k, a.shard, "train") for k in range(a.shards)]
                  + [(900, a.eval, "train"), (901, a.eval, "test")])
    parts = [shard(a.work, a.seed + k, a.shard, "train") for k in range(a.shards)]
    images = np.concatenate([p[0] for p in parts])
    labels = [lb for p in parts for lb in p[1]]
    val = shard(a.work, 900, a.eval, "train")
    test = shard(a.work, 901, a.eval, "test")
    print(f"{len(labels)} training plates; device {device}, {torch.get_num_threads()} threads", flush=True)

    net = Net().to(device)
    params = sum(p.numel() for p in net.parameters())
    opt = torch.optim.AdamW(net.parameters(), lr=a.lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=a.lr, total_steps=a.steps, pct_start=0.1)
    ctc = nn.CTCLoss(blank=0, zero_infinity=True)
    started = time.time()
    order = rng.permutation(len(labels))
    at = 0
    for step in range(1, a.steps + 1):
        if at + a.batch > len(order):
            order, at = rng.permutation(len(labels)), 0
        idx = np.sort(order[at:at + a.batch])
        at += a.batch
        x = tensor(images[idx]).to(device)
        targets, lengths = encode([labels[i] for i in idx])
        logp = net(x).log_softmax(2).permute(1, 0, 2)  # T,N,C
        loss = ctc(logp, targets, torch.full((len(idx),), logp.shape[0], dtype=torch.long), lengths)
        opt.zero_grad()
        loss.backward()
        nn.utils.clip_grad_norm_(net.parameters(), 5.0)
        opt.step()
        sched.step()
        if step % 500 == 0 or step == a.steps:
            el = time.time() - started
            v = accuracy(net, val[0][:500], val[1][:500], device)
            print(f"step {step}/{a.steps} loss {loss.item():.3f} val {v:.3f} "
                  f"{el / 60:.1f} min, about {el / step * (a.steps - step) / 60:.0f} min left", flush=True)

    val_acc = accuracy(net, *val, device)
    test_acc = accuracy(net, *test, device)
    print(f"exact match: {val_acc:.4f} on {a.eval} unseen plates in the training fonts, "
          f"{test_acc:.4f} on {a.eval} in unseen fonts", flush=True)

    net = net.cpu().eval()
    recipe = {
        "version": VERSION,
        "renderer": "train/render.py",
        "training": {"seeds": [a.seed + k for k in range(a.shards)], "per_seed": a.shard,
                     "fonts": render.TRAIN_FONTS, "steps": a.steps, "batch": a.batch, "lr": a.lr},
        "parameters": params,
        "torch": torch.__version__,
        "accuracy": {"seed_900_train_fonts": val_acc, "seed_901_test_fonts": test_acc},
        "minutes": round((time.time() - started) / 60, 1),
    }
    tmp = a.out + ".tmp"
    torch.onnx.export(Probabilities(net), torch.zeros(1, 3, render.HEIGHT, render.WIDTH), tmp,
                      input_names=["x"], output_names=["probabilities"], opset_version=13,
                      dynamo=False)
    import onnx

    model = onnx.load(tmp)
    for k, v in {"character": "\n".join(render.SYMBOLS), "edgecam_recogniser": VERSION,
                 "edgecam_recipe": json.dumps(recipe)}.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = k, v
    onnx.save(model, a.out)
    os.remove(tmp)
    digest = hashlib.sha256(open(a.out, "rb").read()).hexdigest()
    recipe["sha256"] = digest
    with open(os.path.splitext(a.out)[0] + ".json", "w") as f:
        json.dump(recipe, f, indent=2)
        f.write("\n")
    print(f"wrote {a.out} ({os.path.getsize(a.out)} bytes, sha256 {digest})")


if __name__ == "__main__":
    main()
