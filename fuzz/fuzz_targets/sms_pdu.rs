#![no_main]
// src/fuzz/mod.rs, `sms_pdu`: the invariants are checked there.
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    assert!(simgate::fuzz::run("sms_pdu", data));
});
