"""The report page: one self-contained HTML file (inline CSS, PNG figures as data: URIs, no script).

Nothing on the page refers to the network: no external stylesheet, script, font, image or link.
"""

from __future__ import annotations

from html import escape

import numpy as np

from graphprune.explain import figures
from graphprune.report.format import human as _human

CSS = """
body{font:15px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:#1d2733;margin:0;background:#f6f7f9}
main{max-width:1180px;margin:0 auto;padding:18px 22px 40px}
h1{font-size:24px;margin:8px 0 2px}h2{font-size:19px;margin:28px 0 8px;border-bottom:1px solid #d8dde3;padding-bottom:4px}
h3{font-size:15px;margin:16px 0 6px}.sub{color:#5b6773;font-size:13px;word-break:break-all}
.cards{display:grid;grid-template-columns:repeat(auto-fit,minmax(170px,1fr));gap:10px;margin:14px 0}
.card{background:#fff;border:1px solid #dde2e8;border-radius:8px;padding:10px 12px}
.card b{display:block;font-size:19px;white-space:nowrap}.card span{color:#5b6773;font-size:12px}
.grid2{display:grid;grid-template-columns:repeat(auto-fit,minmax(420px,1fr));gap:14px;align-items:start}
figure{margin:0;background:#fff;border:1px solid #dde2e8;border-radius:8px;padding:8px}
figure img{max-width:100%;height:auto;display:block;margin:0 auto}
figcaption{font-size:12px;color:#5b6773;margin-top:4px}
table{border-collapse:collapse;background:#fff;font-size:13px;margin:6px 0}
td,th{border:1px solid #dde2e8;padding:4px 8px;text-align:right}th{background:#eef1f4}td:first-child,th:first-child{text-align:left}
.note{background:#fff8e5;border:1px solid #f0dca0;border-radius:6px;padding:6px 10px;font-size:13px;margin:6px 0}
.changed{border-left:4px solid #c0392b}.tok{line-height:2.1;font-family:ui-monospace,Menlo,Consolas,monospace;font-size:13px}
.tok span{padding:2px 3px;margin:1px;border-radius:3px}.bad{color:#c0392b;font-weight:600}
"""


def _fmt(v, digits: int = 3) -> str:
    if v is None:
        return "n/a"
    if isinstance(v, float):
        return "n/a" if np.isnan(v) else f"{v:.{digits}f}"
    return escape(str(v))


def _card(value: str, label: str) -> str:
    return f'<div class="card"><b>{value}</b><span>{escape(label)}</span></div>'


def _figure(uri: str, caption: str) -> str:
    return f'<figure><img alt="{escape(caption)}" src="{uri}"><figcaption>{escape(caption)}</figcaption></figure>'


def _table(head: list[str], rows: list[list]) -> str:
    h = "".join(f"<th>{escape(c)}</th>" for c in head)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><tr>{h}</tr>{body}</table>"


def _cards(d: dict) -> str:
    dec, st = d["decisions"], d["structure"]
    cards = []
    if dec["kind"] == "classes":
        cards.append(_card(_fmt(dec["top1_agreement"]), f"top-1 agreement ({dec['num_inputs']} inputs)"))
        cards.append(_card(_fmt(dec["kl_divergence"], 4), "mean KL(original || pruned), nats"))
    else:
        cards.append(_card(_fmt(dec["cosine_mean"]), f"output cosine, mean ({dec['num_inputs']} inputs)"))
        cards.append(_card(_fmt(dec["neighbour_agreement"]), "nearest-neighbour agreement"))
    if dec["accuracy"]:
        cards.append(_card(f"{dec['accuracy']['original']:.3f} &rarr; {dec['accuracy']['pruned']:.3f}", "accuracy"))
    cards.append(_card(f"{_human(st['params_before'])} &rarr; {_human(st['params_after'])}", "parameters"))
    cards.append(_card(f"{_human(st['macs_before'])} &rarr; {_human(st['macs_after'])}",
                       "MACs" + (" per input" if st.get("macs_per") else "")))
    for name, m in d["explanations"].items():
        s = m.get("summary", {}).get("spearman")
        if s and m.get("sane"):
            cards.append(_card(_fmt(s["value"]), f"{name.replace('_', ' ')}: Spearman (ceiling {s['ceiling']:.2f}, "
                               f"floor {s['floor']:.2f})"))
    return '<div class="cards">' + "".join(cards) + "</div>"


