//! One moby/patternmatcher pattern.
//!
//! Docker turns a pattern into a Go regular expression (`*` -> `[^/]*`,
//! `?` -> `[^/]`, `**` -> `(.*/)?`, some metacharacters quoted, `[...]` and
//! `\x` passed through) or into a plain exact/prefix/suffix comparison. The
//! quirks of that translation are user-visible (`a**b` does not match
//! `axb`, `[*]` is not "a literal star"), so berth performs the same
//! translation and runs the resulting expression on a small Go-syntax
//! regex engine (Thompson NFA: linear time, no backtracking blow-up on
//! hostile patterns).

use crate::gomatch::decode_rune;

#[derive(Debug, Clone)]
pub(crate) struct Pattern {
    /// The cleaned pattern without its `!`.
    pub(crate) cleaned: String,
    pub(crate) exclusion: bool,
    kind: Kind,
}

#[derive(Debug, Clone)]
enum Kind {
    Exact,
    Prefix(usize),
    Suffix,
    Regex(Program),
}

/// Why a pattern cannot be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct CompileError(pub(crate) String);

impl Pattern {
    /// Compiles an already cleaned pattern (see `IgnoreMatcher::new`).
    pub(crate) fn compile(cleaned: String, exclusion: bool) -> Result<Pattern, CompileError> {
        let (detected, regex) = translate(&cleaned);
        let kind = match detected {
            Detected::Exact => Kind::Exact,
            Detected::Prefix => Kind::Prefix(cleaned.len() - 2),
            Detected::Suffix => Kind::Suffix,
            Detected::Regex => Kind::Regex(Program::compile(&regex)?),
        };
        Ok(Pattern {
            cleaned,
            exclusion,
            kind,
        })
    }

