"""Faithfulness evaluation of explanation methods on images with ground-truth evidence masks.

``evaluate(model, dataset, methods, n)`` explains every image with every method and
measures, per method (details and rationale: ``docs/evaluation.md``):

* **pointing game** -- is the maximum of the importance map inside the mask (share of the
  maximal pixels inside the mask when several pixels tie, e.g. a LIME superpixel), over the
  correctly classified images;
* **energy in mask** -- share of the positive attribution that falls inside the mask, over
  the correctly classified images; ``background_share = 1 - energy_in_mask``;
* **deletion / insertion AUC** (Petsiuk et al. 2018, RISE) -- pixels removed from the image
  (replaced by black) / inserted into a blurred copy in order of importance, in ``steps``
  equal steps; area under the target-probability curve over the removed/inserted fraction
  (so both lie in [0, 1]); each with a **random-order baseline** on the same images
  (``random_orders`` seeded random pixel orders, averaged);
* **parameter-randomisation sanity check** (Adebayo et al. 2018) -- the same method on a copy
  of the model whose weight tensors (every floating tensor with >= 2 dimensions: conv and
  linear kernels) are re-drawn from a seeded ``torch.Generator`` (normal, same std per
  tensor); Spearman rank correlation between the original and the randomised map. Needs
  the weights, i.e. ``model.differentiable()``; "n/a" with the reason otherwise;
* **seed stability** (stochastic methods only) -- mean pairwise top-k Jaccard and Spearman
  over ``seeds`` (the metrics of :mod:`xaudit.stability`); deterministic methods report
  ``"deterministic"``;
* **seconds and model calls per image** of the explanation itself.

Importance map: the attribution as returned, except Integrated Gradients (signed pixel
attribution) which is taken in absolute value (``|a|``) for the pointing game, the deletion
/ insertion order and the sanity check. Energy in mask always uses the positive part.

Work is split into independent tasks: :func:`make_tasks` lists :class:`Task` objects
(image, method, seed; plus one ``random`` task per image for the random-order baseline),
:func:`run_task` ``(model, task, config) -> small dict`` is a pure function of the loaded
model and the task, and :func:`aggregate` turns the task results into an
:class:`EvaluationReport`. :func:`evaluate` runs the tasks in a local loop, or through
``executor`` (any object with ``map(fn, tasks)`` yielding results in order).
"""
from __future__ import annotations

import csv
import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import SimpleNamespace

import numpy as np

from ._json import json_default
from .errors import XauditError
from .stability import pair_metrics, spearman

ALL_METHODS = ("fullgrad", "gradcam", "ig", "lime", "anchors", "occlusion")
GRADIENT_METHODS = ("fullgrad", "gradcam", "ig")
SIGNED_ABS = ("ig",)            # importance = |attribution|
DATASET_SEEDS = {"signs": 8008, "poles": 9009}   # disjoint from training (0-32) and test seeds (2024, 12345)
POLE_VARIANTS = ("biased", "honest")
DEFAULT_POLE_VARIANT = "biased"
SANITY_THRESHOLD = 0.5
MASK_EXTS = (".png", ".bmp", ".tif", ".tiff", ".gif", ".jpg", ".jpeg", ".webp")


# ============================================================================ datasets
@dataclass
class Dataset:
    """Images with evidence masks. ``images``: list of canonical float32 (H, W, 3) at the
    model's input size; ``masks``: bool (H, W) at the same size; ``labels``: int class
    index per image or None (unknown)."""

    name: str
    images: list
    masks: list
    labels: list
    ids: list
    source: dict = field(default_factory=dict)
    backgrounds: np.ndarray | None = None   # (M, H, W, 3) canonical images for Anchors (alibi-style)
    stream: object = None                   # lazy datasets: callable -> iterator of (image, mask, label)
    count: int | None = None                # lazy datasets: number of images
    mask_fractions: list | None = None      # filled while streaming (lazy datasets)

    def __len__(self):
        return int(self.count) if self.stream is not None else len(self.images)

    def items(self):
        """Yield ``(index, image, mask, label)`` in order; a lazy dataset reads / generates each
        image only when it is reached (nothing of the set is held)."""
        if self.stream is None:
            yield from ((i, self.images[i], self.masks[i], self.labels[i]) for i in range(len(self.images)))
            return
        for i, (im, mk, lab) in enumerate(self.stream()):
            yield i, im, mk, lab


def _size_for(model) -> int:
    h, w = model.input_size
    return int(h) if h == w else 64


