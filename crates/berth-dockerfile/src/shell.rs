//! Variable expansion and quote removal with the semantics of BuildKit's
//! `shell.Lex` (`frontend/dockerfile/shell/lex.go`).
//!
//! Supported forms: `$v`, `${v}`, `${v:-w}`, `${v-w}`, `${v:+w}`, `${v+w}`,
//! `${v:?msg}`, `${v?msg}`, `${v#p}`, `${v##p}`, `${v%p}`, `${v%%p}`,
//! `${v/p/r}` and `${v//p/r}` (patterns: `*`, `?`, `\*`, `\?`, `\\`; no bracket
//! expressions, like BuildKit). Single quotes are literal, double quotes allow
//! `$` expansion and escape only `"`, `$` and the escape character; outside
//! quotes the escape character escapes anything. Unset variables expand to the
//! empty string.
//!
//! Quirks kept on purpose because the output must match BuildKit byte for
//! byte: `*` and `?` in patterns never match a newline (Go regexp `.`), and
//! the replacement of `${v//p/r}` goes through Go's `Regexp.Expand`, so `$$`
//! becomes `$` and `$name`/`${name}` become empty.

use std::collections::HashMap;

/// The caller-supplied variable source: `Some(value)` for a set variable.
pub type Lookup<'a> = &'a dyn Fn(&str) -> Option<String>;

/// An expansion failed (bad substitution, `${v?msg}`, unterminated quote...).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct ExpandError {
    /// The complete message, e.g. `failed to process "${a": syntax error: missing '}'`.
    pub message: String,
}

impl ExpandError {
    pub(crate) fn new(message: impl Into<String>) -> Self {
        ExpandError {
            message: message.into(),
        }
    }
}

/// Expands one word (BuildKit `ProcessWord`): variables are substituted,
/// quotes removed and escapes resolved; whitespace is kept.
pub fn expand_word(word: &str, escape: char, lookup: Lookup<'_>) -> Result<String, ExpandError> {
    process(word, escape, Options::default(), lookup).map(|(w, _)| w)
}

/// Expands and splits into words on unquoted whitespace (BuildKit
/// `ProcessWords`, used for EXPOSE). Whitespace produced by a variable splits
/// too, whitespace inside quotes or escaped does not; empty words are dropped.
pub fn expand_words(
    word: &str,
    escape: char,
    lookup: Lookup<'_>,
) -> Result<Vec<String>, ExpandError> {
    process(word, escape, Options::default(), lookup).map(|(_, w)| w)
}

/// Expands a heredoc body the way BuildKit expands COPY/ADD heredoc sources
/// (`ExpandRaw`): quotes are ordinary characters, `\` (always backslash,
/// whatever the escape directive says) still escapes the next character.
pub fn expand_heredoc(body: &str, lookup: Lookup<'_>) -> Result<String, ExpandError> {
    let opts = Options {
        skip_process_quotes: true,
        ..Options::default()
    };
    process(body, '\\', opts, lookup).map(|(w, _)| w)
}

/// Lexer switches, named after the fields of BuildKit's `shell.Lex`.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Options {
    pub raw_quotes: bool,
    pub raw_escapes: bool,
    pub skip_process_quotes: bool,
    pub skip_unset_env: bool,
}

/// Runs the lexer; returns the single-word result and the split words.
pub(crate) fn process(
    word: &str,
    escape: char,
    opts: Options,
    lookup: Lookup<'_>,
) -> Result<(String, Vec<String>), ExpandError> {
    let mut lex = Lexer {
        chars: word.chars().collect(),
        pos: 0,
        escape,
        opts,
        raw_escapes: opts.raw_escapes,
        lookup,
        depth: 0,
    };
    lex.stop_on(None, opts.raw_escapes)
        .map_err(|e| ExpandError::new(format!("failed to process {}: {e}", go_quote(word))))
}

struct Lexer<'a> {
    chars: Vec<char>,
    pos: usize,
    escape: char,
    opts: Options,
    raw_escapes: bool,
    lookup: Lookup<'a>,
    /// `${...}` nesting, bounded so hostile input cannot exhaust the stack.
    depth: usize,
}

