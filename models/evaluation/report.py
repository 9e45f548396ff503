"""Reports of an evaluation: a text table, a JSON file, a Markdown summary and a PNG plot."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from models.evaluation.prequential import Evaluation


def _cell(value: object) -> str:
    if isinstance(value, float):
        return "n/a" if math.isnan(value) else f"{value:.4f}"
    return str(value)


def format_table(evaluation: Evaluation, markdown: bool = False) -> str:
    """One row per configuration, best HitRate first."""
    rows = sorted(evaluation.table(), key=lambda r: -_sort_key(r, evaluation.k))
    headers = list(rows[0]) if rows else []
    cells = [[_cell(row[h]) for h in headers] for row in rows]
    if markdown:
        lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
        lines += ["| " + " | ".join(row) + " |" for row in cells]
        return "\n".join(lines)
    widths = [max(len(h), *(len(r[i]) for r in cells)) for i, h in enumerate(headers)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True))]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in cells]
    return "\n".join(lines)


def _sort_key(row: dict[str, Any], k: int) -> float:
    value = row[f"HitRate@{k}"]
    return -1.0 if isinstance(value, float) and math.isnan(value) else float(value)


def finite_json(value: Any) -> Any:
    """``value`` with every float that is not finite (a metric over no events is NaN)
    as None, in dicts, lists and tuples at any depth: JSON has no NaN or infinity, and
    ``json.dumps`` would write them as tokens no strict reader accepts.

    >>> finite_json({"hit_rate@10": float("nan"), "windows": [0.5, float("inf")]})
    {'hit_rate@10': None, 'windows': [0.5, None]}
    """
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: finite_json(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [finite_json(item) for item in value]
    return value


def report_json(value: Any, indent: int | None = 2) -> str:
    """``value`` as strict JSON for a report file or line: a number that is not finite
    is null (what a table shows as n/a), never ``NaN`` or ``Infinity``."""
    return json.dumps(finite_json(value), indent=indent, allow_nan=False, default=str)


def as_json(evaluation: Evaluation, dataset: str) -> dict[str, Any]:
    return {
        "dataset": dataset,
        "protocol": "prequential: rank unseen items, score the event's item, then learn",
        "k": evaluation.k,
        "cold_threshold": evaluation.cold_threshold,
        "events": evaluation.events,
        "catalog_size": evaluation.catalog_size,
        "seconds": evaluation.seconds,
        "events_per_second": evaluation.events / evaluation.seconds if evaluation.seconds else None,
        "interrupted": evaluation.interrupted,
        "written_at": datetime.now(UTC).isoformat(),
        "table": evaluation.table(),
        "windows": {
            "ends_at_ts": evaluation.window_ends,
            "hit_rate": {
                name: [w.hit_rate for w in result.windows]
                for name, result in evaluation.results.items()
            },
        },
        "details": {
            name: {
                "overall": result.overall.as_dict(),
                "cold_items": result.cold_items.as_dict(),
                "cold_users": result.cold_users.as_dict(),
                **({"zero_click": result.zero_click.as_dict()} if result.zero_click else {}),
                **(
                    {"uploaded_during": result.uploaded_during.as_dict()}
                    if result.uploaded_during
                    else {}
                ),
                **(
                    {
                        "by_modalities": {
                            group: metrics.as_dict()
                            for group, metrics in sorted(result.by_group.items())
                        }
                    }
                    if result.by_group
                    else {}
                ),
            }
            for name, result in evaluation.results.items()
        },
    }


def write_report(evaluation: Evaluation, dataset: str, directory: str | Path) -> dict[str, Path]:
    """``report.json``, ``report.md`` and ``hit_rate_over_time.png`` in ``directory``."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    paths = {
        "json": directory / "report.json",
        "markdown": directory / "report.md",
        "plot": directory / "hit_rate_over_time.png",
    }
    paths["json"].write_text(report_json(as_json(evaluation, dataset)))
    status = " (interrupted: partial)" if evaluation.interrupted else ""
    paths["markdown"].write_text(
        f"# Evaluation on {dataset}{status}\n\n"
        f"Prequential (test-then-train), K={evaluation.k}, {evaluation.events:,} events, "
        f"{evaluation.catalog_size:,} items, {evaluation.seconds:.1f} s "
        f"({evaluation.events / max(evaluation.seconds, 1e-9):,.0f} events/s).\n\n"
        f"{format_table(evaluation, markdown=True)}\n\n"
        f"Cold items: fewer than {evaluation.cold_threshold} earlier interactions; cold users: "
        f"fewer than {evaluation.cold_threshold} earlier events; zero-click items: none "
        f"earlier.\n\n{_by_modalities(evaluation)}![HitRate over time]({paths['plot'].name})\n"
    )
    _plot(evaluation, dataset, paths["plot"])
    return paths


def _by_modalities(evaluation: Evaluation) -> str:
    """HitRate per item group (the modalities items have), a table, or nothing."""
    groups = sorted({g for result in evaluation.results.values() for g in result.by_group})
    if not groups:
        return ""
    k = evaluation.k
    lines = [
        f"HitRate@{k} by the modalities the clicked item has (events in brackets):\n",
        "| configuration | " + " | ".join(groups) + " |",
        "|---|" + "---|" * len(groups),
    ]
    for name, result in evaluation.results.items():
        cells = []
        for group in groups:
            metrics = result.by_group.get(group)
            cells.append(f"{metrics.hit_rate:.4f} ({metrics.events:,})" if metrics else "")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n\n"


def _plot(evaluation: Evaluation, dataset: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(9, 5))
    windows = range(1, len(evaluation.window_ends) + 1)
    for name, result in sorted(
        evaluation.results.items(), key=lambda item: -item[1].overall.hit_rate
    ):
        axes.plot(windows, [w.hit_rate for w in result.windows], marker="o", label=name)
    axes.set_xlabel(f"time window (each {evaluation.events // max(len(windows), 1):,} events)")
    axes.set_ylabel(f"HitRate@{evaluation.k}")
    axes.set_title(f"Prequential HitRate@{evaluation.k} over time, {dataset}")
    axes.grid(alpha=0.3)
    axes.legend(fontsize="small")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
