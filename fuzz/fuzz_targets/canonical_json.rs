#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| liandong_fuzz::canonical(data));
