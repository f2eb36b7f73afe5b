#![no_main]
// src/fuzz/mod.rs, `card_image`: the invariants are checked there.
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    assert!(simgate::fuzz::run("card_image", data));
});
