//! The line-level parser (BuildKit `frontend/dockerfile/parser`): parser
//! directives, comments, line continuations, heredoc bodies, and the
//! per-instruction argument shapes (JSON or not, words, key/value pairs).
//! Instruction semantics (flags, argument counts) live in `instructions.rs`.

use crate::error::{Location, ParseError};
use crate::shell::{self, is_space, Options};

/// A parser directive from the top of the file (`# syntax=...`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Directive {
    /// Lowercased name: `syntax`, `escape` or `check`.
    pub name: String,
    pub value: String,
    pub line: usize,
}

/// A non-fatal finding, e.g. an empty line inside a continuation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Warning {
    pub line: usize,
    pub message: String,
}

/// A heredoc attached to RUN, COPY or ADD.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Heredoc {
    /// The terminator word with quotes removed (`EOF` for `<<"EOF"`).
    pub name: String,
    /// The file descriptor prefix of `3<<EOF` (0 when absent).
    pub file_descriptor: u32,
    /// False when any part of the terminator was quoted (`<<'EOF'`).
    pub expand: bool,
    /// `<<-EOF`: leading tabs are stripped from the body.
    pub chomp: bool,
    /// The body as written, newlines included, tabs not yet stripped.
    pub content: String,
}

impl Heredoc {
    /// The body with leading tabs removed from every line when `chomp` is set.
    pub fn data(&self) -> String {
        if self.chomp {
            chomp_heredoc_content(&self.content)
        } else {
            self.content.clone()
        }
    }
}

/// BuildKit `ChompHeredocContent`: `(?m)^\t+` removed.
pub(crate) fn chomp_heredoc_content(s: &str) -> String {
    s.split_inclusive('\n')
        .map(|l| l.trim_start_matches('\t'))
        .collect()
}

/// One logical line, split into command, flags and the rest.
#[derive(Debug, Clone)]
pub(crate) struct Node {
    /// The instruction name as written.
    pub cmd: String,
    pub flags: Vec<String>,
    /// Arguments as the line parser shaped them (see `dispatch`).
    pub args: Vec<String>,
    pub json: bool,
    /// ENV/LABEL written as `KEY value`.
    pub legacy_kv: bool,
    /// ONBUILD's trigger.
    pub child: Option<Box<Node>>,
    pub heredocs: Vec<Heredoc>,
    /// BuildKit's `PrevComment`: the comment lines right before the
    /// instruction (`#` and surrounding space removed; a bare `#` line
    /// starts over; blank lines do not), directives excluded.
    pub comments: Vec<String>,
    /// The joined logical line (continuations removed).
    pub original: String,
    /// The raw source lines the node spans, for error messages.
    pub source: String,
    pub location: Location,
}

pub(crate) struct Parsed {
    pub escape: char,
    pub directives: Vec<Directive>,
    pub warnings: Vec<Warning>,
    pub nodes: Vec<Node>,
}

#[derive(Default)]
struct DirectiveParser {
    done: bool,
    seen: Vec<String>,
}

impl DirectiveParser {
    /// BuildKit `DirectiveParser.ParseLine`: directives are `# key=value`
    /// lines at the very top; the first other line ends the directive block.
    fn parse_line(&mut self, line: &str) -> Result<Option<(String, String)>, String> {
        if self.done {
            return Ok(None);
        }
        let Some(rest) = line.strip_prefix('#') else {
            self.done = true;
            return Ok(None);
        };
        let rest = rest.trim_start_matches(is_space);
        let Some((key, value)) = match_directive(rest) else {
            self.done = true;
            return Ok(None);
        };
        let key = key.to_ascii_lowercase();
        if !matches!(key.as_str(), "syntax" | "escape" | "check") {
            self.done = true;
            return Ok(None);
        }
        if self.seen.contains(&key) {
            return Err(format!("only one {key} parser directive can be used"));
        }
        self.seen.push(key.clone());
        Ok(Some((key, value)))
    }
}

