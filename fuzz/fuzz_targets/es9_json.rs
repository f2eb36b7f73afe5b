#![no_main]
// src/fuzz/mod.rs, `es9_json`: the invariants are checked there.
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    assert!(simgate::fuzz::run("es9_json", data));
});
