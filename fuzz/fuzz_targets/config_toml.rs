#![no_main]
// src/fuzz/mod.rs, `config_toml`: the invariants are checked there.
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    assert!(simgate::fuzz::run("config_toml", data));
});
