"""The HTML of the study report: the only place for its markup, escaping and stylesheet.

Each ``html_*`` function renders one part of ``index.html`` (summary, top trials, a figure's
section, the comparison section) as a string with every value escaped, and ``html_page`` wraps
a body into the self-contained page with the study's header, the CSS and the footer.
"""

from __future__ import annotations

import html
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Any

from optuna.trial import FrozenTrial, TrialState

from searchsvc import keys
from searchsvc.report.comparison import Comparison, Histogram
from searchsvc.report.data import StudyData, fmt, last_intermediate, params_text
from searchsvc.report.figures import Section
from searchsvc.search.storage import count_trials, top_trials
from searchsvc.study.spec import StudySpec

__all__ = ["html_comparison", "html_page", "html_section", "html_summary", "html_top"]

N_TOP = 10  # rows of the top-trials table


_CSS = """
body { font-family: system-ui, -apple-system, Segoe UI, Roboto, sans-serif; margin: 0;
       color: #1d232b; background: #f6f7f9; }
main { max-width: 1200px; margin: 0 auto; padding: 24px 32px 48px; background: #fff; }
h1 { margin: 0 0 4px; font-size: 1.8em; } h2 { margin-top: 2em; border-bottom: 2px solid #e3e6ea;
     padding-bottom: 4px; }
.description { color: #4a5563; margin: 0 0 16px; }
table { border-collapse: collapse; margin: 8px 0 16px; font-size: 0.92em; }
th, td { border: 1px solid #d8dde3; padding: 4px 10px; text-align: left; vertical-align: top; }
th { background: #eef1f4; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
table.meta th { width: 9em; }
figure { margin: 16px 0 28px; } figure img { max-width: 100%; border: 1px solid #e3e6ea; }
figcaption { color: #4a5563; font-size: 0.92em; margin-top: 6px; }
.note { color: #8a5a00; background: #fff6e0; border-left: 4px solid #e0a800; padding: 6px 12px; }
h3 { margin: 1.4em 0 0.4em; font-size: 1.05em; }
.hist-row { display: flex; flex-wrap: wrap; gap: 16px; }
.hist-row figure { margin: 0; }
footer { margin-top: 40px; color: #4a5563; font-size: 0.9em; border-top: 1px solid #e3e6ea;
         padding-top: 10px; }
"""


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _table(headers: Sequence[str], rows: Iterable[Sequence[Any]], *, numeric: set[int]) -> str:
    head = "".join(f"<th>{_e(h)}</th>" for h in headers)
    body = "".join(
        "<tr>"
        + "".join(
            f'<td class="num">{_e(fmt(c))}</td>' if i in numeric else f"<td>{_e(fmt(c))}</td>"
            for i, c in enumerate(row)
        )
        + "</tr>"
        for row in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _options(model: Any) -> str:
    fields = {k: v for k, v in model.model_dump(mode="json").items() if k != "name"}
    return f"{model.name} ({params_text(fields)})" if fields else model.name


def _html_header(spec: StudySpec) -> str:
    objective = ", ".join(f"{o.mode} {o.metric}" for o in spec.objectives)
    dataset = spec.dataset.name + (
        f" (val_size={spec.dataset.val_size})" if spec.dataset.val_size is not None else ""
    )
    rows = [
        ("trainer", spec.trainer),
        ("dataset", dataset),
        ("objective", objective + " (on the validation split)"),
        ("sampler", _options(spec.sampler)),
        ("scheduler", _options(spec.scheduler)),
        ("budget", f"{spec.budget.n_trials} trials, at most {spec.budget.max_epochs} epochs"),
    ]
    meta = "".join(f"<tr><th>{_e(k)}</th><td>{_e(v)}</td></tr>" for k, v in rows)
    description = spec.description or "(no description)"
    return (
        f"<h1>Study report: {_e(spec.name)}</h1>"
        f'<p class="description">{_e(description)}</p>'
        f'<table class="meta">{meta}</table>'
    )


def html_summary(data: StudyData) -> str:
    counts = count_trials(data.trials)
    best = top_trials(data.study, data.spec, 1) if data.study is not None else []
    rows: list[tuple[str, Any]] = [
        ("trials", len(data.trials)),
        ("complete", counts.complete),
        ("pruned", counts.pruned),
        ("failed", counts.failed),
    ]
    others = (("interrupted", counts.interrupted), ("running", counts.running),
              ("waiting", counts.waiting))  # fmt: skip
    rows += [(label, n) for label, n in others if n]
    diagnoses = counts.diagnoses
    if diagnoses:
        # The recipe: first "good on the training data?", then "good on validation data?".
        shown = ", ".join(f"{k} {v}" for k, v in sorted(diagnoses.items()))
        rows.append(("diagnosis (recipe)", shown))
    if len(data.spec.objectives) > 1 and data.study is not None:
        front = top_trials(data.study, data.spec, None)
        rows.append(("Pareto front (trials)", ", ".join(str(t.number) for t in front) or "-"))
    if best:
        values = " / ".join(fmt(v) for v in best[0].values)
        rows += [
            ("best trial", best[0].number),
            (f"best value ({', '.join(o.metric for o in data.spec.objectives)})", values),
            ("best params", params_text(best[0].params)),
        ]
    else:
        rows.append(("best trial", "none completed yet"))
    body = "".join(f"<tr><th>{_e(k)}</th><td>{_e(fmt(v))}</td></tr>" for k, v in rows)
    return f'<h2>Summary</h2><table class="meta">{body}</table>'


def _diagnosis(trial: FrozenTrial) -> str:
    """The recipe's label with the figures behind it, e.g. ``overfit (val_loss_rise=0.23)``."""
    label = trial.user_attrs.get(keys.DIAGNOSIS)
    if not label:
        return "-"
    evidence = trial.user_attrs.get(keys.DIAGNOSIS_EVIDENCE) or {}
    figures = ", ".join(f"{k}={fmt(v)}" for k, v in evidence.items())
    return f"{label} ({figures})" if figures else label


def html_top(data: StudyData) -> str:
    n = N_TOP if len(data.spec.objectives) == 1 else None  # several: the whole Pareto front
    best = top_trials(data.study, data.spec, n) if data.study is not None else []
    rows = []
    for trial in best:
        epochs = trial.user_attrs.get(keys.EPOCHS, "")
        value = " / ".join(fmt(v) for v in trial.values)
        params = params_text(trial.params)
        rows.append((trial.number, value, "COMPLETE", epochs, _diagnosis(trial), params))
    # Fewer than N_TOP completed: fill with the pruned ones at their last report, marked so.
    pruned = [(t, last_intermediate(t)) for t in data.with_state(TrialState.PRUNED)]
    pruned = [(t, last) for t, last in pruned if last is not None]
    pruned.sort(key=lambda p: p[1][1], reverse=data.spec.primary.maximize)
    for trial, (step, value) in pruned[: max(N_TOP - len(rows), 0)]:
        epochs = trial.user_attrs.get(keys.EPOCHS, step)
        text = f"{fmt(value)} (last report, epoch {step})"
        rows.append(
            (trial.number, text, "PRUNED", epochs, _diagnosis(trial), params_text(trial.params))
        )
    if not rows:
        return "<h2>Top trials</h2><p>No trial has a value yet.</p>"
    objectives = " / ".join(o.metric for o in data.spec.objectives)
    table = _table(
        ["trial", f"value ({objectives})", "state", "epochs", "diagnosis", "params"],
        rows,
        numeric={0, 1, 3},
    )
    if len(data.spec.objectives) > 1:
        return f"<h2>Pareto front: {len(best)} trials, by {objectives}</h2>{table}"
    return f"<h2>Top {len(rows)} trials</h2>{table}"


def html_section(section: Section) -> str:
    if section.image is None:
        return f'<h2>{_e(section.title)}</h2><p class="note">{_e(section.note)}</p>'
    return (
        f"<h2>{_e(section.title)}</h2><figure>"
        f'<img src="{_e(section.image)}" alt="{_e(section.title)}">'
        f"<figcaption>{_e(section.caption)}</figcaption></figure>"
    )


def html_comparison(comparison: Comparison) -> str:
    parts = [
        "<h2>Comparison of groups</h2>",
        f"<p>Groups by {_e(', '.join(comparison.params))}: {len(comparison.groups)} groups.</p>",
        html_section(comparison.curves),
        "<h2>Activation histograms per group</h2>",
    ]
    if comparison.histograms:
        # Natural size, wrapped: narrow PNGs sit side by side, wide ones stay readable.
        parts.append(
            "<p>Per-layer activation histograms of each group's best trial (on a fixed "
            "validation batch), at the first and the last epoch.</p>"
        )
        by_group: dict[str, list[Histogram]] = {}
        for histogram in comparison.histograms:
            by_group.setdefault(histogram.group, []).append(histogram)
        for group, histograms in by_group.items():
            figures = "".join(
                f'<figure><img src="{_e(h.image)}" alt="{_e(h.group)}, epoch {h.epoch}">'
                f"<figcaption>{_e(h.group)}: trial {h.trial}, epoch {h.epoch}</figcaption>"
                "</figure>"
                for h in histograms
            )
            parts.append(
                f"<h3>{_e(group)} (trial {histograms[0].trial})</h3>"
                f'<div class="hist-row">{figures}</div>'
            )
    else:
        parts.append(f'<p class="note">{_e(comparison.histogram_note)}</p>')
    parts.append(_html_layer_table(comparison.table))
    return "".join(parts)


def _html_layer_table(rows: list[dict[str, Any]]) -> str:
    headers = [
        "group",
        "trials",
        "final validation accuracy (fraction, mean of completed)",
        "layer",
        "act std (activation units, epoch 1)",
        "saturated (fraction, epoch 1)",
        "dead (fraction, epoch 1)",
    ]
    head = "<tr>" + "".join(f"<th>{_e(h)}</th>" for h in headers) + "</tr>"
    body = []
    for row in rows:
        layers = row["layers"] or {"-": {}}
        span = len(layers)
        for index, (layer, stats) in enumerate(layers.items()):
            cells = ""
            if index == 0:
                final = row["final_val_accuracy"]
                cells = (
                    f'<td rowspan="{span}">{_e(row["group"])}</td>'
                    f'<td rowspan="{span}" class="num">{row["trials"]}</td>'
                    f'<td rowspan="{span}" class="num">'
                    f"{_e(fmt(final) if final is not None else '-')}</td>"
                )
            stat = [
                _e(fmt(stats[k])) if k in stats else "-" for k in ("act_std", "saturated", "dead")
            ]
            body.append(
                f"<tr>{cells}<td>{_e(layer)}</td>"
                + "".join(f'<td class="num">{s}</td>' for s in stat)
                + "</tr>"
            )
    return (
        "<h2>Per-group layer diagnostics</h2><table><thead>"
        f"{head}</thead><tbody>{''.join(body)}</tbody></table>"
        "<p>Epoch-1 values are means over the group's trials; '-' means the trainer does not "
        "report that statistic for the group's activation (saturation: sigmoid/tanh; dead "
        "units: ReLU family and maxout).</p>"
    )


def html_page(data: StudyData, body: str) -> str:
    when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    parent = data.parent.info.run_id if data.parent is not None else "none"
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        f"<title>{_e(data.spec.name)}: study report</title><style>{_CSS}</style></head>"
        f"<body><main>{_html_header(data.spec)}{body}<footer>"
        "Every choice (pruning, the best trial, ensemble members) was made on the validation "
        "split; the test split only reports and never chose anything. "
        f"Generated {_e(when)}; MLflow parent run {_e(parent)}.</footer></main></body></html>\n"
    )