/// Far beyond any real Dockerfile; BuildKit itself has no limit.
const MAX_NESTING: usize = 256;

/// Go's `unicode.IsSpace` (same set as Rust's `char::is_whitespace`).
pub(crate) fn is_space(c: char) -> bool {
    c.is_whitespace()
}

/// Approximates Go's `unicode.IsDigit` (category Nd).
fn is_digit(c: char) -> bool {
    c.is_ascii_digit() || (!c.is_ascii() && c.is_numeric())
}

#[derive(Default)]
struct Words {
    word: String,
    words: Vec<String>,
    in_word: bool,
}

impl Words {
    fn add_char(&mut self, ch: char) {
        if is_space(ch) {
            if self.in_word && !self.word.is_empty() {
                self.words.push(std::mem::take(&mut self.word));
                self.in_word = false;
            }
        } else {
            self.add_raw_char(ch);
        }
    }
    fn add_raw_char(&mut self, ch: char) {
        self.word.push(ch);
        self.in_word = true;
    }
    fn add_string(&mut self, s: &str) {
        s.chars().for_each(|c| self.add_char(c));
    }
    fn add_raw_string(&mut self, s: &str) {
        self.word.push_str(s);
        self.in_word = true;
    }
    fn finish(mut self) -> Vec<String> {
        if !self.word.is_empty() {
            self.words.push(self.word);
        }
        self.words
    }
}

type LexResult<T> = Result<T, String>;

