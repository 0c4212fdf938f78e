"""``python -m benchmarks [--quick] [--only NAME,...] [--out DIR] [--repeats N]``

Runs every ``benchmarks/bench_*.py`` (or the ``--only`` ones), writes one JSON per
benchmark into ``--out`` (default ``benchmarks/results``) and renders ``RESULTS.md``
(``benchmarks/RESULTS.md`` for the default ``--out``, else ``<out>/RESULTS.md``) from all
result files found there. Exit status: 0 when every benchmark ran (a missed target is
*not* a failure: it is reported), 1 when a benchmark raised, 2 for bad arguments.
"""
from __future__ import annotations

import argparse
import datetime as dt
import importlib
import json
import math
import os
import sys
import time
import traceback
from pathlib import Path

HERE = Path(__file__).resolve().parent
if str(HERE.parent) not in sys.path:
    sys.path.insert(0, str(HERE.parent))

from benchmarks import _common as C  # noqa: E402

DEFAULT_OUT = HERE / "results"
DEFAULT_MD = HERE / "RESULTS.md"


def available() -> list[str]:
    return sorted(p.stem[len("bench_"):] for p in HERE.glob("bench_*.py"))


def resolve(only: str | None) -> list[str]:
    names = available()
    if not only:
        return names
    out = []
    for raw in only.split(","):
        n = raw.strip()
        if not n:
            continue
        n = n[:-3] if n.endswith(".py") else n
        n = n[len("bench_"):] if n.startswith("bench_") else n
        if n not in names:
            raise SystemExit(f"benchmarks: unknown benchmark {raw.strip()!r} (available: {', '.join(names)})")
        out.append(n)
    return out


def run_one(name: str, quick: bool, repeats: int) -> tuple[dict, bool]:
    """Import ``benchmarks.bench_<name>`` and call its ``run``. -> (record, ok)."""
    C.quiet_env()
    import torch
    threads = torch.get_num_threads()
    torch.set_num_threads(1)   # stable ratios on a shared machine; benchmarks may override
    saved_ort = os.environ.get("XAUDIT_ORT_THREADS")
    os.environ["XAUDIT_ORT_THREADS"] = "1"   # onnxruntime on one thread too: side by side with torch
    before = C.load_average()
    started = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    t0 = time.perf_counter()
    ok = True
    try:
        mod = importlib.import_module(f"benchmarks.bench_{name}")
        result = mod.run(quick=quick, repeats=repeats)
        if not isinstance(result, dict):
            raise TypeError(f"bench_{name}.run returned {type(result).__name__}, expected dict")
    except Exception as e:  # noqa: BLE001 - reported, and the exit status says so
        ok = False
        traceback.print_exc()
        result = {"error": f"{type(e).__name__}: {e}"}
    machine = C.machine_info()
    torch.set_num_threads(threads)
    if saved_ort is None:
        os.environ.pop("XAUDIT_ORT_THREADS", None)
    else:
        os.environ["XAUDIT_ORT_THREADS"] = saved_ort
    record = {"benchmark": name, "quick": bool(quick), "repeats": int(repeats), "started_utc": started,
              "wall_seconds": round(time.perf_counter() - t0, 2),
              "load_average_before": before, "load_average_after": C.load_average(),
              "machine": machine, "result": result}
    return record, ok


def _clean(o):
    """JSON-safe (NaN/inf -> None, numpy scalars -> Python)."""
    if isinstance(o, dict):
        return {str(k): _clean(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_clean(v) for v in o]
    if hasattr(o, "item") and not isinstance(o, (str, bytes)):
        try:
            o = o.item()
        except (ValueError, TypeError):
            return str(o)
    if isinstance(o, float) and not math.isfinite(o):
        return None
    return o


# ----------------------------------------------------------------------------- Markdown
def fmt(v) -> str:
    if v is None:
        return "–"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, int):
        return f"{v:,}".replace(",", " ")
    if isinstance(v, float):
        a = abs(v)
        if a == 0:
            return "0"
        if a >= 1e5:
            return f"{v:,.0f}".replace(",", " ")
        if a >= 100:
            return f"{v:.0f}"
        if a >= 10:
            return f"{v:.1f}"
        if a >= 0.01:
            return f"{v:.3f}" if a < 1 else f"{v:.2f}"
        return f"{v:.2e}"
    if isinstance(v, dict) and "median" in v:
        return fmt(v["median"])
    s = str(v)
    return s.replace("|", "\\|").replace("\n", " ")


