#![no_main]
// src/fuzz/mod.rs, `at_reply`: the invariants are checked there.
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    assert!(simgate::fuzz::run("at_reply", data));
});
