#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| mesh_fuzz::trace::trace_w3c(data));
