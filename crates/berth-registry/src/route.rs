//! Maps a request path to an endpoint. Repository names contain slashes, so
//! the endpoint is recognised from the right-hand end of the path.

#[derive(Debug, PartialEq, Eq)]
pub enum Route<'a> {
    /// `/v2/`
    Base,
    /// `/v2/_catalog`
    Catalog,
    /// `/v2/<name>/tags/list`
    Tags(&'a str),
    /// `/v2/<name>/manifests/<reference>`
    Manifest(&'a str, &'a str),
    /// `/v2/<name>/blobs/<digest>`
    Blob(&'a str, &'a str),
    /// `/v2/<name>/blobs/uploads/`
    UploadStart(&'a str),
    /// `/v2/<name>/blobs/uploads/<id>`
    Upload(&'a str, &'a str),
    /// `/v2/<name>/referrers/<digest>`
    Referrers(&'a str, &'a str),
}

pub fn parse(path: &str) -> Option<Route<'_>> {
    let rest = match path {
        "/v2" | "/v2/" => return Some(Route::Base),
        "/v2/_catalog" => return Some(Route::Catalog),
        p => p.strip_prefix("/v2/")?,
    };
    if let Some(name) = rest.strip_suffix("/tags/list") {
        return Some(Route::Tags(name));
    }
    if let Some(name) = rest
        .strip_suffix("/blobs/uploads/")
        .or_else(|| rest.strip_suffix("/blobs/uploads"))
    {
        return Some(Route::UploadStart(name));
    }
    let (head, last) = rest.rsplit_once('/')?;
    if let Some(name) = head.strip_suffix("/blobs/uploads") {
        return Some(Route::Upload(name, last));
    }
    if let Some(name) = head.strip_suffix("/manifests") {
        return Some(Route::Manifest(name, last));
    }
    if let Some(name) = head.strip_suffix("/blobs") {
        return Some(Route::Blob(name, last));
    }
    if let Some(name) = head.strip_suffix("/referrers") {
        return Some(Route::Referrers(name, last));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes() {
        assert_eq!(parse("/v2/"), Some(Route::Base));
        assert_eq!(parse("/v2"), Some(Route::Base));
        assert_eq!(parse("/v2/_catalog"), Some(Route::Catalog));
        assert_eq!(parse("/v2/a/b/tags/list"), Some(Route::Tags("a/b")));
        assert_eq!(
            parse("/v2/a/manifests/latest"),
            Some(Route::Manifest("a", "latest"))
        );
        assert_eq!(
            parse("/v2/a/blobs/sha256:x"),
            Some(Route::Blob("a", "sha256:x"))
        );
        assert_eq!(parse("/v2/a/blobs/uploads/"), Some(Route::UploadStart("a")));
        assert_eq!(parse("/v2/a/blobs/uploads"), Some(Route::UploadStart("a")));
        assert_eq!(
            parse("/v2/a/blobs/uploads/u1"),
            Some(Route::Upload("a", "u1"))
        );
        // A repository may itself contain such words.
        assert_eq!(
            parse("/v2/blobs/manifests/blobs/sha256:x"),
            Some(Route::Blob("blobs/manifests", "sha256:x"))
        );
        assert_eq!(
            parse("/v2/a/referrers/sha256:x"),
            Some(Route::Referrers("a", "sha256:x"))
        );
        assert_eq!(parse("/v2/a"), None);
        assert_eq!(parse("/other"), None);
    }
}
