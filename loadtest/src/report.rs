//! The report: a table in the terminal, JSON for scripts, and a self-contained HTML page with the
//! latency distribution and throughput over time drawn as inline SVG (no scripts, no fonts).

use std::fmt::Write as _;

use serde::Serialize;

use crate::ledger::Figures;

#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub target: String,
    pub mode: String,
    pub workload: String,
    pub sent: u64,
    pub results: u64,
    pub lost: u64,
    pub duplicated: u64,
    pub wrong_status: u64,
    pub throughput_per_s: f64,
    pub latency_ms: crate::ledger::Percentiles,
    /// The floor (the same programs spawned bare on the host, same concurrency, same run).
    pub floor: Option<Figures>,
    /// Kiln over the floor: throughput (higher is better) and latency (lower is better).
    pub ratios: Option<Ratios>,
    pub chaos: Vec<String>,
    /// Kubernetes: runner pods seen and pods that ran more than one job (must be 0).
    pub pods: Option<PodFigures>,
    pub thresholds_missed: Vec<String>,
    pub details: Figures,
}

#[derive(Clone, Debug, Serialize)]
pub struct Ratios {
    /// Over the programs both runs have (those with `floor = true`): with a workload of only
    /// such programs, the throughput ratio compares like with like.
    pub throughput: f64,
    pub p50: f64,
    pub p99: f64,
    pub comparable_sent: u64,
}

#[derive(Clone, Debug, Serialize)]
pub struct PodFigures {
    pub seen: u64,
    pub ran_a_job: u64,
    pub used_twice: u64,
}

impl Report {
    pub fn ok(&self) -> bool {
        self.lost == 0
            && self.duplicated == 0
            && self.wrong_status == 0
            && self.pods.as_ref().is_none_or(|p| p.used_twice == 0)
            && self.thresholds_missed.is_empty()
    }

    pub fn table(&self) -> String {
        let mut s = String::new();
        let l = &self.latency_ms;
        let _ = writeln!(
            s,
            "kiln-loadtest: {} ({}), workload {}",
            self.target, self.mode, self.workload
        );
        let _ = writeln!(
            s,
            "  sent {}  results {}  lost {}  duplicated {}  wrong status {}",
            self.sent, self.results, self.lost, self.duplicated, self.wrong_status
        );
        let _ = writeln!(s, "  throughput {:.1}/s", self.throughput_per_s);
        let _ = writeln!(
            s,
            "  latency ms  p50 {:.1}  p90 {:.1}  p99 {:.1}  p99.9 {:.1}  max {:.1}",
            l.p50, l.p90, l.p99, l.p999, l.max
        );
        if let (Some(f), Some(r)) = (&self.floor, &self.ratios) {
            let fl = &f.latency_ms;
            let _ = writeln!(
                s,
                "  floor: throughput {:.1}/s  latency ms p50 {:.1}  p99 {:.1}",
                f.throughput_per_s, fl.p50, fl.p99
            );
            let _ = writeln!(s, "  kiln / floor (the {} submissions of programs the floor runs too): throughput {:.2}x  p50 {:.2}x  p99 {:.2}x", r.comparable_sent, r.throughput, r.p50, r.p99);
        }
        if let Some(p) = &self.pods {
            let _ = writeln!(
                s,
                "  runner pods: {} seen, {} ran a job, {} used twice",
                p.seen, p.ran_a_job, p.used_twice
            );
        }
        for c in &self.chaos {
            let _ = writeln!(s, "  chaos: {c}");
        }
        let _ = writeln!(s, "  {:<28} {:>7}  statuses", "program", "sent");
        for p in &self.details.programs {
            let statuses: Vec<String> =
                p.statuses.iter().map(|(k, v)| format!("{k} {v}")).collect();
            let _ = writeln!(
                s,
                "  {:<28} {:>7}  {}",
                p.program,
                p.sent,
                statuses.join(", ")
            );
        }
        for w in &self.details.wrong {
            let _ = writeln!(
                s,
                "  WRONG {} ({}): expected {}, got {}",
                w.id, w.program, w.expected, w.got
            );
        }
        for t in &self.thresholds_missed {
            let _ = writeln!(s, "  THRESHOLD MISSED: {t}");
        }
        let _ = write!(s, "  verdict: {}", if self.ok() { "ok" } else { "FAILED" });
        s
    }

