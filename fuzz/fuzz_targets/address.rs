//! Fuzz target for `splitmx::routing::address`: parsing must never panic on any UTF-8
//! input, and whatever parses must be self-consistent and survive a round trip through
//! its SMTP form.
#![no_main]

use libfuzzer_sys::fuzz_target;
use splitmx::routing::address::{
    Address, MAX_DOMAIN, MAX_LOCAL_PART, MAX_PATH, normalize_domain, parse_path,
};

fn check(a: &Address) {
    let key = a.key();
    assert_eq!(key, format!("{}@{}", a.local_key(), a.domain()));
    assert!(!a.local_part().is_empty());
    assert!(a.original().len() + 2 <= MAX_PATH);
    assert!(a.domain().is_ascii());
    assert!(a.domain().len() <= MAX_DOMAIN);
    assert_eq!(a.to_string(), a.original());
    assert_eq!(a.needs_smtputf8(), !a.local_part().is_ascii());
    assert_eq!(a.is_domain_literal(), a.domain().starts_with('['));

    // The SMTP form parses again to the same address.
    let smtp = a.to_smtp();
    assert!(smtp.len() + 2 <= MAX_PATH, "{smtp:?} too long");
    let again = match Address::parse(&smtp) {
        Ok(again) => again,
        Err(e) => panic!("to_smtp {smtp:?} of {:?} does not parse: {e}", a.original()),
    };
    assert_eq!(again.key(), key);
    assert_eq!(again.local_part(), a.local_part());
    assert_eq!(again.domain(), a.domain());
    assert_eq!(again.to_smtp(), smtp);
    assert!(again.original().len() <= MAX_LOCAL_PART + 1 + MAX_DOMAIN);

    // Swapping in the same local part keeps the key.
    match a.with_local_part(a.local_part()) {
        Ok(same) => assert_eq!(same.key(), key),
        Err(e) => panic!("with_local_part of {:?} failed: {e}", a.original()),
    }

    // Extensions: the user part is a non-empty prefix of the local part.
    match a.extension("+-") {
        Some(ext) => {
            assert!(!ext.user.is_empty());
            assert!(ext.delimiter == '+' || ext.delimiter == '-');
            assert_eq!(
                format!("{}{}{}", ext.user, ext.delimiter, ext.extension),
                a.local_part()
            );
            let base = a.base_key("+-");
            assert!(base.as_deref().is_some_and(|b| b.ends_with(a.domain())));
        }
        None => assert_eq!(a.base_key("+-"), None),
    }
    assert_eq!(a.extension(""), None);
}

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };

    if let Ok(a) = Address::parse(s) {
        assert_eq!(a.original(), s);
        check(&a);
        match s.parse::<Address>() {
            Ok(b) => assert_eq!(b, a),
            Err(e) => panic!("FromStr disagrees with parse on {s:?}: {e}"),
        }
    }

    match parse_path(s) {
        Ok(Some(a)) => {
            assert!(s.starts_with('<') && s.ends_with('>'));
            check(&a);
        }
        Ok(None) => assert_eq!(s, "<>"),
        Err(_) => {}
    }

    if let Ok(d) = normalize_domain(s) {
        assert!(!d.is_empty());
        assert!(d.is_ascii());
        assert!(d.len() <= MAX_DOMAIN);
        assert!(!d.ends_with('.'));
        assert_eq!(normalize_domain(&d).as_deref(), Ok(d.as_str()));
    }
});