    pub(crate) fn matches(&self, path: &[u8]) -> bool {
        let pat = self.cleaned.as_bytes();
        match &self.kind {
            Kind::Exact => path == pat,
            Kind::Prefix(n) => path.starts_with(&pat[..*n]),
            Kind::Suffix => {
                let suffix = &pat[2..];
                path.ends_with(suffix) || (suffix.first() == Some(&b'/') && path == &suffix[1..])
            }
            Kind::Regex(prog) => prog.is_match(path),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Detected {
    Exact,
    Prefix,
    Suffix,
    Regex,
}

/// patternmatcher's `compile`: the match type and the regex source.
fn translate(pattern: &str) -> (Detected, String) {
    let chars: Vec<char> = pattern.chars().collect();
    let mut re = String::from("^");
    let mut detected = Detected::Exact;
    let mut pos = 0;
    let mut i = 0;
    while pos < chars.len() {
        let ch = chars[pos];
        pos += 1;
        let peek = chars.get(pos).copied();
        if ch == '*' {
            if peek == Some('*') {
                pos += 1;
                // `**/` is treated as `**`.
                if chars.get(pos) == Some(&'/') {
                    pos += 1;
                }
                if pos == chars.len() {
                    if detected == Detected::Exact {
                        detected = Detected::Prefix;
                    } else {
                        re.push_str(".*");
                        detected = Detected::Regex;
                    }
                } else {
                    re.push_str("(.*/)?");
                    detected = Detected::Regex;
                }
                if i == 0 {
                    detected = Detected::Suffix;
                }
            } else {
                re.push_str("[^/]*");
                detected = Detected::Regex;
            }
        } else if ch == '?' {
            re.push_str("[^/]");
            detected = Detected::Regex;
        } else if ".+()|{}$".contains(ch) {
            re.push('\\');
            re.push(ch);
        } else if ch == '\\' {
            if let Some(next) = peek {
                pos += 1;
                re.push('\\');
                re.push(next);
                detected = Detected::Regex;
            } else {
                re.push('\\');
            }
        } else if ch == '[' || ch == ']' {
            re.push(ch);
            detected = Detected::Regex;
        } else {
            re.push(ch);
        }
        i += 1;
    }
    if detected == Detected::Regex {
        re.push('$');
    }
    (detected, re)
}

// ---------------------------------------------------------------------------
// A Go-syntax (RE2) regex subset: literals, escapes, classes (ranges,
// negation, POSIX `[:name:]`, Perl `\d\s\w`), `.`, `^`, `$`, groups and the
// `*`, `+`, `?` repetitions. That covers every expression the translation
// above can produce from a pattern that passed Go's `filepath.Match` check.

#[derive(Debug, Clone)]
enum Node {
    Char(u32),
    Class(Class),
    AnyNotNl,
    Begin,
    End,
    Concat(Vec<Node>),
    Star(Box<Node>),
    Plus(Box<Node>),
    Quest(Box<Node>),
}

#[derive(Debug, Clone, Default)]
struct Class {
    ranges: Vec<(u32, u32)>,
    negated: bool,
}

impl Class {
    fn contains(&self, r: u32) -> bool {
        self.ranges.iter().any(|&(lo, hi)| lo <= r && r <= hi) != self.negated
    }
}

struct Parser<'a> {
    s: &'a [char],
    pos: usize,
}

fn err<T>(msg: impl Into<String>) -> Result<T, CompileError> {
    Err(CompileError(msg.into()))
}

impl Parser<'_> {
    fn peek(&self) -> Option<char> {
        self.s.get(self.pos).copied()
    }

    /// concat := (atom repetition?)*, up to `)` or the end.
    fn parse_concat(&mut self, depth: usize) -> Result<Node, CompileError> {
        if depth > 100 {
            return err("expression nests too deeply");
        }
        let mut items: Vec<Node> = Vec::new();
        while let Some(c) = self.peek() {
            match c {
                ')' => break,
                '|' => return err("alternation `|` is not supported"),
                '*' | '+' | '?' => {
                    self.pos += 1;
                    let Some(last) = items.pop() else {
                        return err(format!("missing argument to repetition operator `{c}`"));
                    };
                    if matches!(last, Node::Star(_) | Node::Plus(_) | Node::Quest(_)) {
                        return err(format!("invalid nested repetition operator `{c}`"));
                    }
                    let b = Box::new(last);
                    items.push(match c {
                        '*' => Node::Star(b),
                        '+' => Node::Plus(b),
                        _ => Node::Quest(b),
                    });
                }
                '(' => {
                    self.pos += 1;
                    let inner = self.parse_concat(depth + 1)?;
                    if self.peek() != Some(')') {
                        return err("missing closing )");
                    }
                    self.pos += 1;
                    items.push(inner);
                }
                '[' => {
                    self.pos += 1;
                    items.push(Node::Class(self.parse_class()?));
                }
                '.' => {
                    self.pos += 1;
                    items.push(Node::AnyNotNl);
                }
                '^' => {
                    self.pos += 1;
                    items.push(Node::Begin);
                }
                '$' => {
                    self.pos += 1;
                    items.push(Node::End);
                }
                '\\' => {
                    self.pos += 1;
                    items.push(match self.parse_escape()? {
                        Esc::Char(r) => Node::Char(r),
                        Esc::Class(c) => Node::Class(c),
                    });
                }
                '{' => return err("repetition counts `{n,m}` are not supported"),
                _ => {
                    self.pos += 1;
                    items.push(Node::Char(c as u32));
                }
            }
        }
        Ok(Node::Concat(items))
    }

    fn parse_escape(&mut self) -> Result<Esc, CompileError> {
        let Some(c) = self.peek() else {
            return err("trailing backslash at end of expression");
        };
        self.pos += 1;
        if c.is_ascii() && !c.is_ascii_alphanumeric() {
            return Ok(Esc::Char(c as u32));
        }
        let ch = |r: u8| Ok(Esc::Char(u32::from(r)));
        match c {
            'a' => ch(7),
            'f' => ch(12),
            't' => ch(b'\t'),
            'n' => ch(b'\n'),
            'r' => ch(b'\r'),
            'v' => ch(11),
            'd' | 'D' | 's' | 'S' | 'w' | 'W' => {
                let mut class = Class {
                    ranges: perl_class(c.to_ascii_lowercase()),
                    negated: false,
                };
                if c.is_ascii_uppercase() {
                    class.negated = true;
                }
                Ok(Esc::Class(class))
            }
            _ => err(format!("escape sequence `\\{c}` is not supported")),
        }
    }

    fn parse_class(&mut self) -> Result<Class, CompileError> {
        let mut class = Class::default();
        if self.peek() == Some('^') {
            class.negated = true;
            self.pos += 1;
        }
        let mut first = true;
        loop {
            let Some(c) = self.peek() else {
                return err("missing closing ]");
            };
            if c == ']' && !first {
                self.pos += 1;
                return Ok(class);
            }
            first = false;
            // POSIX class `[:alpha:]`, found like Go does: the nearest `:]`.
            if c == '[' && self.s.get(self.pos + 1) == Some(&':') {
                let rest = &self.s[self.pos + 2..];
                if let Some(end) = rest.windows(2).position(|w| w == [':', ']']) {
                    let name: String = rest[..end].iter().collect();
                    let (neg, name) = match name.strip_prefix('^') {
                        Some(n) => (true, n.to_string()),
                        None => (false, name),
                    };
                    let Some(ranges) = posix_class(&name) else {
                        return err(format!("invalid character class range `[:{name}:]`"));
                    };
                    if neg {
                        class.ranges.extend(negate(&ranges));
                    } else {
                        class.ranges.extend(ranges);
                    }
                    self.pos += 2 + end + 2;
                    continue;
                }
            }
            let lo = match self.parse_class_char()? {
                Esc::Char(r) => r,
                Esc::Class(c) => {
                    if c.negated {
                        class.ranges.extend(negate(&c.ranges));
                    } else {
                        class.ranges.extend(c.ranges);
                    }
                    continue;
                }
            };
            let mut hi = lo;
            if self.peek() == Some('-') && self.s.get(self.pos + 1).is_some_and(|&n| n != ']') {
                self.pos += 1;
                hi = match self.parse_class_char()? {
                    Esc::Char(r) => r,
                    Esc::Class(_) => return err("invalid character class range"),
                };
                if hi < lo {
                    return err("invalid character class range");
                }
            }
            class.ranges.push((lo, hi));
        }
    }

    fn parse_class_char(&mut self) -> Result<Esc, CompileError> {
        let Some(c) = self.peek() else {
            return err("missing closing ]");
        };
        self.pos += 1;
        if c == '\\' {
            return self.parse_escape();
        }
        Ok(Esc::Char(c as u32))
    }
}

enum Esc {
    Char(u32),
    Class(Class),
}

fn perl_class(c: char) -> Vec<(u32, u32)> {
    let r = |a: u8, b: u8| (u32::from(a), u32::from(b));
    match c {
        'd' => vec![r(b'0', b'9')],
        's' => vec![r(b'\t', b'\n'), r(12, 13), r(b' ', b' ')],
        _ => vec![r(b'0', b'9'), r(b'A', b'Z'), r(b'_', b'_'), r(b'a', b'z')],
    }
}

fn posix_class(name: &str) -> Option<Vec<(u32, u32)>> {
    let r = |a: u8, b: u8| (u32::from(a), u32::from(b));
    Some(match name {
        "alnum" => vec![r(b'0', b'9'), r(b'A', b'Z'), r(b'a', b'z')],
        "alpha" => vec![r(b'A', b'Z'), r(b'a', b'z')],
        "ascii" => vec![r(0, 0x7F)],
        "blank" => vec![r(b'\t', b'\t'), r(b' ', b' ')],
        "cntrl" => vec![r(0, 0x1F), r(0x7F, 0x7F)],
        "digit" => vec![r(b'0', b'9')],
        "graph" => vec![r(b'!', b'~')],
        "lower" => vec![r(b'a', b'z')],
        "print" => vec![r(b' ', b'~')],
        "punct" => vec![r(b'!', b'/'), r(b':', b'@'), r(b'[', b'`'), r(b'{', b'~')],
        "space" => vec![r(b'\t', b'\r'), r(b' ', b' ')],
        "upper" => vec![r(b'A', b'Z')],
        "word" => vec![r(b'0', b'9'), r(b'A', b'Z'), r(b'a', b'z'), r(b'_', b'_')],
        "xdigit" => vec![r(b'0', b'9'), r(b'A', b'F'), r(b'a', b'f')],
        _ => return None,
    })
}

fn negate(ranges: &[(u32, u32)]) -> Vec<(u32, u32)> {
    let mut sorted = ranges.to_vec();
    sorted.sort_unstable();
    let mut out = Vec::new();
    let mut next = 0u32;
    for (lo, hi) in sorted {
        if lo > next {
            out.push((next, lo - 1));
        }
        next = next.max(hi.saturating_add(1));
    }
    if next <= 0x10FFFF {
        out.push((next, 0x10FFFF));
    }
    out
}

#[derive(Debug, Clone)]
enum Inst {
    Char(u32),
    Class(Class),
    AnyNotNl,
    Split(usize, usize),
    Jmp(usize),
    Begin,
    End,
    Match,
}

/// A compiled expression, matched like Go's `Regexp.MatchString`.
#[derive(Debug, Clone)]
pub(crate) struct Program {
    insts: Vec<Inst>,
}

impl Program {
    fn compile(source: &str) -> Result<Program, CompileError> {
        let chars: Vec<char> = source.chars().collect();
        let mut p = Parser { s: &chars, pos: 0 };
        let node = p.parse_concat(0)?;
        if p.pos != chars.len() {
            return err("unexpected )");
        }
        let mut insts = Vec::new();
        emit(&node, &mut insts);
        insts.push(Inst::Match);
        Ok(Program { insts })
    }