    pub fn html(&self) -> String {
        let mut h = String::new();
        let esc = |t: &str| {
            t.replace('&', "&amp;")
                .replace('<', "&lt;")
                .replace('>', "&gt;")
        };
        let _ = write!(
            h,
            "<!doctype html><html><head><meta charset=\"utf-8\"><title>Kiln load test: {}</title><style>\
             body{{font-family:sans-serif;margin:24px;color:#222;max-width:1000px}}\
             table{{border-collapse:collapse;margin:8px 0 16px}}td,th{{border:1px solid #ccc;padding:4px 10px;text-align:right}}\
             th{{background:#f3f3f3}}td:first-child,th:first-child{{text-align:left}}\
             .ok{{color:#1a7f37;font-weight:bold}}.bad{{color:#c62828;font-weight:bold}}</style></head><body>",
            esc(&self.target)
        );
        let _ = write!(
            h,
            "<h1>Kiln load test</h1><p>Target <b>{}</b>, {}, workload <code>{}</code>. Verdict: <span class=\"{}\">{}</span></p>",
            esc(&self.target),
            esc(&self.mode),
            esc(&self.workload),
            if self.ok() { "ok" } else { "bad" },
            if self.ok() { "nothing lost, nothing duplicated, every status right" } else { "FAILED" }
        );
        let l = &self.latency_ms;
        let _ = write!(h, "<table><tr><th></th><th>sent</th><th>results</th><th>lost</th><th>duplicated</th><th>wrong status</th><th>throughput /s</th><th>p50 ms</th><th>p90 ms</th><th>p99 ms</th><th>p99.9 ms</th><th>max ms</th></tr>");
        let _ = write!(
            h,
            "<tr><td>kiln</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{:.1}</td><td>{:.1}</td><td>{:.1}</td><td>{:.1}</td><td>{:.1}</td><td>{:.1}</td></tr>",
            self.sent, self.results, self.lost, self.duplicated, self.wrong_status, self.throughput_per_s, l.p50, l.p90, l.p99, l.p999, l.max
        );
        if let Some(f) = &self.floor {
            let fl = &f.latency_ms;
            let _ = write!(
                h,
                "<tr><td>floor</td><td>{}</td><td>{}</td><td>{}</td><td>-</td><td>{}</td><td>{:.1}</td><td>{:.1}</td><td>{:.1}</td><td>{:.1}</td><td>{:.1}</td><td>{:.1}</td></tr>",
                f.sent, f.results, f.lost, f.wrong_status, f.throughput_per_s, fl.p50, fl.p90, fl.p99, fl.p999, fl.max
            );
        }
        h.push_str("</table>");
        if let Some(r) = &self.ratios {
            let _ = write!(h, "<p>Kiln over the floor measured in the same run, on the {} submissions of programs the floor runs too: throughput <b>{:.2}x</b>, p50 latency <b>{:.2}x</b>, p99 latency <b>{:.2}x</b>.</p>", r.comparable_sent, r.throughput, r.p50, r.p99);
        }
        let floor_dist = self.floor.as_ref().map(|f| f.distribution.clone());
        h.push_str(&latency_chart(
            &self.details.distribution,
            floor_dist.as_deref(),
        ));
        let floor_tp = self.floor.as_ref().map(|f| f.throughput_over_time.clone());
        h.push_str(&throughput_chart(
            &self.details.throughput_over_time,
            floor_tp.as_deref(),
        ));
        if let Some(p) = &self.pods {
            let _ = write!(
                h,
                "<p>Runner pods: {} seen, {} ran a job, <b>{}</b> used twice.</p>",
                p.seen, p.ran_a_job, p.used_twice
            );
        }
        if !self.chaos.is_empty() {
            h.push_str("<h2>Chaos</h2><ul>");
            for c in &self.chaos {
                let _ = write!(h, "<li>{}</li>", esc(c));
            }
            h.push_str("</ul>");
        }
        h.push_str(
            "<h2>Programs</h2><table><tr><th>program</th><th>sent</th><th>statuses</th></tr>",
        );
        for p in &self.details.programs {
            let statuses: Vec<String> =
                p.statuses.iter().map(|(k, v)| format!("{k} {v}")).collect();
            let _ = write!(
                h,
                "<tr><td>{}</td><td>{}</td><td style=\"text-align:left\">{}</td></tr>",
                esc(&p.program),
                p.sent,
                esc(&statuses.join(", "))
            );
        }
        h.push_str("</table>");
        if !self.details.wrong.is_empty() {
            h.push_str("<h2>Wrong statuses (first 20)</h2><ul>");
            for w in &self.details.wrong {
                let _ = write!(
                    h,
                    "<li>{} ({}): expected {}, got {}</li>",
                    esc(&w.id),
                    esc(&w.program),
                    esc(&w.expected),
                    esc(&w.got)
                );
            }
            h.push_str("</ul>");
        }
        h.push_str("</body></html>\n");
        h
    }
}

