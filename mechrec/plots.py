"""Interactive plotly figures of the paper's tables, one function per figure.

Every function takes the tables the result objects return (or write to disk) and returns a
:class:`plotly.graph_objects.Figure`; the result objects call them from their ``plot``
methods and the recommender's HTML report draws its charts with them, so a notebook and the
report show the same figures. Hovering a point shows its exact value (Python's shortest
round-trip ``repr``); intervals are error bars.

- :func:`profile_heatmap`: Fig. 2, each attribute's chosen feature scored on every attribute
  (:meth:`mechrec.alignment.AlignmentRun.profiles`);
- :func:`comparison_bars`: Fig. 4, the best feature's score per attribute for each feature
  set, with bootstrap intervals (:meth:`~mechrec.alignment.AlignmentRun.comparison`,
  :meth:`~mechrec.alignment.AlignmentRun.interval_table`);
- :func:`activation_histogram`: Fig. 5, a feature's activations on rows with and without an
  attribute (:func:`binned_activation_histogram`: the same from counts already binned, as a
  feature page holds them);
- :func:`steering_curves`: Figs. 8 and 9, a steering sweep's target share (or any metric) vs
  the steering value, one panel per attribute
  (:attr:`mechrec.attribute_steering.AttributeSweep.table`);
- :func:`metric_lines`: any metric vs a swept setting (Table 1 / Fig. 3: SAE quality and
  interpretability vs L1 weight or dictionary size; training curves);
- :func:`table1_figure`: Table 1's grid, every chosen metric vs the L1 weight and vs the
  dictionary size, mean ± std over seeds with each seed's value
  (``mechrec_recsys.saes.Table1.plot``).

plotly is imported inside the functions, so importing this module is free.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

if TYPE_CHECKING:
    from plotly.graph_objects import Figure

__all__ = [
    "ALIGNMENT_KINDS",
    "CURVE_LABELS",
    "SOURCE_LABELS",
    "SWEEP_KINDS",
    "activation_histogram",
    "alignment_figure",
    "binned_activation_histogram",
    "comparison_bars",
    "exact",
    "metric_lines",
    "profile_heatmap",
    "steering_curves",
    "sweep_figure",
    "table1_figure",
]

#: Display names of the feature sources of an alignment comparison.
SOURCE_LABELS: dict[str, str] = {"SAE": "SAE feature", "neurons": "neuron",
                                 "random": "random control", "probes": "probe",
                                 "mean_difference": "difference of means",
                                 "k_sparse_probes": "k-sparse probe",
                                 "sae_k_sparse_probes": "k-sparse probe on SAE features",
                                 "pca": "principal component"}

#: Display names of steering curves by ``(method, mode)``.
CURVE_LABELS: dict[tuple[str, str], str] = {
    ("sae_feature", "replace"): "SAE feature (replace)",
    ("sae_feature", "keep-error"): "SAE feature (keep error)",
    ("sae_direction", "add"): "SAE direction (add)",
    ("probe_direction", "add"): "probe direction (add)",
    ("random_feature", "replace"): "random alive feature (replace, control)",
    ("mean_difference_direction", "add"): "difference of means (add)",
    ("k_sparse_direction", "add"): "k-sparse probe direction (add)",
    ("pca_direction", "add"): "principal component (add)",
}

#: Colour-blind-safe palette (Okabe-Ito), used in trace order.
PALETTE: tuple[str, ...] = ("#0072B2", "#E69F00", "#009E73", "#CC79A7", "#D55E00",
                            "#56B4E9", "#F0E442", "#000000")

_LAYOUT: dict[str, Any] = {"template": "plotly_white", "font": {"size": 12},
                           "margin": {"l": 60, "r": 20, "t": 60, "b": 50},
                           "hoverlabel": {"align": "left"},
                           "legend": {"orientation": "h", "yref": "container", "y": 0,
                                      "yanchor": "bottom", "xanchor": "left", "x": 0}}


def exact(value: Any) -> str:
    """A number as hover text: its exact (shortest round-trip) digits, ``–`` when missing
    (``None``, NaN or ``pd.NA``, as a nullable integer column holds it)."""
    if value is None or value is pd.NA or isinstance(value, bool):
        return str(value) if isinstance(value, bool) else "–"
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    try:
        x = float(value)
    except (TypeError, ValueError):
        return str(value)
    if not math.isfinite(x):
        return "–"
    return str(int(x)) if x.is_integer() and abs(x) < 2**53 else repr(x)


def _floats(values: Any) -> np.ndarray:
    return pd.to_numeric(pd.Series(values, dtype=object), errors="coerce").to_numpy(float)


def _go() -> Any:
    import plotly.graph_objects as go

    return go


def _curve_label(method: Any, mode: Any) -> str:
    return CURVE_LABELS.get((str(method), str(mode)), f"{method} ({mode})")


def _indexed(frame: pd.DataFrame, name: str) -> pd.DataFrame:
    """``frame`` indexed by ``name`` whether it is the index or a column (a table read back
    from CSV has it as a column)."""
    if frame.index.name != name and name in frame.columns:
        return frame.set_index(name)
    return frame


# ------------------------------------------------------------------------------ Fig. 2
def profile_heatmap(profiles: pd.DataFrame, *, metric: str = "correlation",
                    attributes: Sequence[str] | None = None, title: str | None = None
                    ) -> Figure:
    """Fig. 2: each attribute's chosen feature (rows) scored on every attribute (columns).

    Args:
        profiles: :meth:`~mechrec.alignment.AlignmentRun.profiles` (index or column
            ``selected_for``, column ``feature``, one column per attribute).
        metric: the metric the table holds (axis and colour-bar title).
        attributes: keep only these rows and columns (e.g. the genres), in this order.
        title: figure title.

    Rows whose attribute has no chosen feature are left out.
    """
    go = _go()
    frame = _indexed(profiles, "selected_for")
    columns = [c for c in frame.columns if c != "feature"]
    if attributes is not None:
        keep = [str(a) for a in attributes]
        columns = [c for c in keep if c in columns]
        frame = frame.loc[[a for a in keep if a in frame.index]]
    frame = frame[frame["feature"].notna()]
    z = frame[columns].to_numpy(dtype=float) if columns else np.zeros((len(frame), 0))
    rows = [f"{a} (#{exact(f)})" for a, f in zip(frame.index, frame["feature"], strict=True)]
    text = [[exact(v) for v in row] for row in z]
    finite = z[np.isfinite(z)]
    bound = float(np.abs(finite).max()) if finite.size else 1.0
    diverging = metric == "correlation" or bool(finite.size and finite.min() < 0)
    heat = go.Heatmap(
        z=z, x=columns, y=rows, text=text, colorscale="RdBu_r" if diverging else "Viridis",
        zmid=0.0 if diverging else None, zmin=-bound if diverging else None,
        zmax=bound if diverging else None, colorbar={"title": {"text": metric}},
        hovertemplate=("chosen for %{y}<br>scored on %{x}<br>" + metric
                       + " = %{text}<extra></extra>"))
    fig = go.Figure(heat)
    fig.update_layout(**_LAYOUT, title=title or f"{metric} of each attribute's chosen feature "
                      "with every attribute",
                      height=max(320, 70 + 22 * len(rows)))
    fig.update_xaxes(title_text="scored on attribute", tickangle=-45)
    fig.update_yaxes(title_text="feature chosen for attribute", autorange="reversed")
    return fig


# ------------------------------------------------------------------------------ Fig. 4
def comparison_bars(comparison: pd.DataFrame, *, metric: str = "correlation",
                    sources: Sequence[str] | None = None, group: str | None = None,
                    intervals: pd.DataFrame | None = None, sort_by_share: bool = True,
                    labels: Mapping[str, str] | None = None, title: str | None = None
                    ) -> Figure:
    """Fig. 4: the best feature's ``metric`` per attribute, one bar per feature set.

    Args:
        comparison: :meth:`~mechrec.alignment.AlignmentRun.comparison` (index or column
            ``attribute``; columns ``group``, ``share``, ``<source>_feature``,
            ``<source>_<metric>``).
        metric: the metric shown.
        sources: feature sets, in bar order (default: every one the table has).
        group: keep only this attribute group (e.g. ``"genre"``).
        intervals: :meth:`~mechrec.alignment.AlignmentRun.interval_table` rows; their
            ``lower`` / ``upper`` become error bars.
        sort_by_share: most frequent attribute first (else table order).
        labels: display names of the sources (default :data:`SOURCE_LABELS`).
        title: figure title.

    Attributes where no source has a value are left out.
    """
    go = _go()
    frame = _indexed(comparison, "attribute")
    if group is not None and "group" in frame.columns:
        frame = frame[frame["group"] == group]
    if sources is None:
        sources = [c[: -len("_feature")] for c in frame.columns if c.endswith("_feature")
                   and f"{c[: -len('_feature')]}_{metric}" in frame.columns]
    columns = [f"{s}_{metric}" for s in sources]
    frame = frame[frame[columns].notna().any(axis=1)] if columns else frame.iloc[:0]
    if sort_by_share and "share" in frame.columns:
        frame = frame.sort_values("share", ascending=False, kind="stable")
    names = {**SOURCE_LABELS, **(labels or {})}
    attributes = [str(a) for a in frame.index]
    fig = go.Figure()
    for i, source in enumerate(sources):
        y = frame[f"{source}_{metric}"].to_numpy(dtype=float)
        features = (frame[f"{source}_feature"].tolist() if f"{source}_feature" in frame
                    else [None] * len(frame))
        lower = upper = np.full(len(frame), np.nan)
        if intervals is not None:
            sel = intervals[(intervals["features"] == source) & (intervals["metric"] == metric)]
            if group is not None and "group" in sel.columns:
                sel = sel[sel["group"] == group]
            sel = sel.drop_duplicates("attribute").set_index("attribute")
            lower = _floats(sel["lower"].reindex(attributes))
            upper = _floats(sel["upper"].reindex(attributes))
        error = None
        if np.isfinite(lower).any() or np.isfinite(upper).any():
            error = {"type": "data", "symmetric": False, "array": np.nan_to_num(upper - y),
                     "arrayminus": np.nan_to_num(y - lower), "thickness": 1.2, "width": 3}
        custom = [[exact(f), exact(v), exact(lo), exact(hi)]
                  for f, v, lo, hi in zip(features, y, lower, upper, strict=True)]
        label = names.get(source, source)
        fig.add_trace(go.Bar(
            x=attributes, y=y, name=label, error_y=error, customdata=custom,
            marker_color=PALETTE[i % len(PALETTE)],
            hovertemplate=(f"%{{x}}, {label} #%{{customdata[0]}}<br>{metric} = "
                           "%{customdata[1]}<br>interval %{customdata[2]} to %{customdata[3]}"
                           "<extra></extra>")))
    fig.update_layout(**_LAYOUT, barmode="group",
                      title=title or f"best {metric} per attribute"
                      + (" with bootstrap intervals" if intervals is not None else ""))
    fig.update_xaxes(title_text="attribute" if group is None else group, tickangle=-45)
    fig.update_yaxes(title_text=metric)
    return fig


# ------------------------------------------------------------------------------ Fig. 5
def _masks(mask: Any) -> dict[str, np.ndarray]:
    if isinstance(mask, pd.DataFrame):
        items = {str(c): mask[c].to_numpy() for c in mask.columns}
    elif isinstance(mask, Mapping):
        items = {str(k): np.asarray(v) for k, v in mask.items()}
    else:
        items = {"attribute": np.asarray(mask)}
    out = {}
    for name, m in items.items():
        m = np.asarray(m).reshape(-1)
        if m.dtype != bool:
            values = m.astype(float)
            if not np.isin(values[~np.isnan(values)], (0.0, 1.0)).all():
                raise ValueError(f"the mask of {name!r} must be boolean (or 0/1); got values "
                                 f"such as {values[~np.isin(values, (0.0, 1.0))][:3].tolist()}")
            m = values == 1.0
        out[name] = m
    return out


def activation_histogram(values: Any, mask: Any, *, attribute: str | None = None,
                         feature: Any = None, bins: int = 40, drop_zeros: bool = False,
                         title: str | None = None) -> Figure:
    """Fig. 5: a feature's activations on rows with the attribute vs rows without it.

    Each group's histogram is normalised to shares of its own rows (so a rare attribute is as
    visible as a common one); hovering a bar shows its bin, count and share. Histograms
    already binned (e.g. a feature page's) are drawn the same way by
    :func:`binned_activation_histogram`.

    Args:
        values: the feature's activation per row, ``(N,)``; or, with several attributes, a
            mapping / DataFrame attribute -> that attribute's feature values.
        mask: ``(N,)`` booleans (row has the attribute), or a DataFrame / mapping of them,
            one panel per attribute.
        attribute: name of the attribute of a single mask.
        feature: the feature's label (title and hover), or a mapping attribute -> label.
        bins: number of bins (shared by the two groups of a panel).
        drop_zeros: leave out rows where the feature is exactly 0 (an SAE feature is 0 on
            most rows).
        title: figure title.

    Raises:
        ValueError: a mask is not boolean or its length differs from the values'.
    """
    masks = _masks(mask)
    if attribute is not None and len(masks) == 1:
        masks = {attribute: next(iter(masks.values()))}
    names = list(masks)
    if isinstance(values, (pd.DataFrame, Mapping)):
        per = {str(k): np.asarray(values[k], dtype=float).reshape(-1) for k in values}
        missing = [n for n in names if n not in per]
        if missing:
            raise ValueError(f"no feature values for {missing}")
    else:
        shared = np.asarray(values, dtype=float).reshape(-1)
        per = dict.fromkeys(names, shared)
    panels = {}
    for name in names:
        x, m = per[name], masks[name]
        if x.shape != m.shape:
            raise ValueError(f"{name}: {m.shape[0]} mask rows for {x.shape[0]} values")
        keep = np.isfinite(x) & ((x != 0.0) if drop_zeros else True)
        x, m = x[keep], m[keep]
        edges = np.histogram_bin_edges(x if x.size else np.zeros(1), bins=bins)
        panels[name] = {"edges": edges, "with_attribute": np.histogram(x[m], bins=edges)[0],
                        "without_attribute": np.histogram(x[~m], bins=edges)[0]}
    return binned_activation_histogram(panels, feature=feature, title=title)


def binned_activation_histogram(histograms: Mapping[str, Mapping[str, Any]], *,
                                feature: Any = None, attribute: Any = None,
                                title: str | None = None) -> Figure:
    """Fig. 5 from histograms already binned: one panel each, the rows with the attribute vs
    the rows without it, each group normalised to shares of its own rows (as
    :func:`activation_histogram`, which bins raw activations and draws through this).

    Args:
        histograms: panel name -> ``{"edges": [...], "with_attribute": [...],
            "without_attribute": [...]}`` (bin edges and the two groups' counts per bin, as a
            feature page's ``histogram``, :func:`mechrec_recsys.feature_pages.feature_dashboard`).
            A panel without bins (the feature never fired) is drawn empty.
        feature: the feature's label (title and hover), or a mapping panel -> label.
        attribute: the attribute a panel splits by, when it is not the panel's name: one
            name, or a mapping panel -> name (panel titles and hover).
        title: figure title.

    Raises:
        ValueError: no panel, or counts whose length is not one less than the edges'.
    """
    go = _go()
    from plotly.subplots import make_subplots

    names = [str(n) for n in histograms]
    if not names:
        raise ValueError("no histogram to draw")
    labels = feature if isinstance(feature, Mapping) else dict.fromkeys(names, feature)
    splits = (attribute if isinstance(attribute, Mapping)
              else dict.fromkeys(names, attribute))

    def panel_title(name: str) -> str:
        split = splits.get(name)
        text = name + (f" (feature #{exact(labels.get(name))})"
                       if labels.get(name) is not None else "")
        return text + (f", split by {split}" if split is not None and split != name else "")

    fig = make_subplots(rows=len(names), cols=1, subplot_titles=[panel_title(n) for n in names],
                        vertical_spacing=min(0.2, 0.45 / max(len(names), 1)))
    for row, (name, hist) in enumerate(zip(names, histograms.values(), strict=True), start=1):
        split = splits.get(name) or name
        edges = np.asarray(hist.get("edges", []), dtype=float).reshape(-1)
        groups = {part: np.asarray(hist.get(f"{part}_attribute", []), dtype=float).reshape(-1)
                  for part in ("with", "without")}
        for part, counts in groups.items():
            if len(counts) != max(len(edges) - 1, 0):
                raise ValueError(f"{name}: {len(counts)} '{part}' counts for {len(edges)} "
                                 "bin edges (need one count fewer than edges)")
        for i, (part, counts) in enumerate(groups.items()):
            total = int(counts.sum())
            share = counts / total if total else np.zeros_like(counts, dtype=float)
            custom = [[exact(lo), exact(hi), int(c), exact(s)]
                      for lo, hi, c, s in zip(edges[:-1], edges[1:], counts, share, strict=True)]
            fig.add_trace(go.Bar(
                x=(edges[:-1] + edges[1:]) / 2, y=share, width=np.diff(edges),
                name=f"{part} the attribute", legendgroup=part, showlegend=row == 1,
                marker_color=PALETTE[i], opacity=0.6, customdata=custom,
                meta={"panel": name, "group": part},
                hovertemplate=(f"{split}, {part} ({total} rows)<br>activation %{{customdata[0]}}"
                               " to %{customdata[1]}<br>%{customdata[2]} rows, share "
                               "%{customdata[3]}<extra></extra>")), row=row, col=1)
        if row == len(names):
            fig.update_xaxes(title_text="feature activation", row=row, col=1)
        fig.update_yaxes(title_text="share of rows", row=row, col=1)
    only = labels.get(names[0]) if len(names) == 1 else None
    fig.update_layout(**_LAYOUT, barmode="overlay", bargap=0,
                      height=max(340, 280 * len(names) + 60),
                      title=title or ("activations of feature #" + exact(only) if only is not None
                                      else "feature activations") + " with / without the attribute")
    return fig


# ------------------------------------------------------------------------------ Figs. 8, 9
def _reference(rows: pd.DataFrame, method: str, metric: str, column: Any) -> float | None:
    match = rows[rows["method"] == method]
    if match.empty:
        return None
    row = match.iloc[0]
    key = f"share:{column}" if metric == "target_share" else metric
    value = row.get(key) if key in row.index else None
    x = _floats([value])[0]
    return float(x) if math.isfinite(x) else None


def steering_curves(table: pd.DataFrame, metric: str = "target_share", *,
                    label: str = "attribute", attributes: Sequence[str] | None = None,
                    methods: Sequence[str] | None = None,
                    references: Sequence[str] = ("unsteered",),
                    reference_rows: pd.DataFrame | None = None, columns: int = 3,
                    y_title: str | None = None, title: str | None = None) -> Figure:
    """Figs. 8 and 9: ``metric`` vs the steering value, one panel per attribute, one line per
    curve (probe directions dashed), ± the standard error ``<metric>_se`` when the table has it.

    Args:
        table: :attr:`~mechrec.attribute_steering.AttributeSweep.table` or
            :meth:`~mechrec.attribute_steering.AttributeSweep.target_share_table` (rows with a
            missing ``value`` are reference rows).
        metric: the column on the y axis (``target_share``: the share of the curve's own
            attribute; a recommender's sweep also has ``ndcg``, ``coverage``, ...).
        label: the table's attribute column (``genre`` in a recommender's sweep).
        attributes: panels to draw (default: every attribute, in table order).
        methods: curve methods to keep (Fig. 9: ``("sae_direction", "probe_direction")``).
        references: reference rows drawn as dotted horizontal lines (``unsteered``,
            ``sae_reconstruction``); for ``target_share`` the reference's share of the panel's
            attribute (its ``share:<column>`` value).
        reference_rows: the reference rows when ``table`` has none (e.g. a saved
            ``summary.json``'s ``references``).
        columns: panels per row.
        y_title: y-axis title (default: the metric).
        title: figure title.
    """
    go = _go()
    from plotly.subplots import make_subplots

    refs = table[table["value"].isna()] if "value" in table.columns else table.iloc[:0]
    if reference_rows is not None:
        refs = pd.concat([refs, reference_rows], ignore_index=True)
    curves = table[table["value"].notna()]
    if methods is not None:
        curves = curves[curves["method"].isin(list(methods))]
    panels = list(pd.unique(curves[label])) if attributes is None else [
        a for a in attributes if a in set(curves[label])]
    ncols = max(1, min(columns, len(panels)))
    nrows = max(1, math.ceil(len(panels) / ncols))
    fig = make_subplots(rows=nrows, cols=ncols,
                        subplot_titles=[str(p) for p in panels] if len(panels) > 1 else None,
                        shared_yaxes=False, horizontal_spacing=0.08,
                        vertical_spacing=min(0.15, 0.45 / nrows))
    seen: dict[str, str] = {}
    for i, panel in enumerate(panels):
        row, col = i // ncols + 1, i % ncols + 1
        group = curves[curves[label] == panel]
        for _, rows in group.groupby("curve", sort=False):
            rows = rows.sort_values("value")
            first = rows.iloc[0]
            name = _curve_label(first["method"], first["mode"])
            known = list(CURVE_LABELS.values())
            color = seen.setdefault(name, PALETTE[(known.index(name) if name in known
                                                   else len(known) + len(seen)) % len(PALETTE)])
            y = rows[metric].to_numpy(dtype=float)
            se_col = f"{metric}_se"
            se = rows[se_col].to_numpy(dtype=float) if se_col in rows else None
            custom = [[exact(v), exact(s), exact(first.get("feature"))]
                      for v, s in zip(y, se if se is not None else [None] * len(y),
                                      strict=True)]
            fig.add_trace(go.Scatter(
                x=rows["value"].to_numpy(dtype=float), y=y, mode="lines+markers", name=name,
                legendgroup=name, showlegend=name not in {t.name for t in fig.data},
                line={"color": color,
                      "dash": "dash" if first["method"] == "probe_direction" else "solid"},
                error_y=({"type": "data", "array": np.nan_to_num(se), "thickness": 1,
                          "width": 2} if se is not None else None),
                customdata=custom,
                hovertemplate=(f"{panel}, {name}<br>value %{{x}}<br>{metric} = "
                               "%{customdata[0]} ± %{customdata[1]}<extra></extra>")),
                row=row, col=col)
        column = group["column"].iloc[0] if "column" in group and len(group) else panel
        for method in references:
            y_ref = _reference(refs, method, metric, column)
            if y_ref is None:
                continue
            fig.add_hline(y=y_ref, line_dash="dot", line_color="#777", row=row, col=col,
                          annotation_text=f"{method} {y_ref:.4g}",
                          annotation_font_size=10, annotation_position="top left")
    fig.update_xaxes(title_text="steering value")
    fig.update_yaxes(title_text=y_title or metric)
    fig.update_layout(**_LAYOUT, height=max(340, 300 * nrows),
                      title=title or f"{metric} vs steering value")
    return fig


# ------------------------------------------------------------------------------ Table 1
def metric_lines(frame: pd.DataFrame | Sequence[Mapping[str, Any]], x: str,
                 y: Mapping[str, str], *, err: Mapping[str, str] | None = None,
                 x_title: str | None = None, y_title: str | None = None,
                 title: str | None = None, log_x: bool = False,
                 references: Mapping[str, Any] | None = None,
                 dashed: Sequence[str] = ()) -> Figure:
    """Metrics vs a swept setting as lines (Table 1 / Fig. 3: explained variance, NDCG or the
    mean best-attribute correlation vs the L1 weight or the dictionary size; training curves).

    Args:
        frame: the table (or a list of row dicts, e.g. ``table1.json``'s rows).
        x: column on the x axis.
        y: legend name -> column of each line.
        err: legend name -> column of its ± error bars (a std or standard error).
        x_title: x-axis title (default ``x``).
        y_title: y-axis title.
        title: figure title.
        log_x: logarithmic x axis (L1 weights, dictionary sizes).
        references: name -> value drawn as a dotted horizontal line (missing values skipped).
        dashed: names of lines drawn dashed.
    """
    go = _go()
    data = pd.DataFrame(list(frame)) if not isinstance(frame, pd.DataFrame) else frame
    data = data.sort_values(x, kind="stable")
    xs = _floats(data[x])
    fig = go.Figure()
    for i, (name, column) in enumerate(y.items()):
        ys = _floats(data[column])
        e_col = (err or {}).get(name)
        es = _floats(data[e_col]) if e_col is not None and e_col in data else None
        custom = [[exact(a), exact(b), exact(c)] for a, b, c in
                  zip(xs, ys, es if es is not None else [None] * len(ys), strict=True)]
        spread = " ± %{customdata[2]}" if es is not None else ""
        fig.add_trace(go.Scatter(
            x=xs, y=ys, mode="lines+markers", name=name,
            line={"color": PALETTE[i % len(PALETTE)],
                  "dash": "dash" if name in dashed else "solid"},
            error_y=({"type": "data", "array": np.nan_to_num(es), "thickness": 1, "width": 3}
                     if es is not None and np.isfinite(es).any() else None),
            customdata=custom,
            hovertemplate=(f"{name}<br>{x_title or x} = %{{customdata[0]}}<br>"
                           f"%{{customdata[1]}}{spread}<extra></extra>")))
    for name, value in (references or {}).items():
        v = _floats([value])[0]
        if math.isfinite(v):
            fig.add_hline(y=float(v), line_dash="dot", line_color="#777",
                          annotation_text=f"{name} {v:.4g}", annotation_font_size=10,
                          annotation_position="top left")
    fig.update_xaxes(title_text=x_title or x, type="log" if log_x else None)
    fig.update_yaxes(title_text=y_title)
    fig.update_layout(**_LAYOUT, height=340, title=title)
    return fig


#: Display names of Table 1's metrics (``{k}``: the list length of the ranking metrics).
TABLE1_METRIC_LABELS: dict[str, str] = {
    "rmse": "RMSE", "explained_variance": "explained variance", "l0": "L0",
    "dead_fraction": "dead fraction", "ndcg": "NDCG@{k}", "hit_rate": "HitRate@{k}",
    "coverage": "Coverage@{k}", "ndcg_delta": "ΔNDCG@{k} (paired)",
    "genre_corr_honest": "mean best-genre correlation (honest)",
    "genre_corr_in_sample": "mean best-genre correlation (in-sample)",
}
#: The two sweeps of Table 1: ``sweep`` value -> (x column, x-axis title, fixed column).
_TABLE1_SWEEPS: dict[str, tuple[str, str, str]] = {
    "l1": ("l1_coefficient", "L1 weight", "d_sae"),
    "d_sae": ("d_sae", "dictionary size", "l1_coefficient"),
}


def table1_figure(rows: pd.DataFrame | Sequence[Mapping[str, Any]], *,
                  runs: pd.DataFrame | Sequence[Mapping[str, Any]] | None = None,
                  metrics: Sequence[str] = ("explained_variance", "l0", "ndcg"), k: int = 10,
                  title: str | None = None) -> Figure:
    """Table 1's grid: one row of panels per metric, the L1 sweep (metric vs L1 weight at one
    dictionary size) on the left and the dictionary-size sweep (metric vs dictionary size at
    one L1 weight) on the right, both on log axes.

    Each panel has the mean over seeds (``<metric>_mean``) as a line with ± the standard
    deviation over seeds (``<metric>_std``) as error bars; with several seeds per point and
    ``runs`` given, each seed's own value as a faint marker; for the ranking metrics, the
    original model's value (the ``original`` row) as a dotted line. Every trace's ``meta``
    says what it holds: ``{"metric", "sweep", "kind"}`` with kind ``"mean"`` or ``"seeds"``.

    Args:
        rows: the table's lines (``Table1.rows()`` or ``table1.csv``): columns ``sweep``
            (``"l1"``, ``"d_sae"`` or ``"original"``), ``l1_coefficient``, ``d_sae`` and
            ``<metric>_mean`` / ``<metric>_std``.
        runs: one row per trained SAE (``Table1.runs``): ``l1_coefficient``, ``d_sae``,
            ``seed`` and ``<metric>``.
        metrics: what to draw, one row of panels each (keys of
            :data:`TABLE1_METRIC_LABELS`, or any metric the rows have).
        k: list length of the ranking metrics (for the labels).
        title: figure title.

    Raises:
        ValueError: a metric the rows do not have, or rows without any sweep line.
    """
    go = _go()
    from plotly.subplots import make_subplots

    data = pd.DataFrame(list(rows)) if not isinstance(rows, pd.DataFrame) else rows
    if "sweep" not in data.columns:
        raise ValueError("Table 1's rows need a 'sweep' column (Table1.rows() or table1.csv)")
    missing = [m for m in metrics if f"{m}_mean" not in data.columns]
    if missing or not metrics:
        raise ValueError(f"unknown metric(s) {missing}; choose among "
                         f"{[c[:-5] for c in data.columns if str(c).endswith('_mean')]}")
    sweeps = [s for s in _TABLE1_SWEEPS if (data["sweep"] == s).any()]
    if not sweeps:
        raise ValueError("Table 1's rows hold no sweep line (sweep 'l1' or 'd_sae')")
    original = data[data["sweep"] == "original"]
    per_seed = (pd.DataFrame(list(runs)) if runs is not None and not isinstance(runs, pd.DataFrame)
                else runs)
    several = (per_seed is not None and len(per_seed) > 0 and "seed" in per_seed
               and per_seed["seed"].nunique() > 1)
    labels = {m: TABLE1_METRIC_LABELS.get(m, m).format(k=k) for m in metrics}
    titles = []
    for m in metrics:
        for s in sweeps:
            x, x_title, fixed = _TABLE1_SWEEPS[s]
            line = data[data["sweep"] == s]
            at = (f"dictionary {exact(line[fixed].iloc[0])}" if s == "l1"
                  else f"L1 {exact(line[fixed].iloc[0])}")
            titles.append(f"{labels[m]} vs {x_title} ({at})")
    fig = make_subplots(rows=len(metrics), cols=len(sweeps), subplot_titles=titles,
                        horizontal_spacing=0.1, vertical_spacing=min(0.12, 0.4 / len(metrics)))
    for r, m in enumerate(metrics, start=1):
        color = PALETTE[(r - 1) % len(PALETTE)]
        for c, s in enumerate(sweeps, start=1):
            x, x_title, _ = _TABLE1_SWEEPS[s]
            line = data[data["sweep"] == s].sort_values(x, kind="stable")
            xs, ys = _floats(line[x]), _floats(line[f"{m}_mean"])
            std_col = f"{m}_std"
            es = _floats(line[std_col]) if std_col in line else np.full(len(ys), np.nan)
            n = _floats(line["n_seeds"]) if "n_seeds" in line else np.ones(len(ys))
            custom = [[exact(a), exact(b), exact(e), exact(s_)] for a, b, e, s_ in
                      zip(xs, ys, es, n, strict=True)]
            fig.add_trace(go.Scatter(
                x=xs, y=ys, mode="lines+markers", name=labels[m], legendgroup=m,
                showlegend=c == 1, line={"color": color},
                error_y=({"type": "data", "array": np.nan_to_num(es), "thickness": 1,
                          "width": 3} if np.isfinite(es).any() else None),
                customdata=custom, meta={"metric": m, "sweep": s, "kind": "mean"},
                hovertemplate=(f"{labels[m]}<br>{x_title} = %{{customdata[0]}}<br>"
                               "%{customdata[1]} ± %{customdata[2]} (std over "
                               "%{customdata[3]} seeds)<extra></extra>")), row=r, col=c)
            if several and m in per_seed:
                points = set(zip(_floats(line["d_sae"]), _floats(line["l1_coefficient"]),
                                 strict=True))
                keep = [(d, lv) in points for d, lv in
                        zip(_floats(per_seed["d_sae"]), _floats(per_seed["l1_coefficient"]),
                            strict=True)]
                seeds = per_seed[keep]
                sx, sy = _floats(seeds[x]), _floats(seeds[m])
                fig.add_trace(go.Scatter(
                    x=sx, y=sy, mode="markers", name=f"{labels[m]}, each seed",
                    legendgroup=m, showlegend=False, opacity=0.45,
                    marker={"color": color, "size": 6, "symbol": "circle-open"},
                    customdata=[[exact(a), exact(b), exact(sd)] for a, b, sd in
                                zip(sx, sy, seeds["seed"], strict=True)],
                    meta={"metric": m, "sweep": s, "kind": "seeds"},
                    hovertemplate=(f"{labels[m]}, seed %{{customdata[2]}}<br>{x_title} = "
                                   "%{customdata[0]}<br>%{customdata[1]}<extra></extra>")),
                    row=r, col=c)
            if len(original) and f"{m}_mean" in original:
                ref = _floats(original[f"{m}_mean"])[0]
                if math.isfinite(ref):
                    fig.add_hline(y=float(ref), line_dash="dot", line_color="#777", row=r,
                                  col=c, annotation_text=f"original {ref:.4g}",
                                  annotation_font_size=10, annotation_position="top left")
            fig.update_xaxes(title_text=x_title, type="log", row=r, col=c)
            fig.update_yaxes(title_text=labels[m], row=r, col=c)
    fig.update_layout(**_LAYOUT, height=max(340, 290 * len(metrics)),
                      title=title or "Table 1: SAE quality vs L1 weight and dictionary size")
    return fig


# ------------------------------------------------------------------------------ result objects
ALIGNMENT_KINDS: tuple[str, ...] = ("comparison", "profiles", "histogram")
SWEEP_KINDS: tuple[str, ...] = ("share", "directions")


def alignment_figure(run: Any, kind: str = "comparison", *, source: str = "SAE",
                     boot: Any = None, confidence: float = 0.95, group: str | None = None,
                     attributes: str | Sequence[str] | None = None, **kwargs: Any) -> Figure:
    """The figure ``kind`` of an :class:`~mechrec.alignment.AlignmentRun` (what its
    ``plot`` method returns).

    Args:
        run: the alignment run.
        kind: ``"comparison"`` (Fig. 4, :func:`comparison_bars`; error bars with ``boot``),
            ``"profiles"`` (Fig. 2, :func:`profile_heatmap` of ``source``) or
            ``"histogram"`` (Fig. 5, :func:`activation_histogram` of each attribute's chosen
            ``source`` feature on the score rows).
        source: feature set of the profiles and histograms.
        boot: an :meth:`~mechrec.alignment.AlignmentRun.bootstrap` result for the intervals.
        confidence: the intervals' confidence.
        group: keep one attribute group (bars, heatmap; histograms: default the first group).
        attributes: attributes of the heatmap / histograms.
        **kwargs: passed to the figure function.

    Raises:
        ValueError: an unknown kind, or histograms of a run without score rows.
    """
    if kind == "comparison":
        intervals = run.interval_table(boot, confidence) if boot is not None else None
        return comparison_bars(run.comparison(), metric=run.metric, group=group,
                               intervals=intervals, **kwargs)
    members = None
    if group is not None:
        members = [str(a) for a, g in run.groups.items() if g == group]
    if isinstance(attributes, str):
        attributes = [attributes]
    if kind == "profiles":
        return profile_heatmap(run.profiles(source), metric=run.metric,
                               attributes=attributes if attributes is not None else members,
                               **kwargs)
    if kind == "histogram":
        rows = run.scored
        if rows is None:
            raise ValueError("this AlignmentRun holds no score rows: build it with "
                             "mechrec.alignment.align(...) to plot activation histograms")
        if source not in rows.columns:
            raise ValueError(f"unknown feature set {source!r}; choose one of "
                             f"{list(rows.columns)}")
        if attributes is None:
            first = group if group is not None else run.group_order[0]
            attributes = [str(a) for a, g in run.groups.items() if g == first]
        chosen = rows.selections[source]
        attributes = [a for a in attributes if chosen.get(a) is not None]
        labels = rows.features[source]
        values = {a: rows.columns[source][:, labels.index(chosen[a])] for a in attributes}
        return activation_histogram(values, rows.labels[attributes],
                                    feature={a: chosen[a] for a in attributes}, **kwargs)
    raise ValueError(f"unknown figure {kind!r}; choose one of {list(ALIGNMENT_KINDS)}")


def sweep_figure(sweep: Any, kind: str = "share", **kwargs: Any) -> Figure:
    """The figure ``kind`` of an :class:`~mechrec.attribute_steering.AttributeSweep` (what its
    ``plot`` method returns): ``"share"`` (Fig. 8: the target share of every curve),
    ``"directions"`` (Fig. 9: SAE decoder direction vs probe direction) or any metric column of
    its table (e.g. ``"ndcg"``); ``kwargs`` go to :func:`steering_curves`."""
    if kind == "directions":
        kwargs.setdefault("methods", ("sae_direction", "probe_direction"))
        kwargs.setdefault("title", "SAE direction vs probe direction: target share vs value")
        kind = "target_share"
    elif kind == "share":
        kind = "target_share"
    if kind not in sweep.table.columns:
        raise ValueError(f"unknown figure {kind!r}; choose one of {list(SWEEP_KINDS)} or a "
                         "metric column of the sweep's table")
    return steering_curves(sweep.table, kind, label=sweep.label, **kwargs)
