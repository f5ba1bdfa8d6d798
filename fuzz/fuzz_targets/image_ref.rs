//! `ImageRef::parse`: whatever it accepts is normalised (a registry host, a
//! repository valid by the spec grammar, a tag or a digest) and prints back
//! to text that parses to the same reference.
#![no_main]

use berth_oci::{validate_repository, validate_tag, ImageRef};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(r) = ImageRef::parse(s) else {
        return;
    };
    assert!(!r.registry.is_empty() && !r.registry.contains('/'), "{r:?}");
    assert!(validate_repository(&r.repository).is_ok(), "{r:?}");
    if let Some(t) = &r.tag {
        assert!(validate_tag(t).is_ok(), "{r:?}");
    }
    assert!(r.tag.is_some() || r.digest.is_some(), "{r:?} names nothing");
    // The canonical form and the familiar form both round-trip.
    let again = ImageRef::parse(&r.to_string()).expect("canonical form parses");
    assert_eq!(again, r);
    let familiar = ImageRef::parse(&r.familiar()).expect("familiar form parses");
    assert_eq!(familiar, r);
});
