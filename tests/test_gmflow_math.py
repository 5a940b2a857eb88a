"""GMFlow's GM algebra, losses, guidance and solvers against independent computations.

References: numerical integration on grids (GM x Gaussian products, Eq. 10 conversion, surrogates), linear-
Gaussian conditioning with explicit covariances (Eq. 9), the K = 1 reductions (L2 flow matching, DDPM), and
data that are themselves a shared-variance GM, for which the exact denoising distribution is a GM: there
GM-ODE with sub-steps must equal Euler on the exact velocity, and GM-SDE must sample the data exactly.
Times are DATA_AT_0 (t = 0 data, t = 1 noise).
"""

import math

import pytest
import torch

from mixflow_bench.flow import FlowMatching, Path, TimeConvention, euler
from mixflow_bench.flow.gmflow import (
    GaussianMixture,
    GMFlowObjective,
    GMFlowToyMLP,
    GMOutputHead,
    IsoGaussian,
    check_guidance_scale,
    convert_to_time,
    ddpm,
    default_substeps,
    gm_nll,
    gm_ode,
    gm_sde,
    gmflow_grid,
    probabilistic_guidance,
    reverse_transition,
    transition_coefficients,
)

pytestmark = pytest.mark.float_sensitive  # also run with OMP_NUM_THREADS=1 in CI (.ci/run)

D64 = torch.float64


def random_gm(b=3, k=4, c=2, h=1, w=1, seed=0, scale=1.0) -> GaussianMixture:
    g = torch.Generator().manual_seed(seed)
    means = scale * torch.randn(b, k, c, h, w, generator=g, dtype=D64)
    logweights = torch.randn(b, k, 1, h, w, generator=g, dtype=D64).log_softmax(1)
    logstds = -0.7 + 0.3 * torch.randn(b, 1, 1, 1, 1, generator=g, dtype=D64)
    return GaussianMixture(means, logweights, logstds)


def grid_1d(lo=-8.0, hi=8.0, n=40001):
    x = torch.linspace(lo, hi, n, dtype=D64)
    return x, x[1] - x[0]


def grid_2d(lo=-6.0, hi=6.0, n=801):
    a = torch.linspace(lo, hi, n, dtype=D64)
    xx, yy = torch.meshgrid(a, a, indexing="ij")
    return torch.stack([xx.reshape(-1), yy.reshape(-1)], 1), (a[1] - a[0]) ** 2


def gm_logpdf_points(gm: GaussianMixture, pts: torch.Tensor, b: int = 0) -> torch.Tensor:
    """log q(x) of sample ``b`` at points (N, C), written out directly."""
    mu, lw, s = gm.means[b, :, :, 0, 0], gm.logweights[b, :, 0, 0, 0], gm.logstds[b].exp().reshape(())
    c = mu.shape[1]
    d2 = ((pts[:, None, :] - mu[None]) ** 2).sum(-1)
    return torch.logsumexp(lw[None] - d2 / (2 * s**2) - c * torch.log(s) - 0.5 * c * math.log(2 * math.pi), 1)


# --- mixture algebra --------------------------------------------------------------------------------------
@pytest.mark.parametrize("c", [1, 2])
def test_gm_times_gaussian_matches_numerical_integration(c):
    gm = random_gm(b=1, k=3, c=c, seed=c)
    g = torch.Generator().manual_seed(5)
    gauss = IsoGaussian(
        torch.randn(1, c, 1, 1, generator=g, dtype=D64), torch.tensor(0.6, dtype=D64).reshape(1, 1, 1, 1)
    )
    pts, cell = grid_1d()[0][:, None], grid_1d()[1] if c == 1 else None
    if c == 2:
        pts, cell = grid_2d()
    log_unnorm = gm_logpdf_points(gm, pts) - ((pts - gauss.mean[0, :, 0, 0]) ** 2).sum(-1) / (2 * 0.6)
    log_ref = log_unnorm - torch.logsumexp(log_unnorm, 0) - torch.log(cell)
    ours = gm.mul_iso_gaussian(gauss)
    log_ours = gm_logpdf_points(ours, pts)
    mass = log_ref.exp() > 1e-6
    assert torch.allclose(log_ours[mass], log_ref[mass], atol=1e-5)
    assert ours.logweights.exp().sum(1).sub(1).abs().max() < 1e-12


