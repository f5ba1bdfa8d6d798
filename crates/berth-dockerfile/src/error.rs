//! Parse errors with source locations.

use std::fmt;

/// Where an instruction (or an error) sits in the Dockerfile. Lines and
/// columns are 1-based; the column counts characters of the start line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Location {
    pub start_line: usize,
    pub end_line: usize,
    pub column: usize,
}

/// A Dockerfile that BuildKit would reject.
///
/// `Display` renders `Dockerfile:LINE:COL: message`; [`ParseError::render`]
/// takes the caller's file name and appends the offending source text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError {
    pub location: Location,
    pub message: String,
    /// The source text of the offending instruction (or line).
    pub text: String,
}

impl ParseError {
    pub(crate) fn new(
        location: Location,
        message: impl Into<String>,
        text: impl Into<String>,
    ) -> Self {
        ParseError {
            location,
            message: message.into(),
            text: text.into(),
        }
    }

    /// `FILE:LINE:COL: message`, followed by the offending lines, each
    /// prefixed with its line number.
    pub fn render(&self, file_name: &str) -> String {
        let mut out = format!(
            "{file_name}:{}:{}: {}",
            self.location.start_line, self.location.column, self.message
        );
        for (i, line) in self.text.lines().enumerate() {
            out.push_str(&format!("\n {:>4} | {line}", self.location.start_line + i));
        }
        out
    }
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Dockerfile:{}:{}: {}",
            self.location.start_line, self.location.column, self.message
        )
    }
}

impl std::error::Error for ParseError {}
