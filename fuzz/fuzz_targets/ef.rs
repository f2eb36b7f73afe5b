#![no_main]
// src/fuzz/mod.rs, `ef`: the invariants are checked there.
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    assert!(simgate::fuzz::run("ef", data));
});