def test_iso_gaussian_surrogate_matches_moments():
    gm = random_gm(b=1, k=5, c=2, seed=3)
    pts, cell = grid_2d(-8, 8, 801)
    p = gm_logpdf_points(gm, pts).exp() * cell
    mean = (p[:, None] * pts).sum(0)
    var = (p * ((pts - mean) ** 2).sum(1)).sum() / 2
    sur = gm.iso_gaussian()
    assert torch.allclose(sur.mean[0, :, 0, 0], mean, atol=1e-6)
    assert torch.allclose(sur.var.reshape(()), var, atol=1e-6)
    assert torch.allclose(gm.mean()[0, :, 0, 0], mean, atol=1e-6)


def test_log_prob_and_sampling():
    gm = random_gm(b=1, k=3, c=2, seed=4)
    pts = torch.randn(7, 2, dtype=D64)
    ours = torch.stack([gm.log_prob(p.reshape(1, 2, 1, 1)).reshape(()) for p in pts])
    assert torch.allclose(ours, gm_logpdf_points(gm, pts), atol=1e-12)
    big = gm.map(lambda v: v.expand(20000, *v.shape[1:]))
    x = big.sample(torch.Generator().manual_seed(0))
    assert torch.allclose(x.mean(0).flatten(), gm.mean().flatten(), atol=0.03)


# --- losses ---------------------------------------------------------------------------------------------
def test_nll_k1_unit_std_is_l2_flow_matching():
    g = torch.Generator().manual_seed(0)
    mu, u = torch.randn(5, 1, 4, 3, 3, generator=g), torch.randn(5, 4, 3, 3, generator=g)
    gm = GaussianMixture(mu, torch.zeros(5, 1, 1, 3, 3), torch.zeros(5, 1, 1, 1, 1))
    assert torch.allclose(gm_nll(gm, u), 0.5 * (u - mu[:, 0]).square().sum(1), atol=1e-6)


def test_transition_loss_lambda_1_is_gm_nll_of_u():
    """lambda = 1: the loss is the GM NLL of u = eps - x0 plus D log t (change of variables x0 -> u)."""
    torch.manual_seed(0)
    model = GMFlowToyMLP(num_gaussians=3, hidden=32, layers=2)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
    obj = GMFlowObjective(trans_ratio=1.0)
    x0 = torch.randn(6, 2, dtype=torch.float32)
    r = obj.draw(6, (2,), torch.Generator().manual_seed(1))
    loss = obj.loss(model, x0, torch.zeros(6, dtype=torch.long), r)
    t = obj.times(r)[1].float()
    x_t = (1 - t[:, None]) * x0 + t[:, None] * r["noise_high"]  # x_low = x0, so x_high is one draw
    u = (x_t - x0) / t[:, None]
    nll_u = gm_nll(model(x_t, t), u.reshape(6, 2, 1, 1)).reshape(6)
    assert torch.allclose(loss, nll_u + 2 * torch.log(t), atol=1e-4)  # one pixel of C = 2: no division by C


def test_transition_loss_k1_unit_std_lambda1_is_half_fm_loss():
    """K = 1, s = 1, lambda = 1: the per-pixel NLL of u (C = 2) = C x (0.5 x the per-dimension FM loss + log t)."""
    torch.manual_seed(0)
    model = GMFlowToyMLP(num_gaussians=1, hidden=32, layers=2, constant_logstd=0.0)
    obj = GMFlowObjective(trans_ratio=1.0)
    x0 = torch.randn(6, 2)
    r = obj.draw(6, (2,), torch.Generator().manual_seed(2))
    loss = obj.loss(model, x0, torch.zeros(6, dtype=torch.long), r)
    t = obj.times(r)[1].float()
    fm = FlowMatching(Path("linear", TimeConvention.DATA_AT_0))
    velocity = lambda x, tt, y: model(x, tt).means[:, 0, :, 0, 0]  # noqa: E731
    draws = {"noise": r["noise_high"], "u_time": 1 - t.double(), "n_time": r["n_time"], "u_mix": r["u_time"]}
    fm_loss = fm.loss(velocity, x0, None, {**draws, "u_drop": r["u_drop"]})
    # the transition variance has the official 1e-6 floor (c3 = 0 at lambda = 1): a <1e-3 shift at t ~ 0.02
    assert torch.allclose(loss, 2 * (0.5 * fm_loss + torch.log(t)), atol=4e-3)