def md_table(rows: list[dict]) -> list[str]:
    if not rows:
        return []
    cols: list[str] = []
    for r in rows:
        for k in r:
            if k not in cols:
                cols.append(k)
    out = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in rows:
        out.append("| " + " | ".join(fmt(r.get(c)) for c in cols) + " |")
    return out


def _flatten(d, prefix="", out=None, limit=40):
    out = {} if out is None else out
    for k, v in d.items():
        if len(out) >= limit:
            break
        key = f"{prefix}{k}"
        if isinstance(v, dict) and "median" in v:
            out[key] = v["median"]
        elif isinstance(v, dict):
            _flatten(v, key + ".", out, limit)
        elif isinstance(v, (int, float, str, bool)) or v is None:
            out[key] = v
    return out


def generic_view(result: dict) -> tuple[list[dict], list[dict]]:
    """Table + targets for a result dict that does not use the documented keys
    (e.g. a benchmark written without them): scalar leaves, ``*target_met*`` keys."""
    flat = _flatten({k: v for k, v in result.items() if k not in ("notes",)})
    table = [{"metric": k, "value": v} for k, v in flat.items() if not k.endswith("target_met")]
    targets = [{"name": k, "case": "", "value": None, "op": "", "threshold": None,
                "met": bool(v), "status": "met" if v else "not met", "why": ""}
               for k, v in flat.items() if k.endswith("target_met") and isinstance(v, bool)]
    return table, targets


def render(records: list[dict], title_note: str = "") -> str:
    records = sorted(records, key=lambda r: r.get("benchmark", ""))
    lines = ["# xaudit benchmark results", "",
             "Generated by `python -m benchmarks` (do not edit by hand; re-run to refresh). Every figure is a",
             "ratio measured side by side in the same run, median of the repetitions (individual values are in",
             "`benchmarks/results/bench_<name>.json`). Targets are reported as measured: a missed target says",
             "*not met* and why.", ""]
    if title_note:
        lines += [title_note, ""]
    if records:
        m = records[0].get("machine", {})
        v = m.get("versions", {})
        commits = sorted({(r.get("machine", {}).get("git") or {}).get("commit") or "?" for r in records})
        lines += ["## Machine", "",
                  f"- CPU: {m.get('cpu')} — {m.get('cores')} cores ({m.get('cores_usable')} usable), "
                  f"{m.get('memory_gb')} GB",
                  "- " + ", ".join(f"{k} {val}" for k, val in v.items() if val),
                  f"- git commit(s): {', '.join(c[:10] for c in commits)}",
                  "- the machine is shared with other sessions: absolute seconds are noisy, the side-by-side ratios "
                  "are what count (load average = 1/5/15 min, before → after each benchmark):", ""]
        lines += md_table([{"benchmark": r["benchmark"], "mode": "quick" if r.get("quick") else "full",
                            "repeats": r.get("repeats"), "started (UTC)": r.get("started_utc"),
                            "wall s": r.get("wall_seconds"),
                            "threads torch / onnxruntime": f"{r.get('machine', {}).get('torch_threads', '-')} / "
                                                           f"{r.get('machine', {}).get('ort_threads', '-')}",
                            "load before": " / ".join(str(x) for x in r.get("load_average_before") or []),
                            "load after": " / ".join(str(x) for x in r.get("load_average_after") or []),
                            "status": "error" if "error" in r.get("result", {}) else
                            ("skipped" if r.get("result", {}).get("skipped") else "ran")}
                           for r in records])
        lines.append("")
    all_targets = []
    loads = {}
    for r in records:
        res = r.get("result", {})
        tg = res.get("targets")
        if tg is None:
            tg = generic_view(res)[1]
        for t in tg:
            all_targets.append((r["benchmark"], t))
        la, lb = r.get("load_average_before") or [], r.get("load_average_after") or []
        if la and lb:
            loads[r["benchmark"]] = (f"1-min load average {la[0]} → {lb[0]} on "
                                     f"{(r.get('machine') or {}).get('cores', '?')} cores during this benchmark")
    lines += ["## Targets", ""]
    if all_targets:
        lines += md_table([{"benchmark": b, "target": t.get("name"), "case": t.get("case"),
                            "measured": (fmt(t.get("value")) + (f" {t['unit']}" if t.get("unit") else ""))
                            if t.get("value") is not None else "–",
                            "required": f"{t.get('op', '')} {fmt(t.get('threshold'))}".strip(),
                            "status": ("**met**" if t.get("met") else "**not met**") if t.get("met") is not None
                            else t.get("status")} for b, t in all_targets])
        why = [(b, t) for b, t in all_targets if t.get("met") is False and t.get("why")]
        if why:
            lines += ["", "Why the targets marked *not met* are missed:", ""]
            lines += [f"- **{t['name']}** ({t.get('case') or b}): {t['why']}"
                      + (f" ({loads[b]})" if b in loads else "") for b, t in why]
    else:
        lines.append("(no targets)")
    lines.append("")
    for r in records:
        res = r.get("result", {})
        lines += [f"## {r['benchmark']}" + (" (quick mode)" if r.get("quick") else ""), ""]
        if res.get("description"):
            lines += [res["description"], ""]
        if "error" in res:
            lines += [f"**error**: `{fmt(res['error'])}`", ""]
            continue
        if res.get("skipped"):
            lines += [f"skipped: {res['skipped']}", ""]
        table = res.get("table")
        if table is None:
            table = [] if res.get("tables") else generic_view(res)[0]
        lines += md_table(table)
        if table:
            lines.append("")
        for extra in res.get("tables", []):     # optional further tables: {"title", "rows"}
            lines += [f"**{extra.get('title', '')}**", ""] + md_table(extra.get("rows", [])) + [""]
        for n in res.get("notes", []):
            lines.append(f"- {n}")
        if res.get("notes"):
            lines.append("")
    return "\n".join(lines).rstrip() + "\n"


