"""report.html: one self-contained page (inline CSS and SVG, no network)."""

from __future__ import annotations

import html
import io

from recsys.reporting import pyplot


def _svg(fig) -> str:
    buf = io.StringIO()
    fig.savefig(buf, format="svg", bbox_inches="tight")
    pyplot().close(fig)
    text = buf.getvalue()
    return text[text.index("<svg"):]


def forest_plot(report: dict) -> str:
    plt = pyplot()
    rows = [(f"{m} · {arm}", b["rel_lift"]) for m, arms in report["metrics"].items() for arm, b in arms.items()]
    fig, ax = plt.subplots(figsize=(7, 0.6 * len(rows) + 1))
    for i, (_, lift) in enumerate(rows):
        lo, hi = lift["ci95"]
        ax.plot([lo, hi], [i, i], color="tab:blue", lw=2)
        ax.plot([lift["estimate"]], [i], "o", color="tab:blue")
    ax.axvline(0, color="grey", lw=1, ls="--")
    ax.set_yticks(range(len(rows)), [r[0] for r in rows])
    ax.invert_yaxis()
    ax.set_xlabel("relative lift vs control (95% CI)")
    return _svg(fig)


def cumulative_plot(report: dict) -> str:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 3))
    for arm, points in report.get("cumulative", {}).items():
        if not points:
            continue
        x = range(len(points))
        ax.plot(x, [p["abs_lift"] for p in points], label=arm)
        ax.fill_between(x, [p["ci95"][0] for p in points], [p["ci95"][1] for p in points], alpha=0.2)
        ax.set_xticks(list(x)[:: max(1, len(points) // 8)], [points[i]["day"] for i in list(x)[:: max(1, len(points) // 8)]], rotation=30, fontsize=7)
    ax.axhline(0, color="grey", lw=1, ls="--")
    ax.set_ylabel("cumulative conversion lift")
    ax.legend(fontsize=8)
    return _svg(fig)


def _fmt(x, pct=False) -> str:
    if x is None or x != x:
        return "–"
    return f"{x:+.2%}" if pct else f"{x:.4g}"


def render(report: dict) -> str:
    e = html.escape
    srm = report["srm"]
    banner = (
        f'<div class="banner">Sample ratio mismatch: chi² = {srm["chi2"]:.2f}, p = {srm["p_value"]:.2g} (threshold '
        f'{report["config"]["srm_threshold"]}). No ship recommendation: fix the assignment first.</div>'
        if srm["flagged"]
        else ""
    )
    rows = []
    for metric, arms in report["metrics"].items():
        for arm, b in arms.items():
            a, r = b["abs_lift"], b["rel_lift"]
            rows.append(
                f"<tr><td>{e(metric)}</td><td>{e(arm)}</td><td>{b['n']['control']:,} / {b['n']['treatment']:,}</td>"
                f"<td>{b['mean']['control']:.4g} → {b['mean']['treatment']:.4g}</td>"
                f"<td>{_fmt(a['estimate'])} [{_fmt(a['ci95'][0])}, {_fmt(a['ci95'][1])}]</td>"
                f"<td>{_fmt(r['estimate'], True)} [{_fmt(r['ci95'][0], True)}, {_fmt(r['ci95'][1], True)}]</td>"
                f"<td>{_fmt(a['p_value'])}</td><td>{_fmt(b['p_value_adjusted'])}</td>"
                f"<td>{b['chance_to_win']:.1%}</td><td>{_fmt(b['expected_loss'])}</td></tr>"
            )
    seg_rows = []
    for seg, values in report.get("segments", {}).items():
        for value, arms in values.items():
            for arm, b in arms.items():
                a = b["abs_lift"]
                seg_rows.append(f"<tr><td>{e(seg)}</td><td>{e(value)}</td><td>{e(arm)}</td><td>{b['n']['control']:,} / {b['n']['treatment']:,}</td><td>{_fmt(a['estimate'])} [{_fmt(a['ci95'][0])}, {_fmt(a['ci95'][1])}]</td><td>{_fmt(a['p_value'])}</td></tr>")
    inputs = "".join(f"<li>{e(k.replace('_', ' '))}: {v:,}</li>" for k, v in report.get("inputs", {}).items())
    users = ", ".join(f"{e(k)} {v:,}" for k, v in report["arms"]["users"].items())
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>A/B report</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2rem; color: #222; }}
.verdict {{ font-size: 1.3rem; font-weight: 600; padding: .8rem 1rem; background: #eef5ee; border-left: 6px solid #2a7; }}
.banner {{ background: #c62828; color: white; padding: 1rem; font-weight: 700; margin-bottom: 1rem; }}
table {{ border-collapse: collapse; margin: 1rem 0; font-size: .9rem; }}
td, th {{ border: 1px solid #ccc; padding: .3rem .6rem; text-align: right; }}
td:first-child, th:first-child {{ text-align: left; }}
h2 {{ margin-top: 2rem; }}
</style></head><body>
<h1>A/B report</h1>
{banner}
<p class="verdict" id="verdict">{e(report["verdict"])}</p>
<p>Users: {users}. Alpha {report["alpha"]}; corrections: {e(report["config"]["correction"])} across metrics × arms.
SRM: chi² {srm["chi2"]:.2f}, p {srm["p_value"]:.3g}.</p>
<h2>Metrics</h2>
<table><tr><th>metric</th><th>arm</th><th>n (control / arm)</th><th>control → arm</th><th>absolute lift [95% CI]</th>
<th>relative lift [95% CI]</th><th>p</th><th>adjusted p</th><th>chance to win</th><th>expected loss</th></tr>
{''.join(rows)}</table>
<h2>Relative lifts</h2>{forest_plot(report)}
<h2>Cumulative lift over time</h2>{cumulative_plot(report)}
<h2>Segments (conversion)</h2>
<table><tr><th>segment</th><th>value</th><th>arm</th><th>n</th><th>absolute lift [95% CI]</th><th>p</th></tr>{''.join(seg_rows) or '<tr><td colspan="6">no segment columns</td></tr>'}</table>
<h2>Inputs</h2><ul>{inputs}</ul>
</body></html>
"""
