//! dive's CI mode (`runtime/ci`): three rules, their configuration as
//! dive reads it (`.dive-ci` YAML, flags, defaults), the verdict and
//! dive's report text.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::analysis::Analysis;
use crate::gofmt::{go_float, human_bytes, parse_bytes, parse_float};

pub const LOWEST_EFFICIENCY: &str = "lowestEfficiency";
pub const HIGHEST_WASTED_BYTES: &str = "highestWastedBytes";
pub const HIGHEST_USER_WASTED_PERCENT: &str = "highestUserWastedPercent";
/// dive's `--ci-config` default, looked up in the working directory.
pub const DEFAULT_CONFIG_FILE: &str = ".dive-ci";

/// The rule values, as strings like dive's (numbers, sizes, `disabled`).
#[derive(Debug, Clone, PartialEq)]
pub struct Rules {
    pub lowest_efficiency: String,
    pub highest_wasted_bytes: String,
    pub highest_user_wasted_percent: String,
}

impl Default for Rules {
    /// dive's flag defaults.
    fn default() -> Self {
        Rules {
            lowest_efficiency: "0.9".into(),
            highest_wasted_bytes: "disabled".into(),
            highest_user_wasted_percent: "0.1".into(),
        }
    }
}

impl Rules {
    fn set(&mut self, key: &str, value: String) -> bool {
        match key {
            LOWEST_EFFICIENCY => self.lowest_efficiency = value,
            HIGHEST_WASTED_BYTES => self.highest_wasted_bytes = value,
            HIGHEST_USER_WASTED_PERCENT => self.highest_user_wasted_percent = value,
            _ => return false,
        }
        true
    }

    /// Applies a `.dive-ci` file (YAML: a `rules:` mapping of the three
    /// keys) over these values. Unknown keys are ignored, as viper does.
    pub fn apply_config(&mut self, yaml: &str) -> Result<(), String> {
        let mut in_rules = false;
        for (n, raw) in yaml.lines().enumerate() {
            let line = strip_comment(raw);
            if line.trim().is_empty() || line.trim() == "---" {
                continue;
            }
            let indented = line.starts_with(' ') || line.starts_with('\t');
            let Some((k, v)) = line.trim().split_once(':') else {
                return Err(format!("line {}: expected `key: value`: {raw:?}", n + 1));
            };
            let (k, v) = (unquote(k.trim()), v.trim());
            if !indented {
                in_rules = k == "rules" && v.is_empty();
                if let Some(rule) = k.strip_prefix("rules.") {
                    self.set(rule, yaml_string(v));
                }
                continue;
            }
            if in_rules {
                self.set(&k, yaml_string(v));
            }
        }
        Ok(())
    }
}

fn strip_comment(line: &str) -> &str {
    let mut quote = None;
    for (i, c) in line.char_indices() {
        match (c, quote) {
            ('"' | '\'', None) => quote = Some(c),
            (q, Some(o)) if q == o => quote = None,
            ('#', None) if i == 0 || line[..i].ends_with(' ') => return &line[..i],
            _ => {}
        }
    }
    line
}

fn unquote(s: &str) -> String {
    let s = s.trim();
    if s.len() >= 2
        && ((s.starts_with('"') && s.ends_with('"')) || (s.starts_with('\'') && s.ends_with('\'')))
    {
        s[1..s.len() - 1].to_string()
    } else {
        s.to_string()
    }
}

/// A YAML scalar as viper's `GetString` renders it: numbers through Go's
/// `FormatFloat(f, 'f', -1)` (`0.90` is `0.9`), strings as they are.
fn yaml_string(v: &str) -> String {
    let t = v.trim();
    if t.starts_with('"') || t.starts_with('\'') {
        return unquote(t);
    }
    if let Ok(i) = t.parse::<i64>() {
        return i.to_string();
    }
    let numeric = t
        .chars()
        .all(|c| c.is_ascii_digit() || matches!(c, '.' | 'e' | 'E' | '+' | '-'))
        && t.chars().any(|c| c.is_ascii_digit());
    if numeric {
        if let Ok(f) = t.parse::<f64>() {
            return format!("{f}");
        }
    }
    t.to_string()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Pass,
    Fail,
    Warn,
    Skip,
    Misconfigured,
    Configured,
}

