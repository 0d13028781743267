#![no_main]
// The body lives in fuzz/harness so `cargo test` replays the corpus through it too.
libfuzzer_sys::fuzz_target!(|data: &[u8]| pubsub_fuzz_harness::dns(data));
