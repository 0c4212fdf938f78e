"""Self-contained HTML reports of xaudit results.

``build_report(source, out)`` reads an ``--out`` folder of any command (or a folder
holding several of them, like the demo's) and writes ONE html file: every image is
embedded as a base64 ``data:`` URI, CSS is inline, nothing is fetched from anywhere.

What is recognised in each folder (recursively):

==================  =============================================================
``explanation.json`` an explanation card: overlay.png (+ other PNGs), method,
                     target, probability, model calls, method metrics, top-k
``stability.json``   stability metrics table, grid.png, std.png (+ a chart of the
                     summary and a heatmap of the first pairwise matrix)
``violations.json``  monitoring: violations table + a value-vs-threshold chart,
``statistics.json``  key statistics, report.png
``audit.json``       audit summary, audit.png, explanations below it
``demo.json``        the demo's story (printed lines, step timings)
``mlflow_run.json``  the MLflow run that produced the folder
==================  =============================================================

Any other PNG found is shown in an "other figures" gallery of its folder.
"""
from __future__ import annotations

import base64
import html
import io
import json
import math
from pathlib import Path

from .errors import XauditError

MAX_TABLE_ROWS = 60
MAX_GALLERY = 12      # loose PNGs shown per folder (inputs, references ...)
KNOWN_JSON = ("explanation.json", "stability.json", "statistics.json", "violations.json",
              "audit.json", "demo.json", "mlflow_run.json", "predictions.json", "run.json", "evaluation.json")

CSS = """
body{font-family:-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:0;color:#1d2430;background:#f5f6f8}
header{background:#1f3a5f;color:#fff;padding:18px 28px}
header h1{margin:0;font-size:22px} header p{margin:4px 0 0;opacity:.85;font-size:13px}
main{padding:12px 28px 40px}
section{background:#fff;border:1px solid #dde1e7;border-radius:8px;margin:16px 0;padding:12px 18px}
section h2{font-size:17px;margin:4px 0 10px;color:#1f3a5f}
section h3{font-size:14px;margin:12px 0 6px}
.path{font-family:monospace;font-size:12px;color:#667}
.cards{display:flex;flex-wrap:wrap;gap:12px}
.card{border:1px solid #e3e6ea;border-radius:6px;padding:8px;max-width:520px;background:#fcfcfd}
.card h4{margin:0 0 6px;font-size:13px}
img{max-width:100%;height:auto;display:block;margin:6px 0;border:1px solid #eee}
img.small{width:128px;image-rendering:pixelated}
table{border-collapse:collapse;font-size:12px;margin:6px 0}
th,td{border:1px solid #e1e4e8;padding:3px 7px;text-align:left;vertical-align:top}
th{background:#f0f2f5}
td.num{text-align:right;font-family:monospace}
.bad{color:#b00020;font-weight:600} .ok{color:#1b7f3b;font-weight:600}
pre{background:#f6f8fa;padding:8px;font-size:12px;overflow-x:auto;white-space:pre-wrap}
details summary{cursor:pointer;font-size:13px;color:#345}
nav a{color:#1f3a5f;margin-right:12px;font-size:13px}
"""


# ----------------------------------------------------------------------------- small helpers
def _esc(x) -> str:
    return html.escape(str(x), quote=True)


def _read_json(p: Path):
    try:
        return json.loads(p.read_text())
    except (OSError, ValueError):
        return None


def _img_tag(path_or_bytes, alt: str, mime: str = "image/png") -> str:
    data = path_or_bytes if isinstance(path_or_bytes, (bytes, bytearray)) else Path(path_or_bytes).read_bytes()
    b64 = base64.b64encode(data).decode("ascii")
    small = ""
    if data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 24 and int.from_bytes(data[16:20], "big") < 100:
        small = ' class="small"'   # tiny inputs (64x64): show them larger, pixelated
    return f'<img{small} alt="{_esc(alt)}" src="data:{mime};base64,{b64}">'


def _fmt(v) -> str:
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        if math.isnan(v) or math.isinf(v):
            return str(v)
        if v != 0 and (abs(v) < 1e-3 or abs(v) >= 1e6):
            return f"{v:.3e}"
        return f"{v:.4g}"
    if isinstance(v, (list, tuple)):
        s = json.dumps(v, default=str)
        return s if len(s) <= 120 else s[:117] + "..."
    return str(v)