def load_dataset(spec, model, n: int = 200, seed: int | None = None,
                 pole_variant: str = DEFAULT_POLE_VARIANT, backgrounds: int = 16, lazy: bool = False) -> Dataset:
    """``spec``: ``"signs"`` / ``"poles"`` (shipped generators, fixed seed
    ``DATASET_SEEDS``) or a folder laid out as ``save_dataset`` writes it (see
    :func:`read_mask_dir`). Returns at most ``n`` images resized to the model input.
    Generated datasets also carry ``backgrounds`` images for Anchors (same generator,
    seed + 1; poles: the honest variant, whose backgrounds are independent of the class).
    ``lazy=True``: images and masks are produced one at a time by :meth:`Dataset.items`
    (``labels`` of a generated set are filled while streaming) -- what :func:`evaluate` uses,
    so the driver never holds the image set."""
    n = int(n)
    if n <= 0:
        raise XauditError(f"--n must be >= 1, got {n}")
    spec_s = str(spec)
    if spec_s in ("signs", "poles"):
        from .data import generate
        s = DATASET_SEEDS[spec_s] if seed is None else int(seed)
        size = _size_for(model)
        if spec_s == "signs":
            def it():
                return generate.iter_signs(n, seed=s, size=size)
            src = {"generator": "make_signs", "seed": s, "size": size}
        else:
            if pole_variant not in POLE_VARIANTS:
                raise XauditError(f"--pole-variant must be one of {', '.join(POLE_VARIANTS)}, got {pole_variant!r}")

            def it():
                return generate.iter_poles(n, seed=s, size=size, biased=pole_variant == "biased")
            src = {"generator": "make_poles", "seed": s, "size": size, "variant": pole_variant,
                   "biased": pole_variant == "biased"}

        def stream():
            for im, lab, m in it():
                yield model.preprocess(im), _mask_to(m, model), int(lab)
        bgs = None
        if backgrounds and int(backgrounds) > 0:
            gen = generate.make_signs if spec_s == "signs" else generate.make_poles
            bgs = model.preprocess_batch(list(gen(int(backgrounds), seed=s + 1, size=size)[0]))
            src["anchor_backgrounds"] = {"n": int(backgrounds), "seed": s + 1,
                                         **({"variant": "honest"} if spec_s == "poles" else {})}
        ids = [f"{spec_s}-{i:05d}" for i in range(n)]
        if lazy:
            return Dataset(spec_s, [], [], [], ids, src, backgrounds=bgs, stream=stream, count=n)
        images, mks, labs = [], [], []
        for im, mk, lab in stream():
            images.append(im), mks.append(mk), labs.append(lab)
        return Dataset(spec_s, images, mks, labs, ids, src, backgrounds=bgs)
    p = Path(spec_s)
    if not p.exists():
        raise XauditError(f"dataset {spec_s!r} is neither 'signs', 'poles' nor an existing folder")
    if not p.is_dir():
        raise XauditError(f"dataset {spec_s} is not a folder (expected images/ and masks/ inside, or 'signs'/'poles')")
    return read_mask_dir(p, model, n, lazy=lazy)


def _mask_to(mask, model) -> np.ndarray:
    """Bool mask (any size) -> bool (H, W) at the model input size, resized like images."""
    from .images import to_canonical
    m = np.asarray(mask)
    if m.ndim == 3:
        m = m.max(axis=2)
    h, w = model.input_size
    if m.shape == (h, w):
        return m.astype(bool)
    rgb = np.repeat((m > 0).astype(np.uint8)[..., None] * 255, 3, axis=2)
    return to_canonical(rgb, model.input_size, model.preprocessing.resize)[..., 0] >= 0.5


def read_mask_dir(directory, model, n: int | None = None, lazy: bool = False) -> Dataset:
    """Folder layout (what ``xaudit.data.generate.save_dataset`` writes)::

        DIR/images/<stem>.<png|jpg|...>   the images (or directly in DIR/)
        DIR/masks/<stem>.png              evidence masks, same stem (non-zero = evidence)
        DIR/labels.csv                    optional: columns image,label (label = class index
                                          or label name; image = file name or path in DIR)

    Every image needs a mask; without labels.csv (or without a label for an image) the
    predicted class is evaluated and the image counts as correctly classified."""
    from .images import IMAGE_EXTS, read_image
    d = Path(directory)
    img_dir = d / "images" if (d / "images").is_dir() else d
    mask_dir = d / "masks"
    if not mask_dir.is_dir():
        raise XauditError(f"dataset folder {d} has no masks/ folder (layout: images/<stem>.png + masks/<stem>.png "
                          "[+ labels.csv]; see docs/evaluation.md)")
    files = sorted(q for q in img_dir.iterdir() if q.is_file() and q.suffix.lower() in IMAGE_EXTS)
    if not files:
        raise XauditError(f"dataset folder {d} holds no images (expected {img_dir}/<stem>.png)")
    masks_by_stem = {}
    for q in mask_dir.iterdir():
        if q.is_file() and q.suffix.lower() in MASK_EXTS:
            masks_by_stem.setdefault(q.stem, q)
    labels = {}
    csv_path = d / "labels.csv"
    if csv_path.is_file():
        try:
            with open(csv_path, newline="") as fh:
                rows = list(csv.DictReader(fh))
        except (OSError, csv.Error, UnicodeDecodeError) as e:
            raise XauditError(f"cannot read {csv_path}: {e}") from None
        if rows and ("image" not in rows[0] or "label" not in rows[0]):
            raise XauditError(f"{csv_path} needs the columns 'image' and 'label' (found: {', '.join(rows[0])})")
        for r in rows:
            lab = (r.get("label") or "").strip()
            if lab != "":
                labels[Path(r["image"]).stem] = lab
    if n is not None:
        files = files[:int(n)]
    for f in files:   # every image has a mask and a valid label before anything is read
        if masks_by_stem.get(f.stem) is None:
            raise XauditError(f"image {f.name} has no mask (expected {mask_dir}/{f.stem}.png)")
    labs = [None if labels.get(f.stem) is None else model.target_index(labels[f.stem]) for f in files]
    ids = [f.stem for f in files]

    def stream():
        for f, lab in zip(files, labs):
            mp = masks_by_stem[f.stem]
            try:
                m = np.asarray(read_image(mp))
            except XauditError as e:
                raise XauditError(f"cannot read mask {mp}: {str(e).splitlines()[0]}") from None
            yield model.preprocess(f), _mask_to(m, model), lab
    src = {"folder": str(d), "labels_csv": csv_path.is_file()}
    if lazy:
        return Dataset(d.name, [], [], labs, ids, src, stream=stream, count=len(files))
    images, mks = [], []
    for im, mk, _ in stream():
        images.append(im), mks.append(mk)
    return Dataset(d.name, images, mks, labs, ids, src)