impl Status {
    fn label(self, color: bool) -> &'static str {
        match (self, color) {
            (Status::Pass, _) => "PASS",
            (Status::Fail, true) => "\x1b[1;7;31mFAIL\x1b[0m",
            (Status::Fail, false) => "FAIL",
            (Status::Warn, true) => "\x1b[34mWARN\x1b[0m",
            (Status::Warn, false) => "WARN",
            (Status::Skip, true) => "\x1b[34mSKIP\x1b[0m",
            (Status::Skip, false) => "SKIP",
            (Status::Misconfigured, true) => "\x1b[1;7;31mMISCONFIGURED\x1b[0m",
            (Status::Misconfigured, false) => "MISCONFIGURED",
            (Status::Configured, _) => "CONFIGURED   ",
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct RuleResult {
    pub rule: &'static str,
    pub value: String,
    pub status: Status,
    pub message: String,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Tally {
    pub total: usize,
    pub pass: usize,
    pub fail: usize,
    pub warn: usize,
    pub skip: usize,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct InefficientFile {
    pub count: usize,
    pub size_bytes: u64,
    pub file: String,
}

/// The outcome of the rules on an analysis.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Verdict {
    pub pass: bool,
    pub misconfigured: bool,
    pub efficiency: f64,
    pub wasted_bytes: u64,
    pub user_wasted_percent: Option<f64>,
    /// By rule name (dive's report order).
    pub results: Vec<RuleResult>,
    pub tally: Tally,
    pub inefficient_files: Vec<InefficientFile>,
}

fn validate(rule: &str, v: &str) -> Result<(), String> {
    match rule {
        HIGHEST_WASTED_BYTES => parse_bytes(v)
            .map(|_| ())
            .map_err(|e| format!("invalid config value ('{v}'): {e}")),
        _ => {
            let f = parse_float(v).map_err(|e| format!("invalid config value ('{v}'): {e}"))?;
            if !(0.0..=1.0).contains(&f) {
                return Err(format!(
                    "{rule} config value is outside allowed range (0-1), given '{v}'"
                ));
            }
            Ok(())
        }
    }
}

fn evaluate_rule(rule: &str, v: &str, a: &Analysis) -> (Status, String) {
    match rule {
        LOWEST_EFFICIENCY => {
            let t = parse_float(v).unwrap_or(f64::NAN);
            if t > a.efficiency {
                return (
                    Status::Fail,
                    format!(
                        "image efficiency is too low (efficiency={} < threshold={})",
                        go_float(a.efficiency),
                        go_float(t)
                    ),
                );
            }
        }
        HIGHEST_WASTED_BYTES => {
            let t = parse_bytes(v).unwrap_or(0);
            if a.wasted_bytes > t {
                return (
                    Status::Fail,
                    format!(
                        "too many bytes wasted (wasted-bytes={} > threshold={t})",
                        a.wasted_bytes
                    ),
                );
            }
        }
        _ => {
            let t = parse_float(v).unwrap_or(f64::NAN);
            if t < a.wasted_user_percent {
                return (
                    Status::Fail,
                    format!(
                        "too many bytes wasted, relative to the user bytes added (%-user-wasted-bytes={} > threshold={})",
                        go_float(a.wasted_user_percent),
                        go_float(t)
                    ),
                );
            }
        }
    }
    (Status::Pass, String::new())
}

/// `CiEvaluator.Evaluate`: every enabled rule validated first (any
/// misconfigured rule fails the run without evaluating), then evaluated.
pub fn evaluate(a: &Analysis, rules: &Rules) -> Verdict {
    let list: [(&'static str, &str); 3] = [
        (LOWEST_EFFICIENCY, &rules.lowest_efficiency),
        (HIGHEST_WASTED_BYTES, &rules.highest_wasted_bytes),
        (
            HIGHEST_USER_WASTED_PERCENT,
            &rules.highest_user_wasted_percent,
        ),
    ];
    let mut results: BTreeMap<&'static str, RuleResult> = BTreeMap::new();
    let mut can_evaluate = true;
    for (rule, v) in list {
        let (status, message) = if v == "disabled" {
            (Status::Configured, "rule disabled".to_string())
        } else {
            match validate(rule, v) {
                Ok(()) => (Status::Configured, "test".to_string()),
                Err(e) => {
                    can_evaluate = false;
                    (Status::Misconfigured, e)
                }
            }
        };
        results.insert(
            rule,
            RuleResult {
                rule,
                value: v.to_string(),
                status,
                message,
            },
        );
    }
    let finite = a
        .wasted_user_percent
        .is_finite()
        .then_some(a.wasted_user_percent);
    let mut verdict = Verdict {
        pass: true,
        misconfigured: false,
        efficiency: a.efficiency,
        wasted_bytes: a.wasted_bytes,
        user_wasted_percent: finite,
        results: Vec::new(),
        tally: Tally::default(),
        inefficient_files: Vec::new(),
    };
    if !can_evaluate {
        verdict.pass = false;
        verdict.misconfigured = true;
        verdict.results = results.into_values().collect();
        return verdict;
    }
    verdict.inefficient_files = a
        .inefficiencies
        .iter()
        .map(|i| InefficientFile {
            count: i.count,
            size_bytes: i.cumulative_size as u64,
            file: i.path.clone(),
        })
        .collect();
    for (rule, v) in list {
        let (status, message) = if v == "disabled" {
            (Status::Skip, "rule disabled".to_string())
        } else {
            evaluate_rule(rule, v, a)
        };
        if status == Status::Fail {
            verdict.pass = false;
        }
        results.insert(
            rule,
            RuleResult {
                rule,
                value: v.to_string(),
                status,
                message,
            },
        );
    }
    verdict.results = results.into_values().collect();
    let t = &mut verdict.tally;
    t.total = verdict.results.len();
    for r in &verdict.results {
        match r.status {
            Status::Pass => t.pass += 1,
            Status::Fail => t.fail += 1,
            Status::Warn => t.warn += 1,
            _ => t.skip += 1,
        }
    }
    verdict
}

fn title(s: &str, color: bool) -> String {
    if color {
        format!("\x1b[1m{s}\x1b[0m")
    } else {
        s.to_string()
    }
}

/// The three figure lines dive prints before the report.
pub fn summary_lines(a: &Analysis) -> String {
    format!(
        "  efficiency: {:.4} %\n  wastedBytes: {} bytes ({})\n  userWastedPercent: {:.4} %\n",
        a.efficiency * 100.0,
        a.wasted_bytes,
        human_bytes(a.wasted_bytes),
        go_pct(a.wasted_user_percent * 100.0),
    )
}

fn go_pct(f: f64) -> GoF4 {
    GoF4(f)
}

/// `%2.4f` of Go for NaN/Inf as well.
struct GoF4(f64);

impl std::fmt::Display for GoF4 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.0.is_nan() {
            write!(f, "NaN")
        } else if self.0.is_infinite() {
            write!(f, "{}Inf", if self.0 > 0.0 { "+" } else { "-" })
        } else {
            write!(f, "{:.4}", self.0)
        }
    }
}

/// `CiEvaluator.Report`, text for text (`color`: dive's ANSI escapes).
pub fn report(v: &Verdict, color: bool) -> String {
    let mut s = String::new();
    s.push_str(&title("Inefficient Files:", color));
    s.push('\n');
    s.push_str(&format!(
        "{:>5}  {:>12}  {}\n",
        "Count", "Wasted Space", "File Path"
    ));
    if v.inefficient_files.is_empty() {
        s.push_str("None\n");
    } else {
        for f in &v.inefficient_files {
            s.push_str(&format!(
                "{:>5}  {:>12}  {}\n",
                f.count,
                human_bytes(f.size_bytes),
                f.file
            ));
        }
    }
    s.push_str(&title("Results:", color));
    s.push('\n');
    for r in &v.results {
        if r.message.is_empty() {
            s.push_str(&format!("  {}: {}\n", r.status.label(color), r.rule));
        } else {
            s.push_str(&format!(
                "  {}: {}: {}\n",
                r.status.label(color),
                r.rule,
                r.message
            ));
        }
    }
    if v.misconfigured {
        s.push_str(&paint("CI Misconfigured", "31", color));
    } else {
        let status = if v.tally.fail > 0 { "FAIL" } else { "PASS" };
        let t = &v.tally;
        let line = format!(
            "Result:{status} [Total:{}] [Passed:{}] [Failed:{}] [Warn:{}] [Skipped:{}]",
            t.total, t.pass, t.fail, t.warn, t.skip
        );
        s.push_str(&paint(&line, if v.pass { "32" } else { "31" }, color));
    }
    s.push('\n');
    s
}

fn paint(s: &str, code: &str, color: bool) -> String {
    if color {
        format!("\x1b[{code}m{s}\x1b[0m")
    } else {
        s.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_file() {
        let mut r = Rules::default();
        r.apply_config("rules:\n  # comment\n  lowestEfficiency: 0.90\n  highestWastedBytes: 20MB\n  highestUserWastedPercent: disabled\n")
            .unwrap();
        assert_eq!(r.lowest_efficiency, "0.9");
        assert_eq!(r.highest_wasted_bytes, "20MB");
        assert_eq!(r.highest_user_wasted_percent, "disabled");
        let mut r = Rules::default();
        r.apply_config("rules:\n  lowestEfficiency: \"0.5\"\nother:\n  lowestEfficiency: 0.1\n")
            .unwrap();
        assert_eq!(r.lowest_efficiency, "0.5");
    }

    #[test]
    fn validation() {
        assert!(validate(LOWEST_EFFICIENCY, "0.9").is_ok());
        assert_eq!(
            validate(LOWEST_EFFICIENCY, "2").unwrap_err(),
            "lowestEfficiency config value is outside allowed range (0-1), given '2'"
        );
        assert!(validate(HIGHEST_WASTED_BYTES, "20MB").is_ok());
        assert!(validate(HIGHEST_WASTED_BYTES, "lots").is_err());
    }
}
