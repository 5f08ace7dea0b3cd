"""The dashboard's weekly chart: stacked bars as numbers the template draws as inline SVG."""

CHART_SERIES = (
    ("completed", "Completed", "#12805c"),
    ("failed", "Failed", "#b42318"),
    ("other", "Declined, expired or cancelled", "#98a2b3"),
)


def weekly_chart(weeks: list[dict], *, width: int = 320, height: int = 120) -> dict:
    """Geometry of a stacked bar chart, drawn by the template as inline SVG (no script, no style)."""
    peak = max([sum(w[k] for k, _, _ in CHART_SERIES) for w in weeks] + [1])
    plot = height - 20
    slot = width / len(weeks)
    bars = []
    for i, week in enumerate(weeks):
        y = plot
        segments = []
        for key, label, colour in CHART_SERIES:
            h = round(plot * week[key] / peak, 1)
            if h:
                y -= h
                segments.append({"y": round(y, 1), "height": h, "fill": colour, "label": label, "count": week[key]})
        bars.append({"x": round(i * slot + slot * 0.15, 1), "width": round(slot * 0.7, 1), "segments": segments,
                     "label": week["start"].strftime("%d %b"), "text_x": round(i * slot + slot / 2, 1),
                     "total": sum(week[k] for k, _, _ in CHART_SERIES)})
    return {"width": width, "height": height, "baseline": plot, "label_y": height - 5, "bars": bars,
            "peak": peak, "series": CHART_SERIES, "empty": all(b["total"] == 0 for b in bars)}
