//! The report as one self-contained HTML page (inline SVG and CSS, nothing fetched), built from
//! the JSON lines of one build, or of two builds compared.

use std::collections::BTreeMap;
use std::fmt::Write;

use serde_json::Value;

use super::plots::{self, Axis, Chart, Series};

/// A page and the plots in it (each also written as an SVG file of its own).
pub struct Rendered {
    pub html: String,
    pub plots: Vec<(String, String)>,
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn num(v: &Value, key: &str) -> Option<f64> {
    v.get(key).and_then(Value::as_f64)
}

fn text(v: &Value, key: &str) -> String {
    match v.get(key) {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Null) | None => String::new(),
        Some(other) => other.to_string(),
    }
}

/// The runs of a results file (not the machine line, not the skipped or failed ones).
fn runs(lines: &[Value]) -> Vec<&Value> {
    lines
        .iter()
        .filter(|v| {
            v["scenario"] != "machine" && v.get("skipped").is_none() && v.get("failed").is_none()
        })
        .collect()
}

/// What identifies the same run in two results files: its command without `--server PATH`.
pub fn key(v: &Value) -> String {
    let command = text(v, "command");
    let mut words = command.split_whitespace().peekable();
    let mut kept = Vec::new();
    while let Some(w) = words.next() {
        if w == "--server" {
            words.next();
        } else {
            kept.push(w);
        }
    }
    format!("{} {}", kept.join(" "), text(v, "variant"))
        .trim()
        .to_string()
}

fn matching<'a>(baseline: Option<&'a [Value]>, v: &Value) -> Option<&'a Value> {
    let k = key(v);
    baseline?
        .iter()
        .find(|b| key(b) == k && b.get("skipped").is_none() && b.get("failed").is_none())
}

fn quantile_points(v: &Value, field: &str) -> Vec<(f64, f64)> {
    v.get(field)
        .and_then(Value::as_array)
        .map(|points| {
            points
                .iter()
                .filter_map(|p| Some((plots::nines(p.get(0)?.as_f64()?), p.get(1)?.as_f64()?)))
                .filter(|(_, ms)| *ms > 0.0)
                .collect()
        })
        .unwrap_or_default()
}

fn series(
    name: &str,
    points: Vec<(f64, f64)>,
    color: plots::RGBColor,
    dashed: bool,
) -> Option<Series> {
    (!points.is_empty()).then(|| Series {
        name: name.into(),
        points,
        color,
        dashed,
    })
}

fn latency_chart(v: &Value, baseline: Option<&Value>) -> Option<Chart> {
    let mut all = vec![
        series(
            "server",
            quantile_points(v, "latency_percentiles_ms"),
            plots::SERVER,
            false,
        ),
        series(
            "ceiling",
            quantile_points(v, "ceiling_latency_percentiles_ms"),
            plots::CEILING,
            true,
        ),
    ];
    if let Some(b) = baseline {
        all.push(series(
            "baseline server",
            quantile_points(b, "latency_percentiles_ms"),
            plots::BASELINE,
            false,
        ));
        all.push(series(
            "baseline ceiling",
            quantile_points(b, "ceiling_latency_percentiles_ms"),
            plots::BASELINE_CEILING,
            true,
        ));
    }
    let all: Vec<Series> = all.into_iter().flatten().collect();
    (!all.is_empty()).then(|| Chart {
        title: format!("latency: {}", key(v).trim_start_matches("pubsub-bench ")),
        x_desc: "percentile".into(),
        y_desc: "publish to delivery (ms)".into(),
        x_axis: Axis::Nines,
        y_axis: Axis::Log,
        series: all,
    })
}

/// One point of a scaling plot: the varied parameter, the server's and the ceiling's CPU per
/// delivery.
type CostPoint = (f64, f64, Option<f64>);

