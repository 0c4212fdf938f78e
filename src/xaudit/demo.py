"""The ``xaudit demo`` story: a list of steps, each a function, run offline on the shipped
models and tracked in MLflow.

Steps (``--steps`` picks some, ``--quick`` makes each smaller):

1. ``predict``   generate sign images, predict through TorchScript, ONNX and the Custom
                 Vision bundle, check the formats agree;
2. ``explain``   FullGrad (gradients recovered from the export) and black-box LIME on signs,
                 with the share of evidence inside the ground-truth sign mask;
3. ``stability`` a 9-seed LIME sweep on the biased pole model: how stable, and how much of
                 the positive evidence lies on the background rather than the pole;
4. ``monitor``   serve with capture, send clean then adversarial traffic, monitor flags
                 class 14 ('Stop'), audit explains the inputs behind the alarm.

A step whose building block is not available (model file missing, module not built) is
skipped with a message naming what it needs; the demo goes on with the next step. Steps
run the real CLI commands in-process where those exist, so ``explain``, ``stability``,
``monitor`` and ``audit`` each log their own MLflow run, nested under the ``demo`` run.
"""
from __future__ import annotations

import importlib
import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

SEEDS = [1, 11, 21, 31, 41, 51, 61, 71, 81]


class SkipStep(Exception):
    """A building block of the step is not available (message says which)."""


@dataclass
class Step:
    name: str
    title: str
    func: Callable
    needs: tuple = ()       # "module" or "module:attr" or "model:<file name>"


@dataclass
class StepResult:
    name: str
    status: str = "done"           # done | skipped | failed
    seconds: float = 0.0
    summary: str = ""
    lines: list = field(default_factory=list)
    metrics: dict = field(default_factory=dict)


@dataclass
class Context:
    out: Path
    args: object
    quick: bool = False
    echo: Callable = print
    run: object = None             # the demo's tracking run
    state: dict = field(default_factory=dict)

    def say(self, line: str = ""):
        self.state.setdefault("story", []).append(line)
        self.echo(line)

    def cli(self, argv: list) -> int:
        """Run an xaudit command in-process (its MLflow run nests under the demo run)."""
        import contextlib
        import io
        from .cli import main
        g = ["-q"]
        if getattr(self.args, "no_track", False):
            g.append("--no-track")
        if getattr(self.args, "debug", False):
            g.append("--debug")
        err = io.StringIO()
        # the command's own output (paths, JSON, summaries) is replaced by the demo's story;
        # its error message is shown when it fails
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err):
            rc = main(argv + g)
        if rc not in (0, 3):
            for line in err.getvalue().strip().splitlines()[-3:]:
                self.echo(f"  {line}")
        return rc


# ----------------------------------------------------------------------------- availability
def missing(needs) -> str | None:
    """First unavailable building block, as a message, or None."""
    for need in needs:
        if need.startswith("model:"):
            name = need[len("model:"):]
            try:
                from .data import model_path
                p = Path(model_path(name))
                if not p.exists():
                    return f"shipped model {name} (not built yet)"
            except Exception:  # noqa: BLE001 - data package not ready, any failure means absent
                return f"shipped model {name} (xaudit.data.model_path not available yet)"
            continue
        mod, _, attr = need.partition(":")
        try:
            m = importlib.import_module(mod)
        except Exception:  # noqa: BLE001
            return f"{mod} (not available yet)"
        if attr and not hasattr(m, attr):
            return f"{mod}.{attr} (not available yet)"
    return None


def _model(name) -> str:
    from .data import model_path
    return str(model_path(name))


def _save_png(arr, path):
    from PIL import Image
    Image.fromarray(np.asarray(arr, dtype=np.uint8)).save(path)
    return str(path)


def _label(labels, i):
    try:
        return labels[int(i)]
    except Exception:  # noqa: BLE001
        return str(i)


