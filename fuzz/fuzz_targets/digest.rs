//! `Digest::from_str`: accepts exactly `sha256:<64 lowercase hex>` or
//! `sha512:<128 lowercase hex>`, and whatever it accepts prints back as the
//! same text, through Display and through serde.
#![no_main]

use std::sync::LazyLock;

use berth_oci::{Algorithm, Digest};
use libfuzzer_sys::fuzz_target;
use regex::Regex;

static GRAMMAR: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^(sha256:[0-9a-f]{64}|sha512:[0-9a-f]{128})$").unwrap());

fuzz_target!(|data: &[u8]| {
    // Whatever berth hashes, it can parse back.
    let computed = Digest::of(Algorithm::Sha256, data);
    assert_eq!(computed.to_string().parse::<Digest>().unwrap(), computed);

    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    let parsed = s.parse::<Digest>();
    assert_eq!(
        parsed.is_ok(),
        GRAMMAR.is_match(s),
        "Digest::from_str and the grammar disagree on {s:?}: {parsed:?}"
    );
    let via_serde = serde_json::from_value::<Digest>(serde_json::Value::String(s.to_string()));
    match parsed {
        Ok(d) => {
            // Display is the exact input: the hex is canonical, so a digest
            // doubles as a file name and a database key.
            assert_eq!(d.to_string(), s);
            assert_eq!(d.to_string().parse::<Digest>().unwrap(), d);
            assert_eq!(d.hex().len(), d.algorithm().hex_len());
            assert!(d
                .hex()
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)));
            assert!(!d.hex().contains(['/', '.', '\0']));
            let json = serde_json::to_string(&d).unwrap();
            assert_eq!(json, format!("\"{s}\""));
            assert_eq!(serde_json::from_str::<Digest>(&json).unwrap(), d);
            assert_eq!(via_serde.unwrap(), d);
        }
        Err(e) => {
            assert!(
                via_serde.is_err(),
                "serde accepted {s:?} that from_str refused"
            );
            let _ = e.to_string();
        }
    }
});
