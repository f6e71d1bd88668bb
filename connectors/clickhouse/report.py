"""`pushcascade report`: delivery analytics from the views, as terminal tables and one
self-contained HTML file with interactive plotly charts."""

from __future__ import annotations

import html
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import plotly.graph_objects as go

from connectors.clickhouse.warehouse import Warehouse


@dataclass(frozen=True)
class Section:
    """One part of the report: its title, the question it answers and its query."""

    title: str
    question: str
    sql: str


SECTIONS = (
    Section("Channels", "Which channels get pushes received and read?",
            "SELECT channel, sum(sends) AS sends, sum(receipts) AS receipts, sum(reads) AS reads, "
            "round(receipts / sends, 3) AS receipt_rate, round(reads / sends, 3) AS read_rate "
            "FROM channel_hourly GROUP BY channel ORDER BY sends DESC"),
    Section("Routes", "Which push routes deliver to devices?",
            "SELECT route, sum(sends) AS sends, sum(receipts) AS receipts, sum(reads) AS reads, "
            "round(receipts / sends, 3) AS receipt_rate, round(reads / sends, 3) AS read_rate "
            "FROM route_hourly GROUP BY route ORDER BY sends DESC"),
    Section("Messages", "How many messages escalate, and what does reaching them cost?",
            "SELECT count() AS messages, countIf(read) AS messages_read, "
            "round(countIf(escalated) / messages, 3) AS escalation_rate, "
            "round(sum(sends) / messages, 2) AS sends_per_message, "
            "round(sum(sms_sends) / messages, 2) AS sms_per_message, "
            "sum(sends_after_read) AS sends_after_read, "
            "round(quantileIf(0.5)(time_to_read_ms, read) / 1000, 1) AS read_p50_s, "
            "round(quantileIf(0.9)(time_to_read_ms, read) / 1000, 1) AS read_p90_s "
            "FROM message_summary"),
    Section("Time to first read", "How long until a message is read?",
            "SELECT round(time_to_read_ms / 1000, 1) AS seconds, first_read_channel AS channel "
            "FROM message_summary WHERE read ORDER BY seconds LIMIT 100000"),
    Section("Probe cost", "What does measuring routes cost, per route?",
            "SELECT route, sum(probes) AS probes_sent, sum(probes_acked) AS acked, "
            "uniqExactIf(device_id, probes > 0) AS devices, "
            "round(acked / greatest(probes_sent, 1), 3) AS success_rate "
            "FROM device_routes GROUP BY route HAVING probes_sent > 0 "
            "ORDER BY probes_sent DESC"),
    Section("Fleet", "What does each manufacturer receive on?",
            "SELECT manufacturer, route, sum(sends) AS sends, "
            "round(sum(receipts) / sends, 3) AS success_rate FROM manufacturer_routes "
            "GROUP BY manufacturer, route ORDER BY manufacturer, route"),
    Section("Campaigns", "Which campaigns triggered fallback?",
            "SELECT campaign_id, messages, targeted, acked, round(ratio, 3) AS ratio, threshold, "
            "fallback, fallback_sends FROM campaign_summary ORDER BY decided_at DESC LIMIT 50"),
)


def collect(warehouse: Warehouse) -> dict[str, list[dict[str, Any]]]:
    """Every section's rows."""
    return {s.title: warehouse.rows(s.sql) for s in SECTIONS}


def _bar(rows: list[dict[str, Any]], x: str, ys: tuple[str, ...], title: str) -> go.Figure:
    fig = go.Figure([go.Bar(name=y, x=[r[x] for r in rows], y=[r[y] for r in rows]) for y in ys])
    fig.update_layout(title=title, barmode="group", yaxis_range=[0, 1], height=360)
    return fig


def figures(data: dict[str, list[dict[str, Any]]]) -> dict[str, go.Figure]:
    """The charts of the sections that have data."""
    figs: dict[str, go.Figure] = {}
    if data["Channels"]:
        figs["Channels"] = _bar(data["Channels"], "channel", ("receipt_rate", "read_rate"),
                                "Receipt and read rate per channel")
    if data["Routes"]:
        figs["Routes"] = _bar(data["Routes"], "route", ("receipt_rate", "read_rate"),
                              "Receipt and read rate per push route")
    if data["Time to first read"]:
        rows = data["Time to first read"]
        fig = go.Figure([go.Histogram(x=[r["seconds"] for r in rows if r["channel"] == c],
                                      name=str(c), nbinsx=40)
                         for c in sorted({r["channel"] for r in rows})])
        fig.update_layout(title="Time to first read (s), by the channel read first",
                          barmode="stack", height=360)
        figs["Time to first read"] = fig
    if data["Probe cost"]:
        rows = data["Probe cost"]
        fig = go.Figure([go.Bar(name="probes", x=[r["route"] for r in rows],
                                y=[r["probes_sent"] for r in rows]),
                         go.Bar(name="acknowledged", x=[r["route"] for r in rows],
                                y=[r["acked"] for r in rows])])
        fig.update_layout(title="Probes sent and acknowledged per route", barmode="group",
                          height=360)
        figs["Probe cost"] = fig
    if data["Fleet"]:
        rows = data["Fleet"]
        makers = sorted({r["manufacturer"] for r in rows})
        routes = sorted({r["route"] for r in rows})
        rate = {(r["manufacturer"], r["route"]): r["success_rate"] for r in rows}
        fig = go.Figure(go.Heatmap(z=[[rate.get((m, r)) for r in routes] for m in makers],
                                   x=routes, y=makers, zmin=0, zmax=1, colorscale="RdYlGn"))
        fig.update_layout(title="Receipt rate per manufacturer and route", height=360)
        figs["Fleet"] = fig
    if data["Campaigns"]:
        rows = data["Campaigns"]
        fig = go.Figure([go.Bar(x=[r["campaign_id"] for r in rows],
                                y=[r["ratio"] for r in rows],
                                marker_color=["#d62728" if r["fallback"] else "#2ca02c"
                                              for r in rows], name="acknowledged / targeted")])
        fig.update_layout(title="Campaigns: acknowledged ratio (red: fallback triggered)",
                          yaxis_range=[0, 1], height=360)
        figs["Campaigns"] = fig
    return figs


