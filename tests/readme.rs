//! The curl examples in the README work unchanged against a fresh server, in the order given.

mod common;

use std::process::Command;

use common::Server;

#[test]
fn readme_curl_examples_work_against_a_fresh_server() {
    let readme = include_str!("../README.md");
    // The quick start's examples (later sections show guarded servers).
    let quick_start = readme.split("## Configuration").next().unwrap();
    let commands: Vec<&str> = quick_start
        .lines()
        .filter(|l| l.starts_with("curl "))
        .collect();
    assert!(commands.len() >= 5, "the README lost its curl examples");
    let server = Server::start();
    for cmd in commands {
        let cmd_here = cmd.replace("localhost:8080", &server.addr.to_string());
        let out = Command::new("sh")
            .arg("-c")
            .arg(format!("{cmd_here} -sS"))
            .output()
            .expect("curl installed");
        assert!(
            out.status.success(),
            "{cmd}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let body: serde_json::Value =
            serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{cmd}: {e}"));
        assert!(body.get("error").is_none(), "{cmd}: {body}");
    }
}
