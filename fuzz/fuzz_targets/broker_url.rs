#![no_main]
// src/fuzz/mod.rs, `broker_url`: the invariants are checked there.
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    assert!(simgate::fuzz::run("broker_url", data));
});
