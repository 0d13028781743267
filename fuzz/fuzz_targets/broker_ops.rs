#![no_main]
// The body lives in the library (src/fuzz.rs) so `cargo test` replays the corpus through it too.
libfuzzer_sys::fuzz_target!(|data: &[u8]| pubsub::fuzz::broker_ops(data));
