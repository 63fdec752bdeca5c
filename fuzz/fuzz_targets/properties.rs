#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| kpl_fuzz::properties(data));
