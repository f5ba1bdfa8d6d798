//! Exit codes scripts can rely on, for every command: one classification
//! of the library errors, used by `main()`.
//!
//! | code | meaning |
//! |---|---|
//! | 0 | success |
//! | 1 | any other failure |
//! | 2 | usage: bad flags or arguments (clap's own code, kept for ours) |
//! | 3 | not found: image, tag, repository, blob or local image unknown |
//! | 4 | authentication or authorization refused (`berth login`) |
//! | 5 | verification: content does not match its digest or size |
//! | 6 | network: the registry cannot be reached |
//! | 7 | the local store is locked by another berth process |
//! | 130, 143, 129 | interrupted by SIGINT, SIGTERM, SIGHUP (see `interrupt.rs`) |

use std::fmt;

use berth_store::StoreError;

/// Why a command failed, as far as a script needs to know.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    Other,
    Usage,
    NotFound,
    Auth,
    Verification,
    Network,
    Locked,
    /// Stopped by this signal (see `interrupt.rs`).
    Interrupted(i32),
}

impl Failure {
    /// The process exit code.
    pub fn code(self) -> u8 {
        match self {
            Failure::Other => 1,
            Failure::Usage => 2,
            Failure::NotFound => 3,
            Failure::Auth => 4,
            Failure::Verification => 5,
            Failure::Network => 6,
            Failure::Locked => 7,
            Failure::Interrupted(sig) => (128 + sig).clamp(0, 255) as u8,
        }
    }

    /// The `code` of a `--format json` error object.
    pub fn name(self) -> &'static str {
        match self {
            Failure::Other => "FAILED",
            Failure::Usage => "USAGE",
            Failure::NotFound => "NOT_FOUND",
            Failure::Auth => "UNAUTHORIZED",
            Failure::Verification => "VERIFICATION_FAILED",
            Failure::Network => "UNREACHABLE",
            Failure::Locked => "LOCKED",
            Failure::Interrupted(_) => "INTERRUPTED",
        }
    }
}

/// The table of `--help`'s footer and the README.
pub const HELP: &str = "\
Exit codes:
  0  success
  1  failure (any other)
  2  usage error (bad flags or arguments)
  3  not found (image, tag, repository or local image unknown)
  4  authentication or authorization refused (run `berth login`)
  5  verification failed (content does not match its digest or size)
  6  registry unreachable (network, TLS, or needs --insecure)
  7  local store locked by another berth process
  130, 143, 129  interrupted by SIGINT, SIGTERM, SIGHUP (temporary files removed)";

/// An error the CLI raises itself with a known class, where no library
/// error carries it (e.g. a HEAD that found nothing).
#[derive(Debug)]
pub struct Classified {
    pub failure: Failure,
    pub message: String,
}