def _structure(d: dict) -> str:
    st = d["structure"]
    parts = ["<h2>Structure</h2>", '<div class="grid2">']
    if st["layers"]:
        shown = min(len(st["layers"]), figures.MAX_LAYERS)
        parts.append(_figure(figures.widths(st["layers"], "width per layer (by parameter name)"),
                             f"width of each weight, original vs pruned ({shown} of {len(st['layers'])} layers)"))
    if st["groups"]:
        rows = [[escape(g["group"]), g["width_before"], g["width_after"], g["removed"]] for g in st["groups"]]
        parts.append("<div><h3>Pruned groups (shrink report)</h3>" + _table(["group", "before", "after", "removed"], rows[:40])
                     + (f'<div class="sub">{len(rows) - 40} more in the JSON</div>' if len(rows) > 40 else "") + "</div>")
    parts.append("</div>")
    if any(g.get("scores") for g in st["groups"]):
        parts.append(_figure(figures.scores(st["groups"]), "importance scores per group, the cut marked (lowest go)"))
    if st.get("budget"):
        b = st["budget"]
        parts.append(f"<p>Budget ({escape(str(b.get('kind', '')))}): target {_fmt(b.get('target'))}, achieved "
                     f"{_fmt(b.get('achieved'))} of the original.</p>")
    if st.get("removed_blocks"):
        parts.append("<h3>Removed blocks</h3><p>" + escape(", ".join(map(str, st["removed_blocks"]))) + "</p>")
    if st.get("latency"):
        parts.append("<h3>Latency (shrink report)</h3>" + _table(["measure", "value"], [[escape(k), _fmt(v)]
                                                                                          for k, v in st["latency"].items()][:30]))
    return "".join(parts)


def _decisions(d: dict) -> str:
    dec = d["decisions"]
    parts = ["<h2>Decisions</h2>", '<div class="grid2">']
    if dec["flips"]:
        f = dec["flips"]
        parts.append("<div><h3>Flip table</h3>" + _table(
            ["original \\ pruned", "right", "wrong"],
            [["right", f["right_to_right"], f'<span class="bad">{f["right_to_wrong"]}</span>'],
             ["wrong", f["wrong_to_right"], f["wrong_to_wrong"]]]) + "</div>")
    if dec["recall"]:
        parts.append(_figure(figures.recall_change(dec["recall"]), "per-class recall change (pruned - original)"))
    if dec["kind"] == "classes":
        parts.append(_figure(figures.histogram(dec["kl_per_input"], "KL(original || pruned) per input"),
                             f"{len(dec['changed'])} of {dec['num_inputs']} decisions changed"))
    else:
        parts.append(_figure(figures.histogram(dec["cosine_per_input"], "cosine of pooled outputs per input"),
                             f"{len(dec['changed'])} of {dec['num_inputs']} nearest neighbours changed"))
    parts.append("</div>")
    if dec["recall"]:
        rows = [[r["class"], r["support"], _fmt(r["original"]), _fmt(r["pruned"]), _fmt(r["change"])] for r in dec["recall"]]
        parts.append("<details><summary>per-class recall</summary>"
                     + _table(["class", "inputs", "original", "pruned", "change"], rows) + "</details>")
    return "".join(parts)


