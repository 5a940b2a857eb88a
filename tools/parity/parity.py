"""Numerical parity of the zoo's architectures against the official implementations.

For one model at a time: import the official module from a local checkout (``--official``), fill its
weights with random values (its own init zeroes the adaLN and output layers, which would make every output
zero), load that state dict into this project's module with ``strict=True`` (sharing the tensors, so an XL
model is held once), run both in float32 on CPU on the same small batch and print the largest absolute
differences of the outputs. The fixed tables that this project recomputes (sin-cos position tables, RoPE
cos/sin) are compared before they are overwritten by the copied state dict.

    PYTHONPATH=. python tools/parity/parity.py --official tools/parity/_official/SiT --model sit-xl-2
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table
from torch import Tensor, nn

MODELS = ("sit-xl-2", "repa-sit-xl-2", "rae-dith-xl", "rae-dith-s", "rae-decoder", "repa-heun")
TOLERANCE = 1e-5
console = Console(width=120)


def randomize_(module: nn.Module, keep: tuple[str, ...], seed: int) -> None:
    """Overwrite every floating parameter except those named in ``keep`` with scaled Gaussian noise."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            if any(name == k or name.endswith("." + k) for k in keep):
                continue
            fan_in = p[0].numel() if p.ndim >= 2 else 0
            std = 1.0 / math.sqrt(fan_in) if fan_in else 0.02
            if p.ndim == 1 and "norm" in name and name.endswith(".weight"):
                p.copy_(1.0 + 0.1 * torch.randn(p.shape, generator=gen))
            else:
                p.copy_(std * torch.randn(p.shape, generator=gen))


def adopt(official: nn.Module, build: Callable[[], nn.Module]) -> nn.Module:
    """Build this project's module on the meta device and give it the official tensors (strict)."""
    with torch.device("meta"):
        ours = build()
    ours.load_state_dict(official.state_dict(), strict=True, assign=True)
    return ours.eval()


def max_diff(a: Tensor, b: Tensor) -> float:
    return float((a.double() - b.double()).abs().max())


def _import_from(path: Path, subdir: str = "") -> None:
    root = (path / subdir) if subdir else path
    if not root.exists():
        raise SystemExit(f"official checkout not found: {root}")
    sys.path.insert(0, str(root))


def set_official_fused(module: nn.Module, fused: bool) -> None:
    for m in module.modules():
        if hasattr(m, "fused_attn"):
            m.fused_attn = fused


def sit_like(official_root: Path, batch: int, repa: bool) -> tuple[list[dict], dict]:
    from mixflow_bench.models.layers import sincos_2d

    _import_from(official_root)
    if repa:
        from models.sit import SiT_models  # type: ignore[import-not-found]

        from mixflow_bench.models.repa import repa_sit

        official = SiT_models["SiT-XL/2"](
            input_size=32,
            num_classes=1000,
            use_cfg=True,
            z_dims=[768],
            encoder_depth=8,
            fused_attn=False,
            qk_norm=False,
        )
        build = repa_sit
    else:
        from models import SiT_models  # type: ignore[import-not-found]

        from mixflow_bench.models.sit import sit

        official = SiT_models["SiT-XL/2"](input_size=32, num_classes=1000, learn_sigma=True)
        build = lambda: sit("XL", 2)  # noqa: E731
    official.eval()
    fixed = {"pos_embed": max_diff(official.pos_embed[0], sincos_2d(1152, 16))}
    randomize_(official, keep=("pos_embed",), seed=0)
    ours = adopt(official, build)

    gen = torch.Generator().manual_seed(1)
    x = torch.randn(batch, 4, 32, 32, generator=gen)
    t = torch.rand(batch, generator=gen)
    y = torch.tensor([7, 1000, 42, 999][:batch])
    rows = []
    with torch.no_grad():
        for ours_attn, fused in (("sdpa", True), ("math", False)):
            set_official_fused(official, fused)
            ours.set_attention(ours_attn)
            ref = official(x, t, y)
            if repa:
                ref_v, ref_z = ref[0], ref[1][0]
                got_v, got_z = ours.forward_with_features(x, t, y)
                got_z = got_z[0]
                rows.append(_row("velocity", ours_attn, fused, got_v, ref_v))
                rows.append(_row("projector", ours_attn, fused, got_z, ref_z))
            else:
                rows.append(_row("velocity (4 of 8 ch.)", ours_attn, fused, ours(x, t, y), ref))
    return rows, fixed