# ============================================================================ config & tasks
@dataclass
class EvalConfig:
    steps: int = 32                       # deletion / insertion steps
    random_orders: int = 3                # random pixel orders averaged for the baseline
    deletion_baseline: str = "blur"       # blur | black | mean
    insertion_start: str = "blur"         # blur | black | mean
    blur_sigma: float = 0.0625            # x image side (insertion start image)
    seed: int = 1                         # explainer seed of the main pass; random orders
    seeds: tuple = (1, 11, 21)            # stability seeds (stochastic methods)
    stability_n: int = 20                 # images in the stability check
    sanity_n: int = 50                    # images in the randomisation check
    sanity_seed: int = 0                  # torch.Generator seed of the re-randomised weights
    method_params: dict = field(default_factory=dict)   # method -> explainer params

    def validate(self):
        if self.steps < 2:
            raise XauditError(f"--steps must be >= 2, got {self.steps}")
        if self.random_orders < 1:
            raise XauditError(f"--random-orders must be >= 1, got {self.random_orders}")
        for k, v in (("deletion baseline", self.deletion_baseline), ("insertion start", self.insertion_start)):
            if v not in ("black", "mean", "blur"):
                raise XauditError(f"{k} must be black, mean or blur, got {v!r}")
        if len(set(self.seeds)) != len(self.seeds):
            raise XauditError(f"duplicate stability seeds {list(self.seeds)}")
        if self.stability_n < 0 or self.sanity_n < 0:
            raise XauditError("--stability-n and --sanity-n must be >= 0")

    def to_dict(self):
        d = asdict(self)
        d["seeds"] = [int(s) for s in self.seeds]
        return d


@dataclass
class Task:
    """One unit of work. ``kind``: ``"explain"`` (method, seed) or ``"random"`` (the
    random-order baseline of one image). ``primary``: the main-pass explanation (all
    metrics); otherwise a stability-only extra seed. The image data travel with the task."""

    kind: str
    index: int
    method: str | None
    seed: int | None
    image: np.ndarray
    mask: np.ndarray
    target: int
    primary: bool = True
    sanity: bool = False
    keep_map: bool = False
    params: dict = field(default_factory=dict)    # explainer parameters of ``method``

    @property
    def key(self) -> str:
        return f"{self.kind}:{self.method}:{self.index}:{self.seed}"


def parse_methods(methods) -> list[str]:
    from .explainers import METHODS
    if methods is None:
        return list(ALL_METHODS)
    if isinstance(methods, str):
        methods = [m for m in methods.replace(" ", "").split(",") if m]
    out = []
    for m in methods:
        m = str(m).lower()
        if m not in METHODS:
            raise XauditError(f"unknown method {m!r}: choose from {', '.join(METHODS)}")
        if m not in out:
            out.append(m)
    if not out:
        raise XauditError("--methods is empty")
    return out


def is_stochastic(method: str) -> bool:
    from .explainers import explainer_class
    return bool(getattr(explainer_class(method), "uses_seed", False))


def make_tasks(dataset: Dataset, targets, methods, config: EvalConfig) -> list[Task]:
    tasks = []
    for i, img, mk, _ in dataset.items():
        tasks += image_tasks(i, img, mk, int(targets[i]), methods, config)
    return tasks


def task_count(n: int, methods, config: EvalConfig) -> int:
    """Number of tasks :func:`image_tasks` makes for ``n`` images (progress totals)."""
    extra = sum(len([s for s in config.seeds if int(s) != int(config.seed)])
                for m in methods if is_stochastic(m)) if len(config.seeds) >= 2 else 0
    return n * (1 + len(methods)) + min(n, int(config.stability_n)) * extra


def image_tasks(i, img, mk, t, methods, config: EvalConfig) -> list[Task]:
    """The tasks of image ``i``: its random-order baseline, one main-pass task per method,
    extra seeds of stochastic methods for the first ``stability_n`` images."""
    tasks = []
    tasks.append(Task("random", i, None, config.seed, img, mk, t))
    for m in methods:
        stoch = is_stochastic(m)
        stab = stoch and i < config.stability_n and len(config.seeds) >= 2
        params = dict(config.method_params.get(m, {}))
        tasks.append(Task("explain", i, m, config.seed if stoch else None, img, mk, t, primary=True,
                          sanity=i < config.sanity_n, keep_map=stab and config.seed in config.seeds,
                          params=params))
        if stab:
            for s in config.seeds:
                if int(s) != int(config.seed):
                    tasks.append(Task("explain", i, m, int(s), img, mk, t, primary=False, keep_map=True,
                                      params=params))
    return tasks


# ============================================================================ metrics
def importance(method: str, attribution: np.ndarray) -> np.ndarray:
    a = np.asarray(attribution, np.float64)
    return np.abs(a) if method in SIGNED_ABS else a


def pointing_hit(imp: np.ndarray, mask: np.ndarray) -> float:
    """Share of the maximal pixels of ``imp`` inside ``mask`` (0/1 for a unique maximum)."""
    if not np.isfinite(imp).any():
        return float("nan")
    top = imp == np.nanmax(imp)
    return float(mask[top].mean())


def energy_in_mask(attribution: np.ndarray, mask: np.ndarray) -> float:
    """Share of the positive attribution inside the mask (NaN when there is none)."""
    pos = np.clip(np.asarray(attribution, np.float64), 0, None)
    tot = pos.sum()
    return float(pos[mask].sum() / tot) if tot > 0 else float("nan")


def _fill(x: np.ndarray, kind: str, sigma_frac: float) -> np.ndarray:
    if kind == "black":
        return np.zeros_like(x)
    if kind == "mean":
        return np.broadcast_to(x.reshape(-1, 3).mean(0), x.shape).astype(np.float32).copy()
    from scipy.ndimage import gaussian_filter
    s = sigma_frac * max(x.shape[:2])
    return gaussian_filter(x, sigma=(s, s, 0), mode="nearest").astype(np.float32)


def pixel_order(imp: np.ndarray, rng) -> np.ndarray:
    """Pixel indices by decreasing importance; ties broken by a seeded random key."""
    flat = np.asarray(imp, np.float64).ravel()
    flat = np.where(np.isfinite(flat), flat, -np.inf)
    return np.lexsort((rng.random(flat.size), -flat))


