"""The report's plots, each returned as an embedded PNG <img> (matplotlib, Agg: no display, no external files).

Axes are scaled to the points' centres with a margin, not to their error bars (one slow run's p90 must not squeeze
every model into a corner), and legends sit outside the data."""

from __future__ import annotations

import base64
import html
import io
import math
from typing import TYPE_CHECKING

from edgeprune.report.records import BuildReport

if TYPE_CHECKING:
    from edgeprune.latency.lut import LutReport

COLORS = {"unpruned": "#555555", "plan": "#d62728", "uniform": "#1f77b4", "flops": "#2ca02c"}
OTHER_COLORS = ("#9467bd", "#8c564b", "#e377c2", "#17becf", "#bcbd22", "#7f7f7f")  # back-off candidates, in order
ROUND_COLOR = "#ff7f0e"


def color(name: str) -> str:
    if name in COLORS:
        return COLORS[name]
    digits = "".join(c for c in name if c.isdigit())
    return OTHER_COLORS[(int(digits) - 1 if digits else 0) % len(OTHER_COLORS)]


def _figure(width: float = 9.0, height: float = 4.4):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt.subplots(figsize=(width, height), dpi=100)


def img(fig, alt: str) -> str:
    """The figure as a self-contained <img> (a data: URL), its legend outside the axes kept in the picture."""
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", bbox_inches="tight")
    plt.close(fig)
    data = base64.b64encode(buffer.getvalue()).decode()
    return f"<img alt='{html.escape(alt, quote=True)}' src='data:image/png;base64,{data}'>"


def limits(values: list[float], margin: float = 0.12) -> tuple[float, float]:
    """An axis range around `values` with `margin` of their span each side (of their size when they coincide)."""
    low, high = min(values), max(values)
    pad = (high - low) * margin or abs(high) * margin or 1.0
    return low - pad, high + pad


def _outside_legend(ax) -> None:
    ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0, fontsize=9, frameon=False)


def accuracy_plot(report: BuildReport):
    """Held-out metric against measured median latency for every model the build measured at the end, with each
    plan round's latency (its models were measured, not fine-tuned or scored) as ticks along the bottom."""
    fig, ax = _figure()
    base = report.result("unpruned")
    scored = any(r.metric_value is not None for r in report.results)
    xs: list[float] = [report.budget_ms]
    ys: list[float] = []
    points: list[tuple[float, float, str]] = []
    for r in report.results:
        x = r.latency.median_ms
        y = r.metric_value if r.metric_value is not None else 0.0
        n = r.verification.n_samples if r.verification else 0
        y_se = math.sqrt(y * (1 - y) / n) if scored and n and 0 <= y <= 1 else 0.0
        x_se = x * (r.speedup_se or 0.0)
        shipped = r.name == report.shipped
        ax.errorbar([x], [y], xerr=[x_se], yerr=[y_se], fmt="D" if shipped else "o", markersize=9 if shipped else 7,
                    color=color(r.name), capsize=3, label=f"{r.name}{' (shipped)' if shipped else ''}",
                    zorder=4 if shipped else 3)  # fmt: skip
        xs.append(x)
        ys += [y - y_se, y + y_se]
        points.append((x, y, r.name))
    for (x, y), together in _label_groups(points, 0.06 * (max(xs) - min(xs)), 0.04 * (max(ys) - min(ys))).items():
        ax.annotate(", ".join(together), (x, y), xytext=(6, 6), textcoords="offset points", fontsize=8)
    for k, r in enumerate(report.plan.rounds):
        if not r.speedup:
            continue
        x = base.latency.median_ms / r.speedup  # its speedup at the unpruned model's final median: one scale
        xs.append(x)
        ax.plot([x], [0.04], marker="|", markersize=18, color=ROUND_COLOR, transform=ax.get_xaxis_transform(),
                label="plan rounds (latency only)" if k == 0 else None)  # fmt: skip
        ax.annotate(f"r{r.round}", (x, 0.09), xycoords=ax.get_xaxis_transform(), fontsize=8, ha="center")
    if report.plan.ruled_out:  # what the table says is the best reachable: the reason nothing was built
        plan = report.plan
        x = plan.choice.predicted * plan.base_latency.median_ms / plan.base_predicted_ms
        xs.append(x)
        ax.plot([x], [0.04], marker="|", markersize=18, color=ROUND_COLOR, transform=ax.get_xaxis_transform(),
                label="fastest reachable (table's prediction; not built)")  # fmt: skip
    ax.axvline(report.budget_ms, color="#b00020", linestyle="--", label=f"budget ({report.budget.describe()})")
    ax.set_xlim(*limits(xs))
    if scored:
        ax.set_ylim(*limits(ys, 0.2))
        metric = next(r.metric for r in report.results if r.metric)
        ax.set_ylabel(f"held-out {metric} on {base.latency.runtime} (bars: ± 1 SE, binomial)")
    else:
        ax.set_yticks([])
        ax.set_ylabel("no held-out data: latency only")
    ax.set_xlabel("measured median latency, ms (bars: ± 1 SE of the speedup over the unpruned model)")
    ax.grid(alpha=0.3)
    _outside_legend(ax)
    return fig


