//! libFuzzer entry point; the body is [`gls_fuzz::argv`] (shared with the e2e corpus replay).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| gls_fuzz::argv(data));