def curves(model, x, target, order, config: EvalConfig, fills=None):
    """-> (fractions (S+1,), deletion probs (S+1,), insertion probs (S+1,)) for one order."""
    h, w = x.shape[:2]
    npx = h * w
    steps = int(config.steps)
    counts = np.round(np.linspace(0, npx, steps + 1)).astype(np.int64)
    rank = np.empty(npx, np.int64)
    rank[order] = np.arange(npx)
    rank = rank.reshape(h, w)
    sel = rank[None] < counts[:, None, None]                     # (S+1, H, W): pixels moved so far
    if fills is None:
        fills = (_fill(x, config.deletion_baseline, config.blur_sigma), _fill(x, config.insertion_start, config.blur_sigma))
    dele = np.where(sel[..., None], fills[0][None], x[None]).astype(np.float32)
    ins = np.where(sel[..., None], x[None], fills[1][None]).astype(np.float32)
    p = model.predict(np.concatenate([dele, ins]))[:, target]
    return counts / npx, p[:steps + 1].astype(np.float64), p[steps + 1:].astype(np.float64)


def auc(frac, p) -> float:
    return float(np.trapezoid(p, frac)) if hasattr(np, "trapezoid") else float(np.trapz(p, frac))


# ============================================================================ randomised model
_RANDOMISED_ATTR = "_xaudit_randomised_models"


def randomised_model(model, seed: int = 0):
    """-> (model copy with re-randomised weights, None) or (None, reason). Cached per
    (model, seed) on the model object (one per worker)."""
    cache = model.__dict__.setdefault(_RANDOMISED_ATTR, {})
    if seed in cache:
        return cache[seed]
    try:
        ok, why = model._gradients()
    except Exception as e:  # noqa: BLE001 - a capability answer
        ok, why = False, str(e)
    if not ok:
        cache[seed] = (None, f"weights not reachable: {why}")
        return cache[seed]
    try:
        res = (_RandomisedModel(model, seed), None)
    except XauditError as e:
        res = (None, str(e).splitlines()[0])
    cache[seed] = res
    return res


def randomise_weights(diff, seed: int = 0) -> int:
    """Re-draw, in place, every floating tensor with >= 2 dims reachable from the
    differentiable view (module parameters/buffers and graph constants): normal with the
    tensor's own std, from ``torch.Generator().manual_seed(seed)``. Returns how many."""
    import torch
    g = torch.Generator().manual_seed(int(seed))
    seen, tensors = set(), []

    def add(t):
        if torch.is_tensor(t) and t.is_floating_point() and t.ndim >= 2 and t.numel() > 1 \
                and id(t) not in seen:
            seen.add(id(t))
            tensors.append(t)

    mod = diff.module
    for m in [mod] + ([diff._root] if getattr(diff, "_root", None) is not None else []):
        for _, p in m.named_parameters():
            add(p)
        for _, b in m.named_buffers():
            add(b)
        for sub in m.modules():
            consts = getattr(sub, "consts", None)
            if isinstance(consts, dict):
                for k in sorted(consts, key=str):
                    add(consts[k])
    with torch.no_grad():
        for t in tensors:
            std = float(t.float().std()) or 0.1
            t.copy_((torch.randn(t.shape, generator=g, dtype=torch.float32) * std).to(t.dtype))
    return len(tensors)


class _RandomisedModel:
    """A copy of ``model`` whose differentiable view has re-randomised weights; its
    ``predict`` runs that view (so black-box methods see the randomised model too)."""

    def __new__(cls, model, seed):
        import copy

        from .model import Model

        class RandomisedModel(Model):
            format = "randomised"

            def _forward_native(self, native):
                import torch
                with torch.no_grad():
                    out = self._rdiff.forward_native(torch.from_numpy(np.ascontiguousarray(native)))
                return out.float().cpu().numpy()

            def _check_gradients(self):
                return True, f"re-randomised copy (seed {self._rseed}) of {self._orig_source}"

            def _differentiable(self):
                return self._rdiff

        diff = model.differentiable()
        rdiff = copy.deepcopy(diff)
        k = randomise_weights(rdiff, seed)
        if k == 0:
            raise XauditError("no weight tensors found in the differentiable view")
        m = RandomisedModel()
        m._rdiff, m._rseed, m._orig_source = rdiff, int(seed), model.source
        m._setup(source=f"{model.source}#randomised-{seed}", labels=model.labels, input_size=model.input_size,
                 preprocessing=model.preprocessing, output_kind="logits",
                 fixed_batch=getattr(rdiff, "fixed_batch", None) or model.fixed_batch,
                 batch_size=model.batch_size)
        m.randomised_tensors = k
        return m


# ============================================================================ one task
def _explainer(method, params: dict, seed):
    from .explainers import get_explainer
    params = dict(params or {})
    if is_stochastic(method) and seed is not None:
        params["seed"] = int(seed)
    return get_explainer(method, **params)


def run_task(model, task: Task, config: EvalConfig) -> dict:
    """Pure function of the loaded model and the task -> small metrics dict."""
    x = np.asarray(task.image, np.float32)
    mask = np.asarray(task.mask, bool)
    out = {"key": task.key, "kind": task.kind, "index": task.index, "method": task.method, "seed": task.seed,
           "primary": task.primary}
    if task.kind == "random":
        rng = np.random.default_rng([int(config.seed), int(task.index), 7])
        fills = (_fill(x, config.deletion_baseline, config.blur_sigma), _fill(x, config.insertion_start, config.blur_sigma))
        d_all, i_all = [], []
        for _ in range(int(config.random_orders)):
            order = rng.permutation(x.shape[0] * x.shape[1])
            frac, d, i = curves(model, x, task.target, order, config, fills)
            d_all.append(d)
            i_all.append(i)
        d, i = np.mean(d_all, 0), np.mean(i_all, 0)
        out.update(deletion_curve=d.tolist(), insertion_curve=i.tolist(), deletion_auc=auc(frac, d),
                   insertion_auc=auc(frac, i), mask_fraction=float(mask.mean()))
        return out
    if task.kind != "explain":
        raise XauditError(f"unknown task kind {task.kind!r}")
    ex = _explainer(task.method, task.params, task.seed)
    e = ex.explain(model, x, task.target)
    out.update(seconds=float(e.seconds), model_calls=int(e.model_calls), target_prob=float(e.target_prob))
    if task.keep_map:
        out["map"] = np.asarray(e.attribution, np.float32)
        out["arrays"] = {k: np.asarray(v) for k, v in e.arrays.items() if k in ("weights", "segments", "anchor_mask")}
        out["meta"] = {k: e.meta[k] for k in ("anchor",) if k in e.meta}
    if not task.primary:
        return out
    imp = importance(task.method, e.attribution)
    out["pointing"] = _num(pointing_hit(imp, mask))
    out["energy"] = _num(energy_in_mask(e.attribution, mask))
    rng = np.random.default_rng([int(config.seed), int(task.index), 11])
    frac, d, i = curves(model, x, task.target, pixel_order(imp, rng), config)
    out.update(deletion_curve=d.tolist(), insertion_curve=i.tolist(), deletion_auc=auc(frac, d),
               insertion_auc=auc(frac, i))
    if task.sanity:
        rmodel, why = randomised_model(model, config.sanity_seed)
        if rmodel is None:
            out["sanity"] = None
            out["sanity_reason"] = why
        else:
            er = ex.explain(rmodel, x, task.target)
            out["sanity"] = _num(spearman(imp, importance(task.method, er.attribution)))
    return out