def test_transition_loss_on_images_is_the_per_pixel_nll_averaged_over_pixels():
    """The official GMFlowNLLLoss scale: the NLL of a pixel sums its C channels; pixels are averaged (H x W), so
    the loss does not shrink with C. K = 1, s = 1, lambda = 1: each pixel's NLL is sum_c (u_c^2 / 2 + log t)."""
    b, c, h, w = 3, 4, 2, 3

    def model(x, t, y):
        return GaussianMixture(torch.zeros(b, 1, c, h, w), torch.zeros(b, 1, 1, h, w), torch.zeros(b, 1, 1, 1, 1))

    obj = GMFlowObjective(trans_ratio=1.0, weight=2.0)
    x0 = torch.randn(b, c, h, w, generator=torch.Generator().manual_seed(5))
    r = obj.draw(b, (c, h, w), torch.Generator().manual_seed(6))
    loss = obj.loss(model, x0, torch.zeros(b, dtype=torch.long), r)
    t = obj.times(r)[1].float().reshape(-1, 1, 1, 1)
    u = r["noise_high"] - x0  # x_high = (1 - t) x0 + t eps when t_low = 0
    per_pixel = (0.5 * u.square() + torch.log(t)).sum(1)  # (B, H, W)
    # the transition variance has the official 1e-6 floor (c3 = 0 at lambda = 1): a <1e-3 shift per channel
    torch.testing.assert_close(loss, 2.0 * per_pixel.flatten(1).mean(1), rtol=0, atol=4 * c * 1e-3)


# --- transitions ----------------------------------------------------------------------------------------
def test_transition_coefficients_are_gaussian_conditioning():
    """x_to = a_to x0 + s_to e1; x_t = (a/a_to) x_to + sqrt(beta) e2: condition x_to on (x_t, x0) explicitly."""
    t, t_to, x0, x_t = 0.7, 0.3, 0.4, -1.1
    a, a_to = 1 - t, 1 - t_to
    beta = t**2 - (a / a_to) ** 2 * t_to**2
    # joint of (x_to, x_t) given x0: means (a_to x0, a x0); cov [[t_to^2, (a/a_to) t_to^2], [., t^2]]
    cov = torch.tensor([[t_to**2, a / a_to * t_to**2], [a / a_to * t_to**2, t**2]], dtype=D64)
    mean = cov[0, 1] / cov[1, 1] * (x_t - a * x0) + a_to * x0
    var = cov[0, 0] - cov[0, 1] ** 2 / cov[1, 1]
    c1, c2, c3 = transition_coefficients(torch.tensor(t, dtype=D64), torch.tensor(t_to, dtype=D64))
    assert abs(float(c1 * x_t + c2 * x0) - float(mean)) < 1e-12
    assert abs(float(c3) - float(var)) < 1e-12
    assert beta > 0


def test_reverse_transition_is_gm_convolved_with_kernel():
    gm = random_gm(b=1, k=3, c=1, seed=7)
    x_t = torch.full((1, 1, 1, 1), 0.3, dtype=D64)
    t, t_to = 0.8, 0.5
    ours = reverse_transition(gm, x_t, t, t_to)
    c1, c2, c3 = (float(v) for v in transition_coefficients(torch.tensor(t, dtype=D64), torch.tensor(t_to, dtype=D64)))
    xs, dx = grid_1d(-8, 8, 2401)
    q0 = gm_logpdf_points(gm, xs[:, None]).exp()
    kernel = torch.exp(-((xs[:, None] - c1 * 0.3 - c2 * xs[None]) ** 2) / (2 * c3)) / math.sqrt(2 * math.pi * c3)
    ref = (kernel * q0[None]).sum(1) * dx
    assert torch.allclose(gm_logpdf_points(ours, xs[:, None]).exp(), ref, atol=1e-6)


def test_convert_to_time_matches_numerical_bayes():
    gm = random_gm(b=1, k=3, c=1, seed=8)
    t_src, t_tgt = 0.8, 0.45
    x_src = torch.full((1, 1, 1, 1), 0.5, dtype=D64)
    x_tgt = torch.full((1, 1, 1, 1), 0.2, dtype=D64)
    xs, dx = grid_1d(-10, 10, 40001)

    def loglik(x, t):  # log p(x_t = x | x0 = xs)
        return -((x - (1 - t) * xs) ** 2) / (2 * t**2)

    log_ref = gm_logpdf_points(gm, xs[:, None]) + loglik(0.2, t_tgt) - loglik(0.5, t_src)
    log_ref = log_ref - torch.logsumexp(log_ref, 0) - torch.log(dx)
    ours = convert_to_time(gm, x_src, t_src, x_tgt, t_tgt)
    mass = log_ref.exp() > 1e-6
    assert torch.allclose(gm_logpdf_points(ours, xs[:, None])[mass], log_ref[mass], atol=1e-5)


