//! Spool recovery over any segment file: raw bytes (torn headers, bad checksums, broken
//! chains) or valid framing around random envelopes and state records. Recovery and
//! reading back must log and skip what is damaged, never panic.
#![no_main]
use std::path::PathBuf;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use splitmx::spool;

fn dir() -> &'static PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let d = std::env::temp_dir().join(format!("splitmx-fuzz-spool-{}", std::process::id()));
        let _ = std::fs::create_dir_all(d.join("segments"));
        d
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let image = if mode & 1 == 0 {
        rest.to_vec()
    } else {
        // Records separated by NUL: a kind byte (odd: message, even: state), then the
        // payload.
        let records: Vec<(bool, &[u8])> = rest
            .split(|&b| b == 0)
            .filter_map(|p| p.split_first())
            .map(|(kind, payload)| (kind & 1 == 1, payload))
            .collect();
        spool::fuzzing::segment_image(&records)
    };
    let dir = dir();
    if std::fs::write(dir.join("segments/00000001.seg"), &image).is_err() {
        return;
    }
    if let Ok(listed) = spool::scan(dir) {
        for m in listed {
            let _ = spool::read_message(dir, &m.id);
        }
    }
});
