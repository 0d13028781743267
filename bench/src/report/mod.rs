//! `report`: runs the standard scenarios (each as its own `pubsub-bench` process, its exact
//! command line recorded), and writes the JSON lines it measured and one self-contained HTML page
//! with plots. With `--baseline OTHER_BUILD` every scenario runs against the other build too,
//! the two taking turns, and the page shows both with ratios. `compare A.jsonl B.jsonl` makes
//! that page from two results files already measured.

mod html;
mod machine;
mod plan;
pub mod plots;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use serde_json::{json, Value};

const USAGE: &str = "usage:
  pubsub-bench report [--out DIR] [--quick] [--server PATH] [--baseline PATH]
      runs the standard scenarios and writes DIR/results.jsonl, DIR/report.html and
      DIR/plots/*.svg (DIR: target/bench-report). --quick: short runs (for CI).
      --baseline PATH: every scenario also against that build, the two in turn; its results go
      to DIR/baseline.jsonl and the page compares them
  pubsub-bench compare A.jsonl B.jsonl [--out DIR]
      the page for B with A as its baseline, from results already measured";

struct Args {
    out: PathBuf,
    quick: bool,
    server: Option<String>,
    baseline: Option<String>,
    files: Vec<PathBuf>,
}

fn parse(args: &[String]) -> Result<Args, String> {
    let mut a = Args {
        out: PathBuf::from("target/bench-report"),
        quick: false,
        server: None,
        baseline: None,
        files: Vec::new(),
    };
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        let mut value = || it.next().cloned().ok_or(format!("{arg} needs a value"));
        match arg.as_str() {
            "--out" => a.out = PathBuf::from(value()?),
            "--quick" => a.quick = true,
            "--server" => a.server = Some(value()?),
            "--baseline" => a.baseline = Some(value()?),
            s if s.starts_with("--") => return Err(format!("unknown option {s}")),
            file => a.files.push(PathBuf::from(file)),
        }
    }
    Ok(a)
}

fn fail(e: &str) -> i32 {
    eprintln!("pubsub-bench: {e}\n\n{USAGE}");
    2
}

fn minutes(secs: f64) -> String {
    let s = secs.max(0.0).round() as u64;
    format!("{}:{:02}", s / 60, s % 60)
}

/// One run of the tool as a child process: its JSON line, annotated, or why there is none.
fn run_step(args: &[String], variant: Option<&str>, build: &str) -> Value {
    let command = format!("pubsub-bench {}", args.join(" "));
    let scenario = args.first().cloned().unwrap_or_default();
    let load = machine::load_average();
    let started = Instant::now();
    let exe = std::env::current_exe().unwrap_or_else(|_| PathBuf::from("pubsub-bench"));
    let out = Command::new(exe).args(args).arg("--json").output();
    let mut line = match out {
        Err(e) => json!({"scenario": scenario, "failed": format!("could not start: {e}")}),
        Ok(o) => {
            let stderr = String::from_utf8_lossy(&o.stderr);
            let stdout = String::from_utf8_lossy(&o.stdout);
            match serde_json::from_str::<Value>(stdout.trim()) {
                Ok(v) if v.is_object() => v,
                _ if o.status.code() == Some(2) && stderr.contains("unknown scenario") => {
                    json!({"scenario": scenario, "skipped": "not in this build of the tool"})
                }
                _ => {
                    let tail: String = stderr.lines().rev().take(3).collect::<Vec<_>>().join(" / ");
                    json!({"scenario": scenario, "failed": format!("exit {:?}: {tail}", o.status.code())})
                }
            }
        }
    };
    line["command"] = json!(command);
    line["build"] = json!(build);
    line["load_average_before"] = load;
    line["seconds"] = json!((started.elapsed().as_secs_f64() * 10.0).round() / 10.0);
    if let Some(v) = variant {
        line["variant"] = json!(v);
    }
    line
}

fn write_lines(path: &Path, lines: &[Value]) -> std::io::Result<()> {
    let text: String = lines.iter().map(|l| format!("{l}\n")).collect();
    std::fs::write(path, text)
}

fn read_lines(path: &Path) -> Result<Vec<Value>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).map_err(|e| format!("{}: {e}", path.display())))
        .collect()
}

/// Writes the page and its plots into `out`.
fn publish(out: &Path, this: &[Value], baseline: Option<&[Value]>) -> std::io::Result<PathBuf> {
    let rendered = html::render(this, baseline);
    let plots = out.join("plots");
    // Plots of an earlier report would be mistaken for this one's.
    if plots.exists() {
        std::fs::remove_dir_all(&plots)?;
    }
    std::fs::create_dir_all(&plots)?;
    for (name, svg) in &rendered.plots {
        std::fs::write(plots.join(name), svg)?;
    }
    let page = out.join("report.html");
    std::fs::write(&page, rendered.html)?;
    Ok(page)
}

pub fn report(args: &[String]) -> i32 {
    let a = match parse(args) {
        Ok(a) if a.files.is_empty() => a,
        Ok(_) => return fail("report takes no file arguments"),
        Err(e) => return fail(&e),
    };
    if let Err(e) = std::fs::create_dir_all(&a.out) {
        return fail(&format!("{}: {e}", a.out.display()));
    }
    let server = a.server.clone().unwrap_or("target/release/pubsub".into());
    // The counting-allocator server is built beside the tool; its run needs no baseline.
    let counting = std::env::current_exe()
        .ok()
        .map(|e| e.with_file_name("pubsub-counting"))
        .filter(|p| p.exists() && a.baseline.is_none())
        .map(|p| p.display().to_string());
    let steps = plan::steps(a.quick, counting.as_deref());
    let builds: Vec<(&str, Option<String>)> = match &a.baseline {
        Some(b) => vec![
            ("baseline", Some(b.clone())),
            ("this", Some(server.clone())),
        ],
        None => vec![("this", a.server.clone())],
    };
    let command = format!("pubsub-bench report {}", args.join(" "));
    let mut this = vec![machine::describe(&server, &command)];
    let mut base = a
        .baseline
        .as_ref()
        .map(|b| vec![machine::describe(b, &command)]);
    let total = steps.len() * builds.len();
    let planned: f64 = steps.iter().map(|s| s.estimate_secs).sum::<f64>() * builds.len() as f64;
    let started = Instant::now();
    let mut estimated_done = 0.0;
    let mut n = 0;
    for step in &steps {
        for (build, server) in &builds {
            n += 1;
            let mut args = step.args.clone();
            if let (None, Some(s)) = (step.variant, server) {
                args.extend(["--server".to_string(), s.clone()]);
            }
            let elapsed = started.elapsed().as_secs_f64();
            // Scale what is left by how the estimates have held so far.
            let pace = if estimated_done > 0.0 {
                elapsed / estimated_done
            } else {
                1.0
            };
            eprintln!(
                "[{n:>2}/{total}] {build:<8} pubsub-bench {}   ({} elapsed, about {} left)",
                args.join(" "),
                minutes(elapsed),
                minutes((planned - estimated_done) * pace)
            );
            let line = run_step(&args, step.variant, build);
            if let Some(why) = line.get("skipped").or(line.get("failed")) {
                eprintln!("        not measured: {}", why.as_str().unwrap_or_default());
            }
            estimated_done += step.estimate_secs;
            match (build, &mut base) {
                (&"baseline", Some(b)) => b.push(line),
                _ => this.push(line),
            }
        }
    }
    let written = write_lines(&a.out.join("results.jsonl"), &this)
        .and_then(|()| match &base {
            Some(b) => write_lines(&a.out.join("baseline.jsonl"), b),
            None => Ok(()),
        })
        .and_then(|()| publish(&a.out, &this, base.as_deref()));
    match written {
        Ok(page) => {
            eprintln!(
                "report: {} ({} in all)",
                page.display(),
                minutes(started.elapsed().as_secs_f64())
            );
            0
        }
        Err(e) => {
            eprintln!("pubsub-bench report: {e}");
            1
        }
    }
}

pub fn compare(args: &[String]) -> i32 {
    let a = match parse(args) {
        Ok(a) => a,
        Err(e) => return fail(&e),
    };
    let [baseline, this] = a.files.as_slice() else {
        return fail("compare takes two results files: the baseline first");
    };
    let (baseline, this) = match (read_lines(baseline), read_lines(this)) {
        (Ok(b), Ok(t)) => (b, t),
        (Err(e), _) | (_, Err(e)) => return fail(&e),
    };
    match publish(&a.out, &this, Some(&baseline)) {
        Ok(page) => {
            eprintln!("compare: {}", page.display());
            0
        }
        Err(e) => {
            eprintln!("pubsub-bench compare: {e}");
            1
        }
    }
}
