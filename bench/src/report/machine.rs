//! What machine a report was measured on, and how busy it was: read from /proc, so a reader can
//! tell whether two reports are comparable.

use serde_json::{json, Value};

fn first_line_with(path: &str, prefix: &str) -> Option<String> {
    let text = std::fs::read_to_string(path).ok()?;
    text.lines()
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.split_once(':'))
        .map(|(_, v)| v.trim().to_string())
}

/// The 1, 5 and 15 minute load averages.
pub fn load_average() -> Value {
    let text = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let loads: Vec<f64> = text
        .split_whitespace()
        .take(3)
        .filter_map(|v| v.parse().ok())
        .collect();
    json!(loads)
}

/// The `machine` line that starts a report's JSON lines.
pub fn describe(server: &str, command: &str) -> Value {
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let memory_kib: Option<u64> = first_line_with("/proc/meminfo", "MemTotal")
        .and_then(|v| v.trim_end_matches("kB").trim().parse().ok());
    let server_bytes = std::fs::metadata(server).map(|m| m.len()).ok();
    json!({
        "scenario": "machine",
        "date": pubsub::time::rfc3339(pubsub::time::unix_millis()),
        "cores": cores,
        "cpu_model": first_line_with("/proc/cpuinfo", "model name"),
        "kernel": std::fs::read_to_string("/proc/sys/kernel/osrelease").ok().map(|k| k.trim().to_string()),
        "memory_gib": memory_kib.map(|k| (k as f64 / 1048576.0 * 10.0).round() / 10.0),
        "load_average": load_average(),
        "tool": format!("pubsub-bench {}", env!("CARGO_PKG_VERSION")),
        "server": server,
        "server_bytes": server_bytes,
        "command": command,
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_machine_line_names_cores_and_load() {
        let m = super::describe("/nonexistent", "pubsub-bench report");
        assert_eq!(m["scenario"], "machine");
        assert!(m["cores"].as_u64().unwrap() >= 1);
        assert_eq!(m["load_average"].as_array().unwrap().len(), 3);
        assert!(m["server_bytes"].is_null());
    }
}