def _scalars(d, prefix="", out=None, depth=0):
    """Flatten the scalar leaves of nested dicts (lists are skipped unless short scalars)."""
    out = {} if out is None else out
    if not isinstance(d, dict) or depth > 4:
        return out
    for k, v in d.items():
        key = f"{prefix}.{k}" if prefix else str(k)
        if isinstance(v, dict):
            _scalars(v, key, out, depth + 1)
        elif isinstance(v, (int, float, str, bool)) or v is None:
            if isinstance(v, str) and len(v) > 200:
                v = v[:197] + "..."
            out[key] = v
        elif isinstance(v, list) and len(v) <= 12 and all(isinstance(x, (int, float, str, bool)) for x in v):
            out[key] = v
    return out


def _kv_table(d: dict, title: str | None = None, limit: int = MAX_TABLE_ROWS) -> str:
    if not d:
        return ""
    rows = []
    for i, (k, v) in enumerate(d.items()):
        if i >= limit:
            rows.append(f"<tr><td colspan=2>… {len(d) - limit} more</td></tr>")
            break
        cls = ' class="num"' if isinstance(v, (int, float)) and not isinstance(v, bool) else ""
        rows.append(f"<tr><th>{_esc(k)}</th><td{cls}>{_esc(_fmt(v))}</td></tr>")
    head = f"<h3>{_esc(title)}</h3>" if title else ""
    return head + "<table>" + "".join(rows) + "</table>"


def _table(rows: list[dict], columns: list[str], limit: int = MAX_TABLE_ROWS) -> str:
    if not rows:
        return ""
    out = ["<table><tr>" + "".join(f"<th>{_esc(c)}</th>" for c in columns) + "</tr>"]
    for r in rows[:limit]:
        cells = []
        for c in columns:
            v = r.get(c, "")
            cls = ' class="num"' if isinstance(v, (int, float)) and not isinstance(v, bool) else ""
            cells.append(f"<td{cls}>{_esc(_fmt(v)) if v is not None else ''}</td>")
        out.append("<tr>" + "".join(cells) + "</tr>")
    if len(rows) > limit:
        out.append(f"<tr><td colspan={len(columns)}>… {len(rows) - limit} more rows</td></tr>")
    out.append("</table>")
    return "".join(out)


def _plt():
    import matplotlib
    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    return plt


def _fig_bytes(fig) -> bytes:
    plt = _plt()
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    return buf.getvalue()


# ----------------------------------------------------------------------------- charts
def violations_chart(violations: list[dict]) -> bytes | None:
    """Horizontal bars: each violation's value with its threshold marked."""
    # shares and rates (0..1) only: test statistics live on other scales (they stay in the table)
    rows = [v for v in violations if isinstance(v, dict) and isinstance(v.get("value"), (int, float))
            and 0 <= v["value"] <= 1 and (not isinstance(v.get("threshold"), (int, float)) or 0 <= v["threshold"] <= 1)
            and v.get("check") not in ("chi_square", "bbsd")]
    if not rows:
        return None
    rows = rows[:20]
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7.5, 0.45 * len(rows) + 1.4))
    labels = []
    for v in rows:
        lab = str(v.get("check", "check"))
        if v.get("class_label") not in (None, ""):
            lab += f" · {v.get('class_index')} '{v.get('class_label')}'"
        if v.get("window_start"):
            lab += f"\n{str(v['window_start'])[:16]}"
        labels.append(lab)
    y = list(range(len(rows)))
    vals = [float(v["value"]) for v in rows]
    ax.barh(y, vals, color="#c0392b", alpha=.8, label="observed value")
    for yi, v in zip(y, rows):
        t = v.get("threshold")
        if isinstance(t, (int, float)):
            ax.plot([t, t], [yi - .4, yi + .4], color="#1f3a5f", lw=2.5,
                    label="threshold" if yi == 0 else None)
    ax.set_yticks(y)
    ax.set_yticklabels(labels, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlim(0, 1)
    ax.set_xlabel("share / rate")
    ax.set_title("Monitoring violations: observed value vs threshold", fontsize=10)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    ax.grid(axis="x", alpha=.3)
    return _fig_bytes(fig)


def windows_chart(windows: list[dict], violations: list[dict]) -> bytes | None:
    """Share of the flagged classes (else the top class) per monitoring window."""
    ok = [w for w in windows if w.get("status") == "ok" and isinstance(w.get("class_counts"), list)]
    if len(ok) < 2:
        return None
    width = min(len(w["class_counts"]) for w in ok)
    classes = sorted({v.get("class_index") for v in violations
                      if isinstance(v.get("class_index"), int) and 0 <= v["class_index"] < width})
    if not classes:
        tot = [sum(x) for x in zip(*[w["class_counts"][:width] for w in ok])]
        classes = [max(range(len(tot)), key=tot.__getitem__)]
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7.5, 3.2))
    xs = [w.get("index", i) for i, w in enumerate(ok)]
    for c in classes[:5]:
        ys = [w["class_counts"][c] / max(1, w.get("total") or sum(w["class_counts"])) for w in ok]
        label = next((v.get("class_label") for v in violations if v.get("class_index") == c), None)
        ax.plot(xs, ys, marker="o", label=f"class {c}" + (f" '{label}'" if label else ""))
    thr = next((v.get("threshold") for v in violations if v.get("check") == "class_share"), None)
    if isinstance(thr, (int, float)):
        ax.axhline(thr, color="#b00020", ls="--", lw=1, label=f"threshold {thr}")
    ax.set_ylim(0, 1)
    ax.set_xlabel("window")
    ax.set_ylabel("share of predictions")
    ax.set_title("class share per monitoring window", fontsize=10)
    ax.grid(alpha=.3)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    return _fig_bytes(fig)


