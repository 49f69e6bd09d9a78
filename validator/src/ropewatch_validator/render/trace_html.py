"""The traced figures of report.html (``validate-job --logs``): reliability diagram and PR curves."""

from __future__ import annotations

from ropewatch_validator.render.figures import png_base64


def figures(trace: dict) -> dict[str, str]:
    """Title -> base64 PNG: the reliability diagram before/after temperature scaling and the PR curves
    of ``correct`` and ``wrong``. The most-confident-mistakes panel is drawn by the report template."""
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
        ax.set(xlabel="confidence (top-label)", ylabel="accuracy", xlim=(0.45, 1.01), ylim=(0, 1.02))
        ax.legend(fontsize=6)
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
        ax.set(xlabel="recall", ylabel="precision", xlim=(0, 1), ylim=(0, 1.02))
        ax.legend(fontsize=7)
        figs["precision/recall of correct and wrong (logged P(correct))"] = png_base64(fig)
    plt.close("all")
    return figs
