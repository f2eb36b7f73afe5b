#![no_main]
// src/fuzz/mod.rs, `tlv`: the invariants are checked there.
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    assert!(simgate::fuzz::run("tlv", data));
});