impl fmt::Display for Classified {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Classified {}

/// A mistake in the command line that clap cannot see (a malformed
/// reference, location or platform): exit code 2, like clap's own.
pub fn usage(message: impl Into<String>) -> anyhow::Error {
    anyhow::Error::new(Classified {
        failure: Failure::Usage,
        message: message.into(),
    })
}

/// Someone else holds what the command needs (a running build, gc): exit
/// code 7.
pub fn locked(message: impl Into<String>) -> anyhow::Error {
    anyhow::Error::new(Classified {
        failure: Failure::Locked,
        message: message.into(),
    })
}

/// Something the user named does not exist: exit code 3.
pub fn not_found(message: impl Into<String>) -> anyhow::Error {
    anyhow::Error::new(Classified {
        failure: Failure::NotFound,
        message: message.into(),
    })
}

/// The first cause in `err`'s chain that berth knows how to classify
/// decides; contexts added on the way up do not change the class. After a
/// SIGINT/SIGTERM the signal is the reason, whatever the error says.
pub fn classify(err: &anyhow::Error) -> Failure {
    if let Some(sig) = crate::interrupt::received() {
        return Failure::Interrupted(sig);
    }
    err.chain().find_map(classify_one).unwrap_or(Failure::Other)
}

fn classify_one(e: &(dyn std::error::Error + 'static)) -> Option<Failure> {
    if let Some(c) = e.downcast_ref::<Classified>() {
        return Some(c.failure);
    }
    if e.is::<berth_copy::LocationError>() || e.is::<berth_oci::ReferenceError>() {
        return Some(Failure::Usage);
    }
    if let Some(e) = e.downcast_ref::<berth_copy::Error>() {
        return copy_error(e);
    }
    if let Some(e) = e.downcast_ref::<berth_client::Error>() {
        return client_error(e);
    }
    if let Some(e) = e.downcast_ref::<StoreError>() {
        return store_error(e);
    }
    if let Some(e) = e.downcast_ref::<berth_layout::LayoutError>() {
        return layout_error(e);
    }
    if let Some(berth_dive::Error::NotFound(_)) = e.downcast_ref::<berth_dive::Error>() {
        return Some(Failure::NotFound);
    }
    None
}

fn copy_error(e: &berth_copy::Error) -> Option<Failure> {
    use berth_copy::Error as E;
    match e {
        // Transparent variants: their source() skips the boxed error itself.
        E::Client(c) => client_error(c),
        E::Store(s) => store_error(s),
        E::Layout(l) => layout_error(l),
        E::NotFound(_) => Some(Failure::NotFound),
        E::SizeMismatch(_) => Some(Failure::Verification),
        // Past a limit (layers, nesting, archive size): the input's fault,
        // not the command line's; a plain failure, as skopeo reports it.
        E::Limit(_) => Some(Failure::Other),
        _ => None,
    }
}

fn client_error(e: &berth_client::Error) -> Option<Failure> {
    use berth_client::Error as E;
    Some(match e {
        E::Unauthorized { .. } | E::Denied { .. } | E::Credentials(_) => Failure::Auth,
        E::NotFound { .. } => Failure::NotFound,
        E::DigestMismatch { .. } | E::SizeMismatch { .. } => Failure::Verification,
        E::Transport { .. } | E::Timeout { .. } => Failure::Network,
        // The registry checked an upload and refused it (distribution
        // spec codes in the error body).
        E::Status { status, detail, .. }
            if *status == 400
                && (detail.contains("DIGEST_INVALID") || detail.contains("SIZE_INVALID")) =>
        {
            Failure::Verification
        }
        _ => return None,
    })
}

fn store_error(e: &StoreError) -> Option<Failure> {
    Some(match e {
        StoreError::Locked(..) => Failure::Locked,
        StoreError::DigestMismatch { .. } | StoreError::SizeInvalid { .. } => Failure::Verification,
        StoreError::BlobUnknown(_)
        | StoreError::ManifestUnknown(_)
        | StoreError::NameUnknown(_) => Failure::NotFound,
        _ => return None,
    })
}

fn layout_error(e: &berth_layout::LayoutError) -> Option<Failure> {
    use berth_layout::LayoutError as E;
    Some(match e {
        E::DigestMismatch { .. } => Failure::Verification,
        E::NotALayout(_) | E::UnknownRef { .. } => Failure::NotFound,
        _ => return None,
    })
}

/// `{"error": {"code": ..., "exitCode": ..., "message": ...}}`, what
/// `--format json` prints on stdout instead of a result.
pub fn json_error(err: &anyhow::Error) -> serde_json::Value {
    let failure = classify(err);
    serde_json::json!({
        "error": {
            "code": failure.name(),
            "exitCode": failure.code(),
            "message": format!("{err:#}"),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use anyhow::Context;
    use berth_oci::Digest;

    fn client_not_found() -> berth_client::Error {
        berth_client::Error::NotFound {
            registry: "r".into(),
            repository: Some("a".into()),
            what: "manifest latest".into(),
            detail: None,
        }
    }

    #[test]
    fn codes_are_distinct_and_stable() {
        let all = [
            Failure::Other,
            Failure::Usage,
            Failure::NotFound,
            Failure::Auth,
            Failure::Verification,
            Failure::Network,
            Failure::Locked,
        ];
        let codes: Vec<u8> = all.iter().map(|f| f.code()).collect();
        assert_eq!(codes, [1, 2, 3, 4, 5, 6, 7]);
        for f in all {
            assert!(
                HELP.contains(&format!("  {}  ", f.code())),
                "{f:?} is documented"
            );
        }
    }

    #[test]
    fn classifies_through_contexts_and_boxes() {
        let e = anyhow::Error::from(client_not_found()).context("copying a to b failed");
        assert_eq!(classify(&e), Failure::NotFound);
        // berth-copy boxes client errors behind a transparent variant.
        let e = anyhow::Error::from(berth_copy::Error::from(berth_client::Error::Unauthorized {
            registry: "r".into(),
            repository: None,
            detail: "no".into(),
        }))
        .context("outer");
        assert_eq!(classify(&e), Failure::Auth);
        let d = Digest::sha256_of(b"a");
        let e = anyhow::Error::from(berth_copy::Error::from(StoreError::DigestMismatch {
            expected: d.clone(),
            actual: Digest::sha256_of(b"b"),
        }));
        assert_eq!(classify(&e), Failure::Verification);
        let e = anyhow::Error::from(StoreError::Locked("/x".into(), berth_store::LockReason::Gc));
        assert_eq!(classify(&e), Failure::Locked);
        let e = anyhow::Error::from(berth_copy::Error::NotFound("x".into()));
        assert_eq!(classify(&e), Failure::NotFound);
    }

    #[test]
    fn registry_refusing_an_upload_is_verification() {
        let status = |status: u16, detail: &str| {
            anyhow::Error::from(berth_client::Error::Status {
                registry: "r".into(),
                repository: None,
                method: "PUT".into(),
                path: "/v2/a/blobs/uploads/x".into(),
                status,
                detail: detail.into(),
            })
        };
        assert_eq!(
            classify(&status(400, "DIGEST_INVALID provided digest did not match")),
            Failure::Verification
        );
        assert_eq!(classify(&status(400, "NAME_INVALID bad")), Failure::Other);
        assert_eq!(classify(&status(500, "oops")), Failure::Other);
    }

    #[test]
    fn sizes_timeouts_and_limits() {
        let size =
            anyhow::Error::from(berth_copy::Error::from(berth_client::Error::SizeMismatch {
                registry: "r".into(),
                repository: Some("a".into()),
                what: "blob x".into(),
                detail: "more than declared".into(),
            }));
        assert_eq!(classify(&size), Failure::Verification);
        let e = anyhow::Error::from(berth_copy::Error::SizeMismatch("x".into()));
        assert_eq!(classify(&e), Failure::Verification);
        let t = anyhow::Error::from(berth_client::Error::Timeout {
            registry: "r".into(),
            repository: None,
            what: "GET /v2/".into(),
            detail: "no data for 1s".into(),
            setting: "BERTH_IDLE_TIMEOUT",
        })
        .context("copying");
        assert_eq!(classify(&t), Failure::Network);
        assert!(format!("{t:#}").contains("BERTH_IDLE_TIMEOUT"));
        let e = anyhow::Error::from(berth_copy::Error::Limit("too many layers".into()));
        assert_eq!(classify(&e), Failure::Other);
    }

    #[test]
    fn usage_and_unknown_errors() {
        assert_eq!(classify(&usage("bad --platform")), Failure::Usage);
        let e = not_found("manifest unknown: a does not exist").context("outer");
        assert_eq!(classify(&e), Failure::NotFound);
        assert_eq!(
            format!("{e:#}"),
            "outer: manifest unknown: a does not exist"
        );
        let e = berth_oci::ImageRef::parse("UPPER/case")
            .map_err(anyhow::Error::from)
            .context("parsing")
            .unwrap_err();
        assert_eq!(classify(&e), Failure::Usage);
        assert_eq!(classify(&anyhow::anyhow!("plain")), Failure::Other);
        let j = json_error(&anyhow::Error::from(client_not_found()).context("ctx"));
        assert_eq!(j["error"]["code"], "NOT_FOUND");
        assert_eq!(j["error"]["exitCode"], 3);
        assert!(j["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("ctx: r (repository a): manifest latest not found"));
    }
}
