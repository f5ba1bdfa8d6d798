//! The client's one error type. Every message names the registry (and the
//! repository when there is one) and says what to do.

use berth_oci::Digest;

use crate::credentials::CredentialError;

/// ` (repository x)` or nothing.
fn repo(r: &Option<String>) -> String {
    match r {
        Some(r) => format!(" (repository {r})"),
        None => String::new(),
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No credentials, or the registry refused them.
    #[error(
        "{registry}{}: {detail}; run `berth login {registry}`",
        repo(repository)
    )]
    Unauthorized {
        registry: String,
        repository: Option<String>,
        detail: String,
    },
    /// Authenticated, but not allowed (403).
    #[error(
        "{registry}{}: access denied: {detail}; check that the account may do this",
        repo(repository)
    )]
    Denied {
        registry: String,
        repository: Option<String>,
        detail: String,
    },
    /// The manifest, blob or repository does not exist (404).
    #[error("{registry}{}: {what} not found{}", repo(repository), detail.as_deref().map(|d| format!(": {d}")).unwrap_or_default())]
    NotFound {
        registry: String,
        repository: Option<String>,
        what: String,
        detail: Option<String>,
    },
    /// Content that does not hash to what was asked for or announced.
    #[error(
        "{registry}{}: {what} has digest {actual}, expected {expected}; \
         the registry served wrong content, nothing was kept",
        repo(repository)
    )]
    DigestMismatch {
        registry: String,
        repository: Option<String>,
        what: String,
        // Boxed to keep `Result<_, Error>` small.
        expected: Box<Digest>,
        actual: Box<Digest>,
    },
    /// A blob whose size is not what its descriptor declares: a
    /// `Content-Length` that differs (refused before the body is read), a
    /// body that goes on past the declared size (stopped at the first byte
    /// too many) or ends short of it.
    #[error(
        "{registry}{}: {what}: {detail}; the registry served wrong content, nothing was kept",
        repo(repository)
    )]
    SizeMismatch {
        registry: String,
        repository: Option<String>,
        what: String,
        detail: String,
    },
    /// A request that made no progress for too long: no connection, no
    /// response, or a body that stopped arriving.
    #[error(
        "{registry}{}: {what}: {detail} (a stalled server or network; set {setting} to wait longer, 0 = no limit)",
        repo(repository)
    )]
    Timeout {
        registry: String,
        repository: Option<String>,
        what: String,
        detail: String,
        /// The environment variable that sets the limit that fired.
        setting: &'static str,
    },
    /// Any other unexpected status, with the registry's own error message.
    #[error(
        "{registry}{}: {method} {path} failed with HTTP {status}: {detail}",
        repo(repository)
    )]
    Status {
        registry: String,
        repository: Option<String>,
        method: String,
        path: String,
        status: u16,
        detail: String,
    },
    /// The connection failed (after retries where the request allowed them).
    #[error(
        "{registry}: cannot reach the registry ({source}){}; check the address, the network, \
         and whether it needs --insecure (plain HTTP)",
        if *attempts > 1 { format!(" after {attempts} attempts") } else { String::new() }
    )]
    Transport {
        registry: String,
        attempts: u32,
        #[source]
        source: reqwest::Error,
    },
    /// A response berth cannot use (bad header, unreadable JSON, ...).
    #[error("{registry}{}: unexpected response: {detail}", repo(repository))]
    Protocol {
        registry: String,
        repository: Option<String>,
        detail: String,
    },
    #[error(transparent)]
    Credentials(#[from] CredentialError),
    /// The caller's blob stream failed while it was being uploaded.
    #[error(
        "{registry}{}: reading the data to upload failed: {source}",
        repo(repository)
    )]
    Source {
        registry: String,
        repository: Option<String>,
        #[source]
        source: std::io::Error,
    },
}

impl Error {
    /// True for errors a later retry of a whole operation may cure.
    pub fn is_transient(&self) -> bool {
        match self {
            Error::Transport { .. } => true,
            Error::Status { status, .. } => *status == 429 || *status >= 500,
            _ => false,
        }
    }

    pub fn is_not_found(&self) -> bool {
        matches!(self, Error::NotFound { .. })
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