impl Lexer<'_> {
    fn peek(&self) -> Option<char> {
        self.chars.get(self.pos).copied()
    }

    fn next(&mut self) -> Option<char> {
        let c = self.peek();
        if c.is_some() {
            self.pos += 1;
        }
        c
    }

    fn stop_on(
        &mut self,
        stop: Option<char>,
        raw_escapes: bool,
    ) -> LexResult<(String, Vec<String>)> {
        let saved = self.raw_escapes;
        self.raw_escapes = raw_escapes;
        let r = self.stop_on_inner(stop);
        self.raw_escapes = saved;
        r
    }

    fn stop_on_inner(&mut self, stop: Option<char>) -> LexResult<(String, Vec<String>)> {
        let mut result = String::new();
        let mut words = Words::default();
        while let Some(ch) = self.peek() {
            if stop == Some(ch) {
                self.next();
                return Ok((result, words.finish()));
            }
            match ch {
                '$' => {
                    let t = self.dollar()?;
                    result.push_str(&t);
                    // Expanded values are split on their whitespace.
                    words.add_string(&t);
                }
                '\'' if !self.opts.skip_process_quotes => {
                    let t = self.single_quote()?;
                    result.push_str(&t);
                    words.add_raw_string(&t);
                }
                '"' if !self.opts.skip_process_quotes => {
                    let t = self.double_quote()?;
                    result.push_str(&t);
                    words.add_raw_string(&t);
                }
                '<' => {
                    let t = self.possible_heredoc();
                    result.push_str(&t);
                    words.add_raw_string(&t);
                }
                _ => {
                    self.next();
                    if ch == self.escape {
                        if self.raw_escapes {
                            words.add_raw_char(ch);
                            result.push(ch);
                        }
                        // An escape at the very end is dropped.
                        let Some(c) = self.next() else { break };
                        words.add_raw_char(c);
                        result.push(c);
                    } else {
                        words.add_char(ch);
                        result.push(ch);
                    }
                }
            }
        }
        if let Some(stop) = stop {
            return Err(format!(
                "unexpected end of statement while looking for matching {stop}"
            ));
        }
        Ok((result, words.finish()))
    }

    /// `<<` keeps the whitespace after it in the same word, so `<< EOF` is
    /// one heredoc word (BuildKit `processPossibleHeredoc`).
    fn possible_heredoc(&mut self) -> String {
        self.next();
        if self.peek() != Some('<') {
            return "<".to_string();
        }
        self.next();
        let mut out = String::from("<<");
        while let Some(c) = self.peek().filter(|c| is_space(*c)) {
            out.push(c);
            self.next();
        }
        out
    }

    fn single_quote(&mut self) -> LexResult<String> {
        let mut out = String::new();
        let q = self.next();
        if self.opts.raw_quotes {
            out.extend(q);
        }
        loop {
            match self.next() {
                None => {
                    return Err(
                        "unexpected end of statement while looking for matching single-quote"
                            .into(),
                    )
                }
                Some('\'') => {
                    if self.opts.raw_quotes {
                        out.push('\'');
                    }
                    return Ok(out);
                }
                Some(c) => out.push(c),
            }
        }
    }

    fn double_quote(&mut self) -> LexResult<String> {
        let mut out = String::new();
        let q = self.next();
        if self.opts.raw_quotes {
            out.extend(q);
        }
        loop {
            match self.peek() {
                None => {
                    return Err(
                        "unexpected end of statement while looking for matching double-quote"
                            .into(),
                    )
                }
                Some('"') => {
                    self.next();
                    if self.opts.raw_quotes {
                        out.push('"');
                    }
                    return Ok(out);
                }
                Some('$') => {
                    let v = self.dollar()?;
                    out.push_str(&v);
                }
                Some(_) => {
                    let mut ch = self.next().unwrap_or_default();
                    if ch == self.escape {
                        if self.raw_escapes {
                            out.push(ch);
                        }
                        match self.peek() {
                            None => continue,
                            // Only these can be escaped inside double quotes;
                            // any other escape character stays literal.
                            Some(c) if c == '"' || c == '$' || c == self.escape => {
                                ch = c;
                                self.next();
                            }
                            Some(_) => {}
                        }
                    }
                    out.push(ch);
                }
            }
        }
    }

    fn get_env(&self, name: &str) -> Option<String> {
        (self.lookup)(name)
    }

    fn dollar(&mut self) -> LexResult<String> {
        if self.depth >= MAX_NESTING {
            return Err(format!(
                "variable substitutions nested deeper than {MAX_NESTING} levels"
            ));
        }
        self.depth += 1;
        let r = self.dollar_inner();
        self.depth -= 1;
        r
    }

    fn dollar_inner(&mut self) -> LexResult<String> {
        self.next();
        if self.peek() != Some('{') {
            let name = self.name();
            if name.is_empty() {
                return Ok("$".into());
            }
            return Ok(match self.get_env(&name) {
                Some(v) => v,
                None if self.opts.skip_unset_env => format!("${name}"),
                None => String::new(),
            });
        }
        self.next();
        match self.peek() {
            None => return Err("syntax error: missing '}'".into()),
            Some('{' | '}' | ':') => return Err("syntax error: bad substitution".into()),
            _ => {}
        }
        let name = self.name();
        let ch = self.next();
        if ch.is_none() {
            // BuildKit says "unsupported modifier (\u{FFFD})" here; same failure, clearer words.
            return Err("syntax error: missing '}'".into());
        }
        // Go prints EOF as U+FFFD in "unsupported modifier" messages.
        let mut chs = String::from(ch.unwrap_or('\u{FFFD}'));
        match ch {
            Some('}') => Ok(match self.get_env(&name) {
                Some(v) => v,
                None if self.opts.skip_unset_env => format!("${{{name}}}"),
                None => String::new(),
            }),
            Some(':' | '+' | '-' | '?' | '#' | '%') => {
                let mut op = ch;
                let null_is_unset = ch == Some(':');
                if null_is_unset {
                    op = self.next();
                    chs.push(op.unwrap_or('\u{FFFD}'));
                }
                let raw = matches!(op, Some('#' | '%'));
                let word = match self.stop_on(Some('}'), raw) {
                    Ok((w, _)) => w,
                    Err(_) if self.peek().is_none() => {
                        return Err("syntax error: missing '}'".into())
                    }
                    Err(e) => return Err(e),
                };
                let value = self.get_env(&name);
                if self.opts.skip_unset_env && value.is_none() {
                    return Ok(format!("${{{name}{chs}{word}}}"));
                }
                let set = value.is_some();
                let value = value.unwrap_or_default();
                let unset_or_null = !set || (null_is_unset && value.is_empty());
                match op {
                    Some('-') => Ok(if unset_or_null { word } else { value }),
                    Some('+') => Ok(if unset_or_null { String::new() } else { word }),
                    Some('?') => {
                        if !set {
                            let msg = if word.is_empty() {
                                "is not allowed to be unset"
                            } else {
                                &word
                            };
                            Err(format!("{name}: {msg}"))
                        } else if null_is_unset && value.is_empty() {
                            let msg = if word.is_empty() {
                                "is not allowed to be empty"
                            } else {
                                &word
                            };
                            Err(format!("{name}: {msg}"))
                        } else {
                            Ok(value)
                        }
                    }
                    Some(c @ ('%' | '#')) => {
                        let (pattern, greedy) = match word.strip_prefix(c) {
                            Some(rest) => (rest.to_string(), true),
                            None => (word, false),
                        };
                        if c == '%' {
                            trim_suffix(&pattern, &value, greedy)
                        } else {
                            trim_prefix(&pattern, &value, greedy)
                        }
                    }
                    _ => Err(format!("unsupported modifier ({chs}) in substitution")),
                }
            }
            Some('/') => {
                let replace_all = self.peek() == Some('/');
                if replace_all {
                    self.next();
                }
                let pattern = match self.stop_on(Some('/'), true) {
                    Ok((w, _)) => w,
                    Err(_) if self.peek().is_none() => {
                        return Err("syntax error: missing '/' in ${}".into())
                    }
                    Err(e) => return Err(e),
                };
                let replacement = match self.stop_on(Some('}'), true) {
                    Ok((w, _)) => w,
                    Err(_) if self.peek().is_none() => {
                        return Err("syntax error: missing '}'".into())
                    }
                    Err(e) => return Err(e),
                };
                let value = self.get_env(&name);
                if self.opts.skip_unset_env && value.is_none() {
                    return Ok(format!("${{{name}/{pattern}/{replacement}}}"));
                }
                let value = value.unwrap_or_default();
                let pat = Pattern::compile(&pattern)
                    .map_err(|e| format!("invalid pattern ({pattern}) in substitution: {e}"))?;
                Ok(if replace_all {
                    pat.replace_all(&value, &replacement)
                } else {
                    pat.replace_first(&value, &replacement)
                })
            }
            _ => Err(format!("unsupported modifier ({chs}) in substitution")),
        }
    }

    fn name(&mut self) -> String {
        let mut name = String::new();
        while let Some(ch) = self.peek() {
            if name.is_empty() && is_digit(ch) {
                while let Some(d) = self.peek().filter(|c| is_digit(*c)) {
                    name.push(d);
                    self.next();
                }
                return name;
            }
            if name.is_empty() && matches!(ch, '@' | '*' | '#' | '?' | '-' | '$' | '!' | '0') {
                self.next();
                return ch.to_string();
            }
            if !(ch.is_alphabetic() || is_digit(ch) || ch == '_') {
                break;
            }
            self.next();
            name.push(ch);
        }
        name
    }
}

