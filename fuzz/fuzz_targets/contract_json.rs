#![no_main]
// src/fuzz/mod.rs, `contract_json`: the invariants are checked there.
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    assert!(simgate::fuzz::run("contract_json", data));
});
