"""report.html: one self-contained page (no network) showing what a quickstart run did.

Per-skill agreement with the teacher before and after, on both held-out suites; the training loss;
who the models say they are; the ledger's runs. Charts are matplotlib SVGs inlined in the page.
"""

from __future__ import annotations

import html
import io
import re
from pathlib import Path
from typing import Any

from stillhouse.forensics.green import p_text
from stillhouse.provenance.ledger import Ledger

CSS = """
body { font: 15px/1.45 system-ui, sans-serif; max-width: 980px; margin: 2em auto; color: #222; padding: 0 1em; }
h1 { font-size: 1.5em; } h2 { font-size: 1.15em; margin-top: 1.8em; border-bottom: 1px solid #ddd; }
.big { font-size: 1.25em; } .muted { color: #666; }
table { border-collapse: collapse; margin: .5em 0; } td, th { padding: 3px 10px; border-bottom: 1px solid #eee; }
th { text-align: left; } td.n { text-align: right; font-variant-numeric: tabular-nums; }
figure { margin: .5em 0; } svg { max-width: 100%; height: auto; }
"""


def pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.0f} %"


def headline(side: dict[str, Any]) -> str:
    """'91 % (95 % lower bound 88 %, n 270)': agreement with the teacher, Wilson's bound beside it."""
    s = side["student"]
    low = s["agreement_ci95"][0]
    return f"{pct(s['agreement'])} (95 % lower bound {pct(low)}, n {side['n']})"


def _svg(fig: Any) -> str:
    buf = io.StringIO()
    fig.savefig(buf, format="svg", bbox_inches="tight")
    text = buf.getvalue()
    return text[text.index("<svg") :]


def _bars(report: dict[str, Any], suite: str | None, title: str) -> str:
    """Agreement per skill before (if measured) and after, with Wilson intervals as error bars."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    after = report if suite is None else report[suite]
    before = report.get("baseline")
    before = before if suite is None or before is None else before[suite]
    skills = list(after["per_skill"])
    sides = [("before", before, "#b0b7c3"), ("after", after, "#2b6cb0")] if before else [("after", after, "#2b6cb0")]
    fig, ax = plt.subplots(figsize=(9, 3.2))
    width = 0.8 / len(sides)
    for j, (label, side, colour) in enumerate(sides):
        vals, lows, highs = [], [], []
        for skill in skills:
            s = side["per_skill"][skill]["student"]
            vals.append(100 * s["agreement"])
            lows.append(100 * (s["agreement"] - s["agreement_ci95"][0]))
            highs.append(100 * (s["agreement_ci95"][1] - s["agreement"]))
        xs = [i + (j - (len(sides) - 1) / 2) * width for i in range(len(skills))]
        ax.bar(xs, vals, width, label=label, color=colour, yerr=[lows, highs], capsize=2, ecolor="#555")
    ax.set_xticks(range(len(skills)), skills)
    ax.set_ylim(0, 105)
    ax.set_ylabel("agreement with teacher (%)")
    ax.set_title(title, fontsize=10)
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8, frameon=False)
    ax.spines[["top", "right"]].set_visible(False)
    svg = _svg(fig)
    plt.close(fig)
    return svg


def _loss(losses: list[float]) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 2.6))
    ax.plot(range(1, len(losses) + 1), losses, color="#b0b7c3", lw=0.8, label="per step")
    k = max(1, len(losses) // 30)
    smooth = [sum(losses[max(0, i - k) : i + 1]) / len(losses[max(0, i - k) : i + 1]) for i in range(len(losses))]
    ax.plot(range(1, len(losses) + 1), smooth, color="#2b6cb0", lw=1.6, label=f"mean of {k + 1} steps")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("training loss")
    ax.legend(fontsize=8)
    ax.spines[["top", "right"]].set_visible(False)
    svg = _svg(fig)
    plt.close(fig)
    return svg


def _table(head: list[str], rows: list[list[str]]) -> str:
    th = "".join(f"<th>{html.escape(h)}</th>" for h in head)

    def td(c: str) -> str:  # figures right-aligned, text left
        numeric = re.fullmatch(r"[\d.,% -]+", c)
        return f'<td class="n">{html.escape(c)}</td>' if numeric else f"<td>{html.escape(c)}</td>"

    body = "".join("<tr>" + "".join(td(c) for c in r) + "</tr>" for r in rows)
    return f"<table><tr>{th}</tr>{body}</table>"


def _skill_rows(report: dict[str, Any], suite: str | None) -> list[list[str]]:
    after = report if suite is None else report[suite]
    before = report.get("baseline")
    before = before if suite is None or before is None else before and before[suite]
    rows = []
    for skill, s in [*after["per_skill"].items(), ("all", after)]:
        b = (before["per_skill"].get(skill) if skill != "all" else before) if before else None
        lo = s["student"]["agreement_ci95"][0]
        rows.append(
            [
                skill,
                str(s["n"]),
                pct(s["teacher"]["accuracy"]),
                pct(b["student"]["agreement"]) if b else "-",
                pct(s["student"]["agreement"]),
                pct(lo),
                pct(s["student"]["accuracy"]),
            ]
        )
    return rows


def _ledger(path: Path) -> str:
    if not path.exists():
        return "<p>no ledger</p>"
    with Ledger(path) as led:
        problems, runs = led.verify(), led.runs()
    rows = []
    for r in runs:
        outputs = ", ".join(sorted((r.get("outputs") or {}).keys()))
        rows.append(
            [
                r["stage"],
                r["run_id"],
                {True: "ok", False: "failed"}.get(bool(r["ok"]), "-") if "ok" in r else "-",
                outputs or "-",
            ]
        )
    state = "intact (every entry's hash chains to the previous)" if not problems else f"{len(problems)} problems"
    return f"<p>{html.escape(str(path))}: {len(runs)} runs, chain {state}.</p>" + _table(
        ["stage", "run", "ok", "outputs"], rows
    )


def _rates(control: dict[str, Any]) -> str:
    return f"{100 * control['true_green_rate']:.1f} % / {100 * control['green_rate']:.1f} % ({control['keys']} keys)"


def _forensics(forensics: dict[str, Any] | None) -> str:
    """The detect half's verdicts on the student and on the control, if the run served a watermark."""
    if not forensics:
        return ""
    rows = []
    for who, v in forensics["verdicts"].items():
        radio, named, null = v["radioactivity"], v["identity"], v["radioactivity"]["null"]
        control = radio.get("control") or {}
        rows.append(
            [
                who.replace("_", " "),
                p_text(radio["p_value"]),
                _rates(control) if control else "-",
                f"{null['median_p']:.2f} / {100 * null['fpr_at_0.01']:.1f} % / {null['ks_uniform_p']:.2f}",
                f"{named['top'] or 'none'} ({named['counts'].get(named['top'], 0)} of {named['questions']})",
                v["lineage"]["summary"],
            ]
        )
    key = forensics["key"]
    return (
        "<h2>Forensics: was the student trained on the watermarked teacher?</h2>"
        f"<p>Ember served with a KGW watermark (key {html.escape(str(key.get('fingerprint', '')))}, gamma "
        f"{key.get('gamma')}, delta {key.get('delta')}). Radioactivity, open mode: the suspect's next-token "
        "predictions on a sample of the watermarked chats the student was served (the provider's logs), each "
        "(context, token) window scored once, and its green rate tested against a control: Ember's answers to "
        "the same prompts under each of the fresh keys, scored the same way, our key tested as one more draw "
        "from the fresh keys' spread (Pebble shares Ember's working, which biases the plain binomial toward "
        "'clean'). The null is the binomial under random keys. Lineage: is the model's "
        "behaviour on 120 held-out probes closer to "
        "Ember (outputs, next-token distributions) or to Pebble (weights) than the unrelated Flint and Slate are, "
        "at p < 0.01 after correction? Evidence files are in evidence/.</p>"
        + _table(
            [
                "model",
                "p (open mode, vs control)",
                "green rate: our key / fresh keys",
                "null: median p / FPR at 1 % / KS p",
                "names itself",
                "lineage",
            ],
            rows,
        )
    )