def load_records(out: Path) -> list[dict]:
    recs = []
    for p in sorted(out.glob("bench_*.json")):
        try:
            d = json.loads(p.read_text())
        except ValueError:
            continue
        if isinstance(d, dict) and "benchmark" in d and "result" in d:
            recs.append(d)
    return recs


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.split("\n\n")[1])
    ap.add_argument("--quick", action="store_true", help="small sizes (CI: < 5 min); timings not asserted")
    ap.add_argument("--only", default=None, help=f"comma-separated subset of: {', '.join(available())}")
    ap.add_argument("--out", default=None, help="result folder (default benchmarks/results; RESULTS.md goes "
                                                "to benchmarks/RESULTS.md then, else into this folder)")
    ap.add_argument("--repeats", type=int, default=3, help="repetitions per measurement (median reported; >= 3)")
    ap.add_argument("--list", action="store_true", help="list the benchmarks and exit")
    a = ap.parse_args(argv)
    if a.list:
        print("\n".join(available()))
        return 0
    if a.repeats < 1:
        print("benchmarks: --repeats must be >= 1", file=sys.stderr)
        return 2
    try:
        names = resolve(a.only)
    except SystemExit as e:
        print(e, file=sys.stderr)
        return 2
    out = Path(a.out) if a.out else DEFAULT_OUT
    md = DEFAULT_MD if a.out is None else out / "RESULTS.md"
    out.mkdir(parents=True, exist_ok=True)
    failed = []
    t_all = time.perf_counter()
    for name in names:
        C.log(f"== bench_{name} ({'quick' if a.quick else 'full'}, repeats {a.repeats})")
        rec, ok = run_one(name, a.quick, a.repeats)
        rec = _clean(rec)
        (out / f"bench_{name}.json").write_text(json.dumps(rec, indent=1))
        if not ok:
            failed.append(name)
        res = rec["result"]
        for t in res.get("targets", []) or generic_view(res)[1]:
            C.log(f"   {t.get('name')} [{t.get('case')}]: {fmt(t.get('value'))} "
                  f"({t.get('op', '')} {fmt(t.get('threshold'))}) -> {t.get('status')}")
        C.log(f"   {'FAILED: ' + res['error'] if not ok else 'done'} in {rec['wall_seconds']} s")
    md.write_text(render(load_records(out)))
    C.log(f"wrote {out}/bench_*.json and {md} ({time.perf_counter() - t_all:.0f} s)")
    if failed:
        C.log(f"benchmarks that raised: {', '.join(failed)}")
        return 1
    return 0


def script_main(name: str, argv=None) -> None:
    """``python benchmarks/bench_<name>.py [--quick] [--repeats N] [--out DIR]``: the runner
    restricted to one benchmark."""
    argv = list(sys.argv[1:] if argv is None else argv)
    raise SystemExit(main(["--only", name, *argv]))


if __name__ == "__main__":
    raise SystemExit(main())
