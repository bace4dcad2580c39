#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| mesh_fuzz::certs::cert_pem(data));
