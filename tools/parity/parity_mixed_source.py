"""Parity of the κ-FC mixed-source networks against the official code, with random weights.

Builds the official SongUNet (velocity) and source U-Net from ``tools/parity/_official/MixFlow`` (made by
``extract_mixed_source.py``), fills their weights with random values (the official initialisation zeroes the
output convolutions), loads those state dicts into this project's modules with ``strict=True`` and compares the
outputs in float32 on CPU; also the KL term and the manual-Heun solver against the official functions.

    PYTHONPATH=. python tools/parity/parity_mixed_source.py --official tools/parity/_official/MixFlow
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import types
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parent))
from parity import TOLERANCE, adopt, max_diff, randomize_  # noqa: E402

console = Console(width=120)
CONFIGS = {
    "cifar10": dict(img_resolution=32, channel_mult=[2, 2, 2], dropout=0.13),
    "ffhq-64": dict(img_resolution=64, channel_mult=[1, 2, 2, 2], dropout=0.05),
    "afhqv2-64": dict(img_resolution=64, channel_mult=[1, 2, 2, 2], dropout=0.25),
}


def _easydict_stub() -> None:
    """The official modules import ``easydict``; a dict with attribute access is all they use."""
    try:
        import easydict  # noqa: F401
    except ImportError:
        class EasyDict(dict):
            __getattr__ = dict.__getitem__
            __setattr__ = dict.__setitem__

        sys.modules["easydict"] = types.SimpleNamespace(EasyDict=EasyDict)


def velocity_rows(name: str, batch: int) -> list[dict]:
    from src.model.denoiser.songunet import SongUNet as Official  # type: ignore[import-not-found]
    from src.model.denoiser.songunet import SongUNetCfg

    from mixflow_bench.models.songunet import songunet

    cfg = SongUNetCfg(
        name="songunet", in_channels=3, out_channels=3, label_dim=0, augment_dim=0, model_channels=128,
        channel_mult_emb=4, num_blocks=4, attn_resolutions=[16], label_dropout=0, embedding_type="positional",
        channel_mult_noise=1, encoder_type="standard", decoder_type="standard", resample_filter=[1, 1],
        activate_w_mode=False, **CONFIGS[name],
    )
    official = Official(cfg).eval()
    randomize_(official, keep=(), seed=1)
    res = CONFIGS[name]["img_resolution"]
    g = torch.Generator().manual_seed(2)
    x = torch.randn(batch, 3, res, res, generator=g)
    t = torch.rand(batch, generator=g)
    with torch.no_grad():
        ref = official(x, t, return_dict=False)[0]
        rows = []
        for attn in ("math", "sdpa"):
            ours = adopt(official, lambda a=attn: songunet(name, attention=a))
            got = ours(x, t)
            rows.append({"output": f"SongUNet {name} velocity", "ours": attn, "shape": tuple(got.shape),
                         "max_abs_diff": max_diff(got, ref), "max_abs_ref": float(ref.abs().max())})
    return rows


def source_rows(batch: int) -> list[dict]:
    from src.model.diffusion.noise_predictor import NoisePredictor, UNetCfg  # type: ignore[import-not-found]

    from mixflow_bench.models.source_network import SourceUNet

    cfg = UNetCfg(
        input_mode="sample_only", gaussian=True, gaussian_mode="mean_var", normalize_output=False, name="unet",
        sample_size=32, in_channels=3, out_channels=3,
        down_block_types=["DownBlock2D", "DownBlock2D", "DownBlock2D", "AttnDownBlock2D"],
        up_block_types=["AttnUpBlock2D", "UpBlock2D", "UpBlock2D", "UpBlock2D"],
        block_out_channels=[32, 64, 64, 64], layers_per_block=2,
    )
    official = NoisePredictor(cfg).eval()
    randomize_(official, keep=(), seed=3)
    x = torch.randn(batch, 3, 32, 32, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        _, data = official(x)
        ours = adopt(official.network, lambda: SourceUNet(32))
        mean, log_var = ours(x)
    return [
        {"output": "source mean", "ours": "-", "shape": tuple(mean.shape), "max_abs_diff": max_diff(mean, data["mean"]),
         "max_abs_ref": float(data["mean"].abs().max())},
        {"output": "source log variance", "ours": "-", "shape": tuple(log_var.shape),
         "max_abs_diff": max_diff(log_var, data["log_var"]), "max_abs_ref": float(data["log_var"].abs().max())},
    ]


def function_rows() -> list[dict]:
    from src.misc.ode_solver import ODESolver  # type: ignore[import-not-found]
    from src.model.loss.distribution import KLDivergenceGaussian  # type: ignore[import-not-found]

    from mixflow_bench.flow.counted_solvers import manual_heun
    from mixflow_bench.flow.mixed_source import kl_to_standard_normal

    g = torch.Generator().manual_seed(5)
    mean, log_var = torch.randn(4, 3, 8, 8, generator=g), 0.5 * torch.randn(4, 3, 8, 8, generator=g)
    from easydict import EasyDict  # type: ignore[import-not-found]

    ref = KLDivergenceGaussian(None)(None, None, None, None, EasyDict(mean=mean, log_var=log_var))
    got = kl_to_standard_normal(mean, log_var).mean()
    rows = [{"output": "KL (batch mean)", "ours": "-", "shape": (), "max_abs_diff": max_diff(got, ref),
             "max_abs_ref": float(ref.abs())}]
    weight = torch.randn(3, 3, generator=g) * 0.5

    def field(x, t):
        return torch.tanh(x @ weight) * (1 + t.reshape(-1, 1))

    x0 = torch.randn(6, 3, generator=g)
    solver = ODESolver("manual_heun")
    solver._use_torchdiffeq = False  # the official manual path (torchdiffeq has no 'manual_heun')
    for steps in (3, 5):
        sol, nfe = solver.sample(lambda t, x: field(x, t.expand(len(x))), x0, torch.linspace(0, 1, steps + 1))
        ours = manual_heun(field, x0, steps)
        rows.append({"output": f"manual Heun N={steps} (NFE {ours.nfe} vs {nfe})", "ours": "-",
                     "shape": tuple(x0.shape), "max_abs_diff": max_diff(ours.sample, sol[-1]) + abs(ours.nfe - nfe),
                     "max_abs_ref": float(sol[-1].abs().max())})
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--official", type=Path, default=Path("tools/parity/_official/MixFlow"))
    parser.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    if not (args.official / "src").exists():
        raise SystemExit(f"official files not found under {args.official}; run extract_mixed_source.py first")
    sys.path.insert(0, str(args.official))
    _easydict_stub()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    start = time.perf_counter()
    rows = []
    for name in args.configs:
        rows += velocity_rows(name, args.batch)
    rows += source_rows(args.batch) + function_rows()
    elapsed = time.perf_counter() - start
    table = Table(title=f"parity: κ-FC mixed source vs official (fp32, CPU, batch {args.batch})")
    for col in ("output", "ours", "shape", "max |diff|", "max |ref|", f"<= {TOLERANCE:g}"):
        table.add_column(col)
    ok = True
    for r in rows:
        good = r["max_abs_diff"] <= TOLERANCE
        ok &= good
        table.add_row(r["output"], r["ours"], str(r["shape"]), f"{r['max_abs_diff']:.3e}", f"{r['max_abs_ref']:.3e}",
                      "[green]yes" if good else "[red]no")
    console.print(table)
    console.print(f"{'PASS' if ok else 'FAIL'} in {elapsed:.1f} s")
    if args.json:
        args.json.write_text(json.dumps({"rows": rows}, indent=2, default=str))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
