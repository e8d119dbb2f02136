//! The metrics endpoint's request-line parser: any bytes give one of the four answers,
//! never a panic; only `GET`/`HEAD` of `/metrics` is served.
#![no_main]
use libfuzzer_sys::fuzz_target;
use splitmx::metrics::http::{Request, parse_request_line};

fuzz_target!(|data: &[u8]| {
    if let Request::Metrics { head_only } = parse_request_line(data) {
        let text = std::str::from_utf8(data).expect("served only for UTF-8");
        let method = if head_only { "HEAD " } else { "GET " };
        assert!(text.starts_with(method), "{text:?}");
        assert!(text[method.len()..].starts_with("/metrics"), "{text:?}");
    }
});