/// `^([a-zA-Z][a-zA-Z0-9]*)\s*=\s*(.+?)\s*$`
pub(crate) fn match_directive(s: &str) -> Option<(String, String)> {
    let mut chars = s.char_indices();
    let (_, first) = chars.next()?;
    if !first.is_ascii_alphabetic() {
        return None;
    }
    let key_end = s
        .char_indices()
        .find(|(_, c)| !c.is_ascii_alphanumeric())
        .map_or(s.len(), |(i, _)| i);
    let key = &s[..key_end];
    let after = s[key_end..].trim_start_matches(is_regex_space);
    let value = after.strip_prefix('=')?;
    let value = value.trim_matches(is_regex_space);
    if value.is_empty() {
        return None;
    }
    Some((key.to_string(), value.to_string()))
}

/// Go regexp `\s`: `[\t\n\f\r ]`.
fn is_regex_space(c: char) -> bool {
    matches!(c, '\t' | '\n' | '\u{c}' | '\r' | ' ')
}

/// BuildKit `reWhitespace`: `[\t\v\f\r ]+`.
fn is_ws_token(c: char) -> bool {
    matches!(c, '\t' | '\u{b}' | '\u{c}' | '\r' | ' ')
}

fn split_ws(s: &str) -> Vec<String> {
    s.split(is_ws_token)
        .filter(|p| !p.is_empty())
        .map(str::to_string)
        .collect()
}

fn trim_newline(s: &str) -> &str {
    s.trim_end_matches(['\r', '\n'])
}

fn is_comment(s: &str) -> bool {
    s.trim_start_matches(is_space).starts_with('#')
}

/// BuildKit's continuation regex `([^E])E[ \t]*$|^E[ \t]*$` for escape E:
/// a trailing escape continues the line unless it is itself escaped.
fn trim_continuation(line: &str, escape: char) -> (&str, bool) {
    let t = line.trim_end_matches([' ', '\t']);
    if let Some(before) = t.strip_suffix(escape) {
        if before.is_empty() || !before.ends_with(escape) {
            return (before, false);
        }
    }
    (line, true)
}

