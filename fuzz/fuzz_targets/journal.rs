//! Journal day files: any line gives a row, a comment or an error, never a panic; a row
//! written back and read again is the same row.
#![no_main]
use libfuzzer_sys::fuzz_target;
use splitmx::journal::format::{RowRef, parse_line, push_line};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    for line in text.split('\n') {
        let _ = splitmx::journal::Day::parse(line);
        let _ = splitmx::journal::day::parse_timestamp(line);
        let Ok(Some(row)) = parse_line(line) else { continue };
        let mut out = String::new();
        push_line(
            &mut out,
            &RowRef {
                recipient: &row.recipient,
                route: &row.route,
                kind: &row.kind,
                messages: row.messages,
                first_seen: row.first_seen,
                last_seen: row.last_seen,
            },
        );
        let again = parse_line(out.trim_end_matches('\n'));
        assert_eq!(again, Ok(Some(row)), "{out:?}");
    }
});