def _find_matrix(obj, depth=0):
    """First square numeric matrix (list of lists) found in a JSON object."""
    if depth > 5:
        return None, None
    if isinstance(obj, dict):
        for k, v in obj.items():
            if (isinstance(v, list) and len(v) >= 2 and all(isinstance(r, list) and len(r) == len(v) for r in v)
                    and all(isinstance(x, (int, float)) or x is None for r in v for x in r)):
                return k, v
        for v in obj.values():
            k, m = _find_matrix(v, depth + 1)
            if m is not None:
                return k, m
    elif isinstance(obj, list):
        for v in obj[:5]:
            k, m = _find_matrix(v, depth + 1)
            if m is not None:
                return k, m
    return None, None


def stability_charts(data: dict) -> list[tuple[str, bytes]]:
    out = []
    plt = _plt()
    import numpy as np
    name, mat = _find_matrix(data)
    seeds = data.get("seeds") if isinstance(data.get("seeds"), list) else None
    if mat is not None:
        m = np.array([[np.nan if x is None else x for x in r] for r in mat], dtype=float)
        fig, ax = plt.subplots(figsize=(4.6, 4.0))
        lo = -1.0 if np.isfinite(m).any() and np.nanmin(m) < 0 else 0.0
        im = ax.imshow(m, cmap="viridis", vmin=lo, vmax=1.0)
        ticks = seeds if seeds and len(seeds) == len(m) else list(range(len(m)))
        ax.set_xticks(range(len(m)))
        ax.set_xticklabels([str(t) for t in ticks], fontsize=7, rotation=90)
        ax.set_yticks(range(len(m)))
        ax.set_yticklabels([str(t) for t in ticks], fontsize=7)
        ax.set_xlabel("seed")
        ax.set_ylabel("seed")
        ax.set_title(f"pairwise {name}", fontsize=10)
        fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
        out.append((f"pairwise {name}", _fig_bytes(fig)))
    summ = data.get("summary") if isinstance(data.get("summary"), dict) else None
    if summ:
        flat = {k: v for k, v in _scalars(summ).items()
                if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
                and -1.0001 <= v <= 1.0001 and not any(x in k for x in ("seconds", "calls"))}
        flat = dict(list(flat.items())[:16])
        if flat:
            fig, ax = plt.subplots(figsize=(6.5, 0.32 * len(flat) + 1.2))
            keys = list(flat)
            ax.barh(range(len(keys)), [flat[k] for k in keys], color="#2e86c1")
            ax.set_yticks(range(len(keys)))
            ax.set_yticklabels(keys, fontsize=8)
            ax.invert_yaxis()
            ax.set_xlabel("agreement between seeds (1 = identical)")
            ax.axvline(0, color="#888", lw=.8)
            ax.set_title("stability summary across seeds", fontsize=10)
            ax.grid(axis="x", alpha=.3)
            out.append(("stability summary", _fig_bytes(fig)))
    return out


