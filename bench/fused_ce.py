"""Fused (chunked) lm_head + cross-entropy against the full-logits path, on the CPU.

    .venv/bin/python bench/fused_ce.py [--vocab 128256] [--tokens 2048] [--hidden 64] [--chunk 256]

Prints forward+backward wall time (best of --repeats) and the largest tensor any aten op
created (a TorchDispatchMode watches every op, backward included), in elements and MiB.
The time is measured without the mode, which adds per-op Python overhead.
"""

import argparse
import time

import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from tunesmith.train.losses import IGNORE_INDEX, fused_linear_cross_entropy


class LargestTensor(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.elements = 0
        self.nbytes = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in tree_leaves(out):
            if isinstance(t, torch.Tensor) and t.untyped_storage().nbytes() > self.nbytes:
                self.nbytes = t.untyped_storage().nbytes()
                self.elements = self.nbytes // t.element_size()
        return out


def plain(hidden, weight, targets, chunk):
    logits = hidden @ weight.T  # (N, V)
    return F.cross_entropy(logits.float(), targets, ignore_index=IGNORE_INDEX, reduction="sum")


def fused(hidden, weight, targets, chunk):
    return fused_linear_cross_entropy(hidden, weight, targets, chunk_size=chunk)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vocab", type=int, default=128256)
    parser.add_argument("--tokens", type=int, default=2048)
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--chunk", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    g = torch.Generator().manual_seed(0)
    hidden = torch.randn(args.tokens, args.hidden, generator=g, requires_grad=True)
    weight = (torch.randn(args.vocab, args.hidden, generator=g) / args.hidden**0.5).requires_grad_()
    targets = torch.randint(0, args.vocab, (args.tokens,), generator=g)
    print(
        f"N={args.tokens} H={args.hidden} V={args.vocab} chunk={args.chunk} fp32, "
        f"{torch.get_num_threads()} threads; full logits = {args.tokens * args.vocab:,} elements"
    )
    losses = {}
    for name, fn in [("plain", plain), ("fused", fused)]:
        times = []
        for _ in range(args.repeats):
            hidden.grad = weight.grad = None
            start = time.perf_counter()
            loss = fn(hidden, weight, targets, args.chunk)
            loss.backward()
            times.append(time.perf_counter() - start)
        losses[name] = loss.item()
        hidden.grad = weight.grad = None
        with LargestTensor() as seen:
            fn(hidden, weight, targets, args.chunk).backward()
        print(
            f"{name}: fwd+bwd {min(times):.3f} s  largest tensor {seen.elements:,} elements "
            f"({seen.nbytes / 2**20:,.1f} MiB)  loss {losses[name]:.4f}"
        )
    print(f"|loss difference| = {abs(losses['plain'] - losses['fused']):.3g}")


if __name__ == "__main__":
    main()
