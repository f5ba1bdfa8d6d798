//! BuildKit's build checks (`frontend/dockerfile/linter`), pure: the
//! `# check=` directive and per-instruction `# check=` comments, and the
//! `SecretsUsedInArgOrEnv` rule. Nothing here prints; the caller shows the
//! [`LintWarning`]s (BuildKit's `WARN: RULE: message (line N)`).
//!
//! A warning names the ARG or ENV key, never its value.

use crate::instructions::{Command, Dockerfile, Instruction};

/// A check rule (BuildKit `LinterRule`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rule {
    pub name: &'static str,
    pub description: &'static str,
    pub url: &'static str,
    pub experimental: bool,
}

/// `SecretsUsedInArgOrEnv`.
pub const SECRETS_USED_IN_ARG_OR_ENV: Rule = Rule {
    name: "SecretsUsedInArgOrEnv",
    description: "Sensitive data should not be used in the ARG or ENV commands",
    url: "https://docs.docker.com/go/dockerfile/rule/secrets-used-in-arg-or-env/",
    experimental: false,
};

/// One finding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LintWarning {
    pub rule: &'static str,
    pub description: &'static str,
    pub url: &'static str,
    /// `Do not use ARG or ENV instructions for sensitive data (ENV "KEY")`.
    pub detail: String,
    /// The instruction's first line (0: none).
    pub line: usize,
}

impl LintWarning {
    /// BuildKit `LintFormatShort`: `RULE: detail (line N)`.
    pub fn short(&self) -> String {
        if self.line > 0 {
            format!("{}: {} (line {})", self.rule, self.detail, self.line)
        } else {
            format!("{}: {}", self.rule, self.detail)
        }
    }
}

/// What `# check=` (or the `BUILDKIT_DOCKERFILE_CHECK` build arg) asks:
/// BuildKit `linter.Config`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CheckConfig {
    pub skip_all: bool,
    pub skip: Vec<String>,
    pub experimental_all: bool,
    pub experimental: Vec<String>,
    /// `error=true`: any warning fails the build.
    pub error: bool,
}

impl CheckConfig {
    /// BuildKit `ParseLintOptions`: up to three `;`-separated `key=value`
    /// parts (`skip=all|R1,R2`, `experimental=all|R1,R2`, `error=BOOL`); a
    /// later `skip`/`experimental` replaces an earlier one's list.
    pub fn parse(s: &str) -> Result<CheckConfig, String> {
        let s = s.trim();
        let mut c = CheckConfig::default();
        if s.is_empty() {
            return Ok(c);
        }
        let list = |v: &str| v.split(',').map(|r| r.trim().to_string()).collect();
        for part in s.splitn(3, ';') {
            let Some((k, v)) = part.split_once('=') else {
                return Err(format!("invalid check option {part:?}"));
            };
            match k.trim() {
                "skip" => match v.trim() {
                    "all" => c.skip_all = true,
                    v => c.skip = list(v),
                },
                "experimental" => match v.trim() {
                    "all" => c.experimental_all = true,
                    v => c.experimental = list(v),
                },
                "error" => {
                    c.error = parse_go_bool(v.trim()).ok_or_else(|| {
                        format!(
                            "failed to parse check option {part:?}: strconv.ParseBool: parsing {:?}: invalid syntax",
                            v.trim()
                        )
                    })?
                }
                other => return Err(format!("invalid check option {other:?}")),
            }
        }
        Ok(c)
    }

    /// The `# check=` parser directive's configuration (its first word:
    /// `# check=skip=X // why` is `skip=X`), as BuildKit reads it.
    pub fn from_directive(df: &Dockerfile) -> Result<CheckConfig, String> {
        let v = df.directive("check").unwrap_or("");
        let first = v.split(' ').next().unwrap_or("");
        CheckConfig::parse(first).map_err(|e| format!("failed to parse check options: {e}"))
    }