# ----------------------------------------------------------------------------- sections
def _explanation_card(d: Path, root: Path, data: dict) -> str:
    title = (f"{data.get('method', '?')}: class {data.get('target')} '{data.get('target_label', '')}' "
             f"(p={_fmt(data.get('target_prob'))})")
    parts = [f'<div class="card"><h4>{_esc(title)}</h4><div class="path">{_esc(_rel(d, root))}</div>']
    pngs = sorted(d.glob("*.png"), key=lambda p: (p.name != "overlay.png", p.name))
    for p in pngs:
        parts.append(_img_tag(p, f"{_rel(d, root)}/{p.name}"))
    info = {k: data.get(k) for k in ("seed", "model_calls", "seconds") if data.get(k) is not None}
    if data.get("image"):
        info["image"] = Path(str(data["image"])).name
    known = {"method", "target", "target_label", "target_prob", "params", "seed", "model_calls", "seconds",
             "image", "model", "top", "attribution_shape", "arrays"}
    extra = _scalars({k: v for k, v in data.items() if k not in known})
    main_keys = ("completeness_error", "r2", "score", "local_pred", "precision", "coverage", "convergence_delta",
                 "method_reason")
    info.update({k: v for k, v in extra.items() if k in main_keys})
    parts.append(_kv_table(info))
    more = {k: v for k, v in extra.items() if k not in main_keys}
    more.update({f"param.{k}": v for k, v in _scalars(data.get("params") or {}).items()})
    if more:
        parts.append("<details><summary>parameters and details</summary>" + _kv_table(more) + "</details>")
    top = data.get("top") or []
    if isinstance(top, list) and top and isinstance(top[0], dict):
        parts.append("<details><summary>top predictions</summary>" +
                     _table(top[:5], ["index", "label", "prob"]) + "</details>")
    parts.append("</div>")
    return "".join(parts)


def _rel(d: Path, root: Path) -> str:
    try:
        r = str(d.relative_to(root))
    except ValueError:
        r = str(d)
    return "." if r in ("", ".") else r


def _stability_section(d: Path, root: Path, data: dict) -> str:
    parts = ["<h3>Stability across seeds</h3>"]
    seeds = data.get("seeds")
    head = {k: data.get(k) for k in ("method", "vary", "target", "target_label") if data.get(k) is not None}
    if seeds:
        head["seeds"] = seeds
    parts.append(_kv_table(head))
    summ = data.get("summary") if isinstance(data.get("summary"), dict) else {
        k: v for k, v in data.items() if k not in ("seeds", "params", "per_seed", "images", "pairwise")}
    parts.append(_kv_table(_scalars(summ), "summary metrics"))
    for name in ("grid.png", "std.png"):
        if (d / name).is_file():
            parts.append(f"<h3>{_esc(name)}</h3>" + _img_tag(d / name, f"{_rel(d, root)}/{name}"))
    for title, png in stability_charts(data):
        parts.append(f"<h3>{_esc(title)}</h3>" + _img_tag(png, title))
    return "".join(parts)


def _monitor_section(d: Path, root: Path, stats, violations) -> str:
    parts = ["<h3>Monitoring</h3>"]
    if isinstance(violations, list):
        if violations:
            parts.append(f'<p class="bad">{len(violations)} violation(s)</p>')
            cols = ["check", "class_index", "class_label", "value", "threshold", "count", "total",
                    "window_start", "window_end", "p_value"]
            parts.append(_table([v for v in violations if isinstance(v, dict)], cols))
            png = violations_chart(violations)
            if png:
                parts.append(_img_tag(png, "violations chart"))
        else:
            parts.append('<p class="ok">no violation</p>')
    windows = stats.get("windows") if isinstance(stats, dict) else None
    if isinstance(windows, list) and windows and isinstance(windows[0], dict):
        rows = []
        for w in windows:
            row = {k: w.get(k) for k in ("index", "window_start", "window_end", "status", "total", "violations")}
            cs = (w.get("checks") or {}).get("class_share") or {}
            if cs:
                row["top class"] = f"{cs.get('class_index')} '{cs.get('class_label', '')}'"
                row["top share"] = cs.get("share", cs.get("value"))
            rows.append(row)
        parts.append("<h3>windows</h3>" + _table(rows, ["index", "window_start", "window_end", "status", "total",
                                                         "top class", "top share", "violations"]))
        png = windows_chart(windows, violations if isinstance(violations, list) else [])
        if png:
            parts.append(_img_tag(png, "class share per window"))
    if (d / "report.png").is_file():
        parts.append("<h3>report.png</h3>" + _img_tag(d / "report.png", f"{_rel(d, root)}/report.png"))
    if isinstance(stats, (dict, list)):
        flat = _scalars(stats) if isinstance(stats, dict) else _scalars({"windows": len(stats)})
        parts.append("<details><summary>statistics.json (scalars)</summary>" + _kv_table(flat, limit=120) +
                     "</details>")
    return "".join(parts)