pub(crate) fn parse_lines(src: &str) -> Result<Parsed, ParseError> {
    let lines: Vec<&str> = src.split_inclusive('\n').collect();
    let mut escape = '\\';
    let mut dp = DirectiveParser::default();
    let mut directives = Vec::new();
    let mut warnings = Vec::new();
    let mut nodes = Vec::new();
    let mut comments: Vec<String> = Vec::new();
    let mut i = 0;

    let source_of = |start: usize, end: usize| -> String {
        lines[start - 1..end.min(lines.len())]
            .iter()
            .map(|l| trim_newline(l))
            .collect::<Vec<_>>()
            .join("\n")
    };

    while i < lines.len() {
        let mut raw = lines[i];
        if i == 0 {
            raw = raw.strip_prefix('\u{feff}').unwrap_or(raw);
        }
        let lineno = i + 1;
        i += 1;
        let untrimmed = trim_newline(raw);
        let t = untrimmed.trim_start_matches(is_space);
        let column = untrimmed.chars().count() - t.chars().count() + 1;
        let line_loc = Location {
            start_line: lineno,
            end_line: lineno,
            column,
        };
        if is_comment(t) {
            // BuildKit: TrimSpace(line[1:]) of the raw line.
            let mut c = untrimmed.chars();
            c.next();
            let comment = c.as_str().trim();
            if comment.is_empty() {
                comments.clear();
            } else {
                comments.push(comment.to_string());
            }
        }
        match dp.parse_line(t) {
            Err(msg) => return Err(ParseError::new(line_loc, msg, untrimmed)),
            Ok(Some((name, value))) => {
                comments.pop();
                if name == "escape" {
                    escape = match value.as_str() {
                        "\\" => '\\',
                        "`" => '`',
                        _ => {
                            return Err(ParseError::new(
                                line_loc,
                                format!(
                                    "invalid escape token '{value}' does not match ` or \\ (use `# escape=\\` or `# escape=``)"
                                ),
                                untrimmed,
                            ))
                        }
                    };
                }
                directives.push(Directive {
                    name,
                    value,
                    line: lineno,
                });
            }
            Ok(None) => {}
        }
        let content = if is_comment(t) { "" } else { t };
        let (content, mut eol) = trim_continuation(content, escape);
        if eol && content.is_empty() {
            continue;
        }
        let start_line = lineno;
        let mut buf = content.to_string();
        let mut empty_continuation = false;
        while !eol && i < lines.len() {
            let t = trim_newline(lines[i]);
            i += 1;
            // Comment and blank lines inside a continuation are skipped.
            if is_comment(t) {
                continue;
            }
            if t.trim_start_matches(is_space).is_empty() {
                empty_continuation = true;
                continue;
            }
            let (c, e) = trim_continuation(t, escape);
            buf.push_str(c);
            eol = e;
        }
        let mut end_line = i;
        if empty_continuation {
            warnings.push(Warning {
                line: end_line,
                message: format!("Empty continuation line found in: {buf}"),
            });
        }
        let mut location = Location {
            start_line,
            end_line,
            column,
        };
        let err = |loc: Location, msg: String| {
            ParseError::new(loc, msg, source_of(loc.start_line, loc.end_line))
        };

        let mut node = node_from_line(&buf, escape).map_err(|m| err(location, m))?;

        if can_contain_heredoc(&node) && buf.contains("<<") {
            let heredocs = heredocs_from_line(&buf).map_err(|m| err(location, m))?;
            for mut h in heredocs {
                let mut terminated = false;
                while i < lines.len() {
                    let raw = lines[i];
                    i += 1;
                    let mut candidate = trim_newline(raw);
                    if h.chomp {
                        candidate = candidate.trim_start_matches('\t');
                    }
                    if candidate == h.name {
                        terminated = true;
                        break;
                    }
                    h.content.push_str(raw);
                }
                end_line = i;
                location.end_line = end_line;
                if !terminated {
                    return Err(err(
                        location,
                        format!("unterminated heredoc: no line matching {:?} was found before the end of the file", h.name),
                    ));
                }
                node.heredocs.push(h);
            }
        }
        node.location = location;
        node.source = source_of(start_line, end_line);
        node.comments = std::mem::take(&mut comments);
        if let Some(child) = node.child.as_mut() {
            child.location = location;
            child.source = node.source.clone();
            child.heredocs = node.heredocs.clone();
        }
        nodes.push(node);
    }

    if nodes.is_empty() {
        return Err(ParseError::new(
            Location {
                start_line: lines.len().max(1),
                end_line: lines.len().max(1),
                column: 1,
            },
            "file with no instructions",
            "",
        ));
    }
    Ok(Parsed {
        escape,
        directives,
        warnings,
        nodes,
    })
}

fn can_contain_heredoc(node: &Node) -> bool {
    let n = match (&node.child, node.cmd.eq_ignore_ascii_case("onbuild")) {
        (Some(child), true) => child.as_ref(),
        _ => node,
    };
    let lower = n.cmd.to_ascii_lowercase();
    matches!(lower.as_str(), "add" | "copy" | "run") && !n.json
}

