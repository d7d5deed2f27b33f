#![no_main]
//! What a server or a user hands the remote layer: `Content-Range` values, URLs (parsed,
//! redacted, with their sidecar names and Basic credentials), S3's XML answers and error
//! documents, AWS credentials and config files, endpoints. None of it may panic, and a
//! redacted URL never keeps its query string.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    blockwise::io::remote::fuzzing::parsers(data);
});