def _table_html(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return "<p><em>no data yet</em></p>"
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in rows[0])
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(v))}</td>" for v in r.values())
                   + "</tr>" for r in rows[:50])
    return f"<table><tr>{head}</tr>{body}</table>"


def comparison_html(runs: list[dict[str, Any]],
                    segments: dict[str, dict[str, dict[str, Any]]] | None = None) -> str:
    """The strategies compared: reach against sends per message, and their figures; with
    `segments` (segment -> strategy -> figures) one row per segment and strategy."""
    fig = go.Figure([go.Bar(name=m, x=[r["strategy"] for r in runs],
                            y=[r.get(key) for r in runs])
                     for m, key in (("reach before the last deadline", "reach_in_time"),
                                    (f"reach within {runs[0].get('reach_window_s', 10):g} s",
                                     "reach"),
                                    ("sends per message", "sends_per_message"),
                                    ("SMS per message", "sms_per_message"))])
    fig.update_layout(barmode="group", title="Strategies on the same population", height=380)
    return ("<section><h2>Strategies compared</h2><p class=q>Which strategy gets pushes read "
            "with the fewest sends?</p>" + fig.to_html(full_html=False, include_plotlyjs="inline")
            + _table_html(runs) + _segments_html(segments or {}) + "</section>")


def _segments_html(segments: dict[str, dict[str, dict[str, Any]]]) -> str:
    """Where each strategy loses: a row per segment and strategy."""
    rows = [{"segment": segment, "strategy": strategy,
             **{k: round(v, 4) if isinstance(v, float) else v for k, v in figures.items()}}
            for segment, by in segments.items() for strategy, figures in by.items()]
    if not rows:
        return ""
    return "<h3>Per segment</h3>" + _table_html(rows)


def write_html(data: dict[str, list[dict[str, Any]]], path: Path, where: str,
               comparison: list[dict[str, Any]] | None = None,
               segments: dict[str, dict[str, dict[str, Any]]] | None = None) -> Path:
    """One self-contained HTML file (plotly.js inlined once) with every chart and table, and
    the strategies compared when given."""
    figs = figures(data)
    parts, first = [], True
    if comparison:
        parts.append(comparison_html(comparison, segments))
        first = False
    for s in SECTIONS:
        parts.append(f"<section><h2>{html.escape(s.title)}</h2>"
                     f"<p class=q>{html.escape(s.question)}</p>")
        if s.title in figs:
            parts.append(figs[s.title].to_html(full_html=False,
                                               include_plotlyjs="inline" if first else False))
            first = False
        if s.title != "Time to first read":
            parts.append(_table_html(data[s.title]))
        parts.append("</section>")
    page = (
        "<!doctype html><html><head><meta charset=utf-8><title>pushcascade report</title>"
        "<style>body{font-family:system-ui,sans-serif;margin:2em;max-width:1100px}"
        "table{border-collapse:collapse;margin:.5em 0 2em}td,th{border:1px solid #ccc;"
        "padding:.2em .6em;text-align:right}.q{color:#555}</style></head><body>"
        f"<h1>pushcascade delivery report</h1><p>from {html.escape(where)}</p>"
        + "".join(parts) + "</body></html>")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(page, encoding="utf-8")
    return path


def screenshot(page: Path, png: Path, width: int = 1200, height: int = 3200) -> Path:
    """A PNG of the page from headless Chromium (Debian's `chromium` package)."""
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        raise FileNotFoundError("no chromium on PATH: apt-get install chromium")
    # chromium found on PATH, fixed arguments
    subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu",  # noqa: S603
                    "--hide-scrollbars", "--disable-background-networking",
                    f"--window-size={width},{height}", "--virtual-time-budget=5000",
                    f"--screenshot={png.resolve()}", page.resolve().as_uri()],
                   check=True, capture_output=True, timeout=120)
    return png