def evidence_share(attribution, mask) -> float:
    """Share of the positive attribution mass that falls inside ``mask``."""
    a = np.clip(np.asarray(attribution, np.float64), 0, None)
    m = np.asarray(mask, bool)
    if m.shape != a.shape:
        from skimage.transform import resize
        m = resize(m.astype(float), a.shape, order=0, anti_aliasing=False) > 0.5
    tot = a.sum()
    return float(a[m].sum() / tot) if tot > 0 else float("nan")


def _explanations_under(d: Path) -> list[Path]:
    return sorted(p.parent for p in Path(d).rglob("explanation.json"))


def _has_command(name: str) -> bool:
    try:
        importlib.import_module(f"xaudit.cli.{name}")
        return True
    except ModuleNotFoundError:
        return False


# ----------------------------------------------------------------------------- step 1: predict
def step_predict(ctx: Context) -> StepResult:
    from .data.generate import GTSRB_LABELS, make_signs
    from .loader import load_model
    res = StepResult("predict")
    n = 4 if ctx.quick else 8
    d = ctx.out / "1-predict"
    (d / "images").mkdir(parents=True, exist_ok=True)
    images, labels, masks = make_signs(n, seed=7)
    # make sure the story includes a Stop sign (class 14)
    if 14 not in set(int(x) for x in labels):
        try:
            extra, el, em = _signs_of_class(14, 1, seed=7)
        except SkipStep:
            extra = None
    if 14 not in set(int(x) for x in labels) and extra is not None:
        images, labels, masks = (np.concatenate([extra, images[:-1]]), np.concatenate([el, labels[:-1]]),
                                 np.concatenate([em, masks[:-1]]))
    paths = [_save_png(im, d / "images" / f"sign{i}_{GTSRB_LABELS[int(y)].split(' (')[0].replace(' ', '_')}.png")
             for i, (im, y) in enumerate(zip(images, labels))]
    ctx.state.update(sign_images=paths, sign_labels=[int(x) for x in labels], sign_masks=masks)
    ctx.say(f"  Generated {n} synthetic traffic signs (seed 7) with ground-truth masks: "
            + ", ".join(f"'{GTSRB_LABELS[int(y)]}'" for y in labels[:4]) + (" ..." if n > 4 else ""))
    formats = [("TorchScript", "signs.pt"), ("ONNX", "signs.onnx"), ("Custom Vision zip", "signs_cv.zip")]
    probs, table = {}, []
    for fmt, fname in formats:
        why = missing([f"model:{fname}"])
        if why:
            ctx.say(f"  {fmt:<18} skipped: needs {why}")
            continue
        m = load_model(_model(fname))
        t0 = time.perf_counter()
        p = m.predict(m.preprocess_batch(paths))
        dt = time.perf_counter() - t0
        probs[fmt] = p
        top = p.argmax(1)
        acc = float((top == np.asarray(labels)).mean())
        table.append({"format": fmt, "file": fname, "accuracy": acc, "seconds": dt,
                      "top1": [int(x) for x in top]})
        ctx.say(f"  {fmt:<18} {m.format:<14} top-1 accuracy {acc:5.1%}  ({dt * 1000:.0f} ms for {n} images)")
        res.metrics[f"predict.accuracy.{fname}"] = acc
    if not probs:
        raise SkipStep("no shipped sign model available yet")
    ref = next(iter(probs.values()))
    max_diff = max(float(np.abs(p - ref).max()) for p in probs.values())
    agree = all((p.argmax(1) == ref.argmax(1)).all() for p in probs.values())
    res.metrics.update({"predict.max_abs_prob_diff": max_diff, "predict.top1_identical": float(agree),
                        "predict.formats": len(probs)})
    ctx.say(f"  {len(probs)} formats: identical top-1 = {'yes' if agree else 'NO'}, "
            f"max |Δp| = {max_diff:.1e}")
    (d / "predictions.json").write_text(json.dumps({"images": paths, "labels": [int(x) for x in labels],
                                                   "formats": table, "max_abs_prob_diff": max_diff,
                                                   "top1_identical": agree}, indent=2))
    res.summary = f"{len(probs)} formats agree: {'yes' if agree else 'no'} (max |Δp| {max_diff:.1e})"
    return res