/// A compiled shell pattern (BuildKit `convertShellPatternToRegex`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tok {
    Lit(char),
    /// `?`: any character but newline.
    Any,
    /// `*`: any run of characters without a newline.
    Star,
}

struct Pattern {
    toks: Vec<Tok>,
}

impl Pattern {
    fn compile(pattern: &str) -> Result<Pattern, String> {
        let mut p = Self::compile_tokens(pattern)?;
        // `**` prefers exactly what `*` prefers; collapsing keeps recursion shallow.
        p.toks.dedup_by(|a, b| *a == Tok::Star && *b == Tok::Star);
        Ok(p)
    }

    fn compile_tokens(pattern: &str) -> Result<Pattern, String> {
        let chars: Vec<char> = pattern.chars().collect();
        let mut toks = Vec::new();
        let mut i = 0;
        while i < chars.len() {
            let c = chars[i];
            i += 1;
            match c {
                '*' => toks.push(Tok::Star),
                '?' => toks.push(Tok::Any),
                '\\' => {
                    // `\}` and `\/` were only escaped for the `${}` syntax.
                    if matches!(chars.get(i), Some('}' | '/')) {
                        continue;
                    }
                    match chars.get(i) {
                        Some(&e @ ('*' | '?' | '\\')) => {
                            toks.push(Tok::Lit(e));
                            i += 1;
                        }
                        Some(&e) => return Err(format!("invalid escape '\\{e}'")),
                        None => return Err("invalid escape '\\\u{FFFD}'".into()),
                    }
                }
                other => toks.push(Tok::Lit(other)),
            }
        }
        Ok(Pattern { toks })
    }

