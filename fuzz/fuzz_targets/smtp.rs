//! The SMTP session's parsers: command lines and DATA. Any bytes must give a command or a
//! 5xx error, and the DATA receiver must agree with itself however the input is split,
//! without panicking or growing past its limits.
#![no_main]
use libfuzzer_sys::fuzz_target;
use splitmx::smtp::command;
use splitmx::smtp::data::DataReceiver;

fuzz_target!(|data: &[u8]| {
    for line in data.split(|&b| b == b'\n') {
        let _ = command::parse(line);
    }
    let split = data.first().map(|&b| b as usize % (data.len() + 1)).unwrap_or(0);
    let whole = receive(&[data]);
    let parts = receive(&[&data[..split], &data[split..]]);
    assert_eq!(whole, parts);
});

fn receive(chunks: &[&[u8]]) -> Option<(Result<Vec<u8>, ()>, usize, u64)> {
    let mut r = DataReceiver::new(4096, 1000, "mx.example.com");
    let mut consumed = 0;
    for chunk in chunks {
        let (used, done) = r.ingest(chunk);
        consumed += used;
        if done {
            let received = r.received();
            let (body, _) = r.finish();
            if let Ok(b) = &body {
                assert!(b.len() <= 4096);
            }
            return Some((body.map_err(|_| ()), consumed, received));
        }
    }
    None
}