def _explanations(d: dict) -> str:
    parts = ["<h2>Explanations</h2>"]
    summary = {n: m["summary"] for n, m in d["explanations"].items() if "summary" in m and m.get("sane")}
    if summary:
        parts.append(_figure(figures.agreement(summary), "agreement of the pruned model's maps with the original's (dot), "
                             "between the floor (random weights, left tick) and the ceiling (a second run, right tick)"))
    rows = []
    for name, m in d["explanations"].items():
        if "skipped" in m:
            rows.append([escape(name), "", "", "", "", f"not used: {escape(m['skipped'])}"])
            continue
        verdict = "" if m["sane"] else '<span class="bad">fails the randomisation check; left out</span>'
        for metric, s in m["summary"].items():
            rows.append([escape(name), metric, _fmt(s["value"]), _fmt(s["ceiling"]), _fmt(s["floor"]),
                         _fmt(s["relative"]) + (" " + verdict if verdict else "")])
    parts.append(_table(["method", "metric", "pruned", "ceiling", "floor", "relative"], rows))
    ceilings = "; ".join(f"{n.replace('_', ' ')}: {m['ceiling']}" for n, m in d["explanations"].items() if "ceiling" in m)
    parts.append(f'<div class="sub">ceiling: the original explained twice ({escape(ceilings)}); floor: the original '
                 "against a copy with random weights; relative = (pruned - floor) / (ceiling - floor).</div>")
    return "".join(parts)


def _tokens(tokens: list[str], values: np.ndarray) -> str:
    top = max(float(np.max(values)) if len(values) else 0.0, 1e-12)
    return "".join(f'<span style="background:rgba(47,109,181,{min(1.0, v / top) * 0.85:.2f})">{escape(t)}</span>'
                   for t, v in zip(tokens, values, strict=False))


def _caption(e: dict, dec: dict) -> str:
    head = f"input {e['index']}"
    if e.get("label") is not None:
        head += f", label {e['label']}"
    if "original" in e:
        head += f": original says {e['original']}, pruned says {e['pruned']} (KL {e['kl']:.3g})"
    elif "cosine" in e:
        head += f": output cosine {e['cosine']:.3f}"
    if e["changed"]:
        head += " - decision changed" if "original" in e else " - nearest neighbour changed"
    return head


def _gallery(d: dict, explanation) -> str:
    parts = ["<h2>Gallery</h2>", '<div class="sub">inputs whose decision changed come first; maps are '
             "attribution magnitudes for the original's decision; difference = pruned - original, each scaled to max 1"
             "</div>"]
    for e in explanation.gallery:
        caption = _caption(e, d["decisions"])
        scores = ", ".join(f"{m.replace('_', ' ')}: Spearman {s['spearman']:.2f}" for m, s in e["scores"].items())
        cls = ' class="changed"' if e["changed"] else ""
        if not e["maps"]:
            continue
        if "tokens" in e:
            rows = "".join(f"<h3>{escape(m.replace('_', ' '))}</h3><div>original: {_tokens(e['tokens'], a)}</div>"
                           f"<div>pruned: {_tokens(e['tokens'], b)}</div>" for m, (a, b) in e["maps"].items())
            parts.append(f'<figure{cls}><div class="tok">{rows}</div><figcaption>{escape(caption)}; {escape(scores)}'
                         "</figcaption></figure>")
        elif explanation.kind == "image":
            parts.append(f"<div{cls}>" + _figure(figures.image_row(e["input"], e["maps"], caption), scores) + "</div>")
        else:
            parts.append(f"<div{cls}>" + _figure(figures.feature_bars(e["maps"], caption), scores) + "</div>")
    return "".join(parts)


def render(explanation, title: str = "graphprune explain", sources: tuple[str, str] = ("", "")) -> str:
    d = explanation.to_dict()
    notes = "".join(f'<div class="note">{escape(n)}</div>' for n in d["notes"])
    head = (f"<h1>{escape(title)}</h1><div class='sub'>original: {escape(sources[0])} &middot; pruned: "
            f"{escape(sources[1])} &middot; data: {escape(d['data'])} &middot; {escape(d['input_kind'])} inputs, "
            f"{escape(d['output_kind'])} outputs</div>")
    body = head + notes + _cards(d) + _structure(d) + _decisions(d) + _explanations(d) + _gallery(d, explanation)
    return ("<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
            "<meta name='viewport' content='width=device-width,initial-scale=1'>"
            f"<title>{escape(title)}</title><style>{CSS}</style></head><body><main>{body}</main></body></html>")