/// Fan-out runs that vary `vary` with the other parameter held at the value that gives the most
/// points, and that value.
fn scaling(runs: &[&Value], vary: &str, held: &str) -> (Option<f64>, Vec<CostPoint>) {
    let mut by_held: BTreeMap<String, BTreeMap<u64, &Value>> = BTreeMap::new();
    for v in runs {
        if v["scenario"] != "fanout" || v.get("variant").is_some_and(|x| !x.is_null()) {
            continue;
        }
        if let (Some(x), Some(h)) = (num(v, vary), num(v, held)) {
            by_held
                .entry(h.to_string())
                .or_default()
                .insert(x as u64, v);
        }
    }
    let Some((h, points)) = by_held.into_iter().max_by_key(|(_, p)| p.len()) else {
        return (None, Vec::new());
    };
    let pts = points
        .into_iter()
        .filter_map(|(x, v)| {
            Some((
                x as f64,
                num(v, "server_cpu_us_per_delivery")?,
                num(v, "ceiling_cpu_us_per_delivery"),
            ))
        })
        .collect();
    (h.parse().ok(), pts)
}

fn scaling_chart(
    this: &[&Value],
    baseline: Option<&[&Value]>,
    vary: &str,
    held: &str,
    x_desc: &str,
) -> Option<Chart> {
    let (held_value, pts) = scaling(this, vary, held);
    if pts.len() < 2 {
        return None;
    }
    let mut all = vec![
        series(
            "server",
            pts.iter().map(|p| (p.0, p.1)).collect(),
            plots::SERVER,
            false,
        ),
        series(
            "ceiling",
            pts.iter().filter_map(|p| Some((p.0, p.2?))).collect(),
            plots::CEILING,
            true,
        ),
    ];
    if let Some(b) = baseline {
        let (_, bp) = scaling(b, vary, held);
        all.push(series(
            "baseline server",
            bp.iter().map(|p| (p.0, p.1)).collect(),
            plots::BASELINE,
            false,
        ));
        all.push(series(
            "baseline ceiling",
            bp.iter().filter_map(|p| Some((p.0, p.2?))).collect(),
            plots::BASELINE_CEILING,
            true,
        ));
    }
    let held_text = held_value.map_or(String::new(), |h| {
        format!(", {} {}", plots::short(h), held.replace('_', " "))
    });
    Some(Chart {
        title: format!("server CPU per delivery by {x_desc}{held_text}"),
        x_desc: x_desc.into(),
        y_desc: "CPU per delivery (µs)".into(),
        x_axis: Axis::Log,
        y_axis: Axis::Log,
        series: all.into_iter().flatten().collect(),
    })
}

fn conns_points(runs: &[&Value]) -> Vec<(f64, f64)> {
    let mut pts: Vec<(f64, f64)> = runs
        .iter()
        .filter(|v| v["scenario"] == "conns")
        .filter_map(|v| {
            Some((
                num(v, "connections")?,
                num(v, "server_rss_bytes_per_connection")?,
            ))
        })
        .collect();
    pts.sort_by(|a, b| a.0.total_cmp(&b.0));
    pts
}

fn conns_chart(this: &[&Value], baseline: Option<&[&Value]>) -> Option<Chart> {
    let pts = conns_points(this);
    if pts.is_empty() {
        return None;
    }
    let mut all = vec![series("server", pts, plots::SERVER, false)];
    if let Some(b) = baseline {
        all.push(series(
            "baseline server",
            conns_points(b),
            plots::BASELINE,
            false,
        ));
    }
    Some(Chart {
        title: "server memory per idle subscribed connection".into(),
        x_desc: "connections".into(),
        y_desc: "RSS per connection (bytes)".into(),
        x_axis: Axis::Log,
        y_axis: Axis::Linear,
        series: all.into_iter().flatten().collect(),
    })
}

