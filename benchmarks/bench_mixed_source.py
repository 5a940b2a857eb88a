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

    python benchmarks/bench_mixed_source.py --out "$OUT/mixed_source.json" [--cases sampling,fidelity,training]

Timing: ``benchmarks/timing.py`` (warm-up until settled, median of 3 x 20 timed steps, spread kept in the JSON);
the JSON is rewritten after every row, so a run cut short keeps what it finished.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from timing import time_steps  # noqa: E402  (benchmarks/timing.py)

from mixflow_bench.flow.counted_solvers import euler, manual_heun  # noqa: E402
from mixflow_bench.flow.mixed_source import MixedSourceModel, mixed_source_method  # noqa: E402
from mixflow_bench.models.songunet import songunet  # noqa: E402


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


def time_sampling(model, bf16: bool, batch: int, steps: int, device: str) -> tuple[float, dict]:
    """Image-evaluations per second of ``steps`` Euler steps at ``batch`` (stable timing: settled warm-up,
    median of 3 x 20 timed calls)."""
    x = torch.randn(batch, 3, 32, 32, device=device, generator=torch.Generator(device).manual_seed(0))
    v = velocity_fn(model, bf16)
    timing = time_steps(lambda: euler(v, x, steps), device=device)
    return batch * steps / timing.median_s, timing.as_dict()


def time_training(velocity, bf16: bool, batch: int, device: str) -> tuple[float, dict]:
    """Images per second of one mixed-source optimizer step (stable timing)."""
    model = MixedSourceModel(velocity, ConvSource().to(device)).train()
    objective = mixed_source_method("mixed-source", beta=1e-5)
    opt = torch.optim.Adam(model.parameters(), lr=2e-4)
    x1 = torch.rand(batch, 3, 32, 32, device=device) * 2 - 1
    y = torch.zeros(batch, dtype=torch.long, device=device)
    g = torch.Generator(device=device).manual_seed(0)  # on the device, as the engine and the released code draw

    def step():
        r = objective.draw(batch, (3, 32, 32), g)
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=bf16):
            loss = objective.loss(model, x1, y, r).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    timing = time_steps(step, device=device)
    return batch / timing.median_s, timing.as_dict()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--sample-batch", type=int, default=512)
    parser.add_argument("--train-batch", type=int, default=128)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--cases", default="sampling,fidelity,training",
                        help="comma-separated subset of sampling, fidelity, training")  # fmt: skip
    parser.add_argument("--train-paths", default="official,fast",
                        help="training paths to time: official, fast (one per device command when time is short)")
    args = parser.parse_args()
    cases = set(args.cases.split(","))
    if not cases <= {"sampling", "fidelity", "training"}:
        raise SystemExit(f"unknown case in --cases {args.cases!r} (sampling, fidelity, training)")
    if not torch.cuda.is_available():
        raise SystemExit("this benchmark needs a CUDA device")
    device = "cuda"
    torch.backends.cuda.matmul.allow_tf32 = False
    result = {"device": torch.cuda.get_device_name(), "torch": torch.__version__, "timing": "benchmarks/timing.py",
              "rows": []}  # fmt: skip

    def add(row: dict) -> None:
        """Keep the row and rewrite the JSON at once: a run cut short keeps what it finished."""
        result["rows"].append(row)
        if args.out:
            args.out.parent.mkdir(parents=True, exist_ok=True)
            tmp = args.out.with_name(args.out.name + ".partial")
            tmp.write_text(json.dumps(result, indent=2))
            tmp.replace(args.out)

    if cases & {"sampling", "fidelity"}:
        official = make("math", device).eval()
        fast = torch.compile(make("sdpa", device).eval())
        if "sampling" in cases:
            for name, model, bf16 in (("official-equivalent (fp32, eager, math attention)", official, False),
                                      ("fast (bf16, SDPA, torch.compile)", fast, True)):  # fmt: skip
                rate, timing = time_sampling(model, bf16, args.sample_batch, args.steps, device)
                add({"case": "sampling Euler", "path": name, "batch": args.sample_batch, "steps_per_call": args.steps,
                     "evals_per_s": rate, "timing": timing})  # fmt: skip
                print(f"sampling  {name:55s} {rate:10.1f} image-evals/s", flush=True)
        if "fidelity" in cases:
            noise = torch.randn(args.sample_batch, 3, 32, 32, device=device,
                                generator=torch.Generator(device).manual_seed(1))  # fmt: skip
            ref = manual_heun(velocity_fn(official, False), noise, 5)
            got = manual_heun(velocity_fn(fast, True), noise, 5)
            rel = float((got.sample - ref.sample).norm() / ref.sample.norm())
            add({"case": "fidelity", "path": "fast vs official-equivalent, manual Heun 9 NFE", "rel_l2": rel,
                 "nfe": ref.nfe})  # fmt: skip
            print(f"fidelity  relative L2 of final samples (manual Heun, {ref.nfe} NFE): {rel:.3e}", flush=True)
        del official, fast
        torch.cuda.empty_cache()

    if "training" in cases:
        paths = {"official": ("official-equivalent (fp32, compiled, math attention)", "math", False),
                 "fast": ("fast (bf16, SDPA, torch.compile)", "sdpa", True)}  # fmt: skip
        chosen = args.train_paths.split(",")
        if not set(chosen) <= set(paths):
            raise SystemExit(f"unknown path in --train-paths {args.train_paths!r} (official, fast)")
        for name, attention, bf16 in (paths[p] for p in chosen):
            model = torch.compile(make(attention, device))
            rate, timing = time_training(model, bf16, args.train_batch, device)
            add({"case": "training step", "path": name, "batch": args.train_batch, "images_per_s": rate,
                 "timing": timing})  # fmt: skip
            print(f"training  {name:55s} {rate:10.1f} images/s", flush=True)
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
