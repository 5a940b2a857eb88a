"""The dress rehearsal: a paper recipe end to end through the real CLI, at a scale that fits minutes.

For one recipe it fabricates random-weight artifacts in their real formats (:mod:`.artifacts`), serves them from
127.0.0.1 the way their hosts do (:mod:`.site`), writes an ImageNet-like class-folder tree (1000 synset-style
folders, a few images in some of them), then runs, each as a ``python -m mixflow_bench`` subprocess:

``download --recipe R`` → ``data prepare --recipe R`` → ``reproduce R <scale overrides>`` (download, post-train,
sample, evaluate, table), and checks between stages: the latent check of the first training batch, strict
state-dict loads (the pipeline loads strictly and fails otherwise), npz shape and dtype, finite metrics. Optional
checks: the run killed during sampling and resumed gives byte-identical samples; 2 ranks (torchrun or Slurm)
give the same samples as 1 and training losses equal within reduction-order tolerance.

The overrides only shrink the scale (steps, batch, sample count, sampler steps) and point at local files; they
are listed in the report with everything else.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mixflow_bench.rehearsal import artifacts as fab
from mixflow_bench.rehearsal.site import ArtifactSite

NUM_CLASSES = 1000
# 2 ranks per launcher on CPU: torchrun with gloo, Slurm with 2 tasks of 1 CPU on a node without GPUs
LAUNCH_ARGS: dict[str, tuple[str, ...]] = {
    "local": (),
    "torchrun": ("--nproc", "2"),
    "slurm": ("--gpus-per-node", "0", "--tasks-per-node", "2", "--cpus", "1"),
}


@dataclass
class Scale:
    """How far a rehearsal shrinks a recipe; nothing else about the recipe changes."""

    train_steps: int = 6
    train_batch: int = 4
    checkpoint_every: int = 3
    samples: int = 8
    sample_steps: int = 2
    sample_batch: int = 4
    shard_size: int = 4
    images: int = 8  # images in the class-folder tree (spread over the first folders)
    reference_images: int = 16


@dataclass
class RehearsalResult:
    recipe: str
    launcher: str
    ok: bool = False
    stages: dict[str, float] = field(default_factory=dict)  # wall seconds per step of the rehearsal
    checks: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, dict[str, float]] = field(default_factory=dict)
    overrides: list[str] = field(default_factory=list)
    error: str = ""


class RehearsalFailure(RuntimeError):
    """A step of the rehearsal failed; the message holds the command and the end of its output."""


def _artifact_files(name: str, inception: str, reference_images: int, device: str) -> dict[str, bytes]:
    """The files of registry artifact ``name``, fabricated in its host's format."""
    from mixflow_bench.hub.registry import get_artifact

    art = get_artifact(name)
    served = art.hf.filename.rsplit("/", 1)[-1] if art.hf is not None else art.filename
    if name in ("sd-vae-ft-ema", "sd-vae-ft-mse"):
        return fab.sd_vae_folder(seed=1 if name.endswith("mse") else 0)
    if name == "dinov2-reg-b":
        return fab.dinov2_folder()
    if name.startswith("rae-decoder-"):
        return {served: fab.rae_decoder(int(name.rsplit("-", 1)[1]))}
    if name.startswith("rae-stats-"):
        return {served: fab.rae_stats(int(name.rsplit("-", 1)[1]))}
    if art.kind == "reference-batch":
        res = 512 if "512" in name else 256
        images = fab.procedural_images(reference_images, res, seed=7)
        return {served: fab.adm_reference_batch(images, inception, device)}
    if name == "inception-torch-fidelity":  # what download --recipe fetches; the evaluator reads the real file
        from mixflow_bench.metrics.inception import random_state_dict

        return {served: fab.torch_file(random_state_dict())}
    if name == "cifar10-python":
        return {served: fab.cifar10_archive(fab.procedural_images(reference_images, 32, seed=7))}
    if name == "gmflow-dit":
        return {served: fab.gmflow_transformer()}
    if art.layout == "lightning-ema":  # the κ-FC releases: a Lightning .ckpt around the zoo's SongUNet
        from mixflow_bench.models.zoo import get_spec

        return {served: fab.mixed_source_checkpoint(get_spec(name).build.args[0])}
    if art.kind == "checkpoint":
        from mixflow_bench.models.zoo import ZOO

        model = next(m for m, spec in ZOO.items() if spec.checkpoint == name)
        return {served: fab.zoo_checkpoint(model)}
    raise ValueError(f"the rehearsal cannot fabricate artifact {name!r}")


