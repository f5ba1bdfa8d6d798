//! Registry credentials from the Docker config (`$DOCKER_CONFIG/config.json`,
//! else `~/.docker/config.json`), the way the Docker CLI reads and writes them:
//! `auths` entries, `credHelpers` per registry, the `credsStore` default, and
//! `docker-credential-<name>` helpers speaking JSON on stdin/stdout.

use std::ffi::OsString;
use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use base64::Engine as _;
use serde_json::{Map, Value};

/// The key Docker Hub credentials are stored under.
pub const DOCKER_HUB_SERVER: &str = "https://index.docker.io/v1/";

/// A helper's way of saying "nothing stored" (docker-credential-helpers).
const NOT_FOUND: &str = "credentials not found";

/// What the client authenticates with.
#[derive(Clone, PartialEq, Eq)]
pub enum Credential {
    /// A user name and password (sent as Basic, or to a token realm).
    Basic { username: String, password: String },
    /// An OAuth2 refresh token (`identitytoken`), exchanged at the realm.
    IdentityToken { username: String, token: String },
}

impl Credential {
    pub fn username(&self) -> &str {
        match self {
            Credential::Basic { username, .. } | Credential::IdentityToken { username, .. } => {
                username
            }
        }
    }
}

impl std::fmt::Debug for Credential {
    // Never print secrets.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Credential::Basic { username, .. } => write!(f, "Basic({username:?}, ***)"),
            Credential::IdentityToken { username, .. } => {
                write!(f, "IdentityToken({username:?}, ***)")
            }
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CredentialError {
    #[error("cannot read the Docker config {path}: {source}")]
    Read { path: PathBuf, source: io::Error },
    #[error("the Docker config {path} is not valid JSON ({detail}); fix or remove it")]
    Parse { path: PathBuf, detail: String },
    #[error("cannot write the Docker config {path}: {source}")]
    Write { path: PathBuf, source: io::Error },
    #[error(
        "the `auth` entry for {server} in {path} is not base64 of user:password; \
         run `berth login` again"
    )]
    BadAuth { path: PathBuf, server: String },
    #[error("credential helper docker-credential-{helper} ({action} {server}) failed: {detail}")]
    Helper {
        helper: String,
        action: &'static str,
        server: String,
        detail: String,
    },
    #[error("no home directory: set DOCKER_CONFIG or HOME")]
    NoHome,
}

type Result<T, E = CredentialError> = std::result::Result<T, E>;

/// `$DOCKER_CONFIG/config.json`, else `$HOME/.docker/config.json`.
pub fn config_path() -> Option<PathBuf> {
    config_path_from(std::env::var_os("DOCKER_CONFIG"), std::env::var_os("HOME"))
}

fn config_path_from(docker_config: Option<OsString>, home: Option<OsString>) -> Option<PathBuf> {
    match docker_config.filter(|d| !d.is_empty()) {
        Some(dir) => Some(PathBuf::from(dir).join("config.json")),
        None => home
            .filter(|h| !h.is_empty())
            .map(|h| PathBuf::from(h).join(".docker").join("config.json")),
    }
}

fn strip_scheme(s: &str) -> &str {
    s.strip_prefix("https://")
        .or_else(|| s.strip_prefix("http://"))
        .unwrap_or(s)
}

/// Docker's `ConvertToHostname`: drops the scheme and any path.
fn hostname(key: &str) -> &str {
    let s = strip_scheme(key);
    s.split('/').next().unwrap_or(s)
}

fn is_hub(host: &str) -> bool {
    matches!(
        host,
        "docker.io" | "index.docker.io" | "registry-1.docker.io"
    )
}

/// The registry a name, host or server URL denotes: `docker.io` for every
/// spelling of Docker Hub, else `host[:port]`.
fn registry_host(registry: &str) -> &str {
    let h = hostname(registry);
    if is_hub(h) {
        "docker.io"
    } else {
        h
    }
}

/// The key Docker uses for `registry` in `auths` and with helpers:
/// [`DOCKER_HUB_SERVER`] for Docker Hub, else `host[:port]`.
pub fn server_key(registry: &str) -> String {
    match registry_host(registry) {
        "docker.io" => DOCKER_HUB_SERVER.to_string(),
        h => h.to_string(),
    }
}

/// A loaded Docker config. Unknown keys are kept when it is saved.
#[derive(Debug, Clone)]
pub struct DockerConfig {
    path: PathBuf,
    doc: Map<String, Value>,
}

