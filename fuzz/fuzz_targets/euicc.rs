#![no_main]
// src/fuzz/mod.rs, `euicc`: the invariants are checked there.
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    assert!(simgate::fuzz::run("euicc", data));
});