/// The figures a run's table row shows, by scenario, with whether higher is better.
const FIGURES: &[(&str, &str, bool)] = &[
    ("delivered_per_sec", "delivered/s", true),
    ("server_cpu_us_per_delivery", "CPU/delivery µs", false),
    ("percent_of_ceiling", "% of ceiling", true),
    ("latency_p50_ms", "p50 ms", false),
    ("latency_p99_ms", "p99 ms", false),
    ("probe_loaded_p99_ms", "probe p99 ms (attack)", false),
    ("send_us_per_send", "send µs", false),
    ("connect_handshake_per_sec", "connects/s", true),
    ("server_rss_bytes_per_connection", "RSS/conn B", false),
    ("server_allocations_per_publish", "allocs/publish", false),
    ("server_rss_peak_mib", "peak RSS MiB (hostile)", false),
    ("server_rss_bound_mib", "RSS bound MiB", false),
];

fn slug(title: &str) -> String {
    let s: String = title
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect();
    s.split('-')
        .filter(|p| !p.is_empty())
        .collect::<Vec<_>>()
        .join("-")
}

const STYLE: &str = "body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1340px;color:#222}\
table{border-collapse:collapse;margin:1em 0;font-size:13px}td,th{border:1px solid #ccc;padding:3px 7px;text-align:right}\
td:first-child,th:first-child{text-align:left}code{font-size:12px}.plots{display:flex;flex-wrap:wrap;gap:12px}\
.plots svg{border:1px solid #ddd}.bad{color:#b00}.good{color:#070}.note{color:#555}";