def _num(v):
    return None if v is None or (isinstance(v, float) and math.isnan(v)) else float(v)


# ============================================================================ aggregation
def _mean(vals):
    v = [float(x) for x in vals if x is not None and not (isinstance(x, float) and math.isnan(x))]
    return float(np.mean(v)) if v else None


def _stability(results_by_seed: dict, seeds) -> dict:
    """results_by_seed: index -> {seed: result with map}."""
    jac, spm = [], []
    used = 0
    for idx, by_seed in sorted(results_by_seed.items()):
        ss = [s for s in seeds if s in by_seed]
        if len(ss) < 2:
            continue
        used += 1
        exps = [SimpleNamespace(attribution=by_seed[s]["map"], arrays=by_seed[s].get("arrays", {}),
                                meta=by_seed[s].get("meta", {})) for s in ss]
        j_im, s_im = [], []
        for a in range(len(exps)):
            for b in range(a + 1, len(exps)):
                pm = pair_metrics(exps[a], exps[b])
                j_im.append(pm.get("topk_jaccard"))
                s_im.append(pm.get("spearman"))
        jac.append(_mean(j_im))
        spm.append(_mean(s_im))
    return {"topk_jaccard": _mean(jac), "spearman": _mean(spm), "images": used,
            "worst_topk_jaccard": min([j for j in jac if j is not None], default=None)}


