//! `compose.yaml` as Docker Compose itself reads it. No Docker engine runs here, so nothing is
//! started; instead Compose v2 renders the whole model it would run (`config --format json`:
//! schema, anchors and merges resolved), and this checks that the parts fit: each instance's
//! environment is a configuration the server accepts, its `REDIS_URL` names the Redis service,
//! the instance ids differ, and HAProxy, the only published port, balances over exactly the
//! instances on the port they listen on. `tests/cluster_haproxy.rs` runs that HAProxy
//! configuration against real instances. Compose is `$PUBSUB_COMPOSE` (`.ci/run` sets it; then it
//! must run) or `docker compose` on the PATH; without either the test is skipped, saying so.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::process::{Command, Stdio};

use pubsub::cluster::url::Address;
use pubsub::config::Config;
use serde_json::Value;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// The Compose command: `$PUBSUB_COMPOSE`, or `docker compose` when its plugin is installed.
fn compose() -> Option<Command> {
    if let Ok(path) = std::env::var("PUBSUB_COMPOSE") {
        return Some(Command::new(path));
    }
    let plugin = Command::new("docker")
        .args(["compose", "version"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    plugin.then(|| {
        let mut c = Command::new("docker");
        c.arg("compose");
        c
    })
}

fn rendered() -> Option<Value> {
    let Some(mut command) = compose() else {
        let _ = writeln!(
            std::io::stderr(),
            "skipped: no Docker Compose v2 (set PUBSUB_COMPOSE to its binary)"
        );
        return None;
    };
    let out = command
        .args(["-f", "compose.yaml", "config", "--format", "json"])
        .current_dir(ROOT)
        .output()
        .expect("Docker Compose runs");
    assert!(
        out.status.success(),
        "compose.yaml refused by Compose: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Some(serde_json::from_slice(&out.stdout).expect("Compose's JSON"))
}

fn text(v: &Value) -> &str {
    v.as_str().unwrap_or_default()
}

/// `server <name> <service>:<port> ...` lines of an HAProxy configuration: service → port.
fn haproxy_servers(cfg: &str) -> BTreeMap<String, u16> {
    cfg.lines()
        .filter_map(|l| l.trim().strip_prefix("server "))
        .map(|rest| {
            let addr = rest.split_whitespace().nth(1).expect("a server's address");
            let (host, port) = addr.rsplit_once(':').expect("host:port");
            (host.to_string(), port.parse().expect("a port"))
        })
        .collect()
}

#[test]
fn compose_yaml_is_a_cluster_whose_parts_fit() {
    let Some(model) = rendered() else { return };
    let services = model["services"].as_object().expect("services");

    // The instances are what `build` makes from this repository's Dockerfile.
    let instances: BTreeMap<&str, &Value> = services
        .iter()
        .filter(|(_, s)| s.get("build").is_some())
        .map(|(name, s)| (name.as_str(), s))
        .collect();
    assert!(instances.len() >= 2, "a cluster has several instances");
    let mut ids = BTreeSet::new();
    let mut ports = BTreeSet::new();
    for (name, s) in &instances {
        assert_eq!(
            text(&s["build"]["context"]),
            ROOT,
            "{name} builds this repository"
        );
        assert_eq!(text(&s["build"]["dockerfile"]), "Dockerfile", "{name}");
        assert!(
            s.get("ports").is_none(),
            "{name} is reached through HAProxy only"
        );
        let env = s["environment"].as_object().expect("an environment");
        let config = Config::from_lookup(|k| env.get(k).and_then(|v| v.as_str()).map(String::from))
            .unwrap_or_else(|e| panic!("{name}'s environment is refused: {e:?}"));
        let url = config.redis_url.expect("REDIS_URL: a cluster instance");
        let Address::Tcp { host, port } = url.address else {
            panic!("{name}: REDIS_URL names a socket no other container shares")
        };
        let redis = services
            .get(&host)
            .unwrap_or_else(|| panic!("{name}'s REDIS_URL names {host}, not a service"));
        assert!(
            text(&redis["image"]).starts_with("redis:"),
            "{host} runs Redis"
        );
        assert_eq!(port, 6379, "Redis listens on its default port");
        assert!(
            s["depends_on"].get(&host).is_some(),
            "{name} starts after {host}"
        );
        ids.insert(config.instance_id.expect("INSTANCE_ID"));
        ports.insert(config.port);
    }
    assert_eq!(ids.len(), instances.len(), "every instance has its own id");

    // Redis answers a write once it is on disk, so a restarted Redis has every acked event.
    let redis_command: Vec<&str> = services["redis"]["command"]
        .as_array()
        .expect("redis's command")
        .iter()
        .map(text)
        .collect();
    let always = redis_command
        .windows(2)
        .any(|w| w == ["--appendfsync", "always"]);
    assert!(
        always && redis_command.contains(&"--appendonly"),
        "{redis_command:?}"
    );

    // HAProxy is the one published port and balances over exactly the instances.
    let published: Vec<&str> = services
        .iter()
        .filter(|(_, s)| s.get("ports").is_some())
        .map(|(name, _)| name.as_str())
        .collect();
    assert_eq!(published, ["haproxy"]);
    let haproxy = &services["haproxy"];
    let port = &haproxy["ports"][0];
    assert_eq!(
        (text(&port["published"]), port["target"].as_u64()),
        ("8080", Some(8080))
    );
    let config = &haproxy["configs"][0];
    assert_eq!(
        text(&config["target"]),
        "/usr/local/etc/haproxy/haproxy.cfg",
        "where the haproxy image reads its configuration"
    );
    let content = text(&model["configs"][text(&config["source"])]["content"]);
    let servers = haproxy_servers(content);
    let names: BTreeSet<&str> = servers.keys().map(String::as_str).collect();
    assert_eq!(names, instances.keys().copied().collect::<BTreeSet<_>>());
    let backend_ports: BTreeSet<u16> = servers.values().copied().collect();
    assert_eq!(
        backend_ports, ports,
        "HAProxy reaches the port the instances listen on"
    );
    for name in instances.keys() {
        assert!(
            haproxy["depends_on"].get(*name).is_some(),
            "haproxy after {name}"
        );
    }
    assert!(
        content.contains("option httpchk GET /health") && content.contains("expect status 200"),
        "an instance that lost Redis answers /health 503 and gets no new clients"
    );
}