def _signs_of_class(cls, k, seed):
    from .data.generate import make_signs
    imgs, labs, msks = [], [], []
    s = seed
    while len(imgs) < k and s < seed + 50:
        im, lb, mk = make_signs(64, seed=1000 + s)
        sel = np.flatnonzero(lb == cls)
        for j in sel[:k - len(imgs)]:
            imgs.append(im[j])
            labs.append(lb[j])
            msks.append(mk[j])
        s += 1
    if not imgs:
        raise SkipStep(f"could not generate a sign of class {cls}")
    return np.stack(imgs), np.asarray(labs), np.stack(msks)


def _ensure_signs(ctx, n=None):
    if "sign_images" not in ctx.state:
        from .data.generate import make_signs
        d = ctx.out / "1-predict" / "images"
        d.mkdir(parents=True, exist_ok=True)
        images, labels, masks = make_signs(n or 4, seed=7)
        ctx.state.update(sign_images=[_save_png(im, d / f"sign{i}.png") for i, im in enumerate(images)],
                         sign_labels=[int(x) for x in labels], sign_masks=masks)
    return ctx.state["sign_images"], ctx.state["sign_labels"], ctx.state["sign_masks"]


# ----------------------------------------------------------------------------- step 2: explain
def _explain(ctx: Context, model_file: str, images: list, method: str, out: Path, extra=()) -> list[Path]:
    """``xaudit explain`` in-process (its own MLflow run); API fallback if the command is absent."""
    if _has_command("explain"):
        rc = ctx.cli(["explain", model_file, *images, "--method", method, "--out", str(out), *extra])
        if rc != 0:
            raise RuntimeError(f"xaudit explain --method {method} exited with {rc}")
    else:
        from . import tracking
        from .explainers import get_explainer
        from .loader import load_model
        m = load_model(model_file)
        ex = get_explainer(method)
        with tracking.command_run(ctx.args, "explain", model=m, params={"method": method}) as tr:
            for i, img in enumerate(images):
                e = ex.explain(m, img)
                sub = out / Path(img).stem if len(images) > 1 else out
                e.save(sub)
                tracking.log_explanation(tr, e, step=i)
            tr.log_artifacts(out)
    return _explanations_under(out)


def step_explain(ctx: Context) -> StepResult:
    from .explainers.base import Explanation
    from .loader import load_model
    res = StepResult("explain")
    paths, labels, masks = _ensure_signs(ctx)
    k = 2 if ctx.quick else 3
    # explain the first k images, Stop signs first
    order = sorted(range(len(paths)), key=lambda i: labels[i] != 14)[:k]
    imgs = [paths[i] for i in order]
    d = ctx.out / "2-explain"
    # FullGrad on the ONNX export when its gradients are reachable (the headline), else TorchScript
    fg_model = None
    for fname in ("signs.onnx", "signs.pt"):
        if missing([f"model:{fname}"]) is None:
            m = load_model(_model(fname))
            if m.gradients_reachable:
                fg_model = fname
                break
            ctx.say(f"  {fname}: gradients not reachable ({m.gradients_reason})")
    runs = []
    if fg_model and missing(["xaudit.explainers.fullgrad"]) is None:
        runs.append(("fullgrad", fg_model, []))
    else:
        ctx.say("  FullGrad skipped: needs xaudit.explainers.fullgrad and a sign model with gradients")
    lime_model = "signs_cv.zip" if missing(["model:signs_cv.zip"]) is None else fg_model
    if lime_model and missing(["xaudit.explainers.lime"]) is None:
        runs.append(("lime", lime_model, ["--seed", "1"]))
    else:
        ctx.say("  LIME skipped: needs xaudit.explainers.lime")
    if not runs:
        raise SkipStep("no explainer available yet")
    for method, fname, extra in runs:
        dirs = _explain(ctx, _model(fname), imgs, method, d / method, extra)
        shares = []
        for sub in dirs:
            e = Explanation.load(sub)
            src = e.source_image or ""
            idx = next((i for i in order if Path(paths[i]).name == Path(src).name), None)
            share = evidence_share(e.attribution, masks[idx]) if idx is not None else float("nan")
            shares.append(share)
            ctx.say(f"  {method:<8} on {fname:<13} {Path(src).name:<28} -> '{e.target_label}' "
                    f"p={e.target_prob:.2f}, {share:4.0%} of positive evidence on the sign"
                    + (f", completeness error {e.meta['completeness_error']:.1e}"
                       if "completeness_error" in e.meta else ""))
        mean = float(np.nanmean(shares)) if shares else float("nan")
        res.metrics[f"explain.{method}.evidence_on_sign"] = mean
    res.summary = ", ".join(f"{k.split('.')[1]}: {v:.0%} evidence on the sign" for k, v in res.metrics.items())
    return res


