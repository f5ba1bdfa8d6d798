//! `WWW-Authenticate` parsing (RFC 7235): one header value may hold several
//! challenges, each a scheme followed by a token68 or comma-separated
//! `name=value` parameters whose values may be quoted strings containing
//! commas and backslash-escaped quotes.

use std::collections::BTreeMap;

/// One challenge: the scheme (lowercased) and its parameters (names
/// lowercased; the last of duplicated names wins).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Challenge {
    pub scheme: String,
    pub params: BTreeMap<String, String>,
}

impl Challenge {
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params.get(name).map(String::as_str)
    }

    pub fn is_basic(&self) -> bool {
        self.scheme == "basic"
    }

    pub fn is_bearer(&self) -> bool {
        self.scheme == "bearer"
    }
}

fn is_tchar(c: u8) -> bool {
    c.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&c)
}

struct Cursor<'a> {
    s: &'a [u8],
    i: usize,
}

impl Cursor<'_> {
    fn peek(&self) -> Option<u8> {
        self.s.get(self.i).copied()
    }

    fn skip_ws(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t')) {
            self.i += 1;
        }
    }

    /// Skips whitespace and list separators.
    fn skip_ws_commas(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b',')) {
            self.i += 1;
        }
    }

    fn token(&mut self) -> &str {
        let start = self.i;
        while self.peek().is_some_and(is_tchar) {
            self.i += 1;
        }
        std::str::from_utf8(&self.s[start..self.i]).unwrap_or_default()
    }

    /// A quoted string starting at the opening quote; an unterminated one
    /// runs to the end of the input.
    fn quoted(&mut self) -> String {
        let mut out = Vec::new();
        self.i += 1;
        while let Some(c) = self.peek() {
            self.i += 1;
            match c {
                b'"' => break,
                b'\\' => {
                    if let Some(n) = self.peek() {
                        out.push(n);
                        self.i += 1;
                    }
                }
                _ => out.push(c),
            }
        }
        String::from_utf8_lossy(&out).into_owned()
    }

    /// An unquoted value: everything up to a separator.
    fn bare(&mut self) -> String {
        let start = self.i;
        while !matches!(self.peek(), None | Some(b',' | b' ' | b'\t')) {
            self.i += 1;
        }
        String::from_utf8_lossy(&self.s[start..self.i]).into_owned()
    }

    /// At `name *WS "="` (and not `==`, which ends a token68)?
    fn at_param(&self) -> bool {
        let mut j = self.i;
        let start = j;
        while self.s.get(j).copied().is_some_and(is_tchar) {
            j += 1;
        }
        if j == start {
            return false;
        }
        while matches!(self.s.get(j), Some(b' ' | b'\t')) {
            j += 1;
        }
        self.s.get(j) == Some(&b'=') && self.s.get(j + 1) != Some(&b'=')
    }
}

/// Parses every challenge in `header`. Malformed pieces are skipped rather
/// than failing the whole header: a client should use what it understands.
pub fn parse(header: &str) -> Vec<Challenge> {
    let mut c = Cursor {
        s: header.as_bytes(),
        i: 0,
    };
    let mut out = Vec::new();
    loop {
        c.skip_ws_commas();
        if c.peek().is_none() {
            break;
        }
        let scheme = c.token().to_ascii_lowercase();
        if scheme.is_empty() {
            // Not a token character: skip it and resynchronise.
            c.i += 1;
            continue;
        }
        let mut params = BTreeMap::new();
        c.skip_ws();
        // token68 (e.g. `Negotiate abc==`): kept under the empty name.
        if c.peek().is_some_and(|b| b != b',') && !c.at_param() {
            let v = c.bare();
            params.insert(String::new(), v);
        }
        loop {
            let save = c.i;
            c.skip_ws_commas();
            if !c.at_param() {
                // The end, or the next challenge's scheme.
                c.i = save;
                break;
            }
            let name = c.token().to_ascii_lowercase();
            c.skip_ws();
            c.i += 1; // '='
            c.skip_ws();
            let value = if c.peek() == Some(b'"') {
                c.quoted()
            } else {
                c.bare()
            };
            params.insert(name, value);
        }
        out.push(Challenge { scheme, params });
    }
    out
}

/// Parses all `WWW-Authenticate` values of a response.
pub fn parse_all<'a>(values: impl IntoIterator<Item = &'a str>) -> Vec<Challenge> {
    values.into_iter().flat_map(parse).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(h: &str) -> Challenge {
        let v = parse(h);
        assert_eq!(v.len(), 1, "{h}: {v:?}");
        v.into_iter().next().unwrap()
    }

    #[test]
    fn bearer_with_quoted_scope_containing_commas() {
        let c = one(
            r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/alpine:pull,push""#,
        );
        assert!(c.is_bearer());
        assert_eq!(c.param("realm"), Some("https://auth.docker.io/token"));
        assert_eq!(c.param("service"), Some("registry.docker.io"));
        assert_eq!(
            c.param("scope"),
            Some("repository:library/alpine:pull,push")
        );
    }

    #[test]
    fn basic_and_case_insensitive_names() {
        let c = one(r#"BASIC Realm="Registry Realm""#);
        assert!(c.is_basic());
        assert_eq!(c.param("realm"), Some("Registry Realm"));
        assert!(one("Basic").params.is_empty());
    }

    #[test]
    fn escaped_quotes_spaces_and_unknown_params() {
        let c = one(
            r#"Bearer  realm = "http://x/t?a=\"b\"" , error="insufficient_scope", foo=bar,service=svc"#,
        );
        assert_eq!(c.param("realm"), Some(r#"http://x/t?a="b""#));
        assert_eq!(c.param("error"), Some("insufficient_scope"));
        assert_eq!(c.param("foo"), Some("bar"));
        assert_eq!(c.param("service"), Some("svc"));
        assert_eq!(c.param("scope"), None);
    }

    #[test]
    fn several_challenges_in_one_value() {
        let v = parse(r#"Basic realm="a,b", Bearer realm="https://t/token",scope="x:y:pull""#);
        assert_eq!(v.len(), 2);
        assert!(v[0].is_basic());
        assert_eq!(v[0].param("realm"), Some("a,b"));
        assert!(v[1].is_bearer());
        assert_eq!(v[1].param("scope"), Some("x:y:pull"));
    }

    #[test]
    fn token68_then_next_challenge() {
        let v = parse("Negotiate abc123==, Basic realm=r");
        assert_eq!(v.len(), 2);
        assert_eq!(v[0].param(""), Some("abc123=="));
        assert_eq!(v[1].param("realm"), Some("r"));
    }

    #[test]
    fn malformed_input_does_not_panic() {
        for h in [
            "",
            ",,,",
            "Bearer realm=\"unterminated",
            "Bearer realm=",
            "Bearer =x",
            "\"\" Basic",
            "Bearer realm=\"a\\",
            "é Basic realm=x",
        ] {
            let _ = parse(h);
        }
        assert_eq!(
            one("Bearer realm=\"unterminated").param("realm"),
            Some("unterminated")
        );
        assert_eq!(one("Bearer realm=").param("realm"), Some(""));
    }

    #[test]
    fn parse_all_joins_headers() {
        let v = parse_all(["Basic realm=x", "Bearer realm=y"]);
        assert_eq!(v.len(), 2);
    }
}
