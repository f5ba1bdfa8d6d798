//! `RUN --mount` values (BuildKit `instructions/commands_runmount.go`).

use crate::suggest;

/// The kind of a `RUN --mount`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MountType {
    Bind,
    Cache,
    Tmpfs,
    Secret,
    Ssh,
}

impl MountType {
    pub fn as_str(self) -> &'static str {
        match self {
            MountType::Bind => "bind",
            MountType::Cache => "cache",
            MountType::Tmpfs => "tmpfs",
            MountType::Secret => "secret",
            MountType::Ssh => "ssh",
        }
    }
}

/// Cache mount sharing mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sharing {
    Shared,
    Private,
    Locked,
}

/// A parsed `--mount` value. Defaults that depend on the build (a secret's
/// target `/run/secrets/<id>`, a cache id equal to the target...) are left to
/// the builder, as BuildKit leaves them to `dockerfile2llb`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    pub kind: MountType,
    pub from: Option<String>,
    pub source: Option<String>,
    pub target: Option<String>,
    /// Resolved: explicit `ro`/`rw`, else true except for cache and tmpfs.
    pub readonly: bool,
    /// `id=` (cache id or secret/ssh id).
    pub id: Option<String>,
    pub sharing: Option<Sharing>,
    pub mode: Option<u32>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    /// tmpfs size in bytes.
    pub size: Option<i64>,
    pub required: bool,
    /// Secret exposed as this environment variable.
    pub env: Option<String>,
}

impl Mount {
    /// Parses an already-expanded mount string.
    pub fn parse(value: &str) -> Result<Mount, String> {
        Self::parse_with(value, &mut |v| Ok(v.to_string()))
    }