def write_html(report: dict[str, Any], path: Path) -> None:
    """Write the page; every chart and style is inline, so it opens offline and travels as one file."""
    head = ["skill", "n", "teacher acc", "agreement before", "after", "after, 95 % low", "student acc after"]
    before = report.get("baseline")
    lead = f"before {headline(before)} → " if before else ""
    ident = report["identity"]
    who = [["teacher", ident["teacher"]]]
    if "student_before" in ident:
        who.append(["student before", ident["student_before"]])
    who.append(["student after", ident["student_after"]])
    train = report["steps"]["train"]
    curated = report.get("curated_rows_per_skill") or {}
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'><title>stillhouse quickstart</title>",
        f"<style>{CSS}</style></head><body>",
        "<h1>stillhouse quickstart: distilling the teacher into the student</h1>",
        f"<p class='big'>Agreement with the teacher on held-out prompts: {lead}<b>after {headline(report)}</b></p>",
        f"<p>On phrasings neither model was trained on: {headline(report['heldout_phrasings'])}.</p>",
        "<h2>Per skill, held-out prompts (the collected distribution, unseen operands)</h2>",
        _bars(report, None, "held-out prompts"),
        _table(head, _skill_rows(report, None)),
        "<h2>Per skill, held-out phrasings</h2>",
        _bars(report, "heldout_phrasings", "held-out phrasings"),
        _table(head, _skill_rows(report, "heldout_phrasings")),
        "<h2>Training</h2>",
        f"<p>{train['steps']} steps, {train['tokens']:,} tokens, {train['tokens_per_s']:,} tokens/s, "
        f"final loss {train['final_loss']:.3f}; curated rows per skill: "
        + html.escape(", ".join(f"{k} {v}" for k, v in curated.items()))
        + "</p>",
        f"<figure>{_loss(report['train_losses'])}</figure>" if report.get("train_losses") else "",
        "<h2>Who are you?</h2>",
        _table(["model", "answer"], who),
        _forensics(report.get("forensics")),
        "<h2>Ledger</h2>",
        _ledger(Path(report["ledger"])),
        "<p class='muted'>report.json beside this page holds every figure; "
        "<code>stillhouse ledger show</code> on the run directory tells the same story.</p>",
        "</body></html>",
    ]
    path.write_text("\n".join(parts))