def needed_artifacts(recipe: Any) -> list[str]:
    """Every artifact the recipe's stages read: checkpoint, guide, decoder, data encoder, reference batch or the
    archive a reference is built from."""
    from mixflow_bench.hub.registry import registry
    from mixflow_bench.models.zoo import get_spec

    spec = get_spec(recipe.model.name)
    names: list[str] = []
    if recipe.model.checkpoint is None and spec.checkpoint:
        names.append(spec.checkpoint)
    elif recipe.model.checkpoint in registry():
        names.append(recipe.model.checkpoint)
    guide = recipe.sample.guidance if recipe.sample else None
    if guide is not None and guide.kind == "autoguidance" and guide.guide_checkpoint is None:
        names.append(get_spec(guide.guide_model).checkpoint)
    for codec in {spec.decoder, recipe.data.encoder if recipe.data else None} - {None}:
        if codec == "rae-dinov2-b":
            names += ["dinov2-reg-b", f"rae-decoder-{spec.resolution}", f"rae-stats-{spec.resolution}"]
        else:
            names.append(codec)
    if recipe.eval and recipe.eval.reference in registry():
        names.append(recipe.eval.reference)
    archive = recipe.eval.reference_data.archive if recipe.eval and recipe.eval.reference_data else None
    if archive in registry():
        names.append(archive)
    return list(dict.fromkeys(names))


def write_class_tree(root: Path, num_images: int, resolution: int, seed: int = 0) -> Path:
    """An ImageNet-style tree: 1000 synset-like class folders, ``num_images`` JPEGs spread over the first ones."""
    from PIL import Image

    root.mkdir(parents=True, exist_ok=True)
    for c in range(NUM_CLASSES):
        (root / f"n{c:08d}").mkdir(exist_ok=True)
    sizes = [(resolution + 37, resolution + 5), (resolution, resolution + 64)]  # ADM crop sees both aspects
    for i, img in enumerate(fab.procedural_images(num_images, resolution + 64, seed)):
        w, h = sizes[i % 2]
        path = root / f"n{i % 4:08d}" / f"img_{i:04d}.JPEG"
        if not path.exists():
            Image.fromarray(img).resize((w, h)).save(path, quality=95)
    return root