    /// Parses a raw mount string, passing every value (after the CSV split)
    /// through `expand`, which is what BuildKit does.
    pub fn parse_with(
        value: &str,
        expand: &mut dyn FnMut(&str) -> Result<String, String>,
    ) -> Result<Mount, String> {
        let fields = csv_fields(value).map_err(|e| format!("failed to parse csv mounts: {e}"))?;
        let mut m = Mount {
            kind: MountType::Bind,
            from: None,
            source: None,
            target: None,
            readonly: false,
            id: None,
            sharing: None,
            mode: None,
            uid: None,
            gid: None,
            size: None,
            required: false,
            env: None,
        };
        let mut ro_auto = true;
        for field in &fields {
            let (key, value) = match field.split_once('=') {
                Some((k, v)) => (k.to_ascii_lowercase(), v),
                None => {
                    let key = field.to_ascii_lowercase();
                    match key.as_str() {
                        "readonly" | "ro" => {
                            m.readonly = true;
                            ro_auto = false;
                        }
                        "readwrite" | "rw" => {
                            m.readonly = false;
                            ro_auto = false;
                        }
                        "required" if matches!(m.kind, MountType::Secret | MountType::Ssh) => {
                            m.required = true
                        }
                        "required" => {
                            return Err(format!(
                                "unexpected key '{key}' for mount type '{}'",
                                m.kind.as_str()
                            ))
                        }
                        _ => {
                            return Err(format!("invalid field '{field}' must be a key=value pair"))
                        }
                    }
                    continue;
                }
            };
            let value = expand(value)?;
            match key.as_str() {
                "type" => {
                    m.kind = match value.to_ascii_lowercase().as_str() {
                        "bind" => MountType::Bind,
                        "cache" => MountType::Cache,
                        "tmpfs" => MountType::Tmpfs,
                        "secret" => MountType::Secret,
                        "ssh" => MountType::Ssh,
                        _ => {
                            return Err(with_suggestion(
                                format!(
                                    "unsupported mount type {}",
                                    crate::shell::go_quote(&value)
                                ),
                                &value,
                                &["bind", "cache", "tmpfs", "secret", "ssh"],
                            ))
                        }
                    }
                }
                "from" => m.from = Some(value),
                "source" | "src" => m.source = Some(value),
                "target" | "dst" | "destination" => m.target = Some(value),
                "readonly" | "ro" => {
                    m.readonly = go_parse_bool(&value)
                        .ok_or_else(|| format!("invalid value for {key}: {value}"))?;
                    ro_auto = false;
                }
                "readwrite" | "rw" => {
                    m.readonly = !go_parse_bool(&value)
                        .ok_or_else(|| format!("invalid value for {key}: {value}"))?;
                    ro_auto = false;
                }
                "required" => {
                    if !matches!(m.kind, MountType::Secret | MountType::Ssh) {
                        return Err(format!(
                            "unexpected key '{key}' for mount type '{}'",
                            m.kind.as_str()
                        ));
                    }
                    m.required = go_parse_bool(&value)
                        .ok_or_else(|| format!("invalid value for {key}: {value}"))?;
                }
                "size" => {
                    if m.kind != MountType::Tmpfs {
                        return Err(format!(
                            "unexpected key '{key}' for mount type '{}'",
                            m.kind.as_str()
                        ));
                    }
                    m.size = Some(
                        ram_in_bytes(&value)
                            .ok_or_else(|| format!("invalid value for {key}: {value}"))?,
                    );
                }
                "id" => m.id = Some(value),
                "sharing" => {
                    m.sharing = Some(match value.to_ascii_lowercase().as_str() {
                        "shared" => Sharing::Shared,
                        "private" => Sharing::Private,
                        "locked" => Sharing::Locked,
                        _ => {
                            return Err(with_suggestion(
                                format!(
                                    "unsupported sharing value {}",
                                    crate::shell::go_quote(&value)
                                ),
                                &value,
                                &["shared", "private", "locked"],
                            ))
                        }
                    })
                }
                "mode" => {
                    m.mode = Some(
                        u32::from_str_radix(&value, 8)
                            .map_err(|_| format!("invalid value {value} for mode"))?,
                    )
                }
                "uid" => {
                    m.uid = Some(
                        value
                            .parse()
                            .map_err(|_| format!("invalid value {value} for uid"))?,
                    )
                }
                "gid" => {
                    m.gid = Some(
                        value
                            .parse()
                            .map_err(|_| format!("invalid value {value} for gid"))?,
                    )
                }
                "env" => m.env = Some(value),
                _ => {
                    return Err(with_suggestion(
                        format!("unexpected key '{key}' in '{field}'"),
                        &key,
                        &[
                            "type",
                            "from",
                            "source",
                            "target",
                            "readonly",
                            "id",
                            "sharing",
                            "required",
                            "size",
                            "mode",
                            "uid",
                            "gid",
                            "src",
                            "dst",
                            "destination",
                            "ro",
                            "rw",
                            "readwrite",
                            "env",
                        ],
                    ))
                }
            }
        }
        let file_info_allowed = matches!(
            m.kind,
            MountType::Secret | MountType::Ssh | MountType::Cache
        );
        if !file_info_allowed {
            for (set, what) in [
                (m.mode.is_some(), "mode"),
                (m.uid.is_some(), "uid"),
                (m.gid.is_some(), "gid"),
            ] {
                if set {
                    return Err(format!(
                        "{what} not allowed for \"{}\" type mounts",
                        m.kind.as_str()
                    ));
                }
            }
        }
        if ro_auto {
            m.readonly = !matches!(m.kind, MountType::Cache | MountType::Tmpfs);
        }
        if m.kind == MountType::Secret {
            if m.from.as_deref().is_some_and(|f| !f.is_empty()) {
                return Err("secret mount should not have a from".into());
            }
            if m.sharing.is_some() {
                return Err("secret mount should not define sharing".into());
            }
            let empty = |o: &Option<String>| o.as_deref().is_none_or(str::is_empty);
            if empty(&m.source) && empty(&m.target) && empty(&m.id) {
                return Err("invalid secret mount. one of source, target required".into());
            }
            if !empty(&m.source) && !empty(&m.id) {
                return Err("both source and id can't be set".into());
            }
        }
        if m.sharing.is_some() && m.kind != MountType::Cache {
            return Err(format!(
                "invalid cache sharing set for {} mount",
                m.kind.as_str()
            ));
        }
        Ok(m)
    }
}