    /// Runs a leftmost-first (Perl/Go RE2) match anchored at `start` and
    /// returns the end of the preferred match. Memoised on (token, position)
    /// because the preferred result of a sub-match does not depend on how it
    /// was reached, which keeps `*a*a*a...` patterns polynomial.
    fn match_at(
        &self,
        s: &[char],
        start: usize,
        greedy: bool,
        memo: &mut HashMap<(usize, usize), Option<usize>>,
    ) -> Option<usize> {
        self.m(0, start, s, greedy, memo)
    }

    fn m(
        &self,
        ti: usize,
        si: usize,
        s: &[char],
        greedy: bool,
        memo: &mut HashMap<(usize, usize), Option<usize>>,
    ) -> Option<usize> {
        // Literal runs are matched iteratively; only `*` branches.
        let (mut ti, mut si) = (ti, si);
        loop {
            match self.toks.get(ti) {
                None => return Some(si),
                Some(Tok::Lit(c)) if s.get(si) == Some(c) => {}
                Some(Tok::Any) if s.get(si).is_some_and(|c| *c != '\n') => {}
                Some(Tok::Star) => break,
                Some(_) => return None,
            }
            ti += 1;
            si += 1;
        }
        if let Some(r) = memo.get(&(ti, si)) {
            return *r;
        }
        let r = match self.toks[ti] {
            Tok::Lit(_) | Tok::Any => unreachable!("literal runs are consumed above"),
            Tok::Star => {
                let max = s[si..].iter().take_while(|c| **c != '\n').count();
                let mut found = None;
                if greedy {
                    for k in (0..=max).rev() {
                        if let Some(e) = self.m(ti + 1, si + k, s, greedy, memo) {
                            found = Some(e);
                            break;
                        }
                    }
                } else {
                    for k in 0..=max {
                        if let Some(e) = self.m(ti + 1, si + k, s, greedy, memo) {
                            found = Some(e);
                            break;
                        }
                    }
                }
                found
            }
        };
        memo.insert((ti, si), r);
        r
    }

    /// Leftmost match at or after `from` (greedy stars, like `${v/p/r}`).
    fn find(
        &self,
        s: &[char],
        from: usize,
        memo: &mut HashMap<(usize, usize), Option<usize>>,
    ) -> Option<(usize, usize)> {
        (from..=s.len()).find_map(|st| self.match_at(s, st, true, memo).map(|e| (st, e)))
    }

    fn replace_first(&self, value: &str, replacement: &str) -> String {
        let s: Vec<char> = value.chars().collect();
        let mut memo = HashMap::new();
        match self.find(&s, 0, &mut memo) {
            Some((a, b)) => {
                let mut out: String = s[..a].iter().collect();
                out.push_str(replacement);
                out.extend(&s[b..]);
                out
            }
            None => value.to_string(),
        }
    }

    /// Go's `Regexp.ReplaceAllString`, including its empty-match rules and
    /// `$` template expansion of the replacement.
    fn replace_all(&self, value: &str, replacement: &str) -> String {
        let s: Vec<char> = value.chars().collect();
        let mut memo = HashMap::new();
        let mut out = String::new();
        let mut last_end = 0;
        let mut search = 0;
        while search <= s.len() {
            let Some((a, b)) = self.find(&s, search, &mut memo) else {
                break;
            };
            out.extend(&s[last_end..a]);
            if b > last_end || a == 0 {
                out.push_str(&go_expand_template(replacement, &s[a..b]));
            }
            last_end = b;
            search = if search + 1 > b { search + 1 } else { b };
        }
        out.extend(&s[last_end.min(s.len())..]);
        out
    }
}