@dataclass
class EvaluationReport:
    dataset: dict
    methods: list
    params: dict
    summary: dict            # method -> metrics
    random: dict             # random-order baseline over all images
    images: list             # per-image details
    curves: dict             # method -> {"deletion": [...], "insertion": [...]} mean curves (+ "random")
    model: dict = field(default_factory=dict)
    seconds: float = 0.0
    failed: list = field(default_factory=list)

    # ------------------------------------------------------------------ views
    def to_dict(self) -> dict:
        return {"model": self.model, "dataset": self.dataset, "methods": self.methods, "params": self.params,
                "summary": self.summary, "random": self.random, "curves": self.curves, "images": self.images,
                "seconds": self.seconds, "failed": self.failed}

    def metrics(self) -> dict:
        """Flat ``{"<method>.<metric>": number}`` (for MLflow)."""
        out = {}
        for m, s in self.summary.items():
            for k, v in s.items():
                if isinstance(v, bool):
                    out[f"{m}.{k}"] = float(v)
                elif isinstance(v, (int, float)) and v is not None and not (isinstance(v, float) and math.isnan(v)):
                    out[f"{m}.{k}"] = float(v)
        return out

    COLUMNS = [("pointing_game", "pointing game ↑"), ("energy_in_mask", "energy in mask ↑"),
               ("background_share", "background share"), ("deletion_auc", "deletion AUC ↓"),
               ("deletion_auc_random", "random deletion"), ("insertion_auc", "insertion AUC ↑"),
               ("insertion_auc_random", "random insertion"), ("sanity_spearman", "randomisation Spearman ↓"),
               ("stability", "seed stability (top-k J / Spearman)"), ("seconds_per_image", "s / image"),
               ("model_calls_per_image", "model calls / image")]

    def rows(self) -> list[list[str]]:
        rows = []
        for m in self.methods:
            s = self.summary[m]
            r = [m]
            for k, _ in self.COLUMNS:
                if k == "sanity_spearman":
                    v = s.get(k)
                    r.append(_f(v) if v is not None else f"n/a ({s.get('sanity_reason', '')})"[:80])
                elif k == "stability":
                    st = s.get("stability")
                    if st == "deterministic":
                        r.append("deterministic")
                    elif isinstance(st, dict) and st.get("topk_jaccard") is not None:
                        r.append(f"{_f(st['topk_jaccard'])} / {_f(st['spearman'])}")
                    else:
                        r.append("–")
                elif k in ("energy_in_mask", "background_share") and s.get("empty_maps"):
                    r.append(f"{_f(s.get(k))} ({s['empty_maps']} empty)")
                elif k == "seconds_per_image":
                    r.append(_f(s.get(k), 4))
                elif k == "model_calls_per_image":
                    v = s.get(k)
                    r.append("–" if v is None else f"{v:.0f}")
                else:
                    r.append(_f(s.get(k)))
            rows.append(r)
        return rows

    def header(self) -> list[str]:
        return ["method"] + [h for _, h in self.COLUMNS]

    def markdown(self) -> str:
        ds = self.dataset
        lines = [f"# Faithfulness evaluation: {Path(str(self.model.get('source', '?'))).name}", "",
                 f"Dataset: **{ds.get('name')}** ({ds.get('n')} images, {ds.get('n_correct')} correctly classified, "
                 f"accuracy {_f(ds.get('accuracy'))}; mask covers {_f(ds.get('mask_fraction'))} of the image on average) "
                 f"{_src(ds.get('source', {}))}", "",
                 "| " + " | ".join(self.header()) + " |", "|" + "---|" * len(self.header())]
        for r in self.rows():
            lines.append("| " + " | ".join(r) + " |")
        p = self.params
        lines += ["", f"Pointing game and energy over correctly classified images; deletion/insertion over all images "
                      f"({p.get('steps')} steps, deletion to {p.get('deletion_baseline')}, insertion from "
                      f"{p.get('insertion_start')}; random baseline = mean of {p.get('random_orders')} seeded random "
                      f"orders on the same images); randomisation check on {p.get('sanity_n')} images "
                      f"(weights re-drawn, seed {p.get('sanity_seed')}; pass = Spearman < {SANITY_THRESHOLD}); "
                      f"stability over seeds {p.get('seeds')} on {p.get('stability_n')} images. "
                      "IG maps taken as |a| for pointing, ordering and Spearman.",
                  "", f"Total {self.seconds:.1f} s."]
        if self.failed:
            lines += ["", f"**{len(self.failed)} failed tasks** (first: {self.failed[0]['key']}: {self.failed[0]['error']})"]
        return "\n".join(lines) + "\n"

    def html(self, png: bytes | None = None) -> str:
        import base64
        import html as h
        from .report import CSS
        ds = self.dataset
        head = "".join(f"<th>{h.escape(c)}</th>" for c in self.header())
        body = ""
        for r in self.rows():
            cells = f"<td>{h.escape(r[0])}</td>" + "".join(f'<td class="num">{h.escape(c)}</td>' for c in r[1:])
            body += f"<tr>{cells}</tr>"
        md = self.markdown().split("\n")
        notes = [ln for ln in md if ln and not ln.startswith(("|", "#"))]
        img = ""
        if png:
            img = f'<img alt="evaluation plot" src="data:image/png;base64,{base64.b64encode(png).decode("ascii")}">'
        return ("<!DOCTYPE html><html><head><meta charset='utf-8'><title>xaudit evaluation</title>"
                f"<style>{CSS}</style></head><body><header><h1>Faithfulness evaluation</h1>"
                f"<p>{h.escape(str(self.model.get('source', '')))} on {h.escape(str(ds.get('name')))}</p></header><main>"
                f"<section><h2>Per-method metrics</h2><table><tr>{head}</tr>{body}</table>"
                + "".join(f"<p>{h.escape(x).replace('**', '')}</p>" for x in notes)
                + f"</section><section><h2>Curves and metrics</h2>{img}</section></main></body></html>")

    def plot(self, path):
        from .plots import _plt
        plt = _plt()
        methods = self.methods
        fig, axes = plt.subplots(1, 3, figsize=(15, 4.6), dpi=90)
        cmap = plt.get_cmap("tab10")
        frac = np.linspace(0, 1, int(self.params.get("steps", 32)) + 1)
        for ax, kind in zip(axes[:2], ("deletion", "insertion")):
            for j, m in enumerate(methods):
                c = self.curves.get(m, {}).get(kind)
                if c:
                    ax.plot(frac, c, color=cmap(j % 10), label=f"{m} ({_f(self.summary[m].get(kind + '_auc'))})")
            rc = self.curves.get("random", {}).get(kind)
            if rc:
                ax.plot(frac, rc, color="k", ls="--", label=f"random ({_f(self.random.get(kind + '_auc'))})")
            ax.set_xlabel("fraction of pixels " + ("removed" if kind == "deletion" else "inserted"))
            ax.set_ylabel("target probability")
            ax.set_title(f"{kind} (AUC {'lower' if kind == 'deletion' else 'higher'} is better)", fontsize=10)
            ax.set_ylim(0, 1.02)
            ax.legend(fontsize=7)
        ax = axes[2]
        keys = [("pointing_game", "pointing"), ("energy_in_mask", "energy in mask"), ("sanity_spearman", "rand. Spearman")]
        w = 0.8 / len(keys)
        for k, (key, lab) in enumerate(keys):
            vals = [self.summary[m].get(key) for m in methods]
            ax.bar(np.arange(len(methods)) + (k - (len(keys) - 1) / 2) * w,
                   [v if isinstance(v, (int, float)) else 0 for v in vals], w, label=lab)
        mf = self.dataset.get("mask_fraction")
        if mf is not None:
            ax.axhline(mf, color="grey", ls=":", lw=1, label="mask area (uniform map)")
        ax.axhline(SANITY_THRESHOLD, color="r", ls=":", lw=1, label="sanity threshold")
        ax.set_xticks(np.arange(len(methods)))
        ax.set_xticklabels(methods, fontsize=8)
        ax.set_ylim(-0.1, 1.05)
        ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.09), ncol=3, frameon=False)
        ax.set_title("mask metrics and randomisation check", fontsize=10)
        fig.suptitle(f"{Path(str(self.model.get('source', ''))).name} on {self.dataset.get('name')} "
                     f"({self.dataset.get('n')} images)", fontsize=11)
        fig.tight_layout()
        fig.savefig(path)
        plt.close(fig)

    def save(self, directory) -> Path:
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        (d / "evaluation.json").write_text(json.dumps(self.to_dict(), indent=2, default=json_default))
        (d / "evaluation.md").write_text(self.markdown())
        self.plot(d / "evaluation.png")
        (d / "evaluation.html").write_text(self.html((d / "evaluation.png").read_bytes()))
        return d


def _src(src: dict) -> str:
    if not src:
        return ""
    return "(" + ", ".join(f"{k}={v}" for k, v in src.items()) + ")"


def _f(v, nd=3) -> str:
    if v is None:
        return "–"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, (int, float)):
        if isinstance(v, float) and math.isnan(v):
            return "–"
        return f"{v:.{nd}f}"
    return str(v)


