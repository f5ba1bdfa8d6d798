//! The authentication flows of the distribution API. A request first goes
//! out with whatever this client already knows (nothing, Basic credentials,
//! or a cached Bearer token for its scopes); a 401 teaches it the registry's
//! challenge:
//! - `Basic`: the credentials are sent with every request from then on;
//! - `Bearer`: a token for the request's scopes is fetched from the realm
//!   (`GET realm?service=..&scope=..`, with Basic credentials if known,
//!   anonymous otherwise; `POST` of an OAuth2 refresh-token form for identity
//!   tokens), cached per scope set until it expires.
//!
//! The caller then retries the request once; a second 401 is final.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use base64::Engine as _;
use reqwest::header::{HeaderMap, HeaderValue, WWW_AUTHENTICATE};
use reqwest::Url;

use crate::challenge::{self, Challenge};
use crate::credentials::Credential;
use crate::error::{Error, Result};

/// Token lifetime when the realm does not say (the token spec's default and
/// minimum).
const MIN_TOKEN_LIFETIME: Duration = Duration::from_secs(60);
/// Tokens are renewed this long before they expire.
const EXPIRY_MARGIN: Duration = Duration::from_secs(10);

/// `repository:<repo>:pull` or `repository:<repo>:pull,push`.
pub fn repository_scope(repository: &str, push: bool) -> String {
    let actions = if push { "pull,push" } else { "pull" };
    format!("repository:{repository}:{actions}")
}

/// The scope the catalog needs.
pub const CATALOG_SCOPE: &str = "registry:catalog:*";

#[derive(Clone)]
struct Token {
    header: HeaderValue,
    renew_at: Instant,
}

#[derive(Default)]
struct State {
    /// The challenge the registry answered with, once it has.
    challenge: Option<Challenge>,
    /// Bearer tokens by scope set (this client talks to one registry, so
    /// the key is (registry, scopes)).
    tokens: HashMap<String, Token>,
}

/// Authentication state of one registry client.
pub(crate) struct Auth {
    registry: String,
    base: Url,
    credential: Option<Credential>,
    state: Mutex<State>,
    timeouts: crate::settings::Timeouts,
}

fn scope_key(scopes: &[String]) -> String {
    scopes.join(" ")
}

#[derive(serde::Deserialize)]
struct TokenReply {
    token: Option<String>,
    access_token: Option<String>,
    expires_in: Option<u64>,
}

impl Auth {
    pub fn new(
        registry: &str,
        base: Url,
        credential: Option<Credential>,
        timeouts: crate::settings::Timeouts,
    ) -> Auth {
        Auth {
            registry: registry.to_owned(),
            base,
            credential,
            state: Mutex::default(),
            timeouts,
        }
    }

    fn unauthorized(&self, repository: Option<&str>, detail: String) -> Error {
        Error::Unauthorized {
            registry: self.registry.clone(),
            repository: repository.map(str::to_owned),
            detail,
        }
    }

    /// The error for a request still refused after authenticating.
    pub fn refused(&self, repository: Option<&str>) -> Error {
        let detail = match &self.credential {
            None => "authentication required (anonymous access was refused)".to_owned(),
            Some(c) => format!(
                "the registry refused the credentials of user {:?} for this request",
                c.username()
            ),
        };
        self.unauthorized(repository, detail)
    }

    fn basic_header(&self) -> Option<HeaderValue> {
        match &self.credential {
            Some(Credential::Basic { username, password }) => {
                let b64 = base64::engine::general_purpose::STANDARD
                    .encode(format!("{username}:{password}"));
                HeaderValue::from_str(&format!("Basic {b64}")).ok()
            }
            _ => None,
        }
    }