/// Go `Regexp.Expand` for a regexp without capture groups: `$$` is `$`,
/// `$0`/`${0}` is the match, every other well-formed reference is empty and
/// a malformed one stays literal.
fn go_expand_template(template: &str, whole: &[char]) -> String {
    let t: Vec<char> = template.chars().collect();
    let mut out = String::new();
    let mut i = 0;
    while i < t.len() {
        if t[i] != '$' {
            out.push(t[i]);
            i += 1;
            continue;
        }
        i += 1;
        if t.get(i) == Some(&'$') {
            out.push('$');
            i += 1;
            continue;
        }
        let brace = t.get(i) == Some(&'{');
        let mut j = if brace { i + 1 } else { i };
        let name_start = j;
        while j < t.len() && (t[j].is_alphabetic() || is_digit(t[j]) || t[j] == '_') {
            j += 1;
        }
        let name: String = t[name_start..j].iter().collect();
        let well_formed = !name.is_empty() && (!brace || t.get(j) == Some(&'}'));
        if !well_formed {
            out.push('$');
            continue;
        }
        if brace {
            j += 1;
        }
        if name.chars().all(|c| c.is_ascii_digit()) && name.trim_start_matches('0').is_empty() {
            out.extend(whole);
        }
        i = j;
    }
    out
}

fn trim_prefix(pattern: &str, value: &str, greedy: bool) -> LexResult<String> {
    let pat = Pattern::compile(pattern)
        .map_err(|e| format!("invalid pattern ({pattern}) in substitution: {e}"))?;
    let s: Vec<char> = value.chars().collect();
    let mut memo = HashMap::new();
    Ok(match pat.match_at(&s, 0, greedy, &mut memo) {
        Some(e) => s[e..].iter().collect(),
        None => value.to_string(),
    })
}

/// Suffix trimming runs the prefix matcher on the reversed value with the
/// reversed pattern (keeping `\x` pairs in order), as BuildKit does.
fn trim_suffix(pattern: &str, value: &str, greedy: bool) -> LexResult<String> {
    let p: Vec<char> = pattern.chars().collect();
    let mut rev = vec!['\0'; p.len()];
    let mut i = 0;
    while i < p.len() {
        let out_idx = p.len() - 1 - i;
        if p[i] == '\\' && i != p.len() - 1 {
            rev[out_idx - 1] = '\\';
            rev[out_idx] = p[i + 1];
            i += 2;
        } else {
            rev[out_idx] = p[i];
            i += 1;
        }
    }
    let rev_pattern: String = rev.into_iter().collect();
    let rev_value: String = value.chars().rev().collect();
    let trimmed = trim_prefix(&rev_pattern, &rev_value, greedy)?;
    Ok(trimmed.chars().rev().collect())
}

