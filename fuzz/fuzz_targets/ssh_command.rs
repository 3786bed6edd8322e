//! libFuzzer entry point; the body is [`gls_fuzz::ssh_command`] (shared with the e2e corpus replay).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| gls_fuzz::ssh_command(data));