# ----------------------------------------------------------------------------- step 3: stability
def step_stability(ctx: Context) -> StepResult:
    from .data.generate import POLE_LABELS, make_poles
    from .loader import load_model
    from .stability import stability_sweep
    res = StepResult("stability")
    d = ctx.out / "3-stability"
    (d / "images").mkdir(parents=True, exist_ok=True)
    images, labels, masks = make_poles(2, seed=5, biased=True)
    img_path = _save_png(images[0], d / "images" / f"pole_{POLE_LABELS[int(labels[0])]}.png")
    mask = masks[0]
    seeds = SEEDS
    models = ["poles_biased.onnx"] + ([] if ctx.quick else ["poles_honest.onnx"])
    ctx.say(f"  A '{POLE_LABELS[int(labels[0])]}' pole photo; LIME with {len(seeds)} seeds "
            f"({', '.join(map(str, seeds))}), segmentation and sampling both seeded:")
    for fname in models:
        if missing([f"model:{fname}"]):
            ctx.say(f"  {fname} skipped: not built yet")
            continue
        name = fname.split(".")[0]
        sub = d / name
        shares = []
        if _has_command("stability"):
            rc = ctx.cli(["stability", _model(fname), img_path, "--method", "lime",
                          "--seeds", ",".join(map(str, seeds)), "--out", str(sub)])
            if rc != 0:
                raise RuntimeError(f"xaudit stability exited with {rc}")
            shares = _stability_shares(sub, mask)
            summary = _read_json(sub / "stability.json") or {}
        else:
            from . import tracking
            m = load_model(_model(fname))
            with tracking.command_run(ctx.args, "stability", model=m, params={"method": "lime"}) as tr:
                rep = stability_sweep(m, [img_path], "lime", seeds)
                summary = rep.to_dict() if hasattr(rep, "to_dict") else {}
                sub.mkdir(parents=True, exist_ok=True)
                if hasattr(rep, "save"):
                    rep.save(sub)
                exps = _report_explanations(rep)
                shares = [evidence_share(e.attribution, mask) for e in exps]
                tracking.log_stability(tr, summary, out_dir=sub, seeds=seeds, per_seed=exps)
        s = summary.get("summary", summary) if isinstance(summary, dict) else {}
        jac = _first_number(s, ("topk_jaccard", "topk_jaccard_mean", "jaccard_mean"))
        bg = 1 - float(np.nanmean(shares)) if shares else float("nan")
        res.metrics[f"stability.{name}.background_share"] = bg
        if jac is not None:
            res.metrics[f"stability.{name}.topk_jaccard_mean"] = jac
        ctx.say(f"  {fname:<18} background share of positive evidence {bg:5.1%} (mean over seeds)"
                + (f", top-5 superpixel Jaccard between seeds {jac:.2f}" if jac is not None else ""))
    if not res.metrics:
        raise SkipStep("no pole model available yet")
    b = res.metrics.get("stability.poles_biased.background_share")
    h = res.metrics.get("stability.poles_honest.background_share")
    if b is not None and h is not None:
        ctx.say(f"  -> the biased model looks at the background ({b:.0%} vs {h:.0%} for the honest one): "
                f"a clever Hans")
    elif b is not None:
        ctx.say(f"  -> {b:.0%} of the biased model's evidence lies on the background, not on the pole")
    res.summary = ", ".join(f"{k.split('.')[1]} background {v:.0%}" for k, v in res.metrics.items()
                            if k.endswith("background_share"))
    return res