    /// Unanchored search (the expression carries its own `^`), accepting as
    /// soon as `Match` is reachable, on runes decoded like Go.
    fn is_match(&self, input: &[u8]) -> bool {
        let n = self.insts.len();
        let mut clist = ThreadList::new(n);
        let mut nlist = ThreadList::new(n);
        let mut pos = 0;
        loop {
            // A new thread may start at every position (unanchored search).
            self.add(&mut clist, 0, pos, input.len());
            if clist.has_match {
                return true;
            }
            if pos >= input.len() {
                return false;
            }
            let (r, w) = decode_rune(&input[pos..]);
            nlist.clear();
            for &pc in &clist.dense {
                let ok = match &self.insts[pc] {
                    Inst::Char(c) => *c == r,
                    Inst::Class(c) => c.contains(r),
                    Inst::AnyNotNl => r != u32::from(b'\n'),
                    _ => false,
                };
                if ok {
                    self.add(&mut nlist, pc + 1, pos + w, input.len());
                }
            }
            std::mem::swap(&mut clist, &mut nlist);
            pos += w;
        }
    }

    fn add(&self, list: &mut ThreadList, pc: usize, pos: usize, len: usize) {
        // Explicit stack: deep epsilon chains must not overflow the stack.
        let mut stack = vec![pc];
        while let Some(pc) = stack.pop() {
            if !list.insert(pc) {
                continue;
            }
            match self.insts[pc] {
                Inst::Jmp(t) => stack.push(t),
                Inst::Split(a, b) => {
                    stack.push(b);
                    stack.push(a);
                }
                Inst::Begin => {
                    if pos == 0 {
                        stack.push(pc + 1);
                    }
                }
                Inst::End => {
                    if pos == len {
                        stack.push(pc + 1);
                    }
                }
                Inst::Match => list.has_match = true,
                _ => list.dense.push(pc),
            }
        }
    }
}

struct ThreadList {
    seen: Vec<bool>,
    dense: Vec<usize>,
    touched: Vec<usize>,
    has_match: bool,
}

impl ThreadList {
    fn new(n: usize) -> Self {
        ThreadList {
            seen: vec![false; n],
            dense: Vec::new(),
            touched: Vec::new(),
            has_match: false,
        }
    }
    fn insert(&mut self, pc: usize) -> bool {
        if self.seen[pc] {
            return false;
        }
        self.seen[pc] = true;
        self.touched.push(pc);
        true
    }
    fn clear(&mut self) {
        for pc in self.touched.drain(..) {
            self.seen[pc] = false;
        }
        self.dense.clear();
        self.has_match = false;
    }
}

fn emit(node: &Node, out: &mut Vec<Inst>) {
    match node {
        Node::Char(c) => out.push(Inst::Char(*c)),
        Node::Class(c) => out.push(Inst::Class(c.clone())),
        Node::AnyNotNl => out.push(Inst::AnyNotNl),
        Node::Begin => out.push(Inst::Begin),
        Node::End => out.push(Inst::End),
        Node::Concat(items) => items.iter().for_each(|n| emit(n, out)),
        Node::Star(inner) => {
            let split = out.len();
            out.push(Inst::Split(0, 0));
            emit(inner, out);
            out.push(Inst::Jmp(split));
            let after = out.len();
            out[split] = Inst::Split(split + 1, after);
        }
        Node::Plus(inner) => {
            let start = out.len();
            emit(inner, out);
            let after = out.len() + 1;
            out.push(Inst::Split(start, after));
        }
        Node::Quest(inner) => {
            let split = out.len();
            out.push(Inst::Split(0, 0));
            emit(inner, out);
            let after = out.len();
            out[split] = Inst::Split(split + 1, after);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(pattern: &str, path: &str) -> bool {
        Pattern::compile(pattern.to_string(), false)
            .unwrap()
            .matches(path.as_bytes())
    }

    #[test]
    fn translation_matches_patternmatcher() {
        assert_eq!(translate("foo"), (Detected::Exact, "^foo".into()));
        assert_eq!(translate("foo/**").0, Detected::Prefix);
        assert_eq!(translate("**/foo").0, Detected::Suffix);
        assert_eq!(translate("**").0, Detected::Suffix);
        assert_eq!(translate("a.b").0, Detected::Exact);
        assert_eq!(translate("*.go"), (Detected::Regex, "^[^/]*\\.go$".into()));
        assert_eq!(translate("a/**/b"), (Detected::Regex, "^a/(.*/)?b$".into()));
        assert_eq!(translate("a\\*b"), (Detected::Regex, "^a\\*b$".into()));
        assert_eq!(
            translate("**/*.go"),
            (Detected::Regex, "^(.*/)?[^/]*\\.go$".into())
        );
    }

    #[test]
    fn go_regex_quirks_are_kept() {
        // `**` inside a component means "(.*/)?": it needs a separator.
        assert!(m("a**b", "ab"));
        assert!(m("a**b", "a/x/b"));
        assert!(!m("a**b", "axb"));
        // `[*]` becomes `[[^/]*]`: a class of `[`, `^`, `/` repeated, then `]`.
        assert!(m("[*]", "]"));
        assert!(m("[*]", "[[]"));
        assert!(!m("[*]", "*"));
        // Regex escapes pass through: `\d` is a digit class in Go.
        assert!(m("file\\d", "file7"));
        assert!(!m("file\\d", "filed"));
        // POSIX classes are recognised inside brackets.
        assert!(m("[[:digit:]]x", "5x"));
        // Metacharacters of regexes that are not glob characters are quoted.
        assert!(m("a+(b)|{c}$*", "a+(b)|{c}$zz"));
        assert!(!m("a.c*", "abc"));
    }

    #[test]
    fn unsupported_escapes_are_errors() {
        assert!(Pattern::compile("a\\b*".into(), false).is_err());
        assert!(Pattern::compile("[z-a]*".into(), false).is_err());
    }

    #[test]
    fn hostile_patterns_run_in_linear_time() {
        let p = "*a".repeat(200);
        let path = "a".repeat(5000) + "b";
        assert!(!m(&p, &path));
    }
}