fn with_suggestion(msg: String, value: &str, options: &[&str]) -> String {
    let opts: Vec<String> = options.iter().map(|s| s.to_string()).collect();
    match suggest::closest(value, &opts) {
        Some(s) => format!("{msg} (did you mean {s}?)"),
        None => msg,
    }
}

/// The checks BuildKit makes before expansion: the CSV must parse and
/// `from` may not use variables.
pub(crate) fn check_unexpanded(value: &str) -> Result<(), String> {
    let fields = csv_fields(value).map_err(|e| format!("failed to parse csv mounts: {e}"))?;
    for field in fields {
        if let Some((k, v)) = field.split_once('=') {
            if k.eq_ignore_ascii_case("from") {
                if let Some(idx) = v.find('$') {
                    if idx != v.len() - 1 {
                        return Err(format!(
                            "'{}' doesn't support variable expansion, define alias stage instead",
                            k.to_ascii_lowercase()
                        ));
                    }
                }
            }
        }
    }
    Ok(())
}

pub(crate) fn check_network(value: &str) -> Result<(), String> {
    match value {
        "default" | "none" | "host" => Ok(()),
        _ => Err(format!(
            "invalid network mode {} (use default, none or host)",
            crate::shell::go_quote(value)
        )),
    }
}

/// Go `strconv.ParseBool`.
fn go_parse_bool(s: &str) -> Option<bool> {
    match s {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Some(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Some(false),
        _ => None,
    }
}

/// go-units `RAMInBytes`: `<number>[ ][kmgtp][i][b]`, binary multiples.
fn ram_in_bytes(s: &str) -> Option<i64> {
    let num_end = s
        .char_indices()
        .find(|(_, c)| !(c.is_ascii_digit() || *c == '.'))
        .map_or(s.len(), |(i, _)| i);
    let (num, unit) = s.split_at(num_end);
    if num.is_empty() || num.starts_with('.') || num.ends_with('.') || num.contains("..") {
        return None;
    }
    let n: f64 = num.parse().ok()?;
    let mut unit = unit.strip_prefix(' ').unwrap_or(unit).to_ascii_lowercase();
    if unit.ends_with('b') {
        unit.pop();
    }
    if unit.len() > 1 && unit.ends_with('i') {
        unit.pop();
    }
    let mult: f64 = match unit.as_str() {
        "" => 1.0,
        "k" => 1024.0,
        "m" => 1024f64.powi(2),
        "g" => 1024f64.powi(3),
        "t" => 1024f64.powi(4),
        "p" => 1024f64.powi(5),
        _ => return None,
    };
    let v = n * mult;
    (v.is_finite() && v < i64::MAX as f64).then_some(v as i64)
}

/// One CSV record with Go `encoding/csv` rules: fields split on `,`, a field
/// starting with `"` is quoted (`""` is a quote), a bare `"` elsewhere is an error.
fn csv_fields(s: &str) -> Result<Vec<String>, String> {
    let s = s.trim_end_matches(['\r', '\n']);
    if s.is_empty() {
        return Err("EOF".into());
    }
    let chars: Vec<char> = s.chars().collect();
    let mut fields = Vec::new();
    let mut i = 0;
    loop {
        let mut field = String::new();
        if chars.get(i) == Some(&'"') {
            i += 1;
            loop {
                match chars.get(i) {
                    None => return Err("extraneous or missing \" in quoted-field".into()),
                    Some('"') if chars.get(i + 1) == Some(&'"') => {
                        field.push('"');
                        i += 2;
                    }
                    Some('"') => {
                        i += 1;
                        break;
                    }
                    Some(&c) => {
                        field.push(c);
                        i += 1;
                    }
                }
            }
            match chars.get(i) {
                None => {
                    fields.push(field);
                    return Ok(fields);
                }
                Some(',') => i += 1,
                Some(_) => return Err("extraneous or missing \" in quoted-field".into()),
            }
        } else {
            loop {
                match chars.get(i) {
                    None => {
                        fields.push(field);
                        return Ok(fields);
                    }
                    Some(',') => {
                        i += 1;
                        break;
                    }
                    Some('"') => return Err("bare \" in non-quoted-field".into()),
                    Some(&c) => {
                        field.push(c);
                        i += 1;
                    }
                }
            }
        }
        fields.push(field);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_mount_kinds() {
        let m =
            Mount::parse("type=cache,target=/root/.cache,id=pip,sharing=locked,mode=0755,uid=1")
                .unwrap();
        assert_eq!(m.kind, MountType::Cache);
        assert_eq!(m.target.as_deref(), Some("/root/.cache"));
        assert_eq!(m.id.as_deref(), Some("pip"));
        assert_eq!(m.sharing, Some(Sharing::Locked));
        assert_eq!(m.mode, Some(0o755));
        assert_eq!(m.uid, Some(1));
        assert!(!m.readonly);

        let m = Mount::parse("target=/src,from=build,source=/out").unwrap();
        assert_eq!(m.kind, MountType::Bind);
        assert!(m.readonly, "bind mounts default to read-only");
        let m = Mount::parse("type=bind,target=/src,rw").unwrap();
        assert!(!m.readonly);
        let m = Mount::parse("type=bind,dst=/src,readwrite=false").unwrap();
        assert!(m.readonly);

        let m = Mount::parse("type=secret,id=tok,env=TOKEN,required").unwrap();
        assert_eq!(
            (m.kind, m.env.as_deref(), m.required),
            (MountType::Secret, Some("TOKEN"), true)
        );
        let m = Mount::parse("type=tmpfs,target=/t,size=64m").unwrap();
        assert_eq!(m.size, Some(64 << 20));
        let m = Mount::parse("type=ssh,required=true").unwrap();
        assert!(m.required && m.readonly);
        let m = Mount::parse("\"type=bind\",\"target=/a,b\"").unwrap();
        assert_eq!(m.target.as_deref(), Some("/a,b"));
    }

    #[test]
    fn mount_errors() {
        let e = |s| Mount::parse(s).unwrap_err();
        assert_eq!(
            e("type=cahce"),
            "unsupported mount type \"cahce\" (did you mean cache?)"
        );
        assert_eq!(
            e("required,type=secret"),
            "unexpected key 'required' for mount type 'bind'"
        );
        assert_eq!(
            e("type=bind,mode=0700"),
            "mode not allowed for \"bind\" type mounts"
        );
        assert_eq!(
            e("type=secret"),
            "invalid secret mount. one of source, target required"
        );
        assert_eq!(
            e("type=secret,id=a,src=b"),
            "both source and id can't be set"
        );
        assert_eq!(
            e("type=bind,sharing=shared"),
            "invalid cache sharing set for bind mount"
        );
        assert_eq!(
            e("type=cache,sharing=nope"),
            "unsupported sharing value \"nope\""
        );
        assert_eq!(e("type=cache,mode=9"), "invalid value 9 for mode");
        assert_eq!(e("type=cache,ro=maybe"), "invalid value for ro: maybe");
        assert_eq!(
            e("target"),
            "invalid field 'target' must be a key=value pair"
        );
        assert_eq!(
            e("targte=/x"),
            "unexpected key 'targte' in 'targte=/x' (did you mean target?)"
        );
        assert_eq!(
            e("type=bind,size=1g"),
            "unexpected key 'size' for mount type 'bind'"
        );
        assert_eq!(
            e("a\"b"),
            "failed to parse csv mounts: bare \" in non-quoted-field"
        );
        assert_eq!(e(""), "failed to parse csv mounts: EOF");
    }

    #[test]
    fn unexpanded_checks() {
        assert!(check_unexpanded("type=bind,from=$STAGE").is_err());
        assert!(check_unexpanded("type=bind,from=stage$").is_ok());
        assert!(check_unexpanded("type=cache,target=$DIR").is_ok());
    }

    #[test]
    fn ram_sizes() {
        assert_eq!(ram_in_bytes("512"), Some(512));
        assert_eq!(ram_in_bytes("1k"), Some(1024));
        assert_eq!(ram_in_bytes("1KiB"), Some(1024));
        assert_eq!(ram_in_bytes("1.5g"), Some(1536 << 20));
        assert_eq!(ram_in_bytes("1 mb"), Some(1 << 20));
        assert_eq!(ram_in_bytes("x"), None);
        assert_eq!(ram_in_bytes("1x"), None);
    }
}
