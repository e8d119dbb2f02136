//! Routing table loading: any bytes as one or two table files must give a snapshot or
//! positioned errors, never a panic or unbounded memory.
#![no_main]
use libfuzzer_sys::fuzz_target;
use splitmx::RoutingConfig;
use splitmx::routing::table::load_from_strs;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let config = RoutingConfig::new("routing")
        .with_hostname("mx.example.com")
        .with_max_table_bytes(1 << 20);
    // Split at the first NUL into two files so cross-file checks are exercised too.
    let tables: Vec<(&str, &str)> = match text.split_once('\0') {
        Some((a, b)) => vec![("a.yaml", a), ("b.yaml", b)],
        None => vec![("a.yaml", text)],
    };
    match load_from_strs(&config, &tables) {
        Ok(snapshot) => {
            for domain in snapshot.domains() {
                if let Ok(addr) = splitmx::Address::parse(&format!("someone+x@{domain}")) {
                    let _ = snapshot.resolve(&addr);
                }
            }
        }
        Err(errors) => {
            for e in errors.iter() {
                assert!(e.line >= 1 && e.column >= 1);
                assert!(e.file.ends_with(".yaml"));
            }
        }
    }
});