/// BuildKit `splitCommand` + dispatch to the per-instruction line parser.
pub(crate) fn node_from_line(line: &str, escape: char) -> Result<Node, String> {
    let trimmed = line.trim_matches(is_space);
    let (cmd, rest) = match trimmed.find(is_ws_token) {
        Some(idx) => {
            let cmd = &trimmed[..idx];
            let rest = trimmed[idx..].trim_start_matches(is_ws_token);
            (cmd, rest)
        }
        None => (trimmed, ""),
    };
    let (rest, flags) = if trimmed.len() == cmd.len() {
        (String::new(), Vec::new())
    } else {
        extract_builder_flags(rest)
    };
    let rest = rest.trim_matches(is_space).to_string();
    let mut node = Node {
        cmd: cmd.to_string(),
        flags,
        args: Vec::new(),
        json: false,
        legacy_kv: false,
        child: None,
        heredocs: Vec::new(),
        comments: Vec::new(),
        original: line.to_string(),
        source: String::new(),
        location: Location::default(),
    };
    match cmd.to_ascii_lowercase().as_str() {
        "add" | "copy" | "volume" => {
            (node.args, node.json) = parse_maybe_json_to_list(&rest)?;
        }
        "arg" => node.args = parse_words(&rest, escape),
        "cmd" | "entrypoint" | "run" | "shell" => {
            (node.args, node.json) = parse_maybe_json(&rest)?;
        }
        "env" | "label" => {
            let key = if cmd.eq_ignore_ascii_case("env") {
                "ENV"
            } else {
                "LABEL"
            };
            (node.args, node.legacy_kv) = parse_name_val(&rest, key, escape)?;
        }
        "expose" | "from" => node.args = split_ws(&rest),
        "healthcheck" => {
            // The first word is the type (NONE or CMD), the rest a command.
            let sep = rest.find(is_space).unwrap_or(rest.len());
            if sep > 0 {
                let typ = rest[..sep].to_string();
                let cmd_part = rest[sep..].trim_start_matches(is_space);
                let (args, json) = parse_maybe_json(cmd_part)?;
                node.args = std::iter::once(typ).chain(args).collect();
                node.json = json;
            }
        }
        "maintainer" | "stopsignal" | "user" | "workdir" if !rest.is_empty() => {
            node.args = vec![rest.clone()];
        }
        "onbuild" if !rest.is_empty() => {
            let child = node_from_line(&rest, escape)?;
            node.args = std::iter::once(child.cmd.clone())
                .chain(child.args.iter().cloned())
                .collect();
            node.child = Some(Box::new(child));
        }
        // Unknown instructions are rejected later, with a suggestion.
        _ => {}
    }
    Ok(node)
}

/// BuildKit `extractBuilderFlags`: leading `--name[=value]` words, with
/// quotes and backslash escapes; a lone `--` ends the flags.
fn extract_builder_flags(line: &str) -> (String, Vec<String>) {
    #[derive(PartialEq)]
    enum Phase {
        Spaces,
        Word,
        Quote,
    }
    let chars: Vec<(usize, char)> = line.char_indices().collect();
    let mut words = Vec::new();
    let mut phase = Phase::Spaces;
    let mut word = String::new();
    let mut quote = '\0';
    let mut blank_ok = false;
    let mut pos = 0;
    while pos <= chars.len() {
        let at_end = pos == chars.len();
        let ch = chars.get(pos).map_or('\0', |c| c.1);
        if phase == Phase::Spaces {
            if at_end {
                break;
            }
            if is_space(ch) {
                pos += 1;
                continue;
            }
            if ch != '-' || chars.get(pos + 1).map(|c| c.1) != Some('-') {
                return (line[chars[pos].0..].to_string(), words);
            }
            phase = Phase::Word;
        }
        if at_end {
            if word != "--" && (blank_ok || !word.is_empty()) {
                words.push(word);
            }
            break;
        }
        if phase == Phase::Word {
            if is_space(ch) {
                phase = Phase::Spaces;
                if word == "--" {
                    return (line[chars[pos].0..].to_string(), words);
                }
                if blank_ok || !word.is_empty() {
                    words.push(std::mem::take(&mut word));
                }
                word.clear();
                blank_ok = false;
                pos += 1;
                continue;
            }
            if ch == '\'' || ch == '"' {
                quote = ch;
                blank_ok = true;
                phase = Phase::Quote;
                pos += 1;
                continue;
            }
            let mut c = ch;
            if ch == '\\' {
                if pos + 1 == chars.len() {
                    pos += 1;
                    continue;
                }
                pos += 1;
                c = chars[pos].1;
            }
            word.push(c);
            pos += 1;
            continue;
        }
        // Phase::Quote
        if ch == quote {
            phase = Phase::Word;
            pos += 1;
            continue;
        }
        let mut c = ch;
        if ch == '\\' {
            if pos + 1 == chars.len() {
                phase = Phase::Word;
                pos += 1;
                continue;
            }
            pos += 1;
            c = chars[pos].1;
        }
        word.push(c);
        pos += 1;
    }
    (String::new(), words)
}