    /// The Authorization header for a request needing `scopes`, from what
    /// the registry asked for before (fetching a token if needed).
    pub async fn header(
        &self,
        http: &reqwest::Client,
        scopes: &[String],
        repository: Option<&str>,
    ) -> Result<Option<HeaderValue>> {
        let challenge = {
            let state = self.state.lock().expect("auth state");
            match &state.challenge {
                None => return Ok(None),
                Some(c) if c.is_basic() => return Ok(self.basic_header()),
                Some(c) => {
                    if let Some(t) = state.tokens.get(&scope_key(scopes)) {
                        if Instant::now() < t.renew_at {
                            return Ok(Some(t.header.clone()));
                        }
                    }
                    c.clone()
                }
            }
        };
        let token = self
            .fetch_token(http, &challenge, scopes, repository)
            .await?;
        let header = token.header.clone();
        self.state
            .lock()
            .expect("auth state")
            .tokens
            .insert(scope_key(scopes), token);
        Ok(Some(header))
    }

    /// Learns from a 401's challenge and gets ready to retry: for Bearer,
    /// fetches a fresh token (asking also for any scope the challenge names).
    pub async fn on_unauthorized(
        &self,
        http: &reqwest::Client,
        headers: &HeaderMap,
        scopes: &[String],
        repository: Option<&str>,
    ) -> Result<()> {
        let challenges = challenge::parse_all(
            headers
                .get_all(WWW_AUTHENTICATE)
                .iter()
                .filter_map(|v| v.to_str().ok()),
        );
        let chosen = challenges
            .iter()
            .find(|c| c.is_bearer() && c.param("realm").is_some_and(|r| !r.is_empty()))
            .or_else(|| challenges.iter().find(|c| c.is_basic()))
            .cloned()
            .ok_or_else(|| Error::Protocol {
                registry: self.registry.clone(),
                repository: repository.map(str::to_owned),
                detail: "401 without a Basic or Bearer WWW-Authenticate challenge".into(),
            })?;
        if chosen.is_basic() {
            if !matches!(self.credential, Some(Credential::Basic { .. })) {
                let detail = match &self.credential {
                    None => "authentication required (the registry wants a user name and password)",
                    Some(_) => "the registry wants a user name and password, not an identity token",
                };
                return Err(self.unauthorized(repository, detail.into()));
            }
            self.state.lock().expect("auth state").challenge = Some(chosen);
            return Ok(());
        }
        let mut wanted = scopes.to_vec();
        for s in chosen.param("scope").unwrap_or("").split(' ') {
            if !s.is_empty() && !wanted.iter().any(|w| w == s) {
                wanted.push(s.to_owned());
            }
        }
        let token = self.fetch_token(http, &chosen, &wanted, repository).await?;
        let mut state = self.state.lock().expect("auth state");
        state.challenge = Some(chosen);
        state.tokens.insert(scope_key(scopes), token);
        Ok(())
    }