/// Go's `strconv.Quote`, close enough for error messages.
pub(crate) fn go_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            '\u{7}' => out.push_str("\\a"),
            '\u{8}' => out.push_str("\\b"),
            '\u{b}' => out.push_str("\\v"),
            '\u{c}' => out.push_str("\\f"),
            c if (c as u32) < 0x20 || c == '\u{7f}' => {
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

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| map.get(k).cloned()
    }

    fn w(word: &str, pairs: &[(&str, &str)]) -> Result<String, String> {
        expand_word(word, '\\', &env(pairs)).map_err(|e| e.message)
    }

    fn ws(word: &str, pairs: &[(&str, &str)]) -> Vec<String> {
        expand_words(word, '\\', &env(pairs)).unwrap()
    }

    /// Cases from BuildKit's `envVarTest` table and the Dockerfile reference.
    #[test]
    fn word_expansion_table() {
        let e = &[
            ("PWD", "/home"),
            ("SHELL", "bash"),
            ("KOREAN", "한국어"),
            ("NULL", ""),
        ];
        let cases: &[(&str, &str)] = &[
            ("a", "a"),
            ("$PWD", "/home"),
            ("${PWD}", "/home"),
            ("'$PWD'", "$PWD"),
            ("\"$PWD\"", "/home"),
            ("\\$PWD", "$PWD"),
            ("\"\\$PWD\"", "$PWD"),
            ("he\\$PWD", "he$PWD"),
            ("he${PWD}", "he/home"),
            ("he\\${}", "he${}"),
            ("he\\${PWD}", "he${PWD}"),
            ("'he'\"llo\"", "hello"),
            ("'he\\llo'", "he\\llo"),
            ("\"he\\llo\"", "he\\llo"),
            ("\"he\\\\llo\"", "he\\llo"),
            ("\"\\\"\"", "\""),
            ("a\\ b", "a b"),
            ("${PWD:-x}", "/home"),
            ("${XX:-x}", "x"),
            ("${XX:-}", ""),
            ("${XX-x}", "x"),
            ("${NULL:-x}", "x"),
            ("${NULL-x}", ""),
            ("${PWD:+x}", "x"),
            ("${XX:+x}", ""),
            ("${NULL:+x}", ""),
            ("${NULL+x}", "x"),
            ("${KOREAN}", "한국어"),
            ("안녕하세요${KOREAN}", "안녕하세요한국어"),
            ("$XX", ""),
            ("$", "$"),
            ("$ x", "$ x"),
            ("$1", ""),
            ("${PWD:-'x y'}", "/home"),
            ("${XX:-'x y'}", "x y"),
            ("${XX:-\"$PWD\"}", "/home"),
            ("${PWD#/}", "home"),
            ("${PWD#*/}", "home"),
            ("${PWD##*/}", "home"),
            ("${PWD%e}", "/hom"),
            ("${PWD%%o*}", "/h"),
            ("${PWD%o*}", "/h"),
            ("${PWD/o/0}", "/h0me"),
            ("${PWD//o/0}", "/h0me"),
            ("${SHELL/a/A}", "bAsh"),
            ("${PWD/x/y}", "/home"),
            ("$PWD$SHELL", "/homebash"),
        ];
        for (input, want) in cases {
            assert_eq!(w(input, e).as_deref(), Ok(*want), "input {input:?}");
        }
    }

    #[test]
    fn pattern_operators_shortest_and_longest() {
        let e = &[("F", "a.tar.gz"), ("P", "/usr/local/bin")];
        assert_eq!(w("${F%.*}", e).unwrap(), "a.tar");
        assert_eq!(w("${F%%.*}", e).unwrap(), "a");
        assert_eq!(w("${F#*.}", e).unwrap(), "tar.gz");
        assert_eq!(w("${F##*.}", e).unwrap(), "gz");
        assert_eq!(w("${P##*/}", e).unwrap(), "bin");
        assert_eq!(w("${P%/*}", e).unwrap(), "/usr/local");
        assert_eq!(w("${F#?}", e).unwrap(), ".tar.gz");
        assert_eq!(w("${F/*./X}", e).unwrap(), "Xgz");
        assert_eq!(w("${F//a/_}", e).unwrap(), "_.t_r.gz");
        // Escaped pattern characters are literal.
        assert_eq!(w("${F#a\\*}", &[("F", "a*b")]).unwrap(), "b");
        assert_eq!(w("${F#a\\?}", &[("F", "a?b")]).unwrap(), "b");
        // `?` and `*` never cross a newline (Go regexp `.`).
        assert_eq!(w("${F#*b}", &[("F", "a\nb")]).unwrap(), "a\nb");
    }

    #[test]
    fn replace_all_uses_go_template_rules() {
        let e = &[("V", "aXa")];
        assert_eq!(w("${V//a/$$}", e).unwrap(), "X");
        assert_eq!(w("${V//a/\\$\\$}", e).unwrap(), "\\$\\$X\\$\\$");
        // Single replacement is plain concatenation.
        assert_eq!(w("${V/a/\\$}", e).unwrap(), "\\$Xa");
        // Empty matches: Go inserts between characters.
        assert_eq!(w("${V//*/-}", &[("V", "")]).unwrap(), "-");
    }

    #[test]
    fn errors() {
        let e: &[(&str, &str)] = &[("NULL", "")];
        assert_eq!(
            w("${XX:?}", e).unwrap_err(),
            "failed to process \"${XX:?}\": XX: is not allowed to be unset"
        );
        assert_eq!(
            w("${XX?oops}", e).unwrap_err(),
            "failed to process \"${XX?oops}\": XX: oops"
        );
        assert_eq!(
            w("${NULL:?}", e).unwrap_err(),
            "failed to process \"${NULL:?}\": NULL: is not allowed to be empty"
        );
        assert_eq!(w("${NULL?}", e).unwrap(), "");
        assert!(w("${a", e)
            .unwrap_err()
            .ends_with("syntax error: missing '}'"));
        assert!(w("${}", e)
            .unwrap_err()
            .ends_with("syntax error: bad substitution"));
        assert!(w("${:a}", e)
            .unwrap_err()
            .ends_with("syntax error: bad substitution"));
        assert!(w("${a b}", e)
            .unwrap_err()
            .ends_with("unsupported modifier ( ) in substitution"));
        assert!(w("${a:x}", e)
            .unwrap_err()
            .ends_with("unsupported modifier (:x) in substitution"));
        assert!(w("${a/b", e).unwrap_err().ends_with("missing '/' in ${}"));
        assert!(w("'abc", e).unwrap_err().contains("matching single-quote"));
        assert!(w("\"abc", e).unwrap_err().contains("matching double-quote"));
        assert!(w("${a#\\x}", e)
            .unwrap_err()
            .contains("invalid escape '\\x'"));
    }

    #[test]
    fn words_split_only_unquoted_whitespace() {
        let e = &[("A", "x y"), ("B", " ")];
        assert_eq!(ws("a b  c", e), ["a", "b", "c"]);
        assert_eq!(ws("$A", e), ["x", "y"]);
        assert_eq!(ws("\"$A\"", e), ["x y"]);
        assert_eq!(ws("'a b' c\\ d", e), ["a b", "c d"]);
        assert_eq!(ws("a${B}b", e), ["a", "b"]);
        assert_eq!(ws("\"\" a", e), ["a"]);
        assert_eq!(ws("80/tcp 443", e), ["80/tcp", "443"]);
    }

    #[test]
    fn backtick_escape() {
        let e = env(&[("A", "1")]);
        assert_eq!(expand_word("`$A$A", '`', &e).unwrap(), "$A1");
        assert_eq!(expand_word("c:\\dir", '`', &e).unwrap(), "c:\\dir");
        assert_eq!(expand_word("\"`\"\"", '`', &e).unwrap(), "\"");
    }

    #[test]
    fn heredoc_raw_expansion_keeps_quotes() {
        let e = env(&[("A", "1")]);
        assert_eq!(expand_heredoc("'$A' \"$A\"\n", &e).unwrap(), "'1' \"1\"\n");
        assert_eq!(expand_heredoc("\\$A \\n\n", &e).unwrap(), "$A n\n");
    }

    #[test]
    fn skip_unset_keeps_references() {
        let opts = Options {
            skip_unset_env: true,
            ..Options::default()
        };
        let e = env(&[]);
        let (r, _) = process("$X ${Y} ${Z:-d} ${V/a/b}", '\\', opts, &e).unwrap();
        assert_eq!(r, "$X ${Y} ${Z:-d} ${V/a/b}");
    }

    #[test]
    fn deep_nesting_is_an_error_not_a_crash() {
        let word = "${a:-".repeat(10_000) + &"}".repeat(10_000);
        let err = w(&word, &[]).unwrap_err();
        assert!(err.contains("nested deeper than 256"), "{err}");
        let ok = "${a:-".repeat(50) + "x" + &"}".repeat(50);
        assert_eq!(w(&ok, &[]).unwrap(), "x");
    }

    #[test]
    fn pathological_patterns_terminate() {
        let v = "a".repeat(400);
        let e = env(&[("V", &v)]);
        let r = expand_word("${V#*a*a*a*a*a*a*a*a*b}", '\\', &e).unwrap();
        assert_eq!(r, v);
    }
}