# --- guidance -------------------------------------------------------------------------------------------
def test_probabilistic_guidance_k1_hits_its_target():
    """K = 1: the surrogate is the Gaussian itself, so the guided GM is exactly N(mu_c + w s d/rms(d), (1-w^2)s^2)."""
    g = torch.Generator().manual_seed(0)
    mu_c, mu_u = torch.randn(2, 1, 4, 3, 3, generator=g, dtype=D64), torch.randn(2, 1, 4, 3, 3, generator=g, dtype=D64)
    logstds = torch.full((2, 1, 1, 1, 1), -0.3, dtype=D64)
    zeros = torch.zeros(2, 1, 1, 3, 3, dtype=D64)
    cond, uncond = GaussianMixture(mu_c, zeros, logstds), GaussianMixture(mu_u, zeros, logstds)
    w = 0.4
    out = probabilistic_guidance(cond, uncond, w, orthogonal=0.0)
    d = (mu_c - mu_u)[:, 0]
    rms = d.square().mean(dim=(1, 2, 3), keepdim=True).sqrt()
    s = math.exp(-0.3)
    assert torch.allclose(out.gm.means[:, 0], mu_c[:, 0] + w * s * d / rms, atol=1e-9)
    assert torch.allclose(out.gm.logstds.exp() ** 2, torch.full_like(logstds, (1 - w * w) * s * s), atol=1e-9)
    ortho = probabilistic_guidance(cond, uncond, w, orthogonal=1.0)
    assert float((ortho.bias * mu_c[:, 0]).sum(dim=(1, 2, 3)).abs().max()) < 1e-9


@pytest.mark.parametrize("scale", [1.0, 1.5, -0.1])
def test_guidance_scale_outside_unit_interval_is_an_error(scale):
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        check_guidance_scale(scale)


# --- solvers on data that are a shared-variance GM: the exact denoiser is a GM ------------------------------
DATA_MEANS = torch.tensor([[-1.5, 0.5], [1.0, -1.0], [0.5, 2.0]], dtype=D64)
DATA_LOGW = torch.tensor([0.2, 0.5, 0.3], dtype=D64).log()
DATA_STD = 0.3


def exact_u_gm(x: torch.Tensor, t: torch.Tensor) -> GaussianMixture:
    """The exact q(u | x_t) for data sum_k pi_k N(m_k, DATA_STD^2 I), from Gaussian conditioning per component."""
    t = t.to(x.dtype).reshape(-1, 1, 1, 1)
    a = 1 - t
    xv = x[:, None, :, 0, 0]  # (B, 1, C)
    tt = t.reshape(-1, 1, 1)
    marg_var = (a.reshape(-1, 1, 1) * DATA_STD) ** 2 + tt**2
    logw = DATA_LOGW[None, :] - ((xv - a.reshape(-1, 1, 1) * DATA_MEANS[None]) ** 2).sum(-1) / (2 * marg_var[..., 0])
    post_var = 1 / (1 / DATA_STD**2 + a.reshape(-1, 1, 1) ** 2 / tt**2)
    post_mean = post_var * (DATA_MEANS[None] / DATA_STD**2 + a.reshape(-1, 1, 1) * xv / tt**2)
    means_u = (xv - post_mean) / tt
    logstds = (0.5 * torch.log(post_var) - torch.log(tt)).reshape(-1, 1, 1, 1, 1)
    return GaussianMixture(means_u[..., None, None], logw.log_softmax(1)[:, :, None, None, None], logstds)


def exact_velocity(x, t):
    return exact_u_gm(x, t).mean()