def _read_json(p: Path):
    try:
        return json.loads(Path(p).read_text())
    except (OSError, ValueError):
        return None


def _first_number(d, keys):
    if not isinstance(d, dict):
        return None
    for k in keys:
        v = d.get(k)
        if isinstance(v, (int, float)):
            return float(v)
        if isinstance(v, dict):
            for kk in ("mean", "value"):
                if isinstance(v.get(kk), (int, float)):
                    return float(v[kk])
    return None


def _report_explanations(rep) -> list:
    for attr in ("explanations", "per_seed"):
        v = getattr(rep, attr, None)
        if isinstance(v, list) and v:
            first = v[0]
            if isinstance(first, list):   # per image, per seed
                return first
            return v
    return []


def _stability_shares(sub: Path, mask) -> list:
    """Background shares from per-seed maps the stability command left (npy files)."""
    shares = []
    for f in sorted(sub.rglob("*.npy")):
        n = f.name
        if ("attribution" in n or "seed" in n) and "std" not in n:
            a = np.load(f)
            if a.ndim == 2:
                shares.append(evidence_share(a, mask))
            elif a.ndim == 3:
                shares.extend(evidence_share(x, mask) for x in a)
    return shares


# ----------------------------------------------------------------------------- step 4: monitor
def step_monitor(ctx: Context) -> StepResult:
    """The monitoring engineer's adversarial drift scenario (xaudit.monitoring.scenario),
    with the monitor and audit commands tracked (nested under the demo run)."""
    from .data.generate import make_signs
    from .loader import load_model
    from .monitoring.scenario import run_scenario
    res = StepResult("monitor")
    d = ctx.out / "4-monitor"
    source = None
    for fname in ("signs.onnx", "signs.pt"):
        if missing([f"model:{fname}"]) is None:
            m = load_model(_model(fname))
            if m.gradients_reachable:
                source = _model(fname)
                break
            ctx.say(f"  {fname}: gradients not reachable ({m.gradients_reason})")
    if source is None:
        raise SkipStep("no shipped sign model with reachable gradients (needed by the attack)")
    n_clean, n_mixed = (40, 80) if ctx.quick else (100, 200)
    images, labels, masks = make_signs(n_clean + n_mixed, seed=11)
    reference, _, _ = make_signs(100 if ctx.quick else 200, seed=3)
    ctx.say(f"  Serving {Path(source).name} (xaudit serve, 50 % capture); {n_clean} clean requests, then {n_mixed} "
            f"mixed ones, 80 % pushed to class 14 'Stop' by targeted DeepFool:")
    r = run_scenario(source, d, images, labels, masks, reference, target=14, n_clean=n_clean, n_mixed=n_mixed,
                     explain=3 if ctx.quick else 5, say=lambda line: ctx.say(f"  {line}"), track=True)
    mon = r.get("monitor", {})
    adv, clean = mon.get("adversarial", {}), mon.get("clean", {})
    ms = r.get("mask_share", {})
    res.metrics.update({
        "monitor.attack_success_rate": r.get("attack", {}).get("success_rate"),
        "monitor.class14_flagged_adversarial": float(bool(adv.get("target_flagged"))),
        "monitor.class14_flagged_clean": float(bool(clean.get("target_flagged"))),
        "monitor.class14_count_adversarial": adv.get("target_count"),
        "monitor.total_adversarial": adv.get("total"),
        "audit.mask_share_clean": (ms.get("clean") or {}).get("mean"),
        "audit.mask_share_adversarial": (ms.get("adversarial") or {}).get("mean"),
    })
    res.metrics = {k: v for k, v in res.metrics.items() if isinstance(v, (int, float))}
    if adv.get("target_flagged") and not clean.get("target_flagged"):
        ctx.say(f"  -> monitor flags class 14 in the adversarial window only ({adv.get('target_count')} of "
                f"{adv.get('total')} captured predictions); audit: {d / 'audit' / 'audit.png'}")
    res.summary = (f"class 14 flagged: adversarial window {'yes' if adv.get('target_flagged') else 'NO'}, "
                   f"clean window {'YES' if clean.get('target_flagged') else 'no'}")
    if not r.get("pass"):
        raise RuntimeError(res.summary)
    return res