/// BuildKit `parseWords`: whitespace-separated words with quotes and escapes
/// kept (they are removed later by expansion).
pub(crate) fn parse_words(rest: &str, escape: char) -> Vec<String> {
    #[derive(PartialEq)]
    enum Phase {
        Spaces,
        Word,
        Quote,
    }
    let chars: Vec<char> = rest.chars().collect();
    let mut words = Vec::new();
    let mut phase = Phase::Spaces;
    let mut quote = '\0';
    let mut blank_ok = false;
    let mut sb = String::new();
    let mut pos = 0;
    while pos <= chars.len() {
        let at_end = pos == chars.len();
        let mut ch = chars.get(pos).copied().unwrap_or('\0');
        if phase == Phase::Spaces {
            if at_end {
                break;
            }
            if is_space(ch) {
                pos += 1;
                continue;
            }
            phase = Phase::Word;
        }
        if at_end {
            if blank_ok || !sb.is_empty() {
                words.push(sb);
            }
            break;
        }
        if phase == Phase::Word {
            if is_space(ch) {
                phase = Phase::Spaces;
                if blank_ok || !sb.is_empty() {
                    words.push(std::mem::take(&mut sb));
                }
                blank_ok = false;
                pos += 1;
                continue;
            }
            if ch == '\'' || ch == '"' {
                quote = ch;
                blank_ok = true;
                phase = Phase::Quote;
            }
            if ch == escape {
                if pos + 1 == chars.len() {
                    pos += 1;
                    continue;
                }
                // An escape outside quotes keeps itself and the next char.
                sb.push(ch);
                pos += 1;
                ch = chars[pos];
            }
            sb.push(ch);
            pos += 1;
            continue;
        }
        // Phase::Quote
        if ch == quote {
            phase = Phase::Word;
        }
        if ch == escape && quote != '\'' {
            if pos + 1 == chars.len() {
                phase = Phase::Word;
                pos += 1;
                continue;
            }
            pos += 1;
            sb.push(ch);
            ch = chars[pos];
        }
        sb.push(ch);
        pos += 1;
    }
    words
}

/// ENV/LABEL: `k=v k2=v2` or the legacy `k value with spaces`. Returns
/// `[k, v, k2, v2, ...]` and whether the legacy form was used.
fn parse_name_val(rest: &str, key: &str, escape: char) -> Result<(Vec<String>, bool), String> {
    let words = parse_words(rest, escape);
    if words.is_empty() {
        return Ok((Vec::new(), false));
    }
    if !words[0].contains('=') {
        let mut parts = rest.splitn(2, is_ws_token);
        let k = parts.next().unwrap_or_default();
        let v = parts.next().map(|v| v.trim_start_matches(is_ws_token));
        return match v {
            Some(v) => Ok((vec![k.to_string(), v.to_string()], true)),
            None => Err(format!(
                "{key} must have two arguments (use `{key} name=value`)"
            )),
        };
    }
    let mut out = Vec::with_capacity(words.len() * 2);
    for word in words {
        let Some((k, v)) = word.split_once('=') else {
            return Err(format!(
                "Syntax error - can't find = in {}. Must be of the form: name=value",
                shell::go_quote(&word)
            ));
        };
        out.push(k.to_string());
        out.push(v.to_string());
    }
    Ok((out, false))
}