const W: f64 = 900.0;
const H: f64 = 360.0;
const LEFT: f64 = 80.0;
const RIGHT: f64 = 30.0;
const TOP: f64 = 40.0;
const BOTTOM: f64 = 60.0;

/// A "nice" axis maximum and tick step for values up to `max`.
fn nice(max: f64) -> (f64, f64) {
    let max = if max > 0.0 { max } else { 1.0 };
    let raw = max / 5.0;
    let mag = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 2.5, 5.0, 10.0]
        .iter()
        .map(|m| m * mag)
        .find(|s| *s >= raw)
        .unwrap_or(10.0 * mag);
    ((max / step).ceil() * step, step)
}

fn frame(title: &str, x_label: &str, y_label: &str, y_max: f64, y_step: f64) -> String {
    let mut s = String::new();
    let _ = write!(
        s,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{W}\" height=\"{H}\" viewBox=\"0 0 {W} {H}\" font-family=\"sans-serif\" font-size=\"12\">\
         <rect width=\"{W}\" height=\"{H}\" fill=\"white\"/>\
         <text x=\"{}\" y=\"22\" text-anchor=\"middle\" font-size=\"15\" font-weight=\"bold\">{title}</text>",
        W / 2.0
    );
    let plot_h = H - TOP - BOTTOM;
    let mut v = 0.0;
    while v <= y_max + 1e-9 {
        let y = TOP + plot_h - v / y_max * plot_h;
        let _ = write!(
            s,
            "<line x1=\"{LEFT}\" y1=\"{y:.1}\" x2=\"{}\" y2=\"{y:.1}\" stroke=\"#e5e5e5\"/>\
             <text x=\"{}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>",
            W - RIGHT,
            LEFT - 6.0,
            y + 4.0,
            trim(v)
        );
        v += y_step;
    }
    let _ = write!(
        s,
        "<line x1=\"{LEFT}\" y1=\"{TOP}\" x2=\"{LEFT}\" y2=\"{}\" stroke=\"#333\"/>\
         <line x1=\"{LEFT}\" y1=\"{}\" x2=\"{}\" y2=\"{}\" stroke=\"#333\"/>\
         <text x=\"{}\" y=\"{}\" text-anchor=\"middle\">{x_label}</text>\
         <text transform=\"translate(18 {}) rotate(-90)\" text-anchor=\"middle\">{y_label}</text>",
        H - BOTTOM,
        H - BOTTOM,
        W - RIGHT,
        H - BOTTOM,
        LEFT + (W - LEFT - RIGHT) / 2.0,
        H - 14.0,
        TOP + plot_h / 2.0
    );
    s
}

fn trim(v: f64) -> String {
    if (v - v.round()).abs() < 1e-9 {
        format!("{}", v.round() as i64)
    } else {
        format!("{v:.1}")
    }
}

fn polyline(points: &[(f64, f64)], color: &str) -> String {
    let pts: Vec<String> = points
        .iter()
        .map(|(x, y)| format!("{x:.1},{y:.1}"))
        .collect();
    let mut s = format!(
        "<polyline fill=\"none\" stroke=\"{color}\" stroke-width=\"2\" points=\"{}\"/>",
        pts.join(" ")
    );
    for (x, y) in points {
        let _ = write!(
            s,
            "<circle cx=\"{x:.1}\" cy=\"{y:.1}\" r=\"3\" fill=\"{color}\"/>"
        );
    }
    s
}

fn legend(entries: &[(&str, &str)]) -> String {
    let mut s = String::new();
    for (i, (name, color)) in entries.iter().enumerate() {
        let x = LEFT + 20.0 + i as f64 * 140.0;
        let _ = write!(
            s,
            "<rect x=\"{x}\" y=\"{}\" width=\"14\" height=\"4\" fill=\"{color}\"/><text x=\"{}\" y=\"{}\">{name}</text>",
            TOP + 4.0,
            x + 20.0,
            TOP + 10.0
        );
    }
    s
}

