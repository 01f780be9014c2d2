"""The verdict table of a study (shared by the report, the index and ``bench claims``) and whether a
run follows the published protocol (the only case where published figures are compared with ours)."""

from __future__ import annotations

import html
from dataclasses import dataclass
from typing import Any

import pandas as pd

from bench.report.analysis import metric_label
from bench.report.claims import Verdict, counts, evaluate_all, selector_text
from bench.report.data import ReportData
from bench.report.power import Design
from bench.study import Claim

JPEG_NOTE = "the JPEG copy of CIFAR-10, whose accuracies run a little below the original's"


@dataclass(frozen=True)
class Verdicts:
    """The verdicts of a study's claims on one run, with the facts that qualify them."""

    per_claim: list[Verdict]
    profile: str | None
    dataset: str
    seeds: list[int]
    design: Design | None = None  # the group-sequential design of a ``bench run --until-decided``

    @property
    def procedure(self) -> str:
        """How the intervals were made: the fixed 95% test, or the sequential design with its looks."""
        if self.design is None:
            return "fixed-sample tests, two-sided 95% intervals"
        looks = [o.look for o in self.per_claim if o.look is not None]
        taken = f"; looks taken: {max(looks)} of {self.design.looks}" if looks else ""
        return self.design.name() + taken

    @property
    def counts(self) -> dict[str, int]:
        return counts(self.per_claim)

    @property
    def headline(self) -> str:
        """'2 of 5 claims reproduced' (questions counted apart), or 'no claims for this profile'."""
        claims = [o for o in self.per_claim if not o.claim.question]
        if not self.per_claim:
            return f"no claims apply to profile {self.profile or '?'}"
        k = sum(o.verdict == "reproduced" for o in claims)
        q = len(self.per_claim) - len(claims)
        return f"{k} of {len(claims)} claims reproduced" + (f" (and {q} question(s))" if q else "")

    def frame(self) -> pd.DataFrame:
        """One row per claim: the columns of the terminal table and of the report's (unescaped)."""
        rows = []
        for o in self.per_claim:
            c, e = o.claim, o.estimate
            unit = metric_label(c.metric) + (f" per unit of {c.over}" if c.over else "")
            rows.append({
                "claim": ("[question] " if c.question else "") + c.sentence,
                "source": c.source,
                "compared": o.compared,
                "metric": unit,
                "claimed": _claimed(c),
                "ours [95% CI]": e.fmt(_digits(c)) if e is not None else "—",
                "test": _test(o, self.design),
                "verdict": o.verdict,
                "precondition": precondition_text(o),
                "why": (_answer(o) + o.why if c.question else o.why) + _power_text(o),
                "note": c.note,
            })
        return pd.DataFrame(rows, columns=["claim", "source", "compared", "metric", "claimed", "precondition",
                                           "ours [95% CI]", "test", "verdict", "why", "note"])

    def text(self) -> str:
        """The table for a terminal: one block per claim, then the counts line."""
        df = self.frame()
        lines = []
        for _, r in df.iterrows():
            lines.append(f"[{r['verdict']}] {r['claim']}")
            lines.append(f"    {r['compared']}: {r['metric']}; claimed {r['claimed']}; ours {r['ours [95% CI]']}"
                         + (f" ({r['test']})" if r["test"] != "—" else ""))
            lines.append(f"    precondition: {r['precondition']}")
            if r["why"]:
                lines.append(f"    why: {r['why']}")
            lines.append(f"    source: {r['source']}" + (f"; note: {r['note']}" if r["note"] else ""))
        c = self.counts
        if self.design is not None:
            lines.append(f"procedure: {self.procedure}")
        lines.append(self.headline + " — " + ", ".join(f"{n} {v}" for v, n in c.items()))
        return "\n".join(lines)

    def html(self) -> str:
        """The report's verdict table (escaped here: the page marks it safe)."""
        df = self.frame()
        if df.empty:
            return f'<p class="empty">{html.escape(self.headline)}</p>'
        head = (f'<p class="procedure">procedure: {html.escape(self.procedure)}</p>' if self.design is not None
                else "")
        # the verdict first and six columns, so that it shows at a glance on a laptop screen; the source
        # and the precondition sit in small print under the claim and the reason
        out = [head + '<table class="tbl" id="claims-table"><thead><tr><th>verdict</th><th>claim</th>'
               '<th>compared</th><th>claimed</th><th>our estimate [95% CI]</th><th>why · precondition</th>'
               '</tr></thead><tbody>']
        small = '<br><span class="small">{}</span>'.format
        for _, r in df.iterrows():
            note = small(html.escape(r["note"])) if r["note"] else ""
            test = small(html.escape(r["test"])) if r["test"] != "—" else ""
            why = html.escape(r["why"]) + ("<br>" if r["why"] else "")
            out.append(
                f'<tr data-verdict="{html.escape(r["verdict"])}">'
                f'<td class="verdict {r["verdict"].replace(" ", "-")}">{html.escape(r["verdict"])}</td>'
                f'<td>{html.escape(r["claim"])}{note}{small("source: " + html.escape(r["source"]))}</td>'
                f'<td>{html.escape(r["compared"])}{small(html.escape(r["metric"]))}</td>'
                f'<td>{html.escape(r["claimed"])}</td>'
                f'<td><span class="nowrap">{html.escape(r["ours [95% CI]"])}</span>{test}</td>'
                f'<td>{why}<span class="small precondition">precondition: {html.escape(r["precondition"])}</span></td>'
                '</tr>')
        out.append("</tbody></table>")
        return "".join(out)