def _label_groups(points: list[tuple[float, float, str]], dx: float, dy: float) -> dict[tuple[float, float], list[str]]:
    """Names of points within (dx, dy) of a first one, under that one: their labels would overlap, so they share."""
    groups: dict[tuple[float, float], list[str]] = {}
    for x, y, name in points:
        anchor = next((a for a in groups if abs(a[0] - x) <= dx and abs(a[1] - y) <= dy), (x, y))
        groups.setdefault(anchor, []).append(name)
    return groups


def speedup_plot(report: BuildReport):
    """Each plan round's speedup as the latency table predicted it against as measured, with the table's error."""
    fig, ax = _figure(8.0, 4.2)
    rounds = [r for r in report.plan.rounds if r.speedup and r.predicted_speedup]
    kept = report.plan.kept()
    for r in rounds:
        is_kept = kept is not None and r.round == kept.round
        ax.errorbar([r.speedup], [r.predicted_speedup], xerr=[r.speedup * (r.speedup_se or 0.0)], fmt="*",
                    markersize=14 if is_kept else 10, color=COLORS["plan"] if is_kept else ROUND_COLOR, capsize=3,
                    label="kept round" if is_kept else None)  # fmt: skip
        ax.annotate(f"round {r.round}{' (kept)' if is_kept else ''}: {100 * r.prediction_error:+.1f} %",
                    (r.speedup, r.predicted_speedup), xytext=(6, 8), textcoords="offset points", fontsize=8)  # fmt: skip
    values = [v for r in rounds for v in (r.speedup, r.predicted_speedup)]
    if report.budget.kind == "speedup":
        values.append(report.budget.value)
        ax.axvline(report.budget.value, color="#b00020", linestyle="--", label=f"budget {report.budget.describe()}")
    low, high = limits(values or [1.0], 0.25)
    ax.plot([low, high], [low, high], color="#888", linestyle=":", label="predicted = measured")
    ax.set_xlim(low, high)
    ax.set_ylim(low, high)
    ax.set_xlabel("measured speedup over the unpruned model (bars: ± 1 SE)")
    ax.set_ylabel("latency table's predicted speedup")
    ax.grid(alpha=0.3)
    _outside_legend(ax)
    return fig


def layer_plot(report: BuildReport):
    fig, ax = _figure()
    names = list(report.plan.layer_ms)
    x = range(len(names))
    ax.bar(x, [report.plan.layer_ms[n][0] for n in names], color="#bbbbbb", label="unpruned")
    ax.bar(x, [report.plan.layer_ms[n][1] for n in names], color=COLORS["plan"], alpha=0.8,
           label="plan (0: layer removed)")  # fmt: skip
    ax.set_xlabel("conv/linear layer, in execution order")
    ax.set_ylabel("calibrated table latency (ms)")
    _outside_legend(ax)
    return fig


def lut_plot(report: BuildReport, lut: LutReport):
    fig, ax = _figure()
    points: list[float] = []
    for role, marker in (("calibration", "s"), ("evaluation", "o")):
        pairs = [(v.measured_ms, v.predicted_ms) for v in lut.variants if v.role == role]
        if pairs:
            ax.scatter(*zip(*pairs), marker=marker, label=f"random variants ({role})")
            points += [v for pair in pairs for v in pair]
    rounds = [(r.measured.median_ms, r.predicted_ms) for r in report.plan.rounds]
    if rounds:  # none when the table ruled the budget out
        ax.scatter(*zip(*rounds), marker="*", s=140, color=COLORS["plan"], label="plan rounds")
        points += [v for pair in rounds for v in pair]
    low, high = limits(points or [report.plan.base_latency.median_ms])
    ax.plot([low, high], [low, high], color="#888", linestyle=":", label="predicted = measured")
    ax.set_xlim(low, high)
    ax.set_ylim(low, high)
    ax.set_xlabel("measured median latency (ms)")
    ax.set_ylabel("table prediction (ms)")
    _outside_legend(ax)
    return fig