    /// BuildKit `WithMergedConfigFromComments`: the first `# check=` among
    /// an instruction's comments adds its skips (and experimental rules)
    /// for that instruction; one that does not parse changes nothing.
    /// `error=` is the file's alone.
    pub fn for_comments(&self, comments: &[String]) -> CheckConfig {
        for comment in comments {
            let Some((name, value)) = crate::parser::match_directive(comment.trim_start()) else {
                continue;
            };
            let name = name.to_ascii_lowercase();
            if name != "check" {
                continue;
            }
            let first = value.split(' ').next().unwrap_or("");
            let Ok(other) = CheckConfig::parse(first) else {
                return self.clone();
            };
            let mut merged = self.clone();
            merged.experimental_all |= other.experimental_all;
            merged.experimental.extend(other.experimental);
            merged.skip_all |= other.skip_all;
            merged.skip.extend(other.skip);
            return merged;
        }
        self.clone()
    }

    /// BuildKit `Linter.Run`'s filter.
    pub fn enabled(&self, rule: &Rule) -> bool {
        if rule.experimental {
            self.experimental_all || self.experimental.iter().any(|r| r == rule.name)
        } else {
            !(self.skip_all || self.skip.iter().any(|r| r == rule.name))
        }
    }
}

/// Go's `strconv.ParseBool`.
fn parse_go_bool(s: &str) -> Option<bool> {
    match s {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Some(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Some(false),
        _ => None,
    }
}

/// BuildKit's secret tokens: a key matches when one of its `_`-separated
/// words is one of them (`(?i)(?:_|^)(?:apikey|auth|…)(?:_|$)`).
const SECRET_TOKENS: &[&str] = &[
    "apikey",
    "auth",
    "credential",
    "credentials",
    "key",
    "password",
    "pword",
    "passwd",
    "secret",
    "token",
];

/// Words that make a key not a secret (`PUBLIC_KEY`, `PASSWORD_FILE`,
/// `AUTH_MODULE_VERSION`).
const ALLOW_TOKENS: &[&str] = &["public", "file", "version"];

/// Go's `(?i)` on these ASCII tokens: a letter also matches its other case
/// and the non-ASCII letters that fold to it (U+212A KELVIN SIGN is `k`,
/// U+017F LONG S is `s`).
fn word_is(word: &str, token: &str) -> bool {
    let mut w = word.chars();
    for t in token.chars() {
        let Some(c) = w.next() else { return false };
        let c = match c {
            '\u{212A}' => 'k',
            '\u{017F}' => 's',
            c => c.to_ascii_lowercase(),
        };
        if c != t {
            return false;
        }
    }
    w.next().is_none()
}

/// BuildKit `validateNoSecretKey`'s test: the key has a secret word and
/// no allow word.
pub fn is_secret_key(key: &str) -> bool {
    let has = |tokens: &[&str]| key.split('_').any(|w| tokens.iter().any(|t| word_is(w, t)));
    has(SECRET_TOKENS) && !has(ALLOW_TOKENS)
}

/// Runs the checks over the instructions BuildKit dispatches, in order,
/// and keeps what they found.
#[derive(Debug, Clone, Default)]
pub struct Checks {
    config: CheckConfig,
    pub warnings: Vec<LintWarning>,
}

impl Checks {
    pub fn new(config: CheckConfig) -> Checks {
        Checks {
            config,
            warnings: Vec::new(),
        }
    }

    /// The instruction-level rules on one instruction of a stage that is
    /// built. ENV keys are checked as given (BuildKit checks them after
    /// expansion: pass the expanded instruction), ARG names as written.
    pub fn instruction(&mut self, instr: &Instruction) {
        let config = self.config.for_comments(&instr.comments);
        if !config.enabled(&SECRETS_USED_IN_ARG_OR_ENV) {
            return;
        }
        let keys: Vec<(&str, &str)> = match &instr.command {
            Command::Env { pairs, .. } => pairs.iter().map(|p| ("ENV", p.key.as_str())).collect(),
            Command::Arg(defs) => defs.iter().map(|d| ("ARG", d.name.as_str())).collect(),
            _ => return,
        };
        for (what, key) in keys {
            if is_secret_key(key) {
                self.warnings.push(LintWarning {
                    rule: SECRETS_USED_IN_ARG_OR_ENV.name,
                    description: SECRETS_USED_IN_ARG_OR_ENV.description,
                    url: SECRETS_USED_IN_ARG_OR_ENV.url,
                    detail: format!(
                        "Do not use ARG or ENV instructions for sensitive data ({what} {})",
                        go_quote(key)
                    ),
                    line: instr.location.start_line,
                });
            }
        }
    }

    /// BuildKit `Linter.Error`: with `error=true`, any warning fails the
    /// build with this message.
    pub fn error(&self) -> Option<String> {
        if !self.config.error || self.warnings.is_empty() {
            return None;
        }
        let mut rules: Vec<&str> = self.warnings.iter().map(|w| w.rule).collect();
        rules.sort_unstable();
        rules.dedup();
        Some(format!(
            "lint violation found for rules: {}",
            rules.join(", ")
        ))
    }
}

/// Go's `%q` for the printable keys Dockerfiles have (`"` and `\` escaped,
/// control characters as `\xNN`/`\u…`).
fn go_quote(s: &str) -> String {
    let mut out = String::from('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                out.push_str(&format!("\\x{:02x}", c as u32))
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn warnings(src: &str) -> Vec<String> {
        let df = crate::parse(src).unwrap();
        let mut c = Checks::new(CheckConfig::from_directive(&df).unwrap());
        for s in &df.stages {
            for i in &s.instructions {
                c.instruction(i);
            }
        }
        c.warnings.iter().map(|w| w.short()).collect()
    }

    /// BuildKit's own test (`dockerfile_check_test.go`,
    /// testSecretsUsedInArgOrEnv), its Dockerfile as is.
    #[test]
    fn buildkit_test_case() {
        let got = warnings(
            "# check=skip=InvalidDefinitionDescription\n\
             \n\
             FROM scratch\n\
             ARG SECRET_PASSPHRASE\n\
             ENV SUPER_Secret=foo\n\
             ENV password=bar secret=baz\n\
             ARG super_duper_secret_token=foo auth=bar\n\
             ENV apikey=bar sunflower=foo\n\
             ENV git_key=\n\
             ENV PUBLIC_KEY=\n\
             ARG public_token\n\
             ARG SECRET_PASSPHRASE_FILE\n\
             ENV password_file=bar secret_File=baz\n\
             ARG AUTH_MODULE_VERSION\n\
             # check=skip=SecretsUsedInArgOrEnv // allow secret in environment\n\
             ENV password=bar\n\
             # check=skip=SecretsUsedInArgOrEnv // allow secret in arg\n\
             ARG password\n\
             # check=skip=all // is local to only this instruction\n\
             ENV alternate_password=bar\n\
             # check=skip=all // is local to only this instruction\n\
             ARG alternate_password\n",
        );
        let d = "SecretsUsedInArgOrEnv: Do not use ARG or ENV instructions for sensitive data";
        assert_eq!(
            got,
            [
                format!("{d} (ARG \"SECRET_PASSPHRASE\") (line 4)"),
                format!("{d} (ENV \"SUPER_Secret\") (line 5)"),
                format!("{d} (ENV \"password\") (line 6)"),
                format!("{d} (ENV \"secret\") (line 6)"),
                format!("{d} (ARG \"super_duper_secret_token\") (line 7)"),
                format!("{d} (ARG \"auth\") (line 7)"),
                format!("{d} (ENV \"apikey\") (line 8)"),
                format!("{d} (ENV \"git_key\") (line 9)"),
            ]
        );
    }

    #[test]
    fn secret_words() {
        for k in [
            "API_TOKEN",
            "token",
            "DB_PASSWORD",
            "x__key",
            "AWS_SECRET_ACCESS_KEY",
            "Credentials",
            "PWORD",
            "my_passwd_x",
            "\u{212A}EY",
            "\u{017F}ecret",
        ] {
            assert!(is_secret_key(k), "{k}");
        }
        for k in [
            "TOKENS",
            "KEYS",
            "monkey",
            "api-key",
            "APIKEY_FILE",
            "PUBLIC_KEY",
            "key_Version",
            "AUTHOR",
            "",
            "_",
            "passwords",
        ] {
            assert!(!is_secret_key(k), "{k}");
        }
    }

    #[test]
    fn check_options() {
        assert_eq!(CheckConfig::parse("").unwrap(), CheckConfig::default());
        let c = CheckConfig::parse(" skip = A , B ;error=True").unwrap();
        assert_eq!(c.skip, ["A", "B"]);
        assert!(c.error && !c.skip_all);
        assert!(CheckConfig::parse("skip=all").unwrap().skip_all);
        let c = CheckConfig::parse("experimental=all;skip=X;skip=Y").unwrap();
        assert!(c.experimental_all);
        assert_eq!(c.skip, ["Y"], "a later skip replaces");
        // SplitN(…, 3): the third part keeps the rest.
        let c = CheckConfig::parse("error=0;skip=A;skip=B;C").unwrap();
        assert_eq!(c.skip, ["B;C"]);
        assert_eq!(
            CheckConfig::parse("skip").unwrap_err(),
            "invalid check option \"skip\""
        );
        assert_eq!(
            CheckConfig::parse("warn=x").unwrap_err(),
            "invalid check option \"warn\""
        );
        assert!(CheckConfig::parse("error=yes")
            .unwrap_err()
            .contains("strconv.ParseBool: parsing \"yes\": invalid syntax"));
    }

    #[test]
    fn directive_and_comments() {
        // The directive's first word only; error=true makes warnings fatal.
        let df = crate::parse(
            "# check=error=true;skip=JSONArgsRecommended  # why\nFROM scratch\nARG TOKEN\n",
        )
        .unwrap();
        let mut c = Checks::new(CheckConfig::from_directive(&df).unwrap());
        c.instruction(&df.stages[0].instructions[0]);
        assert_eq!(
            c.error().unwrap(),
            "lint violation found for rules: SecretsUsedInArgOrEnv"
        );
        assert!(warnings("# check=skip=all\nFROM scratch\nENV TOKEN=1\n").is_empty());
        assert!(
            warnings("# check=skip=SecretsUsedInArgOrEnv,Other\nFROM scratch\nENV TOKEN=1\n")
                .is_empty()
        );
        // A directive below an instruction is a comment: it skips for the
        // next instruction only. Blank lines keep comments; `#` alone
        // drops them; the first check comment decides.
        let got = warnings(
            "FROM scratch\n# check=skip=SecretsUsedInArgOrEnv\n\nENV A_KEY=1\nENV B_KEY=1\n\
             # check=skip=SecretsUsedInArgOrEnv\n#\nENV C_KEY=1\n\
             # check=bogus\n# check=skip=all\nENV D_KEY=1\n\
             #   CHECK = skip=all\nENV E_KEY=1\n",
        );
        assert_eq!(got.len(), 3, "{got:?}");
        assert!(got[0].contains("\"B_KEY\") (line 5)"), "{got:?}");
        assert!(got[1].contains("\"C_KEY\") (line 8)"), "{got:?}");
        assert!(got[2].contains("\"D_KEY\") (line 11)"), "{got:?}");
        // A bad directive is an error, as in BuildKit.
        let df = crate::parse("# check=skip\nFROM scratch\n").unwrap();
        assert_eq!(
            CheckConfig::from_directive(&df).unwrap_err(),
            "failed to parse check options: invalid check option \"skip\""
        );
    }

    #[test]
    fn warnings_name_keys_never_values() {
        let got = warnings("FROM scratch\nENV API_TOKEN=hunter2\nARG DB_PASSWORD=s3cr3t\n");
        assert_eq!(got.len(), 2);
        for w in &got {
            assert!(!w.contains("hunter2") && !w.contains("s3cr3t"), "{w}");
        }
        assert_eq!(
            got[0],
            "SecretsUsedInArgOrEnv: Do not use ARG or ENV instructions for sensitive data (ENV \"API_TOKEN\") (line 2)"
        );
    }
}