def _test(o: Verdict, design: Design | None) -> str:
    """'paired, n=3, p=0.01' (+ the look and its interval level; + the claim it is the same test as)."""
    e = o.estimate
    if e is None:
        return "—"
    out = f"{e.method}, n={e.n}, p={e.p:.2g}"
    if design is not None and o.look is not None:
        out += f", look {o.look} of {design.looks} ({100 * (1 - design.nominal_alpha(o.look)):.3g}% interval)"
    if o.same_test_as:
        out += f"; the same test as \"{o.same_test_as}\""
    return out


def _power_text(o: Verdict) -> str:
    """For an inconclusive verdict: the seeds per arm that 80% power at the smallest effect needs."""
    n, sd = o.seeds_needed, o.spread_sd
    if o.verdict != "inconclusive" or n is None or sd is None or not n == n:
        return ""
    many = "more than 1000" if n == float("inf") else f"about {n:.0f}"
    return (f"; 80% power at the smallest effect needs {many} seeds per arm (seed-to-seed std {sd:.3g} "
            "from these runs)")


def precondition_text(o: Verdict) -> str:
    """The claim's precondition and whether it held on this run, with the numbers:
    'final training error < 20% on each arm of a and b (source): not met: resnet56 89.7%, ...'."""
    req = o.claim.requires
    if req is None:
        return "none (the claim holds at every stage of training)"
    pct = "%" if req.metric.endswith("_pct") else ""
    arms = {"a": " + ".join(o.arms_a) or selector_text(o.claim.a),
            "b": " + ".join(o.arms_b) or selector_text(o.claim.b or {})}
    where = " and ".join(arms[x] for x in req.sides) if o.claim.kind == "comparison" else (
        f"every arm of {selector_text(o.claim.a) or 'the study'}")
    stated = (f"{metric_label(req.metric).removesuffix(' (%)')} {req.bound} {req.threshold:g}{pct} on {where} "
              f"({req.source})")
    if o.precondition_held is None:
        return f"{stated}: not checked (the arms have not all finished)"
    return f"{stated}: {'held' if o.precondition_held else 'not met'} ({o.checked})"


def _answer(o: Verdict) -> str:
    """A question's verdict in words: reproduced answers yes, contradicted no."""
    word = {"reproduced": "yes", "contradicted": "no"}.get(o.verdict, "open")
    return f"answer in this run: {word}" + ("; " if o.why else "")


def _digits(c: Claim) -> int:
    return 0 if c.exact and c.metric.startswith(("params", "macs")) else 3 if c.over else 2