def rae_dith(official_root: Path, batch: int, size: str) -> tuple[list[dict], dict]:
    from mixflow_bench.models.layers import sincos_2d
    from mixflow_bench.models.rae_dit import DITDH_SIZES, axial_rope_angles, dit_dh

    _import_from(official_root, "src")
    from stage2.models.DDT import DiTwDDTHead  # type: ignore[import-not-found]

    cfg = DITDH_SIZES[size]
    official = DiTwDDTHead(
        input_size=16,
        patch_size=1,
        in_channels=768,
        hidden_size=list(cfg["hidden_size"]),
        depth=list(cfg["depth"]),
        num_heads=list(cfg["num_heads"]),
    ).eval()
    enc_h, dec_h = cfg["hidden_size"]
    enc_hd, dec_hd = enc_h // cfg["num_heads"][0], dec_h // cfg["num_heads"][1]
    fixed = {
        "pos_embed": max_diff(official.pos_embed[0], sincos_2d(enc_h, 16)),
        "enc_feat_rope.freqs_cos": max_diff(
            official.enc_feat_rope.freqs_cos, axial_rope_angles(enc_hd, 16).cos()
        ),
        "enc_feat_rope.freqs_sin": max_diff(
            official.enc_feat_rope.freqs_sin, axial_rope_angles(enc_hd, 16).sin()
        ),
        "dec_feat_rope.freqs_cos": max_diff(
            official.dec_feat_rope.freqs_cos, axial_rope_angles(dec_hd, 16).cos()
        ),
        "dec_feat_rope.freqs_sin": max_diff(
            official.dec_feat_rope.freqs_sin, axial_rope_angles(dec_hd, 16).sin()
        ),
    }
    randomize_(official, keep=("pos_embed", "W"), seed=0)
    ours = adopt(official, lambda: dit_dh(size, 16))

    gen = torch.Generator().manual_seed(1)
    x = torch.randn(batch, 768, 16, 16, generator=gen)
    t = torch.rand(batch, generator=gen)
    y = torch.tensor([7, 1000][:batch])
    rows = []
    with torch.no_grad():
        for ours_attn, fused in (("sdpa", True), ("math", False)):
            set_official_fused(official, fused)
            ours.set_attention(ours_attn)
            rows.append(_row("velocity", ours_attn, fused, ours(x, t, y), official(x, t, y)))
    return rows, fixed


def rae_decoder(official_root: Path, batch: int) -> tuple[list[dict], dict]:
    from mixflow_bench.models.layers import sincos_2d
    from mixflow_bench.models.rae_stage1 import GeneralDecoder as OurDecoder

    _import_from(official_root, "src")
    from stage1.decoders.decoder import GeneralDecoder  # type: ignore[import-not-found]
    from stage1.decoders.utils import ViTMAEConfig  # type: ignore[import-not-found]

    raw = json.loads((official_root / "configs/decoder/ViTXL/config.json").read_text())
    raw.update(hidden_size=768, patch_size=16, image_size=256)
    config = ViTMAEConfig(**{k: v for k, v in raw.items() if not k.startswith("_") and k != "architectures"})
    official = GeneralDecoder(config, num_patches=256).eval()
    fixed = {
        "decoder_pos_embed": max_diff(official.decoder_pos_embed[0], sincos_2d(1152, 16, cls_token=True))
    }
    randomize_(official, keep=("decoder_pos_embed",), seed=0)
    rows = []
    gen = torch.Generator().manual_seed(1)
    z = torch.randn(batch, 256, 768, generator=gen)
    with torch.no_grad():
        ref = official.unpatchify(official(z, drop_cls_token=False).logits)
        for attn in ("math", "sdpa"):
            ours = adopt(official, lambda a=attn: OurDecoder(256, attention=a))
            rows.append(_row("pixels (B,3,256,256)", attn, False, ours.unpatchify(ours(z)), ref))
    return rows, fixed