def _audit_section(d: Path, root: Path, data) -> str:
    parts = ["<h3>Audit</h3>"]
    if isinstance(data, dict):
        parts.append(_kv_table(_scalars(data)))
    for p in sorted(d.glob("audit*.png")):
        parts.append(_img_tag(p, f"{_rel(d, root)}/{p.name}"))
    return "".join(parts)


def _demo_section(data: dict) -> str:
    parts = []
    steps = data.get("steps")
    if isinstance(steps, list) and steps and isinstance(steps[0], dict):
        parts.append(_table(steps, ["step", "status", "seconds", "summary"]))
    story = data.get("story")
    if isinstance(story, list) and story:
        parts.append("<pre>" + _esc("\n".join(str(s) for s in story)) + "</pre>")
    return "".join(parts)


_CONSUMED = {"overlay.png", "grid.png", "std.png", "report.png"}


def _folder_section(d: Path, root: Path, cards: list[str]) -> str | None:
    files = {p.name for p in d.iterdir() if p.is_file()}
    body = []
    used = set()
    if "demo.json" in files:
        data = _read_json(d / "demo.json")
        if isinstance(data, dict):
            body.append(_demo_section(data))
    if "stability.json" in files:
        data = _read_json(d / "stability.json")
        if isinstance(data, dict):
            body.append(_stability_section(d, root, data))
            used |= {"grid.png", "std.png"}
    if "violations.json" in files or "statistics.json" in files:
        body.append(_monitor_section(d, root, _read_json(d / "statistics.json") if "statistics.json" in files
                                     else None,
                                     _read_json(d / "violations.json") if "violations.json" in files else None))
        used.add("report.png")
    if "audit.json" in files:
        body.append(_audit_section(d, root, _read_json(d / "audit.json")))
        used |= {f for f in files if f.startswith("audit") and f.endswith(".png")}
    if "evaluation.json" in files:
        data = _read_json(d / "evaluation.json")
        if isinstance(data, dict) and "summary" in data:
            body.append(_evaluation_section(d, data))
            used.add("evaluation.png")
    if "explanation.json" in files and not _under_stability(d, root):
        data = _read_json(d / "explanation.json")
        if isinstance(data, dict):
            cards.append(_explanation_card(d, root, data))
            used |= {f for f in files if f.endswith(".png")}
    other = sorted(f for f in files if f.endswith(".png") and f not in used)
    if other and "explanation.json" not in files:
        shown = other[:MAX_GALLERY]
        more = (f"<p class='path'>… and {len(other) - len(shown)} more image(s) in {_esc(_rel(d, root))}</p>"
                if len(other) > len(shown) else "")
        body.append("<h3>figures</h3><div class='cards'>" + "".join(
            f"<div class='card'><h4>{_esc(f)}</h4>{_img_tag(d / f, f'{_rel(d, root)}/{f}')}</div>"
            for f in shown) + "</div>" + more)
    marker = _read_json(d / "mlflow_run.json") if "mlflow_run.json" in files else None
    if isinstance(marker, dict) and body:
        body.append(f"<p class='path'>MLflow run {_esc(marker.get('run_name', ''))} "
                    f"{_esc(marker.get('run_id', ''))} in {_esc(marker.get('tracking_uri', ''))}</p>")
    if not body:
        return None
    return "".join(body)


def _evaluation_section(d: Path, data: dict) -> str:
    """``xaudit evaluate`` output: the per-method table and evaluation.png."""
    from .evaluation import EvaluationReport
    try:
        rep = EvaluationReport(**{k: data.get(k) or ({} if k != "methods" else []) for k in
                                  ("dataset", "methods", "params", "summary", "random", "images", "curves", "model")})
        head = "".join(f"<th>{_esc(c)}</th>" for c in rep.header())
        rows = "".join("<tr><td>" + _esc(r[0]) + "</td>" + "".join(f"<td class='num'>{_esc(c)}</td>" for c in r[1:])
                       + "</tr>" for r in rep.rows())
        ds = rep.dataset
        html_ = (f"<h3>faithfulness evaluation</h3><p>dataset {_esc(ds.get('name'))}: {_esc(ds.get('n'))} images, "
                 f"{_esc(ds.get('n_correct'))} correctly classified</p><table><tr>{head}</tr>{rows}</table>")
    except (TypeError, KeyError, AttributeError, ValueError):
        html_ = "<h3>faithfulness evaluation</h3><p>(evaluation.json not readable)</p>"
    if (d / "evaluation.png").is_file():
        html_ += _img_tag(d / "evaluation.png", "evaluation.png")
    return html_


