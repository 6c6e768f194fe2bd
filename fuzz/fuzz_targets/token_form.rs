//! `switchboard::fuzz::token_form` under libFuzzer: see its documentation for the properties checked.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| switchboard::fuzz::token_form(data));