def aggregate(results, dataset: Dataset, targets, probs, methods, config: EvalConfig, model=None,
              seconds: float = 0.0, failed=None) -> EvaluationReport:
    """Task results -> EvaluationReport (pure: no model calls)."""
    n = len(dataset)
    labels = dataset.labels
    mfs = (list(dataset.mask_fractions) if dataset.mask_fractions is not None
           else [float(np.asarray(mk).mean()) for mk in dataset.masks])
    correct = [labels[i] is None or int(labels[i]) == int(targets[i]) for i in range(n)]
    rnd = {r["index"]: r for r in results if r["kind"] == "random"}
    prim = {}
    extra = {}
    for r in results:
        if r["kind"] != "explain":
            continue
        if r.get("primary"):
            prim.setdefault(r["method"], {})[r["index"]] = r
        if "map" in r:
            extra.setdefault(r["method"], {}).setdefault(r["index"], {})[r["seed"]] = r
    summary, curves_out = {}, {}
    for m in methods:
        rs = prim.get(m, {})
        idx = sorted(rs)
        cidx = [i for i in idx if correct[i]]
        s = {"n_images": len(idx), "n_correct": len(cidx)}
        s["pointing_game"] = _mean(rs[i]["pointing"] for i in cidx)
        s["energy_in_mask"] = _mean(rs[i]["energy"] for i in cidx)
        s["empty_maps"] = int(sum(1 for i in cidx if rs[i]["energy"] is None))
        s["background_share"] = None if s["energy_in_mask"] is None else 1.0 - s["energy_in_mask"]
        s["deletion_auc"] = _mean(rs[i]["deletion_auc"] for i in idx)
        s["insertion_auc"] = _mean(rs[i]["insertion_auc"] for i in idx)
        ridx = [i for i in idx if i in rnd]
        s["deletion_auc_random"] = _mean(rnd[i]["deletion_auc"] for i in ridx)
        s["insertion_auc_random"] = _mean(rnd[i]["insertion_auc"] for i in ridx)
        if s["deletion_auc"] is not None and s["deletion_auc_random"] is not None:
            s["deletion_below_random"] = bool(s["deletion_auc"] < s["deletion_auc_random"])
            s["insertion_above_random"] = bool(s["insertion_auc"] > s["insertion_auc_random"])
            s["deletion_wins"] = _mean(float(rs[i]["deletion_auc"] < rnd[i]["deletion_auc"]) for i in ridx)
        san = [rs[i] for i in idx if "sanity" in rs[i]]
        vals = [r["sanity"] for r in san if r["sanity"] is not None]
        if vals:
            s["sanity_spearman"] = _mean(vals)
            s["sanity_images"] = len(vals)
            s["sanity_pass"] = bool(s["sanity_spearman"] < SANITY_THRESHOLD)
        else:
            s["sanity_spearman"] = None
            s["sanity_reason"] = next((r.get("sanity_reason") for r in san if r.get("sanity_reason")),
                                      "no image in the sanity subset")
        if is_stochastic(m):
            st = _stability(extra.get(m, {}), [int(x) for x in config.seeds])
            s["stability"] = st
            s["stability_topk_jaccard"] = st["topk_jaccard"]
            s["stability_spearman"] = st["spearman"]
        else:
            s["stability"] = "deterministic"
        s["seconds_per_image"] = _mean(rs[i]["seconds"] for i in idx)
        s["model_calls_per_image"] = _mean(rs[i]["model_calls"] for i in idx)
        summary[m] = s
        if idx:
            curves_out[m] = {"deletion": np.mean([rs[i]["deletion_curve"] for i in idx], 0).tolist(),
                             "insertion": np.mean([rs[i]["insertion_curve"] for i in idx], 0).tolist()}
    if rnd:
        ri = sorted(rnd)
        curves_out["random"] = {"deletion": np.mean([rnd[i]["deletion_curve"] for i in ri], 0).tolist(),
                                "insertion": np.mean([rnd[i]["insertion_curve"] for i in ri], 0).tolist()}
    random_summary = {"deletion_auc": _mean(r["deletion_auc"] for r in rnd.values()),
                      "insertion_auc": _mean(r["insertion_auc"] for r in rnd.values()),
                      "orders": config.random_orders}
    images = []
    for i in range(n):
        d = {"index": i, "id": dataset.ids[i], "label": labels[i], "target": int(targets[i]),
             "target_prob": float(probs[i][int(targets[i])]), "correct": bool(correct[i]),
             "mask_fraction": mfs[i]}
        if i in rnd:
            d["random"] = {"deletion_auc": rnd[i]["deletion_auc"], "insertion_auc": rnd[i]["insertion_auc"]}
        for m in methods:
            r = prim.get(m, {}).get(i)
            if r is None:
                continue
            d[m] = {k: r[k] for k in ("pointing", "energy", "deletion_auc", "insertion_auc", "sanity", "seconds",
                                      "model_calls") if k in r}
        images.append(d)
    acc = float(np.mean(correct)) if n else None
    ds = {"name": dataset.name, "n": n, "n_correct": int(sum(correct)), "accuracy": acc,
          "labels_known": all(v is not None for v in labels),
          "mask_fraction": float(np.mean(mfs)) if n else None,
          "source": dataset.source}
    from .explainers.base import model_summary
    return EvaluationReport(dataset=ds, methods=list(methods), params=_params(config, methods),
                            summary=summary, random=random_summary, images=images, curves=curves_out,
                            model=model_summary(model) if model is not None else {}, seconds=seconds,
                            failed=list(failed or []))


def _params(config: EvalConfig, methods) -> dict:
    d = config.to_dict()
    from .explainers.base import _jsonable
    mp = {}
    for m in methods:
        p = dict(config.method_params.get(m, {}))
        if p.get("backgrounds") is not None:
            p["backgrounds"] = f"<{len(p['backgrounds'])} background images>"
        mp[m] = _jsonable(p)
    d["method_params"] = mp
    return d