def repa_heun(official_root: Path, batch: int, steps: int = 50) -> tuple[list[dict], dict]:
    """``sample --sampler heun`` for REPA against REPA's ``samplers.euler_sampler(heun=True)``.

    One randomised small REPA SiT (SiT-S/2 widths, 4 blocks, 16x16 latents: CPU-sized; the sampler is what is
    compared) drives both samplers from the same start noise and labels,
    with CFG 1.8 inside REPA's interval t <= 0.7 and without guidance. The generic Heun (what REPA got before
    it had its own) is listed for comparison and not counted.
    """
    from mixflow_bench.flow import TimeConvention, heun, uniform_grid
    from mixflow_bench.models.repa import repa_sit
    from mixflow_bench.models.zoo import get_spec
    from mixflow_bench.recipes.schema import GuidanceSection, SampleSection
    from mixflow_bench.sampling.velocity import build_velocity, integrate

    _import_from(official_root)
    from samplers import euler_sampler  # type: ignore[import-not-found]

    model = repa_sit("S", 2, 16, depth=4, encoder_depth=2).eval()
    randomize_(model, keep=("pos_embed",), seed=0)
    spec = get_spec("repa-sit-xl-2")
    gen = torch.Generator().manual_seed(1)
    latents = torch.randn(batch, 4, 16, 16, generator=gen)
    y = torch.tensor([7, 42, 999, 1][:batch])

    def official_model(x: Tensor, t: Tensor, y: Tensor) -> tuple[Tensor]:
        return (model(x, t, y),)

    rows = []
    with torch.no_grad():
        for scale, interval in ((1.8, (0.0, 0.7)), (1.0, None)):
            kind = "cfg" if scale != 1.0 else "none"
            guidance = GuidanceSection(kind=kind, scale=scale, interval=interval)
            cfg = SampleSection(sampler="heun", steps=steps, guidance=guidance)
            ref = euler_sampler(official_model, latents, y, num_steps=steps, heun=True, cfg_scale=scale,
                                guidance_low=0.0, guidance_high=0.7 if interval else 1.0).float()  # fmt: skip
            velocity = build_velocity(spec, model, y, cfg)
            label = f"heun {steps} steps, " + (f"CFG {scale} on t<=0.7" if kind == "cfg" else "no guidance")
            ours = integrate(spec, velocity, latents, cfg)
            rows.append({**_row(f"{label} (REPA's Heun)", "-", False, ours, ref), "official": "-"})
            if kind == "cfg":
                generic = heun(velocity, latents, uniform_grid(steps, TimeConvention.DATA_AT_0))
                row = _row(f"{label} (generic Heun)", "-", False, generic, ref)
                rows.append({**row, "official": "-", "counted": False})
    return rows, {}


def _row(output: str, ours_attn: str, official_fused: bool, got: Tensor, ref: Tensor) -> dict:
    if got.shape != ref.shape:
        raise SystemExit(f"{output}: shape {tuple(got.shape)} differs from official {tuple(ref.shape)}")
    return {
        "output": output,
        "ours": ours_attn,
        "official": "sdpa" if official_fused else "eager",
        "shape": tuple(got.shape),
        "max_abs_diff": max_diff(got, ref),
        "max_abs_ref": float(ref.abs().max()),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--official", type=Path, required=True, help="local checkout of the official repository"
    )
    parser.add_argument("--model", choices=MODELS, required=True)
    parser.add_argument("--batch", type=int, default=2, help="batch size (1-2 keeps XL models within memory)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", type=Path, default=None, help="also write the numbers to this JSON file")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    start = time.perf_counter()
    if args.model in ("sit-xl-2", "repa-sit-xl-2"):
        rows, fixed = sit_like(args.official, args.batch, repa=args.model == "repa-sit-xl-2")
    elif args.model in ("rae-dith-xl", "rae-dith-s"):
        rows, fixed = rae_dith(args.official, args.batch, "XL" if args.model == "rae-dith-xl" else "S")
    elif args.model == "repa-heun":
        rows, fixed = repa_heun(args.official, args.batch)
    else:
        rows, fixed = rae_decoder(args.official, args.batch)
    elapsed = time.perf_counter() - start

    table = Table(title=f"parity: {args.model} vs official (fp32, CPU, batch {args.batch})")
    for col in ("output", "ours", "official", "shape", "max |diff|", "max |ref|", f"<= {TOLERANCE:g}"):
        table.add_column(col)
    ok = True
    for r in rows:
        good = r["max_abs_diff"] <= TOLERANCE
        ok &= good or not r.get("counted", True)
        table.add_row(
            r["output"],
            r["ours"],
            r["official"],
            str(r["shape"]),
            f"{r['max_abs_diff']:.3e}",
            f"{r['max_abs_ref']:.3e}",
            "[green]yes" if good else ("[red]no" if r.get("counted", True) else "no (not counted)"),
        )
    console.print(table)
    fixed_table = Table(title="recomputed fixed tables vs official")
    fixed_table.add_column("tensor")
    fixed_table.add_column("max |diff|")
    for name, value in fixed.items():
        fixed_table.add_row(name, f"{value:.3e}")
    console.print(fixed_table)
    console.print(f"{'PASS' if ok else 'FAIL'} in {elapsed:.1f} s")
    if args.json:
        args.json.write_text(json.dumps({"model": args.model, "rows": rows, "fixed": fixed}, indent=2))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
