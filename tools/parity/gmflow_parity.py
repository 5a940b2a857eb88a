"""Numerical parity of this project's GMFlow math against the official pure-tensor functions.

The official code (Lakonik/GMFlow) imports mmcv and mmgeneration at module level; only its pure-tensor parts
are needed here, so this script first *extracts* four files from a local checkout (a work tree or a bare git
mirror) into the git-ignored ``tools/parity/_official/GMFlow``, then loads them with stub modules standing in
for the framework imports (registries, a device helper, a noise helper, a progress bar). It compares, on random
GMs and random states, in float64 and float32:

* the Eq. 9 reverse transition (``GMFlowMixin.reverse_transition``),
* the Eq. 10 conversion to another time (``denoising_gm_convert_to_mean``),
* probabilistic guidance (``probabilistic_guidance_jit`` + ``gm_mul_iso_gaussian``, orthogonal projection on),
* the second-order reweighting (``gm_2nd_order``, with and without guidance),
* whole GM-SDE 2 and GM-ODE 2 trajectories (``GMFlow.forward_test``) with the same network and the same noise,
  unguided and guided.

    python tools/parity/gmflow_parity.py --extract /path/to/GMFlow   # once (work tree or bare mirror)
    PYTHONPATH=. python tools/parity/gmflow_parity.py --json tools/parity/gmflow_parity.json

The exit status is 0 when every difference is at most 1e-5.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import subprocess
import sys
import types
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table

HERE = Path(__file__).resolve().parent
OFFICIAL = HERE / "_official" / "GMFlow"
FILES = (
    "lib/ops/gmflow_ops/gmflow_ops.py",
    "lib/models/diffusions/gmflow.py",
    "lib/models/diffusions/schedulers/gmflow_sde.py",
    "lib/models/diffusions/schedulers/flow_euler_ode.py",
    "lib/models/architecture/gmflow.py",
    "lib/models/architecture/toymodels.py",
)
TOLERANCE = 1e-5
console = Console(width=120)


# --- extraction -----------------------------------------------------------------------------------------
def extract(source: Path, dest: Path = OFFICIAL) -> None:
    """Copy the needed official files from a work tree or a bare git repository into ``dest``."""
    bare = (source / "HEAD").exists() and (source / "objects").exists()
    for rel in FILES:
        if bare:
            text = subprocess.run(
                ["git", "--git-dir", str(source), "show", f"HEAD:{rel}"], check=True, capture_output=True, text=True
            ).stdout
        else:
            path = source / rel
            if not path.exists():
                raise SystemExit(f"not in the checkout: {path}")
            text = path.read_text()
        out = dest / rel
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text)
    console.print(f"extracted {len(FILES)} files into {dest}")


# --- loading with stubs ---------------------------------------------------------------------------------
def _module(name: str, **attrs) -> types.ModuleType:
    mod = types.ModuleType(name)
    mod.__dict__.update(attrs)
    sys.modules[name] = mod
    return mod


def _load(name: str, path: Path) -> types.ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod


class _Registry:
    def register_module(self, *args, **kwargs):
        return (lambda cls: cls) if not args else args[0]


def load_official(root: Path = OFFICIAL) -> types.SimpleNamespace:
    """Import the extracted files under their package names, with mmcv/mmgen replaced by stubs."""
    missing = [rel for rel in FILES if not (root / rel).exists()]
    if missing:
        raise SystemExit(f"official files missing under {root}: run with --extract CHECKOUT first")
    _module("mmcv", ProgressBar=lambda *a, **k: types.SimpleNamespace(update=lambda: None))
    _module("mmgen")
    _module("mmgen.models")
    _module("mmgen.models.architectures")
    _module("mmgen.models.architectures.common", get_module_device=lambda m: torch.device("cpu"))
    _module("mmgen.models.builder", MODULES=_Registry(), build_module=lambda cfg: None)
    _module("mmgen.models.diffusions")
    _module("mmgen.models.diffusions.utils", _get_noise_batch=None)
    for pkg in ("lib", "lib.ops", "lib.ops.gmflow_ops", "lib.models", "lib.models.diffusions.schedulers"):
        _module(pkg).__path__ = [str(root / pkg.replace(".", "/"))]
    ops = _load("lib.ops.gmflow_ops.gmflow_ops", root / FILES[0])
    sde = _load("lib.models.diffusions.schedulers.gmflow_sde", root / FILES[2])
    ode = _load("lib.models.diffusions.schedulers.flow_euler_ode", root / FILES[3])
    schedulers = sys.modules["lib.models.diffusions.schedulers"]
    schedulers.GMFlowSDEScheduler, schedulers.FlowEulerODEScheduler = sde.GMFlowSDEScheduler, ode.FlowEulerODEScheduler
    diffusions = _module("lib.models.diffusions", GaussianFlow=type("GaussianFlow", (torch.nn.Module,), {}))
    diffusions.__path__ = [str(root / "lib/models/diffusions")]
    diffusions.schedulers = schedulers
    gmflow = _load("lib.models.diffusions.gmflow", root / FILES[1])
    return types.SimpleNamespace(ops=ops, gmflow=gmflow, sde=sde)


def load_official_architectures(root: Path = OFFICIAL) -> types.SimpleNamespace:
    """The GM-DiT and toy-MLP modules, with mmcv/mmgen helpers stubbed (diffusers used as installed)."""

    def constant_init(module, val, bias=0):
        torch.nn.init.constant_(module.weight, val)
        if getattr(module, "bias", None) is not None:
            torch.nn.init.constant_(module.bias, bias)

    def xavier_init(module, gain=1, bias=0, distribution="normal"):
        init = torch.nn.init.xavier_uniform_ if distribution == "uniform" else torch.nn.init.xavier_normal_
        init(module.weight, gain=gain)
        if getattr(module, "bias", None) is not None:
            torch.nn.init.constant_(module.bias, bias)

    _module("mmcv.runner", load_checkpoint=None)
    _module("mmcv.cnn", constant_init=constant_init, xavier_init=xavier_init)
    _module("mmgen.utils", get_root_logger=lambda: None)
    _module("lib.core", rgetattr=None)
    arch = _module("lib.models.architecture")
    arch.__path__ = [str(root / "lib/models/architecture")]
    _module("lib.models.architecture.diffusers", autocast_patch=lambda *a, **k: None)
    gmdit = _load("lib.models.architecture.gmflow", root / FILES[4])
    toy = _load("lib.models.architecture.toymodels", root / FILES[5])
    return types.SimpleNamespace(gmdit=gmdit, toy=toy)


def _randomize(module: torch.nn.Module, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            fan_in = p[0].numel() if p.ndim >= 2 else 0
            p.copy_(torch.randn(p.shape, generator=g) / (fan_in**0.5 if fan_in else 10.0))


def compare_architectures(arch: types.SimpleNamespace, seed: int = 0) -> list[tuple[str, float]]:
    """GM-DiT (small config) and the toy MLP: official weights loaded strictly into ours, same inputs."""
    from mixflow_bench.flow.gmflow import GMFlowToyMLP
    from mixflow_bench.models.gmdit import GMDiT

    rows = []
    g = torch.Generator().manual_seed(seed)
    off = arch.gmdit._GMDiTTransformer2DModel(
        num_gaussians=3, num_attention_heads=2, attention_head_dim=16, num_layers=2, sample_size=8,
        num_embeds_ada_norm=10,
    ).eval()  # fmt: skip
    _randomize(off, seed)
    ours = GMDiT(num_gaussians=3, input_size=8, hidden=32, depth=2, heads=2, num_classes=10).eval()
    ours.load_state_dict(off.state_dict(), strict=True)
    x = torch.randn(3, 4, 8, 8, generator=g)
    t = torch.tensor([0.9, 0.5, 0.1])
    y = torch.tensor([1, 7, 10])
    with torch.no_grad():
        theirs = off(x, timestep=t * 1000, class_labels=y)
        mine = ours(x, t, y)
    rows.append(("GM-DiT forward (2 layers, K=3), state dict loaded strictly", _diff_gm(mine, theirs)))
    off_toy = arch.toy.GMFlowMLP2DDenoiser(num_gaussians=8).eval()
    _randomize(off_toy, seed + 1)
    toy = GMFlowToyMLP(num_gaussians=8).eval()
    toy.load_state_dict(off_toy.state_dict(), strict=True)
    pts = 3 * torch.randn(16, 2, generator=g)
    tt = torch.rand(16, generator=g)
    with torch.no_grad():
        theirs = off_toy(pts.reshape(16, 2, 1, 1), tt * 1000)
        mine = toy(pts, tt)
    rows.append(("toy MLP forward (K=8, 5 x 512), state dict loaded strictly", _diff_gm(mine, theirs)))
    return rows


# --- the shared random "network" ------------------------------------------------------------------------
class RandomGMNet:
    """A fixed smooth random map ``(x, t, cond) -> u-GM`` (K components per pixel, one shared log-std)."""

    def __init__(self, k: int, c: int, seed: int = 0) -> None:
        g = torch.Generator().manual_seed(seed)
        self.k, self.c = k, c
        self.a = 0.5 * torch.randn(2, k, c, c, generator=g, dtype=torch.float64)
        self.b = torch.randn(2, k, c, generator=g, dtype=torch.float64)
        self.v = torch.randn(2, k, c, generator=g, dtype=torch.float64)
        self.s = 0.3 * torch.randn(2, c, generator=g, dtype=torch.float64)

    def __call__(self, x: torch.Tensor, t: torch.Tensor, cond: bool) -> dict[str, torch.Tensor]:
        """``t``: DATA_AT_0 time in [0, 1], (B,)."""
        i, dt = int(cond), x.dtype
        tt = t.to(dt).reshape(-1, 1, 1, 1, 1)
        means = torch.tanh(torch.einsum("kcd,bdhw->bkchw", self.a[i].to(dt), x)) + self.b[i].to(dt)[..., None, None]
        means = means * (1 + tt)
        logits = torch.einsum("kc,bchw->bkhw", self.v[i].to(dt), x).unsqueeze(2)
        logstds = (
            -0.5 + 0.5 * tt + (self.s[i].to(dt)[None, :, None, None] * x).mean(dim=(1, 2, 3)).reshape(-1, 1, 1, 1, 1)
        )
        return {"means": means, "logweights": logits.log_softmax(1), "logstds": logstds}


# --- comparisons ----------------------------------------------------------------------------------------
def _gm(d: dict):
    from mixflow_bench.flow.gmflow import GaussianMixture

    return GaussianMixture(d["means"], d["logweights"], d["logstds"])


def _diff_gm(ours, theirs: dict) -> float:
    """Max difference of means, log-weights and log-stds (broadcast to a common shape)."""
    out = 0.0
    for key, mine in (("means", ours.means), ("logweights", ours.logweights), ("logstds", ours.logstds)):
        a, b = torch.broadcast_tensors(mine, theirs[key])
        out = max(out, float((a.double() - b.double()).abs().max()))
    return out


def compare(off: types.SimpleNamespace, dtype: torch.dtype, seed: int = 0) -> list[tuple[str, float]]:
    from mixflow_bench.flow.gmflow import (
        convert_to_time,
        gm_ode,
        gm_sde,
        probabilistic_guidance,
        reverse_transition,
        second_order_reweight,
        u_to_x0,
    )

    rows: list[tuple[str, float]] = []
    b, k, c, h, w = 3, 8, 4, 6, 6
    g = torch.Generator().manual_seed(seed)
    net = RandomGMNet(k, c, seed)
    mixin = off.gmflow.GMFlowMixin()
    mixin.num_timesteps = 1000
    x = torch.randn(b, c, h, w, generator=g, dtype=torch.float64).to(dtype)
    t_hi, t_lo = torch.tensor([0.83, 0.6, 0.31], dtype=dtype), torch.tensor([0.41, 0.25, 0.02], dtype=dtype)
    gm_u = net(x, t_hi, True)

    theirs = mixin.reverse_transition(gm_u, x, t_lo * 1000, t_hi * 1000, prediction_type="u")
    t5 = t_hi.reshape(-1, 1, 1, 1)
    ours = reverse_transition(u_to_x0(_gm(gm_u), x, t5), x, t5, t_lo.reshape(-1, 1, 1, 1))
    rows.append(("reverse transition (Eq. 9)", _diff_gm(ours, theirs)))

    gm_x0 = mixin.u_to_x_0(dict(gm_u), x, t_hi * 1000)
    x_tgt = x + 0.1 * torch.randn(x.shape, generator=g, dtype=torch.float64).to(dtype)
    theirs = mixin.denoising_gm_convert_to_mean(dict(gm_x0), x_tgt, x, t_lo * 1000, t_hi * 1000, prediction_type="x0")
    ours = convert_to_time(_gm(gm_x0), x, t5, x_tgt, t_lo.reshape(-1, 1, 1, 1)).mean()
    rows.append(("conversion to another time (Eq. 10), mean", float((ours - theirs).abs().max())))

    ops = off.ops
    gm_c = mixin.u_to_x_0(net(x, t_hi, True), x, t_hi * 1000)
    gm_uc = mixin.u_to_x_0(net(x, t_hi, False), x, t_hi * 1000)
    scale = 0.45
    gauss_c = ops.gm_to_iso_gaussian(dict(gm_c))[0]
    gauss_c["var"] = gauss_c["var"].mean(dim=(-1, -2), keepdim=True)
    target, cfg_bias, avg_var = off.gmflow.probabilistic_guidance_jit(
        gauss_c["mean"], gauss_c["var"], ops.gm_to_mean(dict(gm_uc)), scale, orthogonal=1.0
    )
    theirs_guided = ops.gm_mul_iso_gaussian(
        dict(gm_c), ops.iso_gaussian_mul_iso_gaussian(target, dict(gauss_c), 1, -1), 1, 1
    )[0]
    guided = probabilistic_guidance(_gm(gm_c), _gm(gm_uc), scale, orthogonal=1.0)
    rows.append(("probabilistic guidance w=0.45 (orthogonal)", _diff_gm(guided.gm, theirs_guided)))

    # second order: previous GM at (x_prev, t_prev), current at (x, t)
    t_prev, t_now, t_next = 0.9, 0.7, 0.5
    x_prev = x + 0.2 * torch.randn(x.shape, generator=g, dtype=torch.float64).to(dtype)
    tt = lambda v: torch.full((b,), v, dtype=dtype)  # noqa: E731
    prev_gm = mixin.u_to_x_0(net(x_prev, tt(t_prev), True), x_prev, torch.tensor(t_prev * 1000, dtype=dtype))
    for label, use_guidance in (("2nd-order reweighting", False), ("2nd-order reweighting + guidance", True)):
        now_c = mixin.u_to_x_0(net(x, tt(t_now), True), x, torch.tensor(t_now * 1000, dtype=dtype))
        now_u = mixin.u_to_x_0(net(x, tt(t_now), False), x, torch.tensor(t_now * 1000, dtype=dtype))
        mixin.init_gm_cache()
        mixin.prev_gm, mixin.prev_x_t = dict(prev_gm), x_prev
        mixin.prev_t, mixin.prev_h = torch.tensor(t_prev * 1000, dtype=dtype), (t_prev - t_now) * 1000
        t_off, h_off = torch.tensor(t_now * 1000, dtype=dtype), (t_now - t_next) * 1000
        mean_prev = convert_to_time(_gm(prev_gm), x_prev, t_prev, x, t_now).mean()
        if use_guidance:
            gc = ops.gm_to_iso_gaussian(dict(now_c))[0]
            gc["var"] = gc["var"].mean(dim=(-1, -2), keepdim=True)
            tgt, bias, av = off.gmflow.probabilistic_guidance_jit(
                gc["mean"], gc["var"], ops.gm_to_mean(dict(now_u)), scale, orthogonal=1.0
            )
            gm_in = ops.gm_mul_iso_gaussian(dict(now_c), ops.iso_gaussian_mul_iso_gaussian(tgt, dict(gc), 1, -1), 1, 1)[
                0
            ]
            theirs, _ = mixin.gm_2nd_order(gm_in, tgt, x, t_off, h_off, scale, dict(now_c), gc, av, bias)
            g_ours = probabilistic_guidance(_gm(now_c), _gm(now_u), scale)
            ours = second_order_reweight(
                g_ours.gm, mean_prev, t_now - t_next, t_prev - t_now, guided=g_ours, guidance_scale=scale
            )
        else:
            theirs, _ = mixin.gm_2nd_order(dict(now_c), ops.gm_to_iso_gaussian(dict(now_c))[0], x, t_off, h_off)
            ours = second_order_reweight(_gm(now_c), mean_prev, t_now - t_next, t_prev - t_now)
        rows.append((label, _diff_gm(ours, theirs)))

    # whole trajectories with the same network and the same draws
    nfe, substeps = 6, 4
    noise0 = torch.randn(b, c, h, w, generator=g, dtype=torch.float64).to(dtype)
    uniforms = [torch.rand(b * h * w, 1, generator=g, dtype=torch.float64) for _ in range(nfe)]
    normals = [torch.randn(b, c, h, w, generator=g, dtype=torch.float64).to(dtype) for _ in range(nfe)]
    step_noise = [torch.randn(b, c, h, w, generator=g, dtype=torch.float64).to(dtype) for _ in range(nfe)]
    for solver in ("GM-SDE 2", "GM-ODE 2"):
        for scale_ in (0.0, 0.3):
            counter = {"x0": 0, "z": 0}

            def draw_x0(gm, gm_power=1, n_samples=1, counter=counter):
                i = counter["x0"]
                counter["x0"] += 1
                return _gm(gm).sample_from(uniforms[i], normals[i]).unsqueeze(-4)

            def draw_z(shape, dtype=None, device=None, generator=None, counter=counter):
                i = counter["z"]
                counter["z"] += 1
                return step_noise[i].to(dtype)

            off.gmflow.gm_to_sample = draw_x0
            off.sde.randn_tensor = draw_z
            model = off.gmflow.GMFlow.__new__(off.gmflow.GMFlow)
            torch.nn.Module.__init__(model)
            model.num_timesteps, model.spectrum_net = 1000, None
            model.timestep_sampler = types.SimpleNamespace(shift=1.0)
            sde = solver.startswith("GM-SDE")
            model.test_cfg = dict(
                output_mode="sample" if sde else "mean",
                sampler="GMFlowSDE" if sde else "FlowEulerODE",
                num_timesteps=nfe,
                num_substeps=1 if sde else substeps,
                order=2,
            )

            def pred(x_in, t_in, _n=b):
                t01 = (t_in / 1000).reshape(()).expand(len(x_in))
                if len(x_in) == _n:
                    return net(x_in, t01, True)
                return {
                    key: torch.cat([u, cnd])
                    for (key, u), cnd in zip(
                        net(x_in[:_n], t01[:_n], False).items(), net(x_in[_n:], t01[_n:], True).values()
                    )
                }

            model.pred = pred
            theirs = model.forward_test(noise=noise0.clone(), guidance_scale=scale_)

            def gm_fn(x_, t_, _scale=scale_):
                cond = _gm(net(x_, t_, True))
                return (cond, _gm(net(x_, t_, False))) if _scale > 0 else cond

            fine = torch.cat(
                [
                    (
                        1
                        - torch.arange(nfe * (1 if sde else substeps), dtype=torch.float32)
                        / (nfe * (1 if sde else substeps))
                    ),
                    torch.zeros(1),
                ]
            ).double()
            if sde:
                ours = gm_sde(
                    gm_fn,
                    noise0.clone().float() if dtype == torch.float32 else noise0.clone(),
                    fine,
                    order=2,
                    guidance_scale=scale_,
                    sample_x0=lambda gm, i: gm.sample_from(uniforms[i], normals[i]),
                    noise=lambda i: step_noise[i],
                )
            else:
                ours = gm_ode(gm_fn, noise0.clone(), fine, substeps=substeps, order=2, guidance_scale=scale_)
            label = f"{solver} trajectory, NFE {nfe}" + (f", {substeps} sub-steps" if not sde else "")
            label += f", w={scale_:g}" if scale_ > 0 else ", unguided"
            rows.append((label, float((ours.double() - theirs.double()).abs().max())))
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--extract", type=Path, default=None, help="copy the official files from this checkout/mirror")
    parser.add_argument("--official", type=Path, default=OFFICIAL, help="where the extracted files are")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", type=Path, default=None, help="also write the numbers to this JSON file")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.extract is not None:
        extract(args.extract, args.official)
    off = load_official(args.official)
    results: dict[str, list] = {}
    ok = True
    table = Table(title=f"GMFlow parity (max |ours - official|, tolerance {TOLERANCE:g})")
    table.add_column("what")
    for dtype in (torch.float64, torch.float32):
        table.add_column(str(dtype).replace("torch.", ""), justify="right")
        results[str(dtype).replace("torch.", "")] = compare(off, dtype)
    names = [name for name, _ in results["float64"]]
    for i, name in enumerate(names):
        cells = []
        for key in results:
            value = results[key][i][1]
            if key == "float64" and "trajectory" in name:  # the official loop is float32 inside
                cells.append(f"({value:.2e})")
                continue
            ok &= value <= TOLERANCE
            cells.append(f"{value:.2e}" if value <= TOLERANCE else f"[red]{value:.2e}")
        table.add_row(name, *cells)
    arch_rows = compare_architectures(load_official_architectures(args.official))
    results["architectures (float32)"] = arch_rows
    for name, value in arch_rows:
        ok &= value <= TOLERANCE
        table.add_row(name, "-", f"{value:.2e}" if value <= TOLERANCE else f"[red]{value:.2e}")
    console.print(table)
    console.print(
        "(parenthesised: the official sampling loop casts the state and its sigma grid to float32, so a float64 "
        "trajectory measures that rounding; the float32 column is the like-for-like comparison)"
    )
    if args.json:
        args.json.write_text(json.dumps({k: dict(v) for k, v in results.items()}, indent=2) + "\n")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
