"""The self-contained HTML report: the blocks of :mod:`.markdown` as tables, and the figures as
base64 PNGs inside the page (``data:`` URIs) — no script, stylesheet, font or image is fetched.

Figures: the drop of each attack (mean ± std over the seeds, error bars), the detection ROC
curves of the defenses (first seed of each pair), the poison grids (image data: poisons beside
their source images, from each attack cell's ``poisons.png``).
"""

from __future__ import annotations

import base64
import html
import io
from typing import Any

from ..figures import new_figure
from .markdown import blocks, headline, settings_lines, title
from .summary import label

STYLE = """
body { font-family: -apple-system, 'Segoe UI', Helvetica, Arial, sans-serif; max-width: 1100px; margin: 2em auto;
       padding: 0 1em; color: #222; line-height: 1.45; }
table { border-collapse: collapse; margin: 0.6em 0 1.2em; font-size: 0.92em; }
th, td { border: 1px solid #ccc; padding: 0.3em 0.6em; text-align: left; vertical-align: top; }
th { background: #f3f3f3; }
.headline { font-size: 1.15em; background: #fff6e0; border-left: 4px solid #e0a000; padding: 0.6em 1em; }
figure { margin: 1em 0; } figcaption { font-size: 0.9em; color: #555; }
img { max-width: 100%; }
pre { background: #f6f6f6; padding: 0.8em; overflow-x: auto; white-space: pre-wrap; }
"""


def _png(fig) -> str:
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png", dpi=110)
    return base64.b64encode(buf.getvalue()).decode()


def drop_chart(ev: Any) -> str | None:
    """Bar chart of the mean drop per attack with ± std error bars (base64 PNG)."""
    rows = [(label(a.name), a.summary()["accuracy_drop"]) for a in ev.attacks if a.accuracy_drop]
    if not rows:
        return None
    rows.sort(key=lambda r: -r[1]["mean"])
    fig, ax = new_figure(figsize=(max(5.0, 0.8 * len(rows) + 2), 3.6))
    x = range(len(rows))
    ax.bar(x, [r[1]["mean"] for r in rows], yerr=[r[1]["std"] if r[1]["n"] > 1 else 0.0 for r in rows], capsize=4,
           color="C3")
    ax.set_xticks(list(x))
    ax.set_xticklabels([r[0] for r in rows], rotation=30, ha="right", fontsize=8)
    ax.axhline(0.0, color="grey", lw=0.8)
    ax.set_ylabel("accuracy drop (points)")
    ax.set_title(f"Drop per attack, ε = {ev.settings['fraction']:g} (mean ± std over {len(ev.settings['seeds'])} seed(s))",
                 fontsize=9)
    ax.grid(axis="y", alpha=0.3)
    return _png(fig)


def roc_chart(ev: Any) -> str | None:
    """The ROC curves of the defenses' scores (one panel per attack; first seed of each pair)."""
    attacks = sorted({x.attack for x in ev.defenses if x.roc})
    if not attacks:
        return None
    fig, axes = new_figure(1, len(attacks), figsize=(4.6 * len(attacks), 4.2), squeeze=False)
    for ax, attack in zip(axes[0], attacks):
        for x in sorted((x for x in ev.defenses if x.attack == attack and x.roc), key=lambda x: x.defense):
            seed = min(x.roc)
            fpr, tpr = x.roc[seed]
            auc = x.roc_auc[x.seeds.index(seed)] if seed in x.seeds else None
            ax.plot(fpr, tpr, lw=1.2, label=f"{x.defense}" + (f" (AUC {auc:.2f})" if auc is not None else ""))
        ax.plot([0, 1], [0, 1], color="grey", ls=":", lw=0.8)
        ax.set_xlabel("false positive rate (clean points flagged)")
        ax.set_ylabel("true positive rate (poisons flagged)")
        ax.set_title(f"detection of {label(attack)}'s poisons", fontsize=9)
        ax.legend(fontsize=7, loc="lower right")
        ax.grid(alpha=0.3)
    return _png(fig)


def _table(headers: list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _figure(data: str, alt: str, caption: str) -> str:
    return (f'<figure><img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'
            f"<figcaption>{html.escape(caption)}</figcaption></figure>")


def _bold(text: str) -> str:
    """Markdown ``**x**`` as ``<strong>`` (the only markup the headline uses), the rest escaped."""
    parts = html.escape(text).split("**")
    return "".join(f"<strong>{p}</strong>" if i % 2 else p for i, p in enumerate(parts))


def render_html(ev: Any) -> str:
    t = title(ev)
    parts = [f"<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{html.escape(t)}</title>"
             f"<style>{STYLE}</style></head><body>", f"<h1>{html.escape(t)}</h1>"]
    parts.append('<div class="headline">' + "<br>".join(_bold(x) for x in headline(ev)) + "</div>")
    figures: dict[str, list[str]] = {"attacks": [], "defenses": []}
    bar = drop_chart(ev)
    if bar:
        figures["attacks"].append(_figure(bar, "drop per attack", "Accuracy drop per attack (points), mean ± std over "
                                          "the seeds (error bars: std)."))
    for name, png in ev.grids.items():
        figures["attacks"].append(_figure(png, f"poisons of {name}", f"{label(name)}: poisons (row 2) beside their "
                                          "source images (row 1) and |poison − source| (row 3), first seed."))
    roc = roc_chart(ev)
    if roc:
        figures["defenses"].append(_figure(roc, "detection ROC curves", "ROC curves of the defenses' suspicion scores "
                                           "against the true poison mask (first seed)."))
    for b in blocks(ev):
        parts.append(f"<h2>{html.escape(b.title)}</h2><p>{html.escape(b.intro)}</p>{_table(b.headers, b.rows)}")
        if b.note:
            parts.append(f"<p>{html.escape(b.note)}</p>")
        parts += figures.get(b.key, [])
    parts.append("<h2>Settings</h2><p>Everything needed to rerun this evaluation.</p><pre>"
                 + html.escape("\n".join(settings_lines(ev))) + "</pre>")
    parts.append("</body></html>")
    return "\n".join(parts)
