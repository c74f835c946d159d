#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| liandong_fuzz::parsers_of("210000/12345", data));