def _under_stability(d: Path, root: Path) -> bool:
    """Per-seed explanation folders of a stability sweep: its grid.png already shows them."""
    p = d.parent
    while True:
        if (p / "stability.json").is_file():
            return True
        if p == root or p == p.parent:
            return False
        p = p.parent


def _title_for(d: Path, root: Path) -> str:
    rel = _rel(d, root)
    if (d / "demo.json").is_file():
        return "demo summary" if rel == "." else f"demo summary — {rel}"
    return "results" if rel == "." else rel


def build_report(source, out, title: str | None = None, run_info: dict | None = None) -> Path:
    """Write a self-contained HTML report of the results under folder ``source`` to ``out``.

    ``run_info`` (optional): params/metrics/tags/children of an MLflow run (``xaudit report
    RUN_ID``) shown as tables."""
    root = Path(source)
    if not root.is_dir():
        raise XauditError(f"{source}: not a folder of xaudit results (expected an --out folder or a run id)")
    dirs = [root] + sorted((p for p in root.rglob("*") if p.is_dir() and not _skip_dir(p, root)),
                           key=lambda p: [s for s in p.relative_to(root).parts])
    sections = []
    pending_cards: list[str] = []
    pending_parent = None
    n_items = 0

    def flush_cards():
        nonlocal pending_cards, pending_parent
        if pending_cards:
            sections.append((f"Explanations — {_title_for(pending_parent, root)}",
                             "<div class='cards'>" + "".join(pending_cards) + "</div>"))
        pending_cards, pending_parent = [], None

    for d in dirs:
        cards: list[str] = []
        body = _folder_section(d, root, cards)
        if cards:
            parent = d.parent if d != root else d
            if pending_parent is not None and parent != pending_parent:
                flush_cards()
            pending_parent = parent
            pending_cards.extend(cards)
            n_items += len(cards)
        if body:
            flush_cards()
            sections.append((_title_for(d, root), body))
            n_items += 1
    flush_cards()
    if run_info:
        sections.insert(0, ("MLflow run", _run_info_html(run_info)))
    if not sections:
        raise XauditError(f"{source}: no xaudit results found (explanation.json, stability.json, "
                          f"statistics.json, violations.json, audit.json)")
    from . import __version__
    import datetime
    when = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    title = title or f"xaudit report — {root.resolve().name}"
    nav = "".join(f"<a href='#s{i}'>{_esc(t)}</a>" for i, (t, _) in enumerate(sections))
    body = "".join(f"<section id='s{i}'><h2>{_esc(t)}</h2>{b}</section>" for i, (t, b) in enumerate(sections))
    doc = (f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
           f"<meta name='viewport' content='width=device-width, initial-scale=1'>"
           f"<title>{_esc(title)}</title><style>{CSS}</style></head><body>"
           f"<header><h1>{_esc(title)}</h1><p>source: {_esc(str(source))} · generated {when} · "
           f"xaudit {__version__}</p></header><main><nav>{nav}</nav>{body}</main></body></html>")
    out = Path(out)
    if out.parent and not out.parent.exists():
        out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(doc, encoding="utf-8")
    return out


def _skip_dir(p: Path, root: Path) -> bool:
    parts = p.relative_to(root).parts
    return any(x.startswith(".") or x in ("mlruns", "mlartifacts", "__pycache__", "capture") for x in parts)


def _run_info_html(info: dict) -> str:
    head = {k: info.get(k) for k in ("run_name", "run_id", "status", "experiment_id", "tracking_uri")}
    parts = [_kv_table(head)]
    if info.get("params"):
        parts.append(_kv_table(dict(sorted(info["params"].items())), "params", limit=200))
    if info.get("metrics"):
        parts.append(_kv_table(dict(sorted(info["metrics"].items())), "metrics", limit=200))
    if info.get("tags"):
        parts.append(_kv_table(dict(sorted(info["tags"].items())), "tags"))
    ch = info.get("children") or []
    if ch:
        keys = sorted({k for c in ch for k in (c.get("metrics") or {})})[:8]
        rows = [{"run": c.get("run_name"), "status": c.get("status"), **(c.get("metrics") or {})} for c in ch]
        parts.append("<h3>nested runs</h3>" + _table(rows, ["run", "status"] + keys))
    return "".join(parts)