impl DockerConfig {
    /// Loads the config at [`config_path`] (empty if the file is absent).
    pub fn load() -> Result<DockerConfig> {
        DockerConfig::load_from(&config_path().ok_or(CredentialError::NoHome)?)
    }

    /// Loads the config at `path` (empty if the file is absent).
    pub fn load_from(path: &Path) -> Result<DockerConfig> {
        let doc = match fs::read(path) {
            Ok(bytes) if bytes.iter().all(u8::is_ascii_whitespace) => Map::new(),
            Ok(bytes) => match serde_json::from_slice::<Value>(&bytes) {
                Ok(Value::Object(m)) => m,
                Ok(_) => {
                    return Err(CredentialError::Parse {
                        path: path.to_owned(),
                        detail: "not a JSON object".into(),
                    })
                }
                Err(e) => {
                    return Err(CredentialError::Parse {
                        path: path.to_owned(),
                        detail: e.to_string(),
                    })
                }
            },
            Err(e) if e.kind() == io::ErrorKind::NotFound => Map::new(),
            Err(source) => {
                return Err(CredentialError::Read {
                    path: path.to_owned(),
                    source,
                })
            }
        };
        Ok(DockerConfig {
            path: path.to_owned(),
            doc,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The helper that handles `registry`: its `credHelpers` entry, else
    /// `credsStore`.
    pub fn helper_for(&self, registry: &str) -> Option<String> {
        let host = registry_host(registry);
        let per_registry = self
            .doc
            .get("credHelpers")
            .and_then(Value::as_object)
            .and_then(|helpers| {
                helpers
                    .get(&server_key(registry))
                    .or_else(|| helpers.get(host))
                    .or_else(|| {
                        helpers
                            .iter()
                            .find(|(k, _)| registry_host(k) == host)
                            .map(|(_, v)| v)
                    })
            })
            .and_then(Value::as_str);
        per_registry
            .or_else(|| self.doc.get("credsStore").and_then(Value::as_str))
            .filter(|h| !h.is_empty())
            .map(str::to_owned)
    }

    fn auths(&self) -> Option<&Map<String, Value>> {
        self.doc.get("auths").and_then(Value::as_object)
    }

    /// The `auths` key that matches `registry`: the exact server key, else
    /// any key whose host part names the same registry.
    fn auth_key(&self, registry: &str) -> Option<String> {
        let auths = self.auths()?;
        let key = server_key(registry);
        if auths.contains_key(&key) {
            return Some(key);
        }
        let host = registry_host(registry);
        auths.keys().find(|k| registry_host(k) == host).cloned()
    }

    /// The credential stored for `registry` (a host, `host:port`, `docker.io`
    /// or a server URL), from its helper if one applies, else from `auths`.
    pub fn get(&self, registry: &str) -> Result<Option<Credential>> {
        if let Some(helper) = self.helper_for(registry) {
            return helper_get(&helper, &server_key(registry));
        }
        let Some(key) = self.auth_key(registry) else {
            return Ok(None);
        };
        let entry = &self.auths().expect("auth_key found it")[&key];
        self.parse_entry(&key, entry)
    }

    fn parse_entry(&self, key: &str, entry: &Value) -> Result<Option<Credential>> {
        let field = |name: &str| {
            entry
                .get(name)
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
        };
        let (mut username, mut password) = (field("username"), field("password"));
        if let Some(auth) = field("auth") {
            let bad = || CredentialError::BadAuth {
                path: self.path.clone(),
                server: key.to_owned(),
            };
            let engine = base64::engine::general_purpose::STANDARD;
            let raw = engine
                .decode(auth.trim())
                .or_else(|_| {
                    base64::engine::general_purpose::STANDARD_NO_PAD
                        .decode(auth.trim().trim_end_matches('='))
                })
                .map_err(|_| bad())?;
            let text = String::from_utf8(raw).map_err(|_| bad())?;
            let (u, p) = text.split_once(':').ok_or_else(bad)?;
            username = Some(u.to_owned());
            password = Some(p.to_owned());
        }
        if let Some(token) = field("identitytoken") {
            return Ok(Some(Credential::IdentityToken {
                username: username.unwrap_or_default(),
                token,
            }));
        }
        Ok(match (username, password) {
            (Some(username), Some(password)) => Some(Credential::Basic { username, password }),
            _ => None,
        })
    }

    /// Stores `credential` for `registry`: through its helper if one applies
    /// (leaving an empty `auths` entry, as Docker does), else in `auths`.
    /// The file is replaced atomically and is private (0600).
    pub fn store(&mut self, registry: &str, credential: &Credential) -> Result<()> {
        let key = server_key(registry);
        let entry = match self.helper_for(registry) {
            Some(helper) => {
                helper_store(&helper, &key, credential)?;
                Map::new()
            }
            None => {
                let mut entry = Map::new();
                let (user, secret_field) = match credential {
                    Credential::Basic { username, password } => {
                        (format!("{username}:{password}"), None::<(&str, &String)>)
                    }
                    Credential::IdentityToken { username, token } => {
                        (format!("{username}:"), Some(("identitytoken", token)))
                    }
                };
                entry.insert(
                    "auth".into(),
                    base64::engine::general_purpose::STANDARD
                        .encode(user)
                        .into(),
                );
                if let Some((name, value)) = secret_field {
                    entry.insert(name.into(), value.clone().into());
                }
                entry
            }
        };
        let auths = self
            .doc
            .entry("auths")
            .or_insert_with(|| Value::Object(Map::new()));
        if !auths.is_object() {
            *auths = Value::Object(Map::new());
        }
        let auths = auths.as_object_mut().expect("made an object");
        // Drop legacy spellings of the same registry so they cannot shadow it.
        let host = registry_host(registry).to_owned();
        auths.retain(|k, _| registry_host(k) != host);
        auths.insert(key, Value::Object(entry));
        self.save()
    }

    /// Removes the credential for `registry` (helper and `auths`). Returns
    /// whether anything was stored.
    pub fn erase(&mut self, registry: &str) -> Result<bool> {
        let mut found = false;
        if let Some(helper) = self.helper_for(registry) {
            found |= helper_erase(&helper, &server_key(registry))?;
        }
        let host = registry_host(registry).to_owned();
        if let Some(auths) = self.doc.get_mut("auths").and_then(Value::as_object_mut) {
            let before = auths.len();
            auths.retain(|k, _| registry_host(k) != host);
            if auths.len() != before {
                found = true;
                self.save()?;
            }
        }
        Ok(found)
    }

    /// Writes the config: temp file (0600) in the same directory, fsync,
    /// rename over the target (through a symlink, like Docker).
    fn save(&self) -> Result<()> {
        let write_err = |source| CredentialError::Write {
            path: self.path.clone(),
            source,
        };
        let target = fs::canonicalize(&self.path).unwrap_or_else(|_| self.path.clone());
        let dir = match target.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_owned(),
            _ => PathBuf::from("."),
        };
        {
            use std::os::unix::fs::DirBuilderExt;
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(&dir)
                .map_err(write_err)?;
        }
        // tempfile creates the file with mode 0600.
        let mut tmp = tempfile::Builder::new()
            .prefix(".config.json.")
            .tempfile_in(&dir)
            .map_err(write_err)?;
        let mut out = Vec::new();
        let fmt = serde_json::ser::PrettyFormatter::with_indent(b"\t");
        let mut ser = serde_json::Serializer::with_formatter(&mut out, fmt);
        serde::Serialize::serialize(&self.doc, &mut ser)
            .map_err(|e| write_err(io::Error::other(e)))?;
        out.push(b'\n');
        tmp.write_all(&out).map_err(write_err)?;
        tmp.as_file().sync_all().map_err(write_err)?;
        tmp.persist(&target).map_err(|e| write_err(e.error))?;
        Ok(())
    }
}

/// Runs `docker-credential-<helper> <action>` with `input` on stdin.
/// Returns stdout on success, else the helper's message.
fn run_helper(helper: &str, action: &'static str, server: &str, input: &[u8]) -> Result<Vec<u8>> {
    let fail = |detail: String| CredentialError::Helper {
        helper: helper.to_owned(),
        action,
        server: server.to_owned(),
        detail,
    };
    let program = format!("docker-credential-{helper}");
    let mut child = Command::new(&program)
        .arg(action)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| {
            if e.kind() == io::ErrorKind::NotFound {
                fail(format!(
                    "{program} is not on PATH; install it or remove the helper from the Docker config"
                ))
            } else {
                fail(e.to_string())
            }
        })?;
    let mut stdin = child.stdin.take().expect("piped");
    // A helper may exit without reading stdin; a broken pipe is not an error.
    let _ = stdin.write_all(input);
    drop(stdin);
    let out = child.wait_with_output().map_err(|e| fail(e.to_string()))?;
    if out.status.success() {
        return Ok(out.stdout);
    }
    let mut msg = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    let err = String::from_utf8_lossy(&out.stderr);
    if !err.trim().is_empty() {
        if !msg.is_empty() {
            msg.push_str("; ");
        }
        msg.push_str(err.trim());
    }
    if msg.is_empty() {
        msg = format!("exited with {}", out.status);
    }
    Err(fail(msg))
}

fn is_not_found(e: &CredentialError) -> bool {
    matches!(e, CredentialError::Helper { detail, .. } if detail.contains(NOT_FOUND))
}

fn helper_get(helper: &str, server: &str) -> Result<Option<Credential>> {
    let out = match run_helper(helper, "get", server, server.as_bytes()) {
        Ok(out) => out,
        Err(e) if is_not_found(&e) => return Ok(None),
        Err(e) => return Err(e),
    };
    #[derive(serde::Deserialize)]
    struct Reply {
        #[serde(rename = "Username", default)]
        username: String,
        #[serde(rename = "Secret", default)]
        secret: String,
    }
    let reply: Reply = serde_json::from_slice(&out).map_err(|e| CredentialError::Helper {
        helper: helper.to_owned(),
        action: "get",
        server: server.to_owned(),
        detail: format!("unreadable reply ({e})"),
    })?;
    if reply.secret.is_empty() && reply.username.is_empty() {
        return Ok(None);
    }
    Ok(Some(if reply.username == "<token>" {
        Credential::IdentityToken {
            username: String::new(),
            token: reply.secret,
        }
    } else {
        Credential::Basic {
            username: reply.username,
            password: reply.secret,
        }
    }))
}

fn helper_store(helper: &str, server: &str, credential: &Credential) -> Result<()> {
    let (username, secret) = match credential {
        Credential::Basic { username, password } => (username.as_str(), password.as_str()),
        Credential::IdentityToken { token, .. } => ("<token>", token.as_str()),
    };
    let input = serde_json::json!({
        "ServerURL": server,
        "Username": username,
        "Secret": secret,
    });
    run_helper(helper, "store", server, input.to_string().as_bytes()).map(drop)
}

fn helper_erase(helper: &str, server: &str) -> Result<bool> {
    match run_helper(helper, "erase", server, server.as_bytes()) {
        Ok(_) => Ok(true),
        Err(e) if is_not_found(&e) => Ok(false),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(json: &str) -> (tempfile::TempDir, DockerConfig) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.json");
        fs::write(&path, json).unwrap();
        let c = DockerConfig::load_from(&path).unwrap();
        (dir, c)
    }

    fn basic(u: &str, p: &str) -> Credential {
        Credential::Basic {
            username: u.into(),
            password: p.into(),
        }
    }

    fn b64(s: &str) -> String {
        base64::engine::general_purpose::STANDARD.encode(s)
    }

    #[test]
    fn config_path_prefers_docker_config() {
        assert_eq!(
            config_path_from(Some("/d".into()), Some("/h".into())),
            Some(PathBuf::from("/d/config.json"))
        );
        assert_eq!(
            config_path_from(Some("".into()), Some("/h".into())),
            Some(PathBuf::from("/h/.docker/config.json"))
        );
        assert_eq!(config_path_from(None, None), None);
    }

    #[test]
    fn server_keys() {
        for hub in [
            "docker.io",
            "index.docker.io",
            "registry-1.docker.io",
            "https://index.docker.io/v1/",
        ] {
            assert_eq!(server_key(hub), DOCKER_HUB_SERVER, "{hub}");
        }
        assert_eq!(server_key("localhost:5000"), "localhost:5000");
        assert_eq!(server_key("https://r.example.com/v2/"), "r.example.com");
    }

    #[test]
    fn auths_matching_like_docker() {
        let json = format!(
            r#"{{"auths": {{
                "https://index.docker.io/v1/": {{"auth": "{}"}},
                "http://legacy.example.com:5000/v1/": {{"username": "u2", "password": "p2"}},
                "plain.example.com": {{"auth": "{}", "identitytoken": "tok"}},
                "helper-only.example.com": {{}}
            }}, "unknown": {{"kept": true}}}}"#,
            b64("hubuser:hub:pass"),
            b64("u3:")
        );
        let (_d, c) = config(&json);
        assert_eq!(
            c.get("docker.io").unwrap(),
            Some(basic("hubuser", "hub:pass"))
        );
        assert_eq!(
            c.get("registry-1.docker.io").unwrap(),
            Some(basic("hubuser", "hub:pass"))
        );
        assert_eq!(
            c.get("legacy.example.com:5000").unwrap(),
            Some(basic("u2", "p2"))
        );
        assert_eq!(c.get("legacy.example.com").unwrap(), None);
        assert_eq!(
            c.get("plain.example.com").unwrap(),
            Some(Credential::IdentityToken {
                username: "u3".into(),
                token: "tok".into()
            })
        );
        assert_eq!(c.get("helper-only.example.com").unwrap(), None);
        assert_eq!(c.get("other.example.com").unwrap(), None);
    }

    #[test]
    fn bad_auth_is_a_clear_error() {
        let (_d, c) = config(r#"{"auths": {"r.io": {"auth": "%%%"}}}"#);
        let e = c.get("r.io").unwrap_err().to_string();
        assert!(e.contains("r.io") && e.contains("berth login"), "{e}");
        let (_d, c) = config(&format!(
            r#"{{"auths": {{"r.io": {{"auth": "{}"}}}}}}"#,
            b64("nocolon")
        ));
        assert!(c.get("r.io").is_err());
    }

    #[test]
    fn helper_selection() {
        let (_d, c) = config(
            r#"{"credsStore": "desktop",
                "credHelpers": {"gcr.io": "gcloud", "index.docker.io": "hub", "localhost:5000": "loc"}}"#,
        );
        assert_eq!(c.helper_for("gcr.io").as_deref(), Some("gcloud"));
        assert_eq!(c.helper_for("docker.io").as_deref(), Some("hub"));
        assert_eq!(c.helper_for("localhost:5000").as_deref(), Some("loc"));
        assert_eq!(c.helper_for("localhost:5001").as_deref(), Some("desktop"));
        let (_d, c) = config(r#"{"credsStore": ""}"#);
        assert_eq!(c.helper_for("x.io"), None);
    }

    #[test]
    fn missing_helper_is_a_clear_error() {
        let (_d, c) = config(r#"{"credHelpers": {"x.io": "berth-no-such-helper"}}"#);
        let e = c.get("x.io").unwrap_err().to_string();
        assert!(
            e.contains("docker-credential-berth-no-such-helper is not on PATH"),
            "{e}"
        );
    }

    #[test]
    fn store_and_erase_keep_unknown_keys_and_are_private() {
        use std::os::unix::fs::PermissionsExt;
        let (dir, mut c) = config(
            r#"{"auths": {"keep.io": {"auth": "a2VlcDprZWVw"}, "https://r.io/v1/": {"auth": "eDp5"}},
                "psFormat": "table", "proxies": {"default": {"httpProxy": "x"}}}"#,
        );
        c.store("r.io", &basic("me", "secret")).unwrap();
        let path = dir.path().join("config.json");
        assert_eq!(
            fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let reread = DockerConfig::load_from(&path).unwrap();
        assert_eq!(reread.get("r.io").unwrap(), Some(basic("me", "secret")));
        assert_eq!(reread.get("keep.io").unwrap(), Some(basic("keep", "keep")));
        let v: Value = serde_json::from_slice(&fs::read(&path).unwrap()).unwrap();
        assert_eq!(v["psFormat"], "table");
        assert_eq!(v["proxies"]["default"]["httpProxy"], "x");
        // The legacy key was replaced by the canonical one.
        assert!(v["auths"].get("https://r.io/v1/").is_none());
        assert_eq!(v["auths"]["r.io"]["auth"], b64("me:secret"));

        let mut c = reread;
        assert!(c.erase("r.io").unwrap());
        assert!(!c.erase("r.io").unwrap());
        let reread = DockerConfig::load_from(&path).unwrap();
        assert_eq!(reread.get("r.io").unwrap(), None);
        assert_eq!(reread.get("keep.io").unwrap(), Some(basic("keep", "keep")));
        // No temp files left behind.
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn store_creates_missing_file_and_hub_key() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub").join("config.json");
        let mut c = DockerConfig::load_from(&path).unwrap();
        c.store(
            "docker.io",
            &Credential::IdentityToken {
                username: "u".into(),
                token: "t".into(),
            },
        )
        .unwrap();
        let v: Value = serde_json::from_slice(&fs::read(&path).unwrap()).unwrap();
        assert_eq!(v["auths"][DOCKER_HUB_SERVER]["identitytoken"], "t");
        assert_eq!(
            DockerConfig::load_from(&path)
                .unwrap()
                .get("index.docker.io")
                .unwrap(),
            Some(Credential::IdentityToken {
                username: "u".into(),
                token: "t".into()
            })
        );
    }

    #[test]
    fn debug_hides_secrets() {
        let s = format!("{:?}", basic("u", "hunter2"));
        assert!(!s.contains("hunter2"));
    }
}
