use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::process::ExitCode;
use std::time::Duration;

use pubsub::config::Config;
use pubsub::log::Level;

const USAGE: &str = "usage: pubsub [--healthcheck | --version | --help]
  (no argument)   serve; configuration comes from environment variables (see README.md)
  --healthcheck   request /health from the server configured by the same environment on this
                  host and exit 0 if it answers 200, 1 otherwise (for container HEALTHCHECKs)";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let config = match Config::from_env() {
        Ok(c) => c,
        Err(e) => {
            pubsub::log!(Level::Error, "invalid_configuration", "variable" => e.variable, "error" => e.to_string());
            return ExitCode::from(2);
        }
    };
    match args
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .as_slice()
    {
        [] => pubsub::server::serve(config),
        ["--healthcheck"] => healthcheck(&config),
        ["--version"] => {
            println!("pubsub {}", env!("CARGO_PKG_VERSION"));
            ExitCode::SUCCESS
        }
        ["--help"] | ["-h"] => {
            println!("{USAGE}");
            ExitCode::SUCCESS
        }
        _ => {
            eprintln!("{USAGE}");
            ExitCode::from(2)
        }
    }
}

/// One `GET /health` over plain std sockets: no shell, curl or DNS needed in the image.
fn healthcheck(config: &Config) -> ExitCode {
    let host = match config.host {
        IpAddr::V4(v4) if v4.is_unspecified() => IpAddr::from([127, 0, 0, 1]),
        IpAddr::V6(v6) if v6.is_unspecified() => IpAddr::from([0, 0, 0, 0, 0, 0, 0, 1]),
        other => other,
    };
    let addr = SocketAddr::new(host, config.port);
    let timeout = Duration::from_secs(3);
    let attempt = || -> std::io::Result<bool> {
        let mut s = TcpStream::connect_timeout(&addr, timeout)?;
        s.set_read_timeout(Some(timeout))?;
        s.set_write_timeout(Some(timeout))?;
        s.write_all(b"GET /health HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")?;
        let mut head = [0u8; 12];
        s.read_exact(&mut head)?;
        Ok(&head[..] == b"HTTP/1.1 200")
    };
    match attempt() {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => {
            eprintln!("healthcheck: {addr} answered, but not 200");
            ExitCode::from(1)
        }
        Err(e) => {
            eprintln!("healthcheck: {addr}: {e}");
            ExitCode::from(1)
        }
    }
}