/// The whole page. `baseline`, when given, is drawn beside `this` with a table of ratios.
pub fn render(this: &[Value], baseline: Option<&[Value]>) -> Rendered {
    let mut html = String::new();
    let mut plots_out: Vec<(String, String)> = Vec::new();
    let runs_this = runs(this);
    let runs_base = baseline.map(runs);
    let title = if baseline.is_some() {
        "pubsub benchmark comparison"
    } else {
        "pubsub benchmark report"
    };
    let _ = write!(
        html,
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{title}</title><style>{STYLE}</style></head><body>\n<h1>{title}</h1>\n"
    );
    // The machine (or machines) and how to reproduce.
    let machines: Vec<(&str, &Value)> =
        [("this build", this), ("baseline", baseline.unwrap_or(&[]))]
            .into_iter()
            .filter_map(|(name, lines)| {
                lines
                    .iter()
                    .find(|v| v["scenario"] == "machine")
                    .map(|m| (name, m))
            })
            .collect();
    html.push_str("<h2>Machine</h2>\n");
    if machines.is_empty() {
        html.push_str("<p class=\"note\">No machine line in these results.</p>\n");
    } else {
        html.push_str("<table><tr><th></th>");
        for (name, _) in &machines {
            let _ = write!(html, "<th>{}</th>", esc(name));
        }
        html.push_str("</tr>\n");
        for field in [
            "date",
            "cpu_model",
            "cores",
            "memory_gib",
            "kernel",
            "load_average",
            "tool",
            "server",
            "server_bytes",
            "command",
        ] {
            let _ = write!(html, "<tr><td>{field}</td>");
            for (_, m) in &machines {
                let _ = write!(html, "<td><code>{}</code></td>", esc(&text(m, field)));
            }
            html.push_str("</tr>\n");
        }
        html.push_str("</table>\n<p class=\"note\">Every run's exact command line is in the table below; each also records the load average just before it ran. On a shared machine compare a build with its same-run ceiling, or two builds measured interleaved (<code>pubsub-bench report --baseline OTHER_BUILD</code>).</p>\n");
    }
    // One row per run.
    html.push_str("<h2>Runs</h2>\n<table><tr><th>command</th><th>ok</th><th>load before</th>");
    for (_, label, _) in FIGURES {
        let _ = write!(html, "<th>{}</th>", esc(label));
    }
    html.push_str("</tr>\n");
    for v in &runs_this {
        let base = matching(baseline, v);
        let _ = write!(
            html,
            "<tr><td><code>{}</code></td><td>{}</td><td>{}</td>",
            esc(&text(v, "command")),
            if v["ok"] == true {
                "yes"
            } else {
                "<span class=\"bad\">no</span>"
            },
            esc(&text(v, "load_average_before")),
        );
        for (field, _, higher_better) in FIGURES {
            let cell = match (num(v, field), base.and_then(|b| num(b, field))) {
                (None, _) => String::new(),
                (Some(x), None) => plots::short(x),
                (Some(x), Some(b)) if b != 0.0 => {
                    let ratio = x / b;
                    let better = (ratio > 1.0) == *higher_better;
                    let class = if (ratio - 1.0).abs() < 0.05 {
                        ""
                    } else if better {
                        "good"
                    } else {
                        "bad"
                    };
                    // Small ratios keep their significant digits (0.0032×, not 0.00×).
                    let shown = if ratio >= 0.1 {
                        format!("{ratio:.2}")
                    } else {
                        plots::short(ratio)
                    };
                    format!(
                        "{} <span class=\"{class}\">({shown}×)</span>",
                        plots::short(x)
                    )
                }
                (Some(x), Some(_)) => plots::short(x),
            };
            let _ = write!(html, "<td>{cell}</td>");
        }
        html.push_str("</tr>\n");
    }
    html.push_str("</table>\n");
    if baseline.is_some() {
        html.push_str("<p class=\"note\">In parentheses: this build's figure divided by the baseline's for the same command; green where it is better by 5% or more, red where worse.</p>\n");
    }
    // The plots.
    let mut section = |html: &mut String, heading: &str, charts: Vec<Chart>, missing: &str| {
        let _ = writeln!(html, "<h2>{}</h2>", esc(heading));
        if charts.is_empty() {
            let _ = writeln!(html, "<p class=\"note\">{}</p>", esc(missing));
            return;
        }
        html.push_str("<div class=\"plots\">\n");
        for chart in charts {
            match plots::svg(&chart) {
                Ok(svg) => {
                    html.push_str(&svg);
                    html.push('\n');
                    plots_out.push((format!("{}.svg", slug(&chart.title)), svg));
                }
                Err(e) => {
                    let _ = writeln!(
                        html,
                        "<p class=\"bad\">{}: {}</p>",
                        esc(&chart.title),
                        esc(&e)
                    );
                }
            }
        }
        html.push_str("</div>\n");
    };
    let latency: Vec<Chart> = runs_this
        .iter()
        .filter_map(|v| latency_chart(v, matching(baseline, v)))
        .collect();
    section(
        &mut html,
        "Latency percentiles (server beside its same-run ceiling)",
        latency,
        "No run in these results measured latency.",
    );
    let base_refs = runs_base.as_deref();
    let scaling_charts: Vec<Chart> = [
        scaling_chart(
            &runs_this,
            base_refs,
            "subscribers",
            "payload_bytes",
            "subscribers",
        ),
        scaling_chart(
            &runs_this,
            base_refs,
            "payload_bytes",
            "subscribers",
            "payload bytes",
        ),
    ]
    .into_iter()
    .flatten()
    .collect();
    section(
        &mut html,
        "Scaling",
        scaling_charts,
        "Fewer than two fan-out runs differ by subscribers or by payload: no scaling plot.",
    );
    let conns: Vec<Chart> = conns_chart(&runs_this, base_refs).into_iter().collect();
    section(
        &mut html,
        "Connections",
        conns,
        "No conns runs in these results.",
    );
    // Runs that could not be made.
    let problems: Vec<&Value> = this
        .iter()
        .chain(baseline.unwrap_or(&[]))
        .filter(|v| v.get("skipped").is_some() || v.get("failed").is_some())
        .collect();
    if !problems.is_empty() {
        html.push_str("<h2>Not measured</h2>\n<ul>\n");
        for v in problems {
            let why = if v.get("skipped").is_some() {
                text(v, "skipped")
            } else {
                format!("failed: {}", text(v, "failed"))
            };
            let _ = writeln!(
                html,
                "<li><code>{}</code>: {}</li>",
                esc(&text(v, "command")),
                esc(&why)
            );
        }
        html.push_str("</ul>\n");
    }
    html.push_str("</body></html>\n");
    Rendered {
        html,
        plots: plots_out,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn fanout(subscribers: u64, payload: u64, cpu: f64, command: &str) -> Value {
        json!({"scenario": "fanout", "command": command, "ok": true, "subscribers": subscribers,
            "payload_bytes": payload, "server_cpu_us_per_delivery": cpu,
            "ceiling_cpu_us_per_delivery": cpu * 0.9, "delivered_per_sec": 1e6,
            "latency_percentiles_ms": [[0.5, 1.0], [0.99, 3.0], [0.999, 5.0]],
            "ceiling_latency_percentiles_ms": [[0.5, 0.8], [0.99, 2.0]]})
    }

    fn results() -> Vec<Value> {
        vec![
            json!({"scenario": "machine", "cores": 2, "date": "2026-12-01T00:00:00.000Z"}),
            fanout(10, 128, 0.4, "fanout --subscribers 10"),
            fanout(100, 128, 0.2, "fanout --subscribers 100"),
            fanout(1000, 128, 0.25, "fanout --duration 3"),
            fanout(1000, 64, 0.22, "fanout --payload 64"),
            fanout(1000, 16384, 2.5, "fanout --payload 16384"),
            json!({"scenario": "cluster", "command": "cluster --duration 3", "skipped": "not in this build of the tool"}),
        ]
    }

    #[test]
    fn a_report_has_its_plots_series_and_axes() {
        let r = render(&results(), None);
        assert!(r.html.starts_with("<!doctype html>"));
        assert!(r
            .html
            .contains("server CPU per delivery by subscribers, 128 payload bytes"));
        assert!(r
            .html
            .contains("server CPU per delivery by payload bytes, 1000 subscribers"));
        assert!(r.html.contains("publish to delivery (ms)"));
        assert!(
            r.html.contains(">ceiling<") || r.html.contains("ceiling\n"),
            "the ceiling series"
        );
        // Five latency plots and two scaling plots, each also as a file.
        assert_eq!(r.plots.len(), 7);
        assert!(r
            .plots
            .iter()
            .all(|(name, svg)| name.ends_with(".svg") && svg.starts_with("<svg")));
        // A scenario that is absent is said so, not a crash.
        assert!(r.html.contains("No conns runs in these results."));
        assert!(r
            .html
            .contains("cluster --duration 3</code>: not in this build of the tool"));
    }

    #[test]
    fn a_comparison_overlays_the_baseline_and_gives_ratios() {
        let this = results();
        let mut base = results();
        base[1]["server_cpu_us_per_delivery"] = json!(0.8);
        base[1]["command"] = json!("fanout --subscribers 10 --server /old/pubsub");
        let r = render(&this, Some(&base));
        assert!(r.html.contains("pubsub benchmark comparison"));
        assert!(r.html.contains("baseline server"));
        // 0.4 against 0.8: half the CPU, marked better.
        assert!(
            r.html.contains("0.4 <span class=\"good\">(0.50×)</span>"),
            "{}",
            r.html
        );
    }

    #[test]
    fn an_empty_results_file_gives_a_page_that_says_so() {
        let r = render(&[], None);
        assert!(r.html.contains("No machine line"));
        assert!(r.html.contains("No run in these results measured latency."));
        assert!(r.plots.is_empty());
    }

    #[test]
    fn runs_match_by_command_without_the_server() {
        let a = json!({"command": "fanout --duration 3 --server /a/pubsub"});
        let b = json!({"command": "fanout --duration 3"});
        assert_eq!(key(&a), key(&b));
        let c = json!({"command": "fanout --duration 3", "variant": "counting-allocator"});
        assert_ne!(key(&b), key(&c));
    }
}
