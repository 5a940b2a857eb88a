"""κ-FC mixed source on the GPU: the official-equivalent path against the fast path, in one run.

Random weights of the released CIFAR-10 SongUNet (DDPM++, 55.7M parameters), so it runs offline. Needs only torch
(no diffusers: the training case uses the velocity network with the mixed-source objective and a stand-in source
of the released source network's output shape, a 3x3 convolution to [mu, log var], because the real source U-Net
is built from diffusers blocks; its cost is small next to the SongUNet's).

* sampling: Euler steps at batch 512 (the official test batch). Official-equivalent: fp32, eager, the explicit
  float32 softmax attention of the official code. Fast: bf16 autocast, fused SDPA attention, torch.compile.
  Also the relative L2 distance of the two paths' samples after the whole manual-Heun 9-NFE trajectory.
* training: one optimizer step (Adam) of the mixed-source objective at batch 128 (the official CIFAR-10 batch).
  Official-equivalent: fp32, compiled forward (the released training compiles the denoiser), math attention.
  Fast: bf16 autocast + SDPA + torch.compile.

    python benchmarks/bench_mixed_source.py --out "$OUT/mixed_source.json"
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from mixflow_bench.flow.counted_solvers import euler, manual_heun  # noqa: E402
from mixflow_bench.flow.mixed_source import MixedSourceModel, mixed_source_method  # noqa: E402
from mixflow_bench.models.songunet import songunet  # noqa: E402


def sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


@torch.no_grad()
def randomize(model: nn.Module, std: float = 0.02) -> nn.Module:
    g = torch.Generator().manual_seed(1234)
    for p in model.parameters():
        p.copy_(torch.randn(p.shape, generator=g) * std)
    return model


class ConvSource(nn.Module):
    """A stand-in source network with the released one's output: [mu, log var] per pixel."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 6, 3, padding=1)

    def forward(self, x1, y=None, noise=None):
        return self.conv(x1).chunk(2, dim=1)


def make(attention: str, device: str) -> nn.Module:
    model = randomize(songunet("cifar10", attention=attention)).to(device)
    return model


def velocity_fn(model: nn.Module, bf16: bool):
    def v(x, t):
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=bf16):
            return model(x, t).float()
    return v


def time_sampling(model, bf16: bool, batch: int, steps: int, device: str, repeats: int = 3) -> float:
    x = torch.randn(batch, 3, 32, 32, device=device, generator=torch.Generator(device).manual_seed(0))
    v = velocity_fn(model, bf16)
    euler(v, x, 2)  # warm-up (compilation)
    sync()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        euler(v, x, steps)
        sync()
        best = min(best, time.perf_counter() - start)
    return batch * steps / best  # image-evaluations per second


def time_training(velocity, bf16: bool, batch: int, device: str, steps: int = 10) -> float:
    model = MixedSourceModel(velocity, ConvSource().to(device)).train()
    objective = mixed_source_method("mixed-source", beta=1e-5)
    opt = torch.optim.Adam(model.parameters(), lr=2e-4)
    x1 = torch.rand(batch, 3, 32, 32, device=device) * 2 - 1
    y = torch.zeros(batch, dtype=torch.long, device=device)
    g = torch.Generator().manual_seed(0)

    def step():
        r = {k: v.to(device) for k, v in objective.draw(batch, (3, 32, 32), g).items()}
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=bf16):
            loss = objective.loss(model, x1, y, r).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for _ in range(3):
        step()
    sync()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    sync()
    return batch * steps / (time.perf_counter() - start)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--sample-batch", type=int, default=512)
    parser.add_argument("--train-batch", type=int, default=128)
    parser.add_argument("--steps", type=int, default=8)
    args = parser.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("this benchmark needs a CUDA device")
    device = "cuda"
    torch.backends.cuda.matmul.allow_tf32 = False
    rows = []

    official = make("math", device).eval()
    fast = torch.compile(make("sdpa", device).eval())
    for name, model, bf16 in (("official-equivalent (fp32, eager, math attention)", official, False),
                              ("fast (bf16, SDPA, torch.compile)", fast, True)):
        rate = time_sampling(model, bf16, args.sample_batch, args.steps, device)
        rows.append({"case": "sampling Euler", "path": name, "batch": args.sample_batch, "evals_per_s": rate})
        print(f"sampling  {name:55s} {rate:10.1f} image-evals/s", flush=True)
    noise = torch.randn(args.sample_batch, 3, 32, 32, device=device, generator=torch.Generator(device).manual_seed(1))
    ref = manual_heun(velocity_fn(official, False), noise, 5)
    got = manual_heun(velocity_fn(fast, True), noise, 5)
    rel = float((got.sample - ref.sample).norm() / ref.sample.norm())
    rows.append({"case": "fidelity", "path": "fast vs official-equivalent, manual Heun 9 NFE", "rel_l2": rel,
                 "nfe": ref.nfe})
    print(f"fidelity  relative L2 of final samples (manual Heun, {ref.nfe} NFE): {rel:.3e}", flush=True)
    del official, fast
    torch.cuda.empty_cache()

    official_train = torch.compile(make("math", device))
    fast_train = torch.compile(make("sdpa", device))
    for name, model, bf16 in (("official-equivalent (fp32, compiled, math attention)", official_train, False),
                              ("fast (bf16, SDPA, torch.compile)", fast_train, True)):
        rate = time_training(model, bf16, args.train_batch, device)
        rows.append({"case": "training step", "path": name, "batch": args.train_batch, "images_per_s": rate})
        print(f"training  {name:55s} {rate:10.1f} images/s", flush=True)
    result = {"device": torch.cuda.get_device_name(), "torch": torch.__version__, "rows": rows}
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
