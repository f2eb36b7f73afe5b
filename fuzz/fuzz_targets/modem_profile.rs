#![no_main]
// src/fuzz/mod.rs, `modem_profile`: the invariants are checked there.
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    assert!(simgate::fuzz::run("modem_profile", data));
});
