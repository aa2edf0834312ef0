//! A benchmark's outputs: the CSV with perf_analyzer's column names for
//! what it shares with perf_analyzer (its latency columns are
//! microseconds, like ours), and one self-contained HTML page — no script,
//! no external file — with the figures a person reads at a glance: the
//! verdict, throughput against load with its interval, the latency
//! distribution of each run, and the history per version.

use std::fmt::Write as _;

use crate::{Load, Run};

/// One version's throughput in the history.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct HistoryPoint {
    pub version: i64,
    pub throughput: f64,
    pub low: f64,
    pub high: f64,
    pub p99_us: u64,
}

/// perf_analyzer's CSV: `Concurrency` (or `Request Rate`),
/// `Inferences/Second`, `p50 latency`, `p90 latency`, `p95 latency` (not
/// measured: left empty), `p99 latency`, then ours.
pub fn csv(runs: &[Run]) -> String {
    let open = runs.iter().any(|r| matches!(r.load, Load::Open { .. }));
    let mut s = format!(
        "{},Inferences/Second,p50 latency,p90 latency,p95 latency,p99 latency,p99.9 latency,Throughput CI Low,Throughput CI High,Errors,Stable\n",
        if open { "Request Rate" } else { "Concurrency" }
    );
    for r in runs {
        let load = match r.load {
            Load::Closed { concurrency } => concurrency.to_string(),
            Load::Open { rate, .. } => format!("{rate}"),
        };
        let _ = writeln!(
            s,
            "{load},{:.3},{},{},,{},{},{:.3},{:.3},{},{}",
            r.throughput,
            r.p50_us,
            r.p90_us,
            r.p99_us,
            r.p999_us,
            r.throughput_low,
            r.throughput_high,
            r.errors,
            r.stable
        );
    }
    s
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// A chart point: x, y and an optional interval of y.
type Point = (f64, f64, Option<(f64, f64)>);

const W: f64 = 560.0;
const H: f64 = 260.0;
const PAD: f64 = 48.0;

/// A line chart with points, optional vertical intervals, axis labels.
fn chart(
    title: &str,
    x_label: &str,
    y_label: &str,
    points: &[Point],
    x_ticks: &[(f64, String)],
) -> String {
    let mut svg = format!(
        r#"<figure><figcaption>{}</figcaption><svg viewBox="0 0 {W} {H}" role="img" aria-label="{}">"#,
        esc(title),
        esc(title)
    );
    if points.is_empty() {
        svg.push_str("</svg><p>no data</p></figure>");
        return svg;
    }
    let xs = points.iter().map(|p| p.0);
    let (x0, x1) = xs
        .clone()
        .fold((f64::MAX, f64::MIN), |a, x| (a.0.min(x), a.1.max(x)));
    let y1 = points
        .iter()
        .map(|p| p.2.map_or(p.1, |i| i.1).max(p.1))
        .fold(0.0f64, f64::max)
        * 1.1;
    let y1 = if y1 > 0.0 { y1 } else { 1.0 };
    let sx = |x: f64| {
        if x1 > x0 {
            PAD + (x - x0) / (x1 - x0) * (W - 2.0 * PAD)
        } else {
            W / 2.0
        }
    };
    let sy = |y: f64| H - PAD - y / y1 * (H - 2.0 * PAD);
    let _ = write!(
        svg,
        r##"<line x1="{PAD}" y1="{b}" x2="{r}" y2="{b}" stroke="#555"/><line x1="{PAD}" y1="{PAD}" x2="{PAD}" y2="{b}" stroke="#555"/>"##,
        b = H - PAD,
        r = W - PAD
    );
    for k in 0..=4 {
        let y = y1 * f64::from(k) / 4.0;
        let _ = write!(
            svg,
            r##"<text x="{}" y="{}" font-size="11" text-anchor="end">{}</text><line x1="{PAD}" x2="{}" y1="{y2}" y2="{y2}" stroke="#ddd"/>"##,
            PAD - 4.0,
            sy(y) + 4.0,
            fmt_num(y),
            W - PAD,
            y2 = sy(y)
        );
    }
    for (x, label) in x_ticks {
        let _ = write!(
            svg,
            r#"<text x="{}" y="{}" font-size="11" text-anchor="middle">{}</text>"#,
            sx(*x),
            H - PAD + 16.0,
            esc(label)
        );
    }
    let path: Vec<String> = points
        .iter()
        .map(|p| format!("{:.1},{:.1}", sx(p.0), sy(p.1)))
        .collect();
    let _ = write!(
        svg,
        r##"<polyline fill="none" stroke="#1f5fbf" stroke-width="2" points="{}"/>"##,
        path.join(" ")
    );
    for (x, y, ci) in points {
        if let Some((lo, hi)) = ci {
            let _ = write!(
                svg,
                r##"<line x1="{x}" x2="{x}" y1="{}" y2="{}" stroke="#1f5fbf"/>"##,
                sy(*lo),
                sy(*hi),
                x = sx(*x)
            );
        }
        let _ = write!(
            svg,
            r##"<circle cx="{}" cy="{}" r="3.5" fill="#1f5fbf"><title>{}</title></circle>"##,
            sx(*x),
            sy(*y),
            fmt_num(*y)
        );
    }
    let _ = write!(
        svg,
        r#"<text x="{}" y="{}" font-size="12" text-anchor="middle">{}</text><text x="14" y="{}" font-size="12" transform="rotate(-90 14 {})" text-anchor="middle">{}</text></svg></figure>"#,
        W / 2.0,
        H - 8.0,
        esc(x_label),
        H / 2.0,
        H / 2.0,
        esc(y_label)
    );
    svg
}

fn fmt_num(v: f64) -> String {
    if v == 0.0 {
        "0".to_owned()
    } else if v >= 100.0 {
        format!("{v:.0}")
    } else if v >= 1.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.3}")
    }
}