const NOT_STRING_ARRAY: &str =
    "when using JSON array syntax, arrays must be comprised of strings only";

/// BuildKit `parseJSON`: `Ok(Some)` for a JSON array of strings, `Ok(None)`
/// when the text is not a JSON array (shell form), `Err` for an array with
/// non-string elements.
pub(crate) fn parse_json(rest: &str) -> Result<Option<Vec<String>>, String> {
    let rest = rest.trim_start_matches(is_space);
    if !rest.starts_with('[') {
        return Ok(None);
    }
    let Ok(value) = serde_json::from_str::<serde_json::Value>(rest) else {
        return Ok(None);
    };
    let serde_json::Value::Array(items) = value else {
        return Ok(None);
    };
    items
        .into_iter()
        .map(|v| match v {
            serde_json::Value::String(s) => Ok(s),
            _ => Err(NOT_STRING_ARRAY.to_string()),
        })
        .collect::<Result<Vec<_>, _>>()
        .map(Some)
}

fn parse_maybe_json(rest: &str) -> Result<(Vec<String>, bool), String> {
    if rest.is_empty() {
        return Ok((Vec::new(), false));
    }
    match parse_json(rest)? {
        Some(v) => Ok((v, true)),
        None => Ok((vec![rest.to_string()], false)),
    }
}

fn parse_maybe_json_to_list(rest: &str) -> Result<(Vec<String>, bool), String> {
    match parse_json(rest)? {
        Some(v) => Ok((v, true)),
        None => Ok((split_ws(rest), false)),
    }
}

/// BuildKit `heredocsFromLine`: every word of the line that looks like
/// `[n]<<[-]WORD` starts a heredoc, in order.
fn heredocs_from_line(line: &str) -> Result<Vec<Heredoc>, String> {
    let opts = Options {
        raw_quotes: true,
        raw_escapes: true,
        skip_unset_env: true,
        skip_process_quotes: false,
    };
    // Lexing errors (an unmatched quote) mean "no heredocs", as in BuildKit.
    let words = shell::process(line, '\\', opts, &|_| None)
        .map(|(_, w)| w)
        .unwrap_or_default();
    let mut docs = Vec::new();
    for word in words {
        if let Some(h) = parse_heredoc(&word)? {
            docs.push(h);
        }
    }
    Ok(docs)
}

