"""The traced part of report.html (``validate-job --logs``): calibration figures and the mistakes panel."""

from __future__ import annotations

from ropewatch_validator.render.figures import png_base64


def html_section(trace: dict) -> str:
    """The traced part of report.html: reliability diagram before/after temperature scaling, PR curves
    of ``correct`` and ``wrong``, and the most-confident-mistakes panel (crops embedded as PNG)."""
    import html

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figs: dict[str, str] = {}
    cal = trace.get("calibration")
    if cal:
        fig, ax = plt.subplots(figsize=(3.8, 3.4))
        ax.plot([0, 1], [0, 1], color="grey", lw=0.8, ls="--")
        curves = [(f"T = {cal['temperature']:.2f} (logged), ECE {cal['ece']:.3f}", cal["reliability"])]
        if cal.get("fitted"):
            curves.append(
                (
                    f"T = {cal['fitted']['temperature']:.2f} (fitted), ECE {cal['fitted']['ece']:.3f}",
                    cal["fitted"]["reliability"],
                )
            )
        for name, rel in curves:
            pts = [
                (c, a) for c, a in zip(rel["confidence"], rel["accuracy"]) if c is not None and a is not None
            ]
            ax.plot([c for c, _ in pts], [a for _, a in pts], marker="o", ms=3, label=name)
        ax.set_xlabel("confidence (top-label)"), ax.set_ylabel("accuracy"), ax.set_xlim(0.45, 1.01)
        ax.set_ylim(0, 1.02), ax.legend(fontsize=6)
        figs["reliability diagram, before/after temperature scaling"] = png_base64(fig)
    if cal and cal.get("pr"):
        fig, ax = plt.subplots(figsize=(3.8, 3.2))
        for cls, curve in cal["pr"].items():
            ax.plot(
                curve["recall"],
                curve["precision"],
                drawstyle="steps-post",
                label=f"{cls}: AP {curve['ap']:.3f}",
            )
        ax.set_xlabel("recall"), ax.set_ylabel("precision"), ax.set_xlim(0, 1), ax.set_ylim(0, 1.02)
        ax.legend(fontsize=7)
        figs["precision/recall of correct and wrong (logged P(correct))"] = png_base64(fig)
    plt.close("all")
    parts = ["<h2>Traced predictions</h2><div>"]
    parts += [
        f'<figure><img alt="{html.escape(t)}" src="data:image/png;base64,{b}"><figcaption>{html.escape(t)}'
        "</figcaption></figure>"
        for t, b in figs.items()
    ]
    parts.append('</div><h2>Most confident mistakes</h2><div class="mistakes">')
    for m in trace.get("mistakes") or []:
        caption = (
            f"frame {m['frame']} · shape {m['shape_id']} · truth {m['final_value']} · predicted "
            f"{m['logged_value']} · P(correct) {m['p_correct']:.3f} · thr {m['thr']:.2f}"
        )
        img = (
            f'<img alt="crop of frame {m["frame"]}" src="data:image/png;base64,{m["crop"]}">'
            if m.get("crop")
            else f"<em>frame unavailable: {html.escape(str(m.get('crop_error')))}</em>"
        )
        parts.append(f"<figure>{img}<figcaption>{html.escape(caption)}</figcaption></figure>")
    if not trace.get("mistakes"):
        parts.append("<p>No attribute value predicted by the model was changed by a person.</p>")
    parts.append("</div>")
    return "".join(parts)
