//! Fuzz target for `splitmx::routing::hops`: streaming and one-shot hop counting agree,
//! never panic, and the loop policy accepts any count.
#![no_main]

use libfuzzer_sys::fuzz_target;
use splitmx::routing::hops::{HopCounter, LoopPolicy, count_hops};

const HOST: &str = "mx1.example.net";

fuzz_target!(|data: &[u8]| {
    let whole = count_hops(data, HOST);
    assert!(whole.self_passes <= whole.received);
    assert!(whole.header_bytes <= data.len());

    // Split at a position derived from the first byte.
    let split = data
        .first()
        .map_or(0, |&b| usize::from(b) % (data.len() + 1));
    let (head, tail) = data.split_at(split);
    let mut counter = HopCounter::new(HOST);
    counter.feed(head);
    counter.feed(tail);
    assert_eq!(counter.count(), whole);

    // Small inputs: byte by byte too.
    if data.len() <= 4096 {
        let mut counter = HopCounter::new(HOST);
        for byte in data.chunks(1) {
            counter.feed(byte);
        }
        assert_eq!(counter.count(), whole);
    }

    if let Err(err) = LoopPolicy::default().check(&whole) {
        let (code, status, text) = err.reply();
        assert_eq!((code, status), (554, "5.4.6"));
        assert!(!text.is_empty());
    }
});
