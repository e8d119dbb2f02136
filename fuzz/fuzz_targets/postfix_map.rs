//! Postfix map import: any bytes as a transport map (and, after the first NUL, a
//! relay_recipients map) must give tables and a report, never a panic; every finding
//! about a line names a line that exists, and the generated tables load.
#![no_main]
use libfuzzer_sys::fuzz_target;
use splitmx::RoutingConfig;
use splitmx::import::{ImportOptions, MapFile, import_postfix, postfix_map};

fuzz_target!(|data: &[u8]| {
    let (transport, relay) = match data.iter().position(|&b| b == 0) {
        Some(i) => (&data[..i], Some(&data[i + 1..])),
        None => (data, None),
    };
    let lines = |b: &[u8]| b.split(|&c| c == b'\n').count() as u32;
    for p in postfix_map::parse_map(transport).problems {
        assert!(p.line >= 1 && p.line <= lines(transport));
    }
    let mut options = ImportOptions::new(RoutingConfig::new("routing").with_hostname("mx.example.com"));
    options.fallback = Some("smtp:[fallback.example.net]".into());
    let Ok(import) = import_postfix(
        MapFile { name: "transport", bytes: transport },
        relay.map(|bytes| MapFile { name: "relay_recipients", bytes }),
        &options,
    ) else {
        return;
    };
    for f in &import.report.findings {
        if let (Some(file), Some(line)) = (&f.file, f.line) {
            let max = if file == "transport" { lines(transport) } else { relay.map_or(0, lines) };
            assert!(line >= 1 && line <= max, "{f}");
        }
    }
    // A route to the gateway's own host name is a check error, not an import bug.
    if let Some(errors) = &import.load_errors {
        assert!(
            errors.iter().all(|e| e.to_string().contains("this gateway itself")),
            "{errors}"
        );
    }
});