STEPS = [
    Step("predict", "1. Predict through every format", step_predict,
         ("xaudit.data.generate:make_signs", "xaudit.loader:load_model")),
    Step("explain", "2. FullGrad and LIME on signs", step_explain,
         ("xaudit.data.generate:make_signs", "xaudit.loader:load_model", "xaudit.explainers")),
    Step("stability", "3. 9-seed LIME stability on the biased pole model", step_stability,
         ("xaudit.data.generate:make_poles", "xaudit.loader:load_model", "xaudit.stability:stability_sweep")),
    Step("monitor", "4. Serve, capture, adversarial traffic, monitor, audit", step_monitor,
         ("xaudit.data.generate:make_signs", "xaudit.loader:load_model", "xaudit.monitoring.scenario:run_scenario",
          "xaudit.cli.audit", "model:signs.onnx")),
]
STEP_NAMES = [s.name for s in STEPS]


def select_steps(spec: str | None) -> list[Step]:
    from .errors import XauditError
    if not spec:
        return list(STEPS)
    names = [x.strip().lower() for x in spec.split(",") if x.strip()]
    by = {s.name: s for s in STEPS}
    for i, s in enumerate(STEPS, 1):
        by[str(i)] = s
    bad = [n for n in names if n not in by]
    if bad:
        raise XauditError(f"--steps: unknown step {bad[0]!r}; choose from {', '.join(STEP_NAMES)} (or 1-{len(STEPS)})")
    chosen = {by[n].name for n in names}
    return [s for s in STEPS if s.name in chosen]


def run_demo(ctx: Context, steps: list[Step]) -> list[StepResult]:
    """Run the steps in order; a failing step is reported and the next one still runs."""
    results = []
    for step in steps:
        ctx.say("")
        ctx.say(step.title)
        t0 = time.perf_counter()
        why = missing(step.needs)
        if why:
            r = StepResult(step.name, "skipped", summary=f"needs {why}")
            ctx.say(f"  skipped: needs {why}")
        else:
            try:
                r = step.func(ctx)
            except SkipStep as e:
                r = StepResult(step.name, "skipped", summary=str(e))
                ctx.say(f"  skipped: {e}")
            except KeyboardInterrupt:
                raise
            except Exception as e:  # noqa: BLE001 - one failing step must not hide the others
                if getattr(ctx.args, "debug", False):
                    import traceback
                    traceback.print_exc()
                msg = str(e).strip().splitlines()[0] if str(e).strip() else ""
                r = StepResult(step.name, "failed", summary=f"{type(e).__name__}: {msg}")
                ctx.say(f"  FAILED: {type(e).__name__}: {msg}")
        r.seconds = time.perf_counter() - t0
        results.append(r)
        if ctx.run is not None:
            ctx.run.log_metrics({**r.metrics, f"seconds.{step.name}": r.seconds})
    return results


def write_summary(ctx: Context, results: list[StepResult], seconds: float) -> Path:
    p = ctx.out / "demo.json"
    p.write_text(json.dumps({
        "seconds": seconds, "quick": ctx.quick,
        "steps": [{"step": r.name, "status": r.status, "seconds": round(r.seconds, 2), "summary": r.summary,
                   "metrics": r.metrics} for r in results],
        "story": ctx.state.get("story", []),
    }, indent=2, default=float))
    return p


def echo_stderr(line=""):
    print(line, file=sys.stderr, flush=True)
