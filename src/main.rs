use std::process::ExitCode;

use pubsub::config::Config;
use pubsub::log::{self, Level};
use pubsub::server::Server;

fn main() -> ExitCode {
    let config = match Config::from_env() {
        Ok(c) => c,
        Err(e) => {
            pubsub::log!(Level::Error, "invalid_configuration", "variable" => e.variable, "error" => e.to_string());
            return ExitCode::from(2);
        }
    };
    log::set_level(config.log_level);
    let server = match Server::bind(config.clone()) {
        Ok(s) => s,
        Err(e) => {
            let addr = format!("{}:{}", config.host, config.port);
            pubsub::log!(Level::Error, "bind_failed", "addr" => addr, "error" => e.to_string());
            return ExitCode::from(1);
        }
    };
    pubsub::log!(Level::Info, "listening", "addr" => server.local_addr().to_string(), "echo" => config.enable_echo);
    match server.run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            pubsub::log!(Level::Error, "event_loop_failed", "error" => e.to_string());
            ExitCode::from(1)
        }
    }
}