def _claimed(c: Claim) -> str:
    e = f"{c.effect:,.{_digits(c)}f}" if c.effect else "0"
    if c.direction == "within":
        return f"within ±{e}"
    return (">" if c.direction == "greater" else "<") + (f" 0, by at least {e}" if c.effect else " 0")


def runs_table(d: ReportData) -> pd.DataFrame:
    """One row per cell: its state, arm and tag columns, and the finished run's metrics."""
    cells = d.cells.copy()
    if d.runs.empty or "run_id" not in d.runs:
        return cells
    extra = [c for c in d.runs.columns if c not in cells.columns or c == "run_id"]
    return cells.merge(d.runs[extra], on="run_id", how="left")


def study_claims(d: ReportData) -> list[Claim]:
    """The claims recorded in study.json (the registry's when the record predates them)."""
    stored = d.desc.get("claims")
    if stored is None:
        try:
            from bench.study import get_study

            return list(get_study(d.study).claims)
        except Exception:  # noqa: BLE001 - an unregistered study has no claims to show
            return []
    return [Claim.from_dict(c) for c in stored]


def verdicts(d: ReportData) -> Verdicts:
    """Every claim of the study that applies to the run's profile, judged on its records."""
    table = runs_table(d)
    seeds = sorted({int(s) for s in d.cells["seed"].dropna()}) if "seed" in d.cells else []
    design = recorded_design(d)
    return Verdicts(evaluate_all(study_claims(d), table, d.profile, design), d.profile, dataset_name(d), seeds,
                    design)


def recorded_design(d: ReportData) -> Design | None:
    """The group-sequential design a ``bench run --until-decided`` recorded in study.json, if any."""
    seq = d.desc.get("sequential")
    return Design.from_dict(seq) if isinstance(seq, dict) and seq.get("n_max") else None


def dataset_name(d: ReportData) -> str:
    """The data set as people would call it: 'cifar10 (JPEG copy)', 'synthetic:...', 'mnist'."""
    runs = d.runs
    names = [str(v) for v in dict.fromkeys(runs["dataset"].dropna())] if "dataset" in runs else []
    if not names and "dataset" in d.cells:
        names = [str(v) for v in dict.fromkeys(d.cells["dataset"].dropna())]
    sources = runs["data_source"].dropna().astype(str) if "data_source" in runs else pd.Series(dtype=str)
    jpeg = bool(sources.str.contains("JPEG", case=False).any())
    # Records written without training (report previews) say so in their data source.
    made_up = bool(sources.str.startswith("synthetic").any()) and not any(n.startswith("synthetic") for n in names)
    if not names:
        return "—"
    return ", ".join(names) + (" (JPEG copy)" if jpeg else "") + (" (synthetic records)" if made_up else "")


def published_protocol(d: ReportData) -> tuple[bool, str]:
    """(True, '') when the run follows the published protocol: the ``full`` profile, no --set
    overrides, the original data set. Else (False, why): profile and length, overrides, data set."""
    why = []
    if d.profile != "full":
        prof = (d.desc.get("profiles") or {}).get(d.profile or "", {}) or {}
        full = (d.desc.get("profiles") or {}).get("full", {}) or {}
        ours = f" ({prof['description']})" if prof.get("description") else ""
        theirs = f" ({full['description']})" if full.get("description") else ""
        why.append(f"profile {d.profile or 'unknown'}{ours}, not the published protocol of the full profile{theirs}")
    if d.desc.get("overrides"):
        shown = ", ".join(f"{k}={v}" for k, v in d.desc["overrides"].items())
        why.append(f"--set overrides change the protocol ({shown})")
    data = dataset_name(d)
    if "synthetic" in data:
        why.append(f"the data set is synthetic ({data})")
    elif "JPEG" in data:
        why.append(f"the data set is {JPEG_NOTE}")
    return (not why), "; ".join(why)


def index_entry(d: ReportData) -> dict[str, Any]:
    """What results/index.html shows of a study's claims."""
    v = verdicts(d)
    unmet = sum(o.precondition_held is False for o in v.per_claim)
    return {"claims": v.headline, "claims_counts": v.counts, "dataset": v.dataset,
            "seeds": ", ".join(map(str, v.seeds)) or "—", "preconditions_unmet": unmet}