pub fn load_label(l: &Load) -> String {
    match l {
        Load::Closed { concurrency: 1 } => "1 caller".to_owned(),
        Load::Closed { concurrency } => format!("{concurrency} callers"),
        Load::Open { rate, poisson, .. } => {
            format!("{rate}/s {}", if *poisson { "Poisson" } else { "constant" })
        }
    }
}

/// The page: `title`, a verdict line (`passed` colours it), the runs, and
/// the history (oldest first).
pub fn html(
    title: &str,
    verdict: &str,
    passed: bool,
    runs: &[Run],
    history: &[HistoryPoint],
    details: &serde_json::Value,
) -> String {
    let mut page = format!(
        r#"<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{t}</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>body{{font:14px system-ui,sans-serif;margin:24px;max-width:1200px;color:#111}}
.verdict{{padding:12px 16px;border-radius:6px;font-size:16px;margin:12px 0}}
.pass{{background:#e3f5e1;border:1px solid #4a9a44}}.fail{{background:#fbe4e4;border:1px solid #b33}}
.grid{{display:grid;grid-template-columns:repeat(auto-fit,minmax(520px,1fr));gap:16px}}
figure{{margin:0;border:1px solid #ddd;border-radius:6px;padding:8px}}figcaption{{font-weight:600;margin-bottom:4px}}
table{{border-collapse:collapse;margin:12px 0}}td,th{{border:1px solid #ccc;padding:4px 8px;text-align:right}}th{{background:#f3f3f3}}
pre{{background:#f6f6f6;padding:8px;overflow:auto;max-height:320px}}</style></head><body>
<h1>{t}</h1><div class="verdict {c}">{v}</div>"#,
        t = esc(title),
        c = if passed { "pass" } else { "fail" },
        v = esc(verdict)
    );
    page.push_str("<table><tr><th>load</th><th>calls/s</th><th>95% interval</th><th>stable</th><th>p50 ms</th><th>p90 ms</th><th>p99 ms</th><th>p99.9 ms</th><th>errors</th><th>windows</th></tr>");
    for r in runs {
        let _ = write!(
            page,
            "<tr><td>{}</td><td>{:.1}</td><td>{:.1} – {:.1}</td><td>{}</td><td>{:.2}</td><td>{:.2}</td><td>{:.2}</td><td>{:.2}</td><td>{}</td><td>{}</td></tr>",
            esc(&load_label(&r.load)),
            r.throughput,
            r.throughput_low,
            r.throughput_high,
            if r.stable { "yes" } else { "no (time cap)" },
            r.p50_us as f64 / 1e3,
            r.p90_us as f64 / 1e3,
            r.p99_us as f64 / 1e3,
            r.p999_us as f64 / 1e3,
            r.errors,
            r.windows.len()
        );
    }
    page.push_str("</table><div class=\"grid\">");
    // Throughput against load.
    let tp: Vec<Point> = runs
        .iter()
        .map(|r| {
            let x = match r.load {
                Load::Closed { concurrency } => concurrency as f64,
                Load::Open { rate, .. } => rate,
            };
            (x, r.throughput, Some((r.throughput_low, r.throughput_high)))
        })
        .collect();
    let ticks: Vec<(f64, String)> = tp.iter().map(|p| (p.0, fmt_num(p.0))).collect();
    let open = runs.iter().any(|r| matches!(r.load, Load::Open { .. }));
    page.push_str(&chart(
        "Throughput against load (95% interval)",
        if open {
            "offered calls/s"
        } else {
            "concurrent callers"
        },
        "calls/s",
        &tp,
        &ticks,
    ));
    // Latency distributions: x = -log10(1 - p) so the tail is readable.
    for r in runs {
        let pts: Vec<Point> = r
            .distribution
            .iter()
            .filter(|(p, _)| *p >= 10.0 && *p < 100.0)
            .map(|(p, us)| (-(1.0 - p / 100.0).log10(), *us as f64 / 1e3, None))
            .collect();
        let ticks: Vec<(f64, String)> = [50.0, 90.0, 99.0, 99.9, 99.99]
            .iter()
            .map(|p: &f64| (-(1.0 - p / 100.0).log10(), format!("p{p}")))
            .collect();
        page.push_str(&chart(
            &format!("Latency distribution at {}", load_label(&r.load)),
            "percentile",
            "ms",
            &pts,
            &ticks,
        ));
    }
    if !history.is_empty() {
        let pts: Vec<Point> = history
            .iter()
            .map(|h| (h.version as f64, h.throughput, Some((h.low, h.high))))
            .collect();
        let ticks: Vec<(f64, String)> = history
            .iter()
            .map(|h| (h.version as f64, format!("v{}", h.version)))
            .collect();
        page.push_str(&chart(
            "History per version (same workload, same testbed)",
            "version",
            "calls/s",
            &pts,
            &ticks,
        ));
    }
    let _ = write!(
        page,
        "</div><h2>Details</h2><pre>{}</pre></body></html>",
        esc(&serde_json::to_string_pretty(details).unwrap_or_default())
    );
    page
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(c: usize, tp: f64) -> Run {
        Run {
            load: Load::Closed { concurrency: c },
            windows: Vec::new(),
            throughput: tp,
            throughput_low: tp * 0.9,
            throughput_high: tp * 1.1,
            stable: true,
            p50_us: 1000,
            p90_us: 2000,
            p99_us: 3000,
            p999_us: 4000,
            max_us: 5000,
            ok: 10,
            errors: 0,
            first_error: None,
            distribution: vec![(50.0, 1000), (99.0, 3000)],
            measured_secs: 1.0,
        }
    }

    #[test]
    fn csv_uses_perf_analyzers_names() {
        let s = csv(&[run(1, 100.0), run(4, 350.0)]);
        let mut lines = s.lines();
        assert!(lines.next().is_some_and(|h| h.starts_with(
            "Concurrency,Inferences/Second,p50 latency,p90 latency,p95 latency,p99 latency"
        )));
        assert!(
            lines
                .next()
                .is_some_and(|l| l.starts_with("1,100.000,1000,2000,,3000"))
        );
    }

    #[test]
    fn the_page_is_self_contained_and_escapes_text() {
        let h = html(
            "<m>",
            "ok & fine",
            true,
            &[run(1, 100.0), run(4, 350.0)],
            &[HistoryPoint {
                version: 1,
                throughput: 90.0,
                low: 80.0,
                high: 100.0,
                p99_us: 1,
            }],
            &serde_json::json!({"a": "<b>"}),
        );
        assert!(h.contains("&lt;m&gt;") && h.contains("ok &amp; fine"));
        assert!(!h.contains("<script") && !h.contains("http"));
        assert_eq!(
            h.matches("<svg").count(),
            4,
            "throughput, 2 distributions, history"
        );
    }
}
