#![no_main]
// src/fuzz/mod.rs, `rsp`: the invariants are checked there.
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    assert!(simgate::fuzz::run("rsp", data));
});