/// Latency against percentile, the percentile axis stretched toward the tail (1 / (1 - q)).
pub fn latency_chart(kiln: &[(f64, f64)], floor: Option<&[(f64, f64)]>) -> String {
    let y_top = kiln
        .iter()
        .chain(floor.unwrap_or(&[]).iter())
        .map(|p| p.1)
        .fold(0.0, f64::max);
    let (y_max, y_step) = nice(y_top * 1.05);
    let mut s = frame(
        "Latency distribution (from the intended send time)",
        "percentile",
        "latency (ms)",
        y_max,
        y_step,
    );
    let plot_w = W - LEFT - RIGHT;
    let plot_h = H - TOP - BOTTOM;
    let x_of = |pct: f64| {
        let q = (pct / 100.0).min(0.9999);
        LEFT + ((1.0 / (1.0 - q)).log10() / 4.0) * plot_w
    };
    for (pct, label) in [
        (0.0, "0"),
        (50.0, "50"),
        (90.0, "90"),
        (99.0, "99"),
        (99.9, "99.9"),
        (99.99, "99.99"),
    ] {
        let x = x_of(pct);
        let _ = write!(
            s,
            "<line x1=\"{x:.1}\" y1=\"{}\" x2=\"{x:.1}\" y2=\"{}\" stroke=\"#333\"/><text x=\"{x:.1}\" y=\"{}\" text-anchor=\"middle\">{label}</text>",
            H - BOTTOM,
            H - BOTTOM + 5.0,
            H - BOTTOM + 20.0
        );
    }
    let to_xy = |pts: &[(f64, f64)]| -> Vec<(f64, f64)> {
        pts.iter()
            .map(|(p, v)| (x_of(*p), TOP + plot_h - v / y_max * plot_h))
            .collect()
    };
    s.push_str(&polyline(&to_xy(kiln), "#1f6feb"));
    let mut entries = vec![("kiln", "#1f6feb")];
    if let Some(f) = floor {
        s.push_str(&polyline(&to_xy(f), "#d9822b"));
        entries.push(("floor", "#d9822b"));
    }
    s.push_str(&legend(&entries));
    s.push_str("</svg>");
    s
}

/// Results per second over the run.
pub fn throughput_chart(kiln: &[(u64, u64)], floor: Option<&[(u64, u64)]>) -> String {
    let all = kiln.iter().chain(floor.unwrap_or(&[]).iter());
    let y_top = all.clone().map(|p| p.1 as f64).fold(0.0, f64::max);
    let x_top = all.map(|p| p.0 as f64).fold(1.0, f64::max);
    let (y_max, y_step) = nice(y_top * 1.05);
    let (x_max, x_step) = nice(x_top);
    let mut s = frame(
        "Throughput over time",
        "seconds since the start",
        "results per second",
        y_max,
        y_step,
    );
    let plot_w = W - LEFT - RIGHT;
    let plot_h = H - TOP - BOTTOM;
    let mut x = 0.0;
    while x <= x_max + 1e-9 {
        let px = LEFT + x / x_max * plot_w;
        let _ = write!(
            s,
            "<line x1=\"{px:.1}\" y1=\"{}\" x2=\"{px:.1}\" y2=\"{}\" stroke=\"#333\"/><text x=\"{px:.1}\" y=\"{}\" text-anchor=\"middle\">{}</text>",
            H - BOTTOM,
            H - BOTTOM + 5.0,
            H - BOTTOM + 20.0,
            trim(x)
        );
        x += x_step;
    }
    let to_xy = |pts: &[(u64, u64)]| -> Vec<(f64, f64)> {
        pts.iter()
            .map(|(t, n)| {
                (
                    LEFT + *t as f64 / x_max * plot_w,
                    TOP + plot_h - *n as f64 / y_max * plot_h,
                )
            })
            .collect()
    };
    s.push_str(&polyline(&to_xy(kiln), "#1f6feb"));
    let mut entries = vec![("kiln", "#1f6feb")];
    if let Some(f) = floor {
        s.push_str(&polyline(&to_xy(f), "#d9822b"));
        entries.push(("floor", "#d9822b"));
    }
    s.push_str(&legend(&entries));
    s.push_str("</svg>");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nice_axes_cover_the_data() {
        for max in [0.3, 7.0, 42.0, 999.0, 12_345.0] {
            let (top, step) = nice(max);
            assert!(top >= max && top / step <= 10.0, "{max}: {top} {step}");
        }
    }

    #[test]
    fn charts_are_self_contained_svg() {
        let svg = latency_chart(
            &[(0.0, 1.0), (50.0, 2.0), (99.0, 9.0)],
            Some(&[(0.0, 1.0), (99.0, 3.0)]),
        );
        assert!(svg.starts_with("<svg") && svg.ends_with("</svg>"));
        assert!(
            svg.contains("percentile") && svg.contains("latency (ms)") && svg.contains("floor")
        );
        assert!(
            !svg.contains("http://") || svg.matches("http://").count() == 1,
            "only the SVG namespace"
        );
        let svg = throughput_chart(&[(0, 3), (1, 5)], None);
        assert!(svg.contains("results per second"));
    }
}