    async fn fetch_token(
        &self,
        http: &reqwest::Client,
        challenge: &Challenge,
        scopes: &[String],
        repository: Option<&str>,
    ) -> Result<Token> {
        let realm = challenge.param("realm").unwrap_or_default();
        let realm = Url::parse(realm)
            .or_else(|_| self.base.join(realm))
            .map_err(|e| Error::Protocol {
                registry: self.registry.clone(),
                repository: repository.map(str::to_owned),
                detail: format!("token realm {realm:?} is not a URL ({e})"),
            })?;
        let service = challenge.param("service");
        let started = Instant::now();
        let request = match &self.credential {
            Some(Credential::IdentityToken { token, .. }) => {
                let mut form = vec![
                    ("grant_type", "refresh_token".to_owned()),
                    ("refresh_token", token.clone()),
                    ("client_id", "berth".to_owned()),
                    ("scope", scopes.join(" ")),
                ];
                if let Some(s) = service {
                    form.push(("service", s.to_owned()));
                }
                http.post(realm.clone()).form(&form)
            }
            other => {
                let mut url = realm.clone();
                {
                    let mut q = url.query_pairs_mut();
                    if let Some(s) = service {
                        q.append_pair("service", s);
                    }
                    for s in scopes {
                        q.append_pair("scope", s);
                    }
                    if let Some(Credential::Basic { username, .. }) = other {
                        q.append_pair("account", username);
                    }
                }
                let req = http.get(url);
                match other {
                    Some(Credential::Basic { username, password }) => {
                        req.basic_auth(username, Some(password))
                    }
                    _ => req,
                }
            }
        };
        let request = match self.timeouts.request {
            Some(t) => request.timeout(t),
            None => request,
        };
        let transport = |source: reqwest::Error| {
            if source.is_timeout() {
                let (setting, limit) =
                    self.timeouts
                        .which(started.elapsed(), source.is_connect(), true);
                return Error::Timeout {
                    registry: self.registry.clone(),
                    repository: repository.map(str::to_owned),
                    what: format!("token request to {realm}"),
                    detail: format!(
                        "no answer within {}",
                        limit
                            .map(crate::settings::format_duration)
                            .unwrap_or_default()
                    ),
                    setting,
                };
            }
            Error::Transport {
                registry: self.registry.clone(),
                attempts: 1,
                source,
            }
        };
        let resp = request.send().await.map_err(transport)?;
        let status = resp.status();
        if status == 401 || status == 403 {
            let detail = match &self.credential {
                None => format!("the token service {realm} refused anonymous access"),
                Some(c) => format!(
                    "the token service {realm} refused the credentials of user {:?}",
                    c.username()
                ),
            };
            return Err(self.unauthorized(repository, detail));
        }
        let body = crate::client::read_capped(resp, crate::client::MAX_TOKEN_BYTES)
            .await
            .map_err(transport)?
            .ok_or_else(|| Error::Protocol {
                registry: self.registry.clone(),
                repository: repository.map(str::to_owned),
                detail: format!(
                    "the token service {realm} sent more than {} bytes",
                    crate::client::MAX_TOKEN_BYTES
                ),
            })?;
        if !status.is_success() {
            return Err(Error::Status {
                registry: self.registry.clone(),
                repository: repository.map(str::to_owned),
                method: "token request to".into(),
                path: realm.to_string(),
                status: status.as_u16(),
                detail: String::from_utf8_lossy(&body[..body.len().min(512)]).into_owned(),
            });
        }
        let reply: TokenReply = serde_json::from_slice(&body).map_err(|e| Error::Protocol {
            registry: self.registry.clone(),
            repository: repository.map(str::to_owned),
            detail: format!("token service {realm} sent unreadable JSON ({e})"),
        })?;
        let token = reply
            .token
            .filter(|t| !t.is_empty())
            .or(reply.access_token)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| Error::Protocol {
                registry: self.registry.clone(),
                repository: repository.map(str::to_owned),
                detail: format!("token service {realm} sent no token"),
            })?;
        let header =
            HeaderValue::from_str(&format!("Bearer {token}")).map_err(|_| Error::Protocol {
                registry: self.registry.clone(),
                repository: repository.map(str::to_owned),
                detail: format!("token service {realm} sent a token with invalid characters"),
            })?;
        let lifetime = Duration::from_secs(reply.expires_in.unwrap_or(0)).max(MIN_TOKEN_LIFETIME);
        Ok(Token {
            header,
            renew_at: started + lifetime - EXPIRY_MARGIN,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes() {
        assert_eq!(repository_scope("a/b", false), "repository:a/b:pull");
        assert_eq!(repository_scope("a/b", true), "repository:a/b:pull,push");
    }

    #[test]
    fn refused_messages_tell_what_to_do() {
        let base = Url::parse("http://r.example:5000/").unwrap();
        let anon = Auth::new("r.example:5000", base.clone(), None, Default::default());
        let e = anon.refused(Some("app")).to_string();
        assert!(e.contains("berth login r.example:5000"), "{e}");
        assert!(e.contains("repository app"), "{e}");
        let user = Auth::new(
            "r.example:5000",
            base,
            Some(Credential::Basic {
                username: "bob".into(),
                password: "x".into(),
            }),
            Default::default(),
        );
        let e = user.refused(None).to_string();
        assert!(e.contains("\"bob\"") && e.contains("berth login"), "{e}");
    }
}
