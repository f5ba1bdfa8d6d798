//! Dockerfile parsing and variable expansion that follow BuildKit's
//! dockerfile frontend (`frontend/dockerfile/parser`, `instructions`,
//! `shell`), so that berth builds what `DOCKER_BUILDKIT=1 docker build` builds.
//!
//! ```
//! let df = berth_dockerfile::parse("FROM alpine AS base\nENV A=1 B=\"two words\"\n").unwrap();
//! let env = |_: &str| None;
//! let stage = &df.stages[0];
//! assert_eq!(stage.name.as_deref(), Some("base"));
//! let env_instr = stage.instructions[0].expand(df.escape, &env).unwrap();
//! ```
//!
//! # What is parsed
//!
//! [`parse`] handles parser directives (`# syntax=`, `# escape=`, `# check=`),
//! comments, line continuations (comment and blank lines inside a
//! continuation are skipped), heredocs for RUN/COPY/ADD (also under ONBUILD),
//! JSON exec form (a JSON array of strings; any other text is shell form, a
//! JSON array with non-strings is an error), per-instruction flags, and the
//! split into global ARGs and [`Stage`]s. Arguments stay raw: quotes and
//! `$` references are resolved by expansion.
//!
//! # What is expanded
//!
//! [`Instruction::expand`] expands exactly the fields BuildKit expands. All
//! fields of one instruction see the same variables, those in effect before
//! the instruction: `ENV a=1 b=$a` sets `b` to the *old* `a`. The caller owns
//! the variable scope (global ARGs for FROM, then the stage's ARG/ENV).
//!
//! | Instruction | Expanded | Literal |
//! |---|---|---|
//! | FROM | image and `--platform` via [`Stage::expand_base`] / [`Stage::expand_platform`] (global ARGs only) | stage name |
//! | ARG | name, default | |
//! | ENV, LABEL | keys and values | |
//! | COPY | sources, dest, `--chown`, `--chmod`; heredoc bodies unless the terminator was quoted (quotes kept, `\` escapes) | `--from`, `--exclude` |
//! | ADD | as COPY, plus `--checksum` | `--exclude` |
//! | EXPOSE | each word, split into several on whitespace | |
//! | VOLUME, USER, WORKDIR, STOPSIGNAL | each value | |
//! | RUN | `--mount` values (field by field, then parsed into [`Mount`]), `--network` | the command and heredoc bodies (the shell expands them) |
//! | CMD, ENTRYPOINT, SHELL, HEALTHCHECK, MAINTAINER, ONBUILD | | everything |
//!
//! The shell lexer itself is in [`shell`]; [`shell::expand_word`] is BuildKit's
//! `ProcessWord`, [`shell::expand_words`] its `ProcessWords`.

pub mod checks;
mod duration;
mod error;
mod expand;
mod instructions;
mod mount;
mod parser;
pub mod shell;
mod suggest;

pub use checks::{CheckConfig, Checks, LintWarning};
pub use error::{Location, ParseError};
pub use instructions::{
    parse, ArgDef, Command, CommandLine, CopyInstr, Dockerfile, Healthcheck, InlineSource,
    Instruction, KeyValue, OnbuildInstr, RunInstr, RunMount, Stage,
};
pub use mount::{Mount, MountType, Sharing};
pub use parser::{Directive, Heredoc, Warning};
pub use shell::{expand_heredoc, expand_word, expand_words, ExpandError, Lookup};

/// BuildKit `ParseHeredoc` on one word: `Some` when the whole word is a
/// heredoc opener (`<<EOF`, `<<-'EOF'`, `3<<EOF`), with its name and flags
/// (the body is empty). Used by the builder to tell `RUN <<EOF` (the body
/// is the script) from `RUN <<EOF cmd` (the shell gets the heredoc).
pub fn parse_heredoc_word(word: &str) -> Option<Heredoc> {
    parser::parse_heredoc(word).ok().flatten()
}

#[cfg(test)]
mod tests {
    #[test]
    fn heredoc_words() {
        assert_eq!(super::parse_heredoc_word("<<EOF").unwrap().name, "EOF");
        assert!(super::parse_heredoc_word("<<-'EOF'").unwrap().chomp);
        assert!(super::parse_heredoc_word("<<EOF bash").is_none());
        assert!(super::parse_heredoc_word("cat <<EOF").is_none());
    }
}
