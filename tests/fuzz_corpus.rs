//! Replays every checked-in fuzz input (seeds and past findings) through the same target bodies
//! the fuzzers run, on stable, so a crash found once stays fixed.

use std::path::Path;

type Target = fn(&[u8]);

const TARGETS: [(&str, Target); 10] = [
    ("http_request", pubsub_fuzz_harness::http_request),
    ("ws_handshake", pubsub_fuzz_harness::ws_handshake),
    ("ws_frame", pubsub_fuzz_harness::ws_frame),
    ("ws_session", pubsub_fuzz_harness::ws_session),
    ("client_message", pubsub_fuzz_harness::client_message),
    ("broker_ops", pubsub_fuzz_harness::broker_ops),
    ("connection", pubsub_fuzz_harness::connection),
    ("resp", pubsub_fuzz_harness::resp),
    ("mirror", pubsub_fuzz_harness::mirror),
    ("dns", pubsub_fuzz_harness::dns),
];

#[test]
fn every_corpus_input_passes_its_target() {
    let corpus = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus");
    for (name, target) in TARGETS {
        let dir = corpus.join(name);
        let mut count = 0;
        let mut entries: Vec<_> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .collect();
        entries.sort_by_key(|e| e.as_ref().map(|e| e.path()).ok());
        for entry in entries {
            let path = entry.unwrap().path();
            let data = std::fs::read(&path).unwrap();
            let result = std::panic::catch_unwind(|| target(&data));
            assert!(result.is_ok(), "{name}: {} fails", path.display());
            count += 1;
        }
        assert!(count > 0, "no corpus for {name}");
    }
}

#[test]
fn targets_survive_empty_and_tiny_inputs() {
    for (_, target) in TARGETS {
        for data in [&b""[..], b"\x00", b"\xff", b"\x01\x02\x03"] {
            target(data);
        }
    }
}
