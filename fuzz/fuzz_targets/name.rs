//! `validate_repository`, `validate_tag` and `Reference::parse`, checked
//! against the distribution-spec grammars (as regexes) and against the
//! properties the rest of berth relies on.
#![no_main]

use std::sync::LazyLock;

use berth_oci::name::{MAX_NAME_LEN, MAX_TAG_LEN};
use berth_oci::{validate_repository, validate_tag, Digest, NameError, Reference};
use libfuzzer_sys::fuzz_target;
use regex::Regex;

static REPOSITORY: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"^[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*(/[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*)*$").unwrap()
});
static TAG: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}$").unwrap());

fn check_repository(s: &str) {
    let r = validate_repository(s);
    let expected = s.len() <= MAX_NAME_LEN && REPOSITORY.is_match(s);
    assert_eq!(r.is_ok(), expected, "validate_repository({s:?}) = {r:?}");
    if s.len() > MAX_NAME_LEN {
        assert_eq!(r, Err(NameError::RepositoryTooLong));
    }
    if r.is_ok() {
        assert!(!s.is_empty());
        assert!(!s.contains(".."), "{s:?}");
        assert!(!s.contains("//"), "{s:?}");
        assert!(!s.starts_with('/') && !s.ends_with('/'), "{s:?}");
        assert!(!s.bytes().any(|b| b.is_ascii_uppercase()), "{s:?}");
        assert!(
            s.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-/".contains(&b)),
            "{s:?}"
        );
        for c in s.split('/') {
            let b = c.as_bytes();
            assert!(!b.is_empty() && b[0].is_ascii_alphanumeric(), "{s:?}");
            assert!(b[b.len() - 1].is_ascii_alphanumeric(), "{s:?}");
        }
    }
}

fn check_tag(s: &str) {
    let r = validate_tag(s);
    assert_eq!(r.is_ok(), TAG.is_match(s), "validate_tag({s:?}) = {r:?}");
    if r.is_ok() {
        assert!(s.len() <= MAX_TAG_LEN);
        assert!(!s.starts_with(['.', '-']));
        assert!(!s.contains([':', '/', '@']));
    }
}

fn check_reference(s: &str) {
    let tag_ok = validate_tag(s).is_ok();
    let digest_ok = s.parse::<Digest>().is_ok();
    assert!(!(tag_ok && digest_ok), "{s:?} is both a tag and a digest");
    match Reference::parse(s) {
        Ok(r) => {
            assert_eq!(r.to_string(), s);
            match r {
                Reference::Tag(t) => {
                    assert!(tag_ok);
                    assert_eq!(t, s);
                }
                Reference::Digest(d) => {
                    assert!(digest_ok);
                    assert_eq!(d.to_string(), s);
                }
            }
        }
        Err(e) => {
            assert!(
                !tag_ok && !digest_ok,
                "Reference::parse({s:?}) refused: {e}"
            );
            let _ = e.to_string();
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    check_repository(s);
    check_tag(s);
    check_reference(s);
    // An image reference `name[:tag][@digest]`, split the way clients do.
    let (rest, digest) = s.split_once('@').unwrap_or((s, ""));
    check_repository(rest);
    check_reference(digest);
    if let Some((name, tag)) = rest.rsplit_once(':') {
        check_repository(name);
        check_tag(tag);
        check_reference(tag);
    }
});
