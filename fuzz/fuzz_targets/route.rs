//! `route::parse(path)`. Forward: whatever it returns borrows from the path
//! and rebuilds it exactly. Backward: with `name\nlast` as input, the path
//! built for every endpoint from a valid name (and a valid reference, digest
//! or upload id) routes back to that endpoint.
#![no_main]

use berth_oci::{validate_repository, Digest, Reference};
use berth_registry::route::{parse, Route};
use libfuzzer_sys::fuzz_target;

/// `part` is a sub-slice of `whole` (borrowed, not merely equal text).
fn within(part: &str, whole: &str) -> bool {
    let (p, w) = (part.as_ptr() as usize, whole.as_ptr() as usize);
    p >= w && p + part.len() <= w + whole.len()
}

fn rebuild(route: &Route<'_>) -> Vec<String> {
    match route {
        Route::Base => vec!["/v2".into(), "/v2/".into()],
        Route::Catalog => vec!["/v2/_catalog".into()],
        Route::Tags(n) => vec![format!("/v2/{n}/tags/list")],
        Route::Manifest(n, r) => vec![format!("/v2/{n}/manifests/{r}")],
        Route::Blob(n, d) => vec![format!("/v2/{n}/blobs/{d}")],
        Route::UploadStart(n) => vec![
            format!("/v2/{n}/blobs/uploads"),
            format!("/v2/{n}/blobs/uploads/"),
        ],
        Route::Upload(n, id) => vec![format!("/v2/{n}/blobs/uploads/{id}")],
        Route::Referrers(n, d) => vec![format!("/v2/{n}/referrers/{d}")],
    }
}

fn forward(path: &str) {
    let Some(route) = parse(path) else {
        return;
    };
    assert!(path.starts_with("/v2"), "{path:?} -> {route:?}");
    let parts: Vec<&str> = match route {
        Route::Base | Route::Catalog => vec![],
        Route::Tags(n) | Route::UploadStart(n) => vec![n],
        Route::Manifest(n, l)
        | Route::Blob(n, l)
        | Route::Upload(n, l)
        | Route::Referrers(n, l) => {
            assert!(!l.contains('/'), "{path:?} -> {route:?}");
            vec![n, l]
        }
    };
    for p in parts {
        assert!(within(p, path), "{p:?} is not part of {path:?}");
    }
    assert!(
        rebuild(&route).iter().any(|p| p == path),
        "{path:?} -> {route:?} does not rebuild"
    );
}

fn backward(name: &str, last: &str) {
    if validate_repository(name).is_err() || last.contains('/') {
        return;
    }
    let mut routes = vec![Route::Tags(name), Route::UploadStart(name)];
    if Reference::parse(last).is_ok() {
        routes.push(Route::Manifest(name, last));
    }
    if last.parse::<Digest>().is_ok() {
        routes.push(Route::Blob(name, last));
        routes.push(Route::Referrers(name, last));
    }
    if !last.is_empty() {
        // Upload ids are UUIDs; any non-empty segment must route.
        routes.push(Route::Upload(name, last));
    }
    for route in routes {
        for path in rebuild(&route) {
            assert_eq!(parse(&path).as_ref(), Some(&route), "{path:?}");
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    forward(s);
    if let Some((name, last)) = s.split_once('\n') {
        backward(name, last);
    }
});
