//! `ParsedManifest::parse(bytes, content_type)`. The first input byte picks
//! the Content-Type (`'0'`..`'?'` are the 16 choices, so seeds stay text);
//! choices 14 and 15 take it from the first line of the rest.
#![no_main]

use berth_oci::media_type as mt;
use berth_oci::{Descriptor, Digest, ManifestError, ManifestKind, ParsedManifest};
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

const CONTENT_TYPES: [Option<&str>; 14] = [
    None,
    Some(mt::OCI_MANIFEST),
    Some(mt::OCI_INDEX),
    Some(mt::DOCKER_MANIFEST),
    Some(mt::DOCKER_MANIFEST_LIST),
    Some("application/json"),
    Some("application/octet-stream"),
    Some(mt::DOCKER_SCHEMA1),
    Some(mt::DOCKER_SCHEMA1_SIGNED),
    Some("application/vnd.oci.image.manifest.v1+json; charset=utf-8"),
    Some(""),
    Some("text/plain"),
    Some("  application/vnd.oci.image.index.v1+json ;x=y"),
    Some(mt::OCI_CONFIG),
];

fn kind_of(media_type: &str) -> Option<ManifestKind> {
    match media_type {
        mt::OCI_MANIFEST | mt::DOCKER_MANIFEST => Some(ManifestKind::Image),
        mt::OCI_INDEX | mt::DOCKER_MANIFEST_LIST => Some(ManifestKind::Index),
        _ => None,
    }
}

fn is_schema1(m: &str) -> bool {
    m == mt::DOCKER_SCHEMA1 || m == mt::DOCKER_SCHEMA1_SIGNED
}

fn check_descriptor(d: &Descriptor) {
    // The digest is valid and re-parses to itself (it becomes a blob path).
    let text = d.digest.to_string();
    assert_eq!(text.parse::<Digest>().unwrap(), d.digest);
    assert_eq!(d.digest.hex().len(), d.digest.algorithm().hex_len());
    // A descriptor re-serialises into one that parses to the same reference.
    let json = serde_json::to_vec(d).unwrap();
    let back: Descriptor = serde_json::from_slice(&json).unwrap();
    assert_eq!(back.digest, d.digest);
    assert_eq!(back.size, d.size);
    assert_eq!(back.media_type, d.media_type);
    assert_eq!(back.urls, d.urls);
    assert_eq!(back.artifact_type, d.artifact_type);
}

fn check(bytes: &[u8], content_type: Option<&str>) {
    let parsed = ParsedManifest::parse(bytes, content_type);
    let essence = content_type.map(mt::essence).filter(|c| !c.is_empty());
    let json: Option<Value> = serde_json::from_slice(bytes).ok();
    let field = json
        .as_ref()
        .and_then(|v| v.get("mediaType"))
        .and_then(Value::as_str);

    let m = match parsed {
        Ok(m) => m,
        Err(e) => {
            let _ = e.to_string();
            if e == ManifestError::Schema1 {
                let v1 = json
                    .as_ref()
                    .and_then(|v| v.get("schemaVersion"))
                    .and_then(Value::as_i64)
                    == Some(1);
                assert!(
                    json.is_none()
                        || essence.is_some_and(is_schema1)
                        || field.is_some_and(is_schema1)
                        || v1
                );
            }
            return;
        }
    };
    // Accepted bytes are JSON text: UTF-8, and an object with schemaVersion
    // 2. (serde_json's Value refuses lone surrogates such as "\ud800" that
    // the grammar allows and berth may skip, so only those may differ.)
    assert!(
        std::str::from_utf8(bytes).is_ok(),
        "accepted non-UTF-8 bytes"
    );
    assert!(!essence.is_some_and(is_schema1));
    assert!(!field.is_some_and(is_schema1));
    match json.as_ref() {
        Some(v) => check_structure(&m, v),
        None => assert!(
            bytes.windows(2).any(|w| w == b"\\u"),
            "accepted a manifest that is not JSON"
        ),
    }

    // The effective media type is a known one and decides the kind.
    assert_eq!(kind_of(&m.media_type), Some(m.kind), "{}", m.media_type);
    if let Some(ct) = essence.filter(|c| kind_of(c).is_some()) {
        assert_eq!(m.media_type, ct, "a known Content-Type must win");
    }
    if let Some(f) = field {
        if kind_of(f).is_some() {
            assert_eq!(m.media_type, f, "mediaType field and the result disagree");
        }
    }
    check_descriptors(&m);

    // Pushing the same bytes with the resolved media type as Content-Type is
    // accepted and resolves the same way (what a pull-then-push does).
    let again = ParsedManifest::parse(bytes, Some(&m.media_type))
        .unwrap_or_else(|e| panic!("re-push as {} refused: {e}", m.media_type));
    assert_eq!(again.kind, m.kind);
    assert_eq!(again.media_type, m.media_type);
    let a: Vec<&Digest> = again.required_blobs().map(|d| &d.digest).collect();
    let b: Vec<&Digest> = m.required_blobs().map(|d| &d.digest).collect();
    assert_eq!(a, b);
}

/// What the JSON itself says agrees with what was parsed.
fn check_structure(m: &ParsedManifest, v: &Value) {
    assert_eq!(v.get("schemaVersion").and_then(Value::as_i64), Some(2));
    match m.kind {
        ManifestKind::Image => {
            assert!(m.config.is_some());
            assert!(v.get("config").is_some_and(Value::is_object));
            assert_eq!(
                v.get("layers").and_then(Value::as_array).map(Vec::len),
                Some(m.layers.len())
            );
        }
        ManifestKind::Index => {
            assert_eq!(
                v.get("manifests").and_then(Value::as_array).map(Vec::len),
                Some(m.manifests.len())
            );
        }
    }
}

fn check_descriptors(m: &ParsedManifest) {
    // Every descriptor berth will look up is valid.
    let required: Vec<&Descriptor> = m.required_blobs().collect();
    let distributable = m
        .layers
        .iter()
        .filter(|d| !mt::is_non_distributable(&d.media_type))
        .count();
    assert_eq!(required.len(), m.config.is_some() as usize + distributable);
    for d in required
        .iter()
        .copied()
        .chain(&m.manifests)
        .chain(&m.layers)
        .chain(&m.subject)
    {
        check_descriptor(d);
    }
    let _ = m.effective_artifact_type();
}

fuzz_target!(|data: &[u8]| {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    let choice = selector as usize % 16;
    if choice < CONTENT_TYPES.len() {
        check(rest, CONTENT_TYPES[choice]);
    } else {
        let (line, body) = match rest.iter().position(|&b| b == b'\n') {
            Some(i) => (&rest[..i], &rest[i + 1..]),
            None => (&rest[..0], rest),
        };
        let ct = String::from_utf8_lossy(line);
        check(body, Some(&ct));
    }
});