class Rehearsal:
    """Rehearses recipes against one local artifact site, sharing fabricated artifacts and latent caches."""

    def __init__(self, workdir: Path, inception_weights: str, scale: Scale | None = None, device: str = "cpu"):
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.inception = str(inception_weights)
        self.scale = scale or Scale()
        self.device = device
        self.site = ArtifactSite()
        self._fabricated: set[str] = set()
        self.local_checkpoints: dict[str, Path] = {}
        # On the CPU every process uses one thread, as each torchrun rank does: CPU kernels round differently with
        # another thread count, which would hide whether 1 and 2 ranks compute the same samples.
        self.threads = {"OMP_NUM_THREADS": "1"} if device == "cpu" else {}

    def __enter__(self) -> Rehearsal:
        self.site.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.site.__exit__(*exc)

    # --- steps -------------------------------------------------------------------------------------------
    def cli(self, *args: str, timeout: float = 3600, env: dict[str, str] | None = None) -> str:
        """Run ``python -m mixflow_bench ARGS`` with the rehearsal's environment; its output, or a failure."""
        proc = subprocess.run(
            [sys.executable, "-m", "mixflow_bench", *args],
            env={**os.environ, **self.site.environment(self.workdir), **self.threads, **(env or {})},
            capture_output=True, text=True, timeout=timeout, cwd=self.workdir,
        )  # fmt: skip
        if proc.returncode != 0:
            tail = (proc.stdout + proc.stderr)[-4000:]
            raise RehearsalFailure(f"`mixflow-bench {' '.join(args)}` exited {proc.returncode}:\n{tail}")
        return proc.stdout + proc.stderr

    def publish(self, recipe: Any) -> list[str]:
        """Fabricate and serve the recipe's artifacts: for a released model evaluated as it is (no ``train:``),
        everything ``download --recipe`` fetches; otherwise what its stages read."""
        if recipe.train is None:
            from mixflow_bench.recipes.artifacts import artifacts_for_recipe

            names = artifacts_for_recipe(recipe)
        else:
            names = needed_artifacts(recipe)
        for name in names:
            if name not in self._fabricated:
                self.site.publish(name, _artifact_files(name, self.inception, self.scale.reference_images,
                                                        self.device))  # fmt: skip
                self._fabricated.add(name)
        return names

    def checkpoint_override(self, recipe: Any) -> list[str]:
        """A user-trained checkpoint file for models without released weights (``model.checkpoint=PATH``)."""
        from mixflow_bench.models.zoo import get_spec

        if recipe.model.checkpoint is not None or get_spec(recipe.model.name).checkpoint:
            return []
        path = self.local_checkpoints.get(recipe.model.name)
        if path is None:
            path = self.workdir / "checkpoints" / f"{recipe.model.name}.pt"
            path.parent.mkdir(parents=True, exist_ok=True)
            if not path.exists():  # a user's own file: written once, kept across reruns
                path.write_bytes(fab.zoo_checkpoint(recipe.model.name))
            self.local_checkpoints[recipe.model.name] = path
        return [f"model.checkpoint={path}"]

    def overrides(self, recipe: Any, cache: Path | None) -> list[str]:
        s = self.scale
        out = [
            f"sample.num={s.samples}", f"sample.steps={s.sample_steps}", f"sample.batch_size={s.sample_batch}",
            f"sample.shard_size={s.shard_size}", f"eval.inception_weights={self.inception}",
            # the TF-2015 weights available offline have no output layer: every metric but IS
            "eval.metrics=[fid,sfid,prec,rec]",
        ]  # fmt: skip
        if recipe.train is not None:
            out += [
                f"train.steps={s.train_steps}", f"train.batch_size={s.train_batch}",
                f"train.checkpoint_every={s.checkpoint_every}", f"data.path={cache}",
                # random-weight encoders do not give the unit-std latents of real ones
                "train.latent_check=warn",
            ]  # fmt: skip
        return out + self.checkpoint_override(recipe)

    def rehearse(
        self,
        recipe_name: str,
        *,
        launcher: str = "local",
        launcher_args: tuple[str, ...] = (),
        resume_check: bool = False,
        compare_with: Path | None = None,
        fast: bool = False,
        extra_overrides: list[str] | tuple[str, ...] = (),
        reuse_training_of: Path | None = None,
        cleanup: bool = False,
    ) -> RehearsalResult:
        """Run one recipe end to end; returns what happened (never raises for a failed step)."""
        from mixflow_bench.recipes.loader import load_recipe, parse_overrides

        recipe = load_recipe(recipe_name, parse_overrides(extra_overrides))
        result = RehearsalResult(recipe_name, launcher + ("" if not fast else " --fast"))
        run_dir = self.workdir / "runs" / f"{recipe_name}-{launcher}{'-fast' if fast else ''}"
        try:
            t = time.perf_counter()
            result.checks["artifacts"] = self.publish(recipe)
            result.checks["hash_overrides"] = sorted(
                n for n, o in self.site.overrides.items() if "sha256" in o or "sha256_prefix" in o
            )  # pinned hashes replaced by the fabricated stand-ins
            result.stages["fabricate+serve"] = time.perf_counter() - t

            t = time.perf_counter()
            released = recipe.train is None  # a released model evaluated as it is: download --recipe, then offline
            if released:
                self.cli("download", "--recipe", recipe_name, "--no-progress")
            else:  # reproduce's download stage then checks completeness
                self.cli("download", *result.checks["artifacts"])
            result.stages["download"] = time.perf_counter() - t

            cache = None
            if recipe.data is not None:  # a training recipe: its latent cache from a class-folder tree
                res = recipe.data.resolution
                flip = "flip" if recipe.data.hflip else "noflip"
                cache = self.workdir / "caches" / f"{recipe.data.encoder}-{res}-{flip}"
                t = time.perf_counter()
                if not (cache / "manifest.json").exists():
                    tree = write_class_tree(self.workdir / "imagenet" / f"train-{res}", self.scale.images, res)
                    self.cli("data", "prepare", "--recipe", recipe_name, "--source", str(tree), "--out", str(cache),
                             "--batch-size", "4", "--no-progress")  # fmt: skip
                result.stages["data prepare"] = time.perf_counter() - t
                manifest = json.loads((cache / "manifest.json").read_text())
                result.checks["cache"] = {
                    "classes": len(manifest["classes"]), "samples": manifest["num_samples"],
                    "flips": manifest["flips"], "latent_shape": manifest["latent_shape"],
                }  # fmt: skip

            result.overrides = self.overrides(recipe, cache) + list(extra_overrides)
            args = ["reproduce", recipe_name, *result.overrides, "--run-dir", str(run_dir), "--launcher", launcher,
                    *launcher_args, *(["--fast"] if fast else [])]  # fmt: skip
            if reuse_training_of is not None:
                self._reuse_training(reuse_training_of, run_dir, result)
            t = time.perf_counter()
            if resume_check:
                self._kill_during_sampling(args, run_dir)
            offline = {"MIXFLOW_BENCH_OFFLINE": "1"} if released else None  # everything came with download
            try:
                output = self.cli(*args, env=offline)
            except RehearsalFailure as first:
                if launcher == "local":
                    raise
                # A multi-process launch that fails once is rerun as a user would (reproduce resumes); the
                # failure stays in the report. Seen once in three CPU runs: a torchrun rank aborting with
                # "terminate called without an active exception" as the second training stage started.
                result.checks["resumed_after_failure"] = str(first)[-1500:]
                output = self.cli(*args, env=offline)
            result.stages["reproduce"] = time.perf_counter() - t
            if reuse_training_of is not None:
                assert "train: up to date, skipped" in output, "the reused training was not recognised as done"
            self._check_outputs(recipe, run_dir, result)
            if compare_with is not None:
                self._compare_runs(compare_with, run_dir, result)
            result.ok = True
            if cleanup:  # post-training checkpoints of XL models are 10 GB each; the exported weights stay
                for ckpts in run_dir.glob("train*/checkpoints"):
                    shutil.rmtree(ckpts)
        except (RehearsalFailure, subprocess.TimeoutExpired, AssertionError, OSError, ValueError) as exc:
            result.error = str(exc)[-4000:]
        return result

    def _reuse_training(self, sibling: Path, run_dir: Path, result: RehearsalResult) -> None:
        """Start from a sibling recipe's finished post-training (same train: section, so the same manifest key):
        ``reproduce`` must then skip the train stage, which the check below confirms."""
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "manifests").mkdir(exist_ok=True)
        for train in sibling.glob("train*"):
            if not (run_dir / train.name).exists():
                shutil.copytree(train, run_dir / train.name, ignore=shutil.ignore_patterns("checkpoints"))
        for manifest in sibling.glob("manifests/train*.json"):
            text = manifest.read_text().replace(str(sibling), str(run_dir))
            (run_dir / "manifests" / manifest.name).write_text(text)
        result.checks["training_reused_from"] = str(sibling)

    # --- checks ------------------------------------------------------------------------------------------
    def _check_outputs(self, recipe: Any, run_dir: Path, result: RehearsalResult) -> None:
        from mixflow_bench.models.zoo import get_spec

        check = json.loads((run_dir / "train" / "latent_check.json").read_text()) if recipe.train else None
        result.checks["latent_check"] = check
        res = get_spec(recipe.model.name).resolution
        npz = {}
        for path in sorted((run_dir / "samples").glob("*.npz")):
            with np.load(path) as z:
                arr = z["arr_0"]
            assert arr.shape == (self.scale.samples, res, res, 3) and arr.dtype == np.uint8, (path, arr.shape)
            npz[path.stem] = {"shape": list(arr.shape), "dtype": str(arr.dtype), "mean": float(arr.mean())}
        result.checks["samples"] = npz
        for path in sorted((run_dir / "eval").glob("*.json")):
            if path.name.endswith(".details.json"):
                continue
            values = json.loads(path.read_text())
            assert values and all(np.isfinite(v) for v in values.values()), (path, values)
            result.metrics[path.stem] = values
        table = json.loads((run_dir / "table.json").read_text())
        assert set(table["rows"]) == set(result.metrics), (table["rows"], result.metrics)

    def _kill_during_sampling(self, args: list[str], run_dir: Path) -> None:
        """Start the run, kill it once the first sample shard exists, and leave the rest to the rerun."""
        env = {**os.environ, **self.site.environment(self.workdir), **self.threads}
        proc = subprocess.Popen(
            [sys.executable, "-m", "mixflow_bench", *args], env=env, cwd=self.workdir,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
        )  # fmt: skip
        deadline = time.time() + 3600
        shards = run_dir / "samples"
        while proc.poll() is None and time.time() < deadline:
            if any(shards.glob("*.shards/shard-*.npz")):
                os.killpg(proc.pid, signal.SIGKILL)
                break
            time.sleep(0.05)
        proc.wait()

    def _compare_runs(self, reference: Path, run_dir: Path, result: RehearsalResult) -> None:
        """Samples of the same weights byte-identical; of weights post-trained on another number of ranks, within
        one uint8 level on a few pixels (the all-reduce sums gradients in another order); training losses within
        1e-4 relative; both stated in the report."""
        samples = {}
        for path in sorted((reference / "samples").glob("*.npz")):
            with np.load(path) as a, np.load(run_dir / "samples" / path.name) as b:
                diff = np.abs(a["arr_0"].astype(np.int16) - b["arr_0"].astype(np.int16))
            samples[path.stem] = {"identical": bool(not diff.any()), "max_level_diff": int(diff.max()),
                                  "fraction_differing": float((diff > 0).mean())}  # fmt: skip
        result.checks["samples_vs_reference_run"] = samples
        if "baseline" in samples:  # the released checkpoint: the same weights on every rank layout
            assert samples["baseline"]["identical"], samples
        assert all(v["max_level_diff"] <= 1 and v["fraction_differing"] < 1e-3 for v in samples.values()), samples
        losses = {}
        for log in sorted(reference.glob("train*/log.jsonl")):
            ref = [json.loads(x)["loss"] for x in log.read_text().splitlines() if x.strip()]
            other = [json.loads(x)["loss"] for x in (run_dir / log.relative_to(reference)).read_text().splitlines()
                     if x.strip()]  # fmt: skip
            diff = float(np.max(np.abs(np.array(ref) - np.array(other)) / np.maximum(np.abs(ref), 1e-12)))
            losses[log.parent.name] = diff
        result.checks["training_loss_max_rel_diff"] = losses
        assert all(d < 1e-4 for d in losses.values()), losses


def write_report(results: list[RehearsalResult], path: Path, device: str, about: dict[str, Any]) -> None:
    path.write_text(json.dumps({"device": device, **about, "results": [asdict(r) for r in results]}, indent=2))


__all__ = [
    "LAUNCH_ARGS",
    "Rehearsal",
    "RehearsalFailure",
    "RehearsalResult",
    "Scale",
    "needed_artifacts",
    "write_class_tree",
]