# ============================================================================ driver
def evaluate(model, dataset="signs", methods=None, n: int = 200, config: EvalConfig | None = None,
             progress=None, executor=None, data_seed: int | None = None,
             pole_variant: str = DEFAULT_POLE_VARIANT, anchor_backgrounds: int = 16, ledger=None,
             **config_kw) -> EvaluationReport:
    """Evaluate ``methods`` on ``dataset`` (``"signs"``, ``"poles"``, a folder or a
    :class:`Dataset`). ``progress``: optional ``callable(iterable, total=) -> iterable``;
    ``executor``: optional :mod:`xaudit.executors` executor (``map(fn, tasks)``, results in
    task order); ``ledger``: optional resume ledger (see :func:`run_tasks`);
    ``config_kw`` override :class:`EvalConfig` fields."""
    methods = parse_methods(methods)
    config = config or EvalConfig()
    for k, v in config_kw.items():
        if not hasattr(config, k):
            raise XauditError(f"unknown evaluation option {k!r}")
        setattr(config, k, v)
    config.seeds = tuple(int(s) for s in config.seeds)
    config.validate()
    if int(n) <= 0:
        raise XauditError(f"--n must be >= 1, got {n}")
    ds = dataset if isinstance(dataset, Dataset) else load_dataset(
        dataset, model, n, data_seed, pole_variant, backgrounds=anchor_backgrounds if "anchors" in methods else 0,
        lazy=True)
    if not len(ds):
        raise XauditError("the dataset holds no images")
    if "anchors" in methods and ds.backgrounds is not None and anchor_backgrounds:
        ap = dict(config.method_params.get("anchors", {}))
        if ap.get("backgrounds") is None:
            ap["backgrounds"] = np.asarray(ds.backgrounds, np.float32)
            config.method_params = {**config.method_params, "anchors": ap}
    for m in methods:   # fail early on bad parameters / unreachable gradients
        ex = _explainer(m, config.method_params.get(m, {}), config.seed)
        if getattr(ex, "needs_gradients", False) and not model.gradients_reachable:
            raise XauditError(f"method {m} needs gradients, which are not reachable for {model.source}: "
                              f"{model.gradients_reason} (drop it from --methods)")
    t0 = time.perf_counter()
    # Streamed: images are read / generated a chunk at a time, predicted, turned into tasks
    # and handed on; only per-image scalars (label, probabilities, mask fraction) are kept.
    probs_rows, labels, mfs = [], [], []

    def task_stream(chunk=32):
        buf = []

        def flush():
            p = model.predict(np.stack([b[1] for b in buf]))
            for (i, im, mk, lab), row in zip(buf, p):
                probs_rows.append(row)
                labels.append(lab)
                mfs.append(float(np.asarray(mk).mean()))
                yield from image_tasks(i, im, mk, int(row.argmax()), methods, config)
            buf.clear()
        for item in ds.items():
            buf.append(item)
            if len(buf) >= chunk:
                yield from flush()
        if buf:
            yield from flush()

    results, failed = run_tasks(model, task_stream(), config, progress=progress, executor=executor, ledger=ledger,
                                total=task_count(len(ds), methods, config))
    probs = np.stack(probs_rows) if probs_rows else np.zeros((0, 0), np.float32)
    ds.labels, ds.mask_fractions = labels, mfs
    return aggregate(results, ds, probs.argmax(1), probs, methods, config, model=model,
                     seconds=time.perf_counter() - t0, failed=failed)


def task_entry(model, task, config):
    """``fn(model, task)`` for executors (use ``functools.partial(task_entry, config=...)``;
    module-level, hence picklable)."""
    return run_task(model, task, config)


def _encode(v):
    if isinstance(v, np.ndarray):
        return {"__nd__": v.tolist(), "dtype": str(v.dtype), "shape": list(v.shape)}
    if isinstance(v, dict):
        return {k: _encode(x) for k, x in v.items()}
    if isinstance(v, np.generic):
        return v.item()
    return v


def _decode(v):
    if isinstance(v, dict):
        if "__nd__" in v:
            return np.asarray(v["__nd__"], dtype=v["dtype"]).reshape(v["shape"])
        return {k: _decode(x) for k, x in v.items()}
    return v


def run_tasks(model, tasks, config, progress=None, executor=None, ledger=None, total=None):
    """Run tasks in a local loop, or through ``executor.map(fn, tasks)`` (an
    :mod:`xaudit.executors` executor: results in task order as ``TaskResult`` with ``ok``,
    ``value``, ``error``; a failed task is listed, the others are kept). ``ledger``: an
    :class:`xaudit.executors.Ledger`; tasks it holds as done are not run again (their
    results are stored in it), new results are added. -> (results, failed)."""
    import functools
    from collections import deque
    from dataclasses import replace
    results, failed = [], []
    if total is None and hasattr(tasks, "__len__"):
        total = len(tasks)
    if ledger is not None:
        def todo(ts):   # lazily: finished tasks are taken from the ledger, the rest run
            for t in ts:
                rec = ledger.done.get(t.key)
                if rec is not None and "result" in rec:
                    results.append(_decode(rec["result"]))
                else:
                    yield t
        tasks = todo(tasks)

    def ok(t, r):
        results.append(r)
        if ledger is not None:
            ledger.mark_done(t.key, result=_encode(r))

    def bad(t, err):
        err = str(err).splitlines()[0] if err else "failed"
        failed.append({"key": t.key, "error": err})
        if ledger is not None:
            ledger.mark_failed(t.key, err)

    if executor is not None:
        light = replace(config, method_params={})          # the tasks carry their own parameters
        sent = deque()                                      # results come back in task order

        def tracked(ts):
            for t in ts:
                sent.append(t)
                yield t
        it = executor.map(functools.partial(task_entry, config=light), tracked(tasks))
        it = progress(it, total=total) if progress else it
        for r in it:
            t = sent.popleft()
            if getattr(r, "ok", False):
                ok(t, r.value)
            else:
                bad(t, getattr(r, "error", None))
        return results, failed
    it = progress(tasks, total=total) if progress else tasks
    for t in it:
        ok(t, run_task(model, t, config))
    return results, failed
