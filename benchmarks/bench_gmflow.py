"""GM-DiT sampling on the GPU: per-step cost of the GM algebra next to the DiT forward, official-equivalent vs
fast path, and the fast path's fidelity.

The GM-DiT-XL/2 (K = 8) has random weights of the real architecture (the zero-initialised output layers are
re-filled with N(0, 0.02)), batch 125 (the paper's timing batch), probabilistic guidance w = 0.45 (the
conditional and null-label halves in one batch of 250). Per sampler step it times:

* ``forward``: one guided GM-DiT evaluation (batch 250);
* ``gm``: everything else in the step: u -> x0, probabilistic guidance, the second-order reweighting with the
  previous step's GM converted to the current time, and then either 4 GM-ODE sub-steps (Eq. 10 conversions,
  GM-ODE 2, n = 4) or one GM-SDE draw and reverse transition (GM-SDE 2). The paper: 0.005 s of GM overhead next
  to 0.39 s per DiT step (A100, batch 125).

``official`` is fp32 with TF32 matmuls, eager; ``fast`` is bf16 autocast for the network plus ``torch.compile``
(the GM algebra stays float32 in both). ``--fidelity`` samples GM-ODE 2 at NFE 8 (16 sub-steps) from the same
noise on both paths and reports the relative L2 distance of the final latents. Results go to ``--out``
(default ``$OUT`` or ``.``) as JSON.

    python benchmarks/bench_gmflow.py --fidelity            # on one GPU; about 3-5 minutes on an H100
    python benchmarks/bench_gmflow.py --smoke                # a small model on the CPU: a check of the script
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mixflow_bench.flow.gmflow import GaussianMixture, gm_ode, gm_sde, gmflow_grid  # noqa: E402
from mixflow_bench.models.gmdit import GMDiT  # noqa: E402


def sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


@torch.no_grad()
def randomize(model: torch.nn.Module, std: float = 0.02) -> torch.nn.Module:
    g = torch.Generator().manual_seed(1234)
    for p in model.parameters():
        p.copy_(torch.randn(p.shape, generator=g) * std)
    return model


def guided_fn(net, y: torch.Tensor, null: int, bf16: bool):
    """(x, t) -> (conditional, unconditional) GMs in float32, one doubled batch per call."""
    y2 = torch.cat([y, torch.full_like(y, null)])

    def fn(x, t):
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=bf16 and x.is_cuda):
            out = net(torch.cat([x, x]), torch.cat([t, t]), y2)
        out = GaussianMixture(*(v.float() for v in out))
        n = len(x)
        return out.map(lambda v: v[:n]), out.map(lambda v: v[n:])

    return fn


def cached(fn):
    """The same (conditional, unconditional) pair every call: the solver's own cost without the network."""
    box: dict = {}

    def call(x, t):
        if "out" not in box:
            box["out"] = fn(x, t)
        return box["out"]

    return call


def run_solver(kind: str, fn, x: torch.Tensor, steps: int, substeps: int, scale: float) -> torch.Tensor:
    if kind == "gm-ode2":
        return gm_ode(fn, x, gmflow_grid(steps * substeps), substeps=substeps, order=2, guidance_scale=scale)
    g = torch.Generator().manual_seed(0)
    return gm_sde(fn, x, gmflow_grid(steps), order=2, guidance_scale=scale, generator=g)


def timed(fn, repeats: int) -> float:
    fn()
    sync()
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    sync()
    return (time.perf_counter() - start) / repeats


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=125)
    parser.add_argument("--steps", type=int, default=8, help="sampler steps timed per repeat")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--scale", type=float, default=0.45)
    parser.add_argument("--fidelity", action="store_true")
    parser.add_argument("--smoke", action="store_true", help="a 2-layer model on the CPU")
    parser.add_argument("--out", default=os.environ.get("OUT", "."))
    args = parser.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() and not args.smoke else "cpu")
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    if args.smoke:
        net = GMDiT(num_gaussians=8, input_size=8, hidden=64, depth=2, heads=2, logstd_inner=64)
        shape, args.batch, args.steps, args.repeats = (4, 8, 8), 4, 3, 1
    else:
        net = GMDiT(num_gaussians=8)
        shape = (4, 32, 32)
    net = randomize(net).to(device).eval()
    g = torch.Generator().manual_seed(0)
    x = torch.randn(args.batch, *shape, generator=g).to(device)
    y = torch.randint(0, 1000, (args.batch,), generator=g).to(device)
    compiled = torch.compile(net) if device.type == "cuda" else net
    paths = {"official": (net, False), "fast": (compiled, True)}
    result: dict = {
        "device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu",
        "torch": torch.__version__,
        "batch": args.batch,
        "guidance_scale": args.scale,
        "K": 8,
        "rows": [],
    }
    for path, (model, bf16) in paths.items():
        fn = guided_fn(model, y, 1000, bf16)
        t = torch.full((args.batch,), 0.7, device=device)
        with torch.no_grad():
            forward = timed(lambda fn=fn, t=t: fn(x, t), args.repeats * args.steps)
            for kind, substeps in (("gm-ode2", 4), ("gm-sde2", 1)):

                def full(kind=kind, fn=fn, substeps=substeps):
                    return run_solver(kind, fn, x, args.steps, substeps, args.scale)

                def algebra(kind=kind, fn=fn, substeps=substeps):
                    return run_solver(kind, cached(fn), x, args.steps, substeps, args.scale)

                total, solver_only = timed(full, args.repeats), timed(algebra, args.repeats)
                gm_step = (solver_only - forward) / args.steps  # cached() still ran the network once
                row = {
                    "path": path,
                    "solver": kind,
                    "substeps": substeps,
                    "forward_s_per_step": forward,
                    "gm_s_per_step": gm_step,
                    "total_s_per_step": total / args.steps,
                    "gm_share": gm_step / (total / args.steps),
                }
                result["rows"].append(row)
                print(
                    f"{path:8s} {kind:7s} n={substeps}: forward {forward:.4f} s/step, GM {gm_step:.4f} s/step, "
                    f"total {total / args.steps:.4f} s/step (GM share {row['gm_share']:.1%})",
                    flush=True,
                )
    if args.fidelity:
        with torch.no_grad():
            ref = run_solver("gm-ode2", guided_fn(net, y, 1000, False), x, 8, 16, args.scale)
            fast = run_solver("gm-ode2", guided_fn(compiled, y, 1000, True), x, 8, 16, args.scale)
        rel = ((fast - ref).flatten(1).norm(dim=1) / ref.flatten(1).norm(dim=1)).cpu()
        result["fidelity"] = {
            "sampler": f"gm-ode2, NFE 8, 16 sub-steps, w={args.scale:g}",
            "rel_l2_median": float(rel.median()),
            "rel_l2_max": float(rel.max()),
            "n": len(rel),
        }
        print(f"fidelity (fast vs fp32, GM-ODE 2 NFE 8): rel-L2 median {rel.median():.2e}, max {rel.max():.2e}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "bench_gmflow.json").write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out / 'bench_gmflow.json'}")


if __name__ == "__main__":
    main()