/// BuildKit `ParseHeredoc`: `^(\d*)<<(-?)\s*([^<]*)$`, then the terminator
/// is lexed with and without quotes to learn whether any part was quoted.
pub(crate) fn parse_heredoc(src: &str) -> Result<Option<Heredoc>, String> {
    let digits_end = src
        .char_indices()
        .find(|(_, c)| !c.is_ascii_digit())
        .map_or(src.len(), |(i, _)| i);
    let Some(after) = src[digits_end..].strip_prefix("<<") else {
        return Ok(None);
    };
    let (chomp, after) = match after.strip_prefix('-') {
        Some(a) => (true, a),
        None => (false, after),
    };
    let rest = after.trim_start_matches(is_regex_space);
    if rest.contains('<') || rest.is_empty() {
        return Ok(None);
    }
    // Go's ParseUint error (overflow) yields 0.
    let fd = src[..digits_end].parse::<u32>().unwrap_or(0);
    let base = Options {
        skip_unset_env: true,
        ..Options::default()
    };
    let words = shell::process(rest, '\\', base, &|_| None)
        .map_err(|e| e.message)?
        .1;
    if words.len() != 1 {
        return Ok(None);
    }
    let raw = Options {
        raw_quotes: true,
        ..base
    };
    let words_raw = shell::process(rest, '\\', raw, &|_| None)
        .map_err(|e| e.message)?
        .1;
    if words_raw.len() != 1 {
        return Err(format!(
            "internal lexing of heredoc produced inconsistent results: {rest}"
        ));
    }
    let quotes = |s: &str| s.chars().filter(|c| *c == '\'' || *c == '"').count();
    Ok(Some(Heredoc {
        expand: quotes(&words[0]) == quotes(&words_raw[0]),
        name: words[0].clone(),
        file_descriptor: fd,
        chomp,
        content: String::new(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn continuation_regex() {
        assert_eq!(trim_continuation("a \\", '\\'), ("a ", false));
        assert_eq!(trim_continuation("a \\  \t", '\\'), ("a ", false));
        assert_eq!(trim_continuation("\\", '\\'), ("", false));
        assert_eq!(trim_continuation("a \\\\", '\\'), ("a \\\\", true));
        assert_eq!(trim_continuation("a `", '`'), ("a ", false));
        assert_eq!(trim_continuation("a \\", '`'), ("a \\", true));
    }

    #[test]
    fn directive_matching() {
        assert_eq!(
            match_directive("escape=`"),
            Some(("escape".into(), "`".into()))
        );
        assert_eq!(
            match_directive("syntax = docker/dockerfile:1 "),
            Some(("syntax".into(), "docker/dockerfile:1".into()))
        );
        assert_eq!(match_directive("escape ="), None);
        assert_eq!(match_directive("1escape=x"), None);
        assert_eq!(match_directive("hello world"), None);
    }

    #[test]
    fn builder_flags() {
        assert_eq!(
            extract_builder_flags("--from=a --chown=\"x y\" src dst"),
            (
                "src dst".to_string(),
                vec!["--from=a".to_string(), "--chown=x y".to_string()]
            )
        );
        assert_eq!(
            extract_builder_flags("-- --x y"),
            (" --x y".to_string(), vec![])
        );
        assert_eq!(
            extract_builder_flags("--link"),
            (String::new(), vec!["--link".to_string()])
        );
        assert_eq!(extract_builder_flags("-x y"), ("-x y".to_string(), vec![]));
        assert_eq!(
            extract_builder_flags("--a=\\ b c"),
            ("c".to_string(), vec!["--a= b".to_string()])
        );
    }

    #[test]
    fn words_keep_quotes_and_escapes() {
        assert_eq!(
            parse_words("a=\"b c\" d='e f'", '\\'),
            ["a=\"b c\"", "d='e f'"]
        );
        assert_eq!(parse_words("a=b\\ c", '\\'), ["a=b\\ c"]);
        assert_eq!(parse_words("a=\"b\\\"c\"", '\\'), ["a=\"b\\\"c\""]);
        assert_eq!(parse_words("a=\"\"", '\\'), ["a=\"\""]);
        assert_eq!(parse_words("  x  ", '\\'), ["x"]);
    }

    #[test]
    fn json_forms() {
        assert_eq!(
            parse_json("[\"a\", \"b\"]"),
            Ok(Some(vec!["a".into(), "b".into()]))
        );
        assert_eq!(parse_json("  []"), Ok(Some(vec![])));
        assert_eq!(parse_json("[a]"), Ok(None));
        assert_eq!(parse_json("[\"a\"] x"), Ok(None));
        assert_eq!(parse_json("echo [\"a\"]"), Ok(None));
        assert_eq!(parse_json("[\"a\", 1]"), Err(NOT_STRING_ARRAY.into()));
        assert_eq!(parse_json("[null]"), Err(NOT_STRING_ARRAY.into()));
        assert_eq!(parse_json("[\"a'\"]"), Ok(Some(vec!["a'".into()])));
    }

    #[test]
    fn heredoc_words() {
        let h = parse_heredoc("<<EOF").unwrap().unwrap();
        assert_eq!(
            (h.name.as_str(), h.expand, h.chomp, h.file_descriptor),
            ("EOF", true, false, 0)
        );
        let h = parse_heredoc("<<-'EOF'").unwrap().unwrap();
        assert_eq!((h.name.as_str(), h.expand, h.chomp), ("EOF", false, true));
        let h = parse_heredoc("3<<\"E\"OF").unwrap().unwrap();
        assert_eq!(
            (h.name.as_str(), h.expand, h.file_descriptor),
            ("EOF", false, 3)
        );
        let h = parse_heredoc("<<eo\\'f").unwrap().unwrap();
        assert_eq!((h.name.as_str(), h.expand), ("eo'f", true));
        let h = parse_heredoc("<<'e'o\\'f").unwrap().unwrap();
        assert_eq!((h.name.as_str(), h.expand), ("eo'f", false));
        let h = parse_heredoc("<<$EOF").unwrap().unwrap();
        assert_eq!(h.name, "$EOF");
        let h = parse_heredoc("<< EOF").unwrap().unwrap();
        assert_eq!(h.name, "EOF");
        assert!(parse_heredoc("<<").unwrap().is_none());
        assert!(parse_heredoc("a<<EOF").unwrap().is_none());
        assert!(parse_heredoc("<<<EOF").unwrap().is_none());
        assert!(parse_heredoc("<<one two").unwrap().is_none());
        let h = parse_heredoc("<<'one two'").unwrap().unwrap();
        assert_eq!(h.name, "one two");
    }

    fn docs_of(src: &str) -> Vec<Heredoc> {
        let parsed = parse_lines(src).unwrap();
        parsed.nodes.into_iter().flat_map(|n| n.heredocs).collect()
    }

    #[test]
    fn several_heredocs_in_one_run_in_order() {
        let docs =
            docs_of("FROM x\nRUN cat <<A - 3<<-'B' <<\"C\"\na1\nA\n\tb1\n\tB\nc $1\nC\nRUN y\n");
        let got: Vec<_> = docs
            .iter()
            .map(|d| {
                (
                    d.name.as_str(),
                    d.content.as_str(),
                    d.expand,
                    d.chomp,
                    d.file_descriptor,
                )
            })
            .collect();
        assert_eq!(
            got,
            [
                ("A", "a1\n", true, false, 0),
                ("B", "\tb1\n", false, true, 3),
                ("C", "c $1\n", false, false, 0),
            ]
        );
        // The raw body keeps its tabs; data() strips them for `<<-`.
        assert_eq!(docs[1].data(), "b1\n");
    }

    #[test]
    fn heredoc_terminator_must_match_the_whole_line() {
        // Trailing spaces, a prefix, or a tab without `<<-` do not end it.
        let docs = docs_of("FROM x\nRUN <<EOF\nEOF \n EOF\n\tEOF\nEOFX\nEOF\n");
        assert_eq!(docs[0].content, "EOF \n EOF\n\tEOF\nEOFX\n");
    }

    #[test]
    fn heredoc_bodies_are_not_instructions_or_comments() {
        let parsed = parse_lines("FROM x\nRUN <<EOF\n# comment\nFROM y\n\\\nEOF\nRUN z\n").unwrap();
        assert_eq!(parsed.nodes.len(), 3);
        assert_eq!(
            parsed.nodes[1].heredocs[0].content,
            "# comment\nFROM y\n\\\n"
        );
        assert_eq!(parsed.nodes[2].original, "RUN z");
    }

    #[test]
    fn heredoc_after_continuation_lines() {
        let docs = docs_of("FROM x\nRUN cat \\\n  <<EOF > /f\nbody\nEOF\n");
        assert_eq!(docs[0].content, "body\n");
    }

    #[test]
    fn empty_heredoc_body() {
        let docs = docs_of("FROM x\nCOPY <<EOF /f\nEOF\n");
        assert_eq!(docs[0].content, "");
    }

    #[test]
    fn chomp() {
        assert_eq!(chomp_heredoc_content("\t\ta\n\tb\n c\n"), "a\nb\n c\n");
    }
}