def test_gm_ode_substeps_equal_euler_on_the_exact_velocity():
    x = torch.randn(16, 2, 1, 1, generator=torch.Generator().manual_seed(0), dtype=D64)
    grid = gmflow_grid(64)
    ours = gm_ode(exact_u_gm, x, grid, substeps=64)  # one network evaluation, Eq. 10 for the rest
    ref = euler(exact_velocity, x, grid)
    assert torch.allclose(ours, ref, atol=1e-8)
    second = gm_ode(exact_u_gm, x, gmflow_grid(8 * 8), substeps=8, order=2)
    first = gm_ode(exact_u_gm, x, gmflow_grid(8 * 8), substeps=8, order=1)
    assert torch.allclose(second, first, atol=1e-3)  # exact GMs: nothing to extrapolate (up to the 1e-6 floors)


@pytest.mark.parametrize("order", [1, 2])
def test_gm_sde_samples_the_data_with_an_exact_gm(order):
    n = 8000
    x = torch.randn(n, 2, 1, 1, generator=torch.Generator().manual_seed(1), dtype=D64)
    out = gm_sde(exact_u_gm, x, gmflow_grid(3), order=order, generator=torch.Generator().manual_seed(2))
    out = out[:, :, 0, 0]
    ref_mean = (DATA_LOGW.exp()[:, None] * DATA_MEANS).sum(0)
    assert torch.allclose(out.mean(0), ref_mean, atol=0.06)
    nearest = torch.cdist(out, DATA_MEANS).argmin(1)
    frac = torch.bincount(nearest, minlength=3).double() / n
    assert torch.allclose(frac, DATA_LOGW.exp(), atol=0.025)


def test_ddpm_small_is_the_k1_zero_std_gm_sde():
    x = torch.randn(16, 2, 1, 1, generator=torch.Generator().manual_seed(3), dtype=D64)
    grid = gmflow_grid(6)
    noises = [torch.randn(16, 2, 1, 1, generator=torch.Generator().manual_seed(10 + i), dtype=D64) for i in range(6)]

    def k1(x, t):
        return GaussianMixture(
            exact_velocity(x, t)[:, None],
            torch.zeros(16, 1, 1, 1, 1, dtype=D64),
            torch.full((16, 1, 1, 1, 1), -40.0, dtype=D64),
        )

    ours = gm_sde(k1, x, grid, noise=lambda i: noises[i], sample_x0=lambda gm, i: gm.mean())
    ref = ddpm(exact_velocity, x, grid, variance="small", noise=lambda i: noises[i])
    assert torch.allclose(ours, ref, atol=1e-10)
    large = ddpm(exact_velocity, x, grid, variance="large", noise=lambda i: noises[i])
    assert torch.isfinite(large).all() and not torch.allclose(large, ref)


def test_nfe_zero_and_substeps_are_clear_errors():
    with pytest.raises(ValueError, match="positive"):
        gmflow_grid(0)
    with pytest.raises(ValueError, match="positive"):
        default_substeps(0)
    assert default_substeps(8) == 16 and default_substeps(32) == 4 and default_substeps(128, images=True) == 2
    assert default_substeps(4) == 32 and default_substeps(6) == 22  # the toy: ceil(128 / NFE)
    assert [default_substeps(n, images=True) for n in (4, 6, 8, 16, 32)] == [8, 8, 16, 8, 4]  # the paper's images


# --- heads ----------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_toy_head_time_features_match_diffusers():
    diffusers = pytest.importorskip("diffusers")  # a heavy import: slow
    from mixflow_bench.flow.gmflow.heads import timestep_features

    t = torch.rand(5) * 1000
    ref = diffusers.models.embeddings.Timesteps(256, flip_sin_to_cos=True, downscale_freq_shift=1)(t)
    assert torch.allclose(timestep_features(t, 256), ref, atol=1e-5)


def test_toy_head_zero_init():
    gm = GMFlowToyMLP(num_gaussians=8, hidden=32, layers=2)(torch.randn(4, 2), torch.rand(4))
    assert torch.allclose(gm.logweights.exp(), torch.full_like(gm.logweights, 1 / 8))
    assert torch.all(gm.logstds == 0)


def test_transformer_head_splits_channels_and_stops_gradient():
    head = GMOutputHead(num_gaussians=3, out_channels=4, embed_dim=16, inner=8)
    feats = torch.randn(2, head.channels, 5, 5)
    emb = torch.randn(2, 16, requires_grad=True)
    gm = head(feats, emb)
    assert gm.means.shape == (2, 3, 4, 5, 5) and gm.logweights.shape == (2, 3, 1, 5, 5)
    assert torch.allclose(gm.means[:, 1, 2], feats[:, 1 * 4 + 2])
    gm.logstds.sum().backward()
    assert emb.grad is None
