//! Instructions after variable expansion: what the stage executor applies.
//! [`crate::lower`] turns parsed Dockerfile instructions into these, so the
//! executor does not depend on the parser's syntax tree.

/// A command line: shell form (run through the stage's `SHELL`) or exec form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CommandLine {
    Shell(String),
    Exec(Vec<String>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Heredoc {
    pub name: String,
    pub content: String,
    /// The body may hold variables the shell expands (unquoted delimiter).
    pub expand: bool,
    /// `<<-`: leading tabs are not yet stripped from `content` (RUN keeps
    /// the raw body, as BuildKit hands it to the shell).
    pub chomp: bool,
}

impl Heredoc {
    /// The body with `<<-` tabs stripped.
    pub fn body(&self) -> String {
        if self.chomp {
            self.content
                .split_inclusive('\n')
                .map(|l| l.trim_start_matches('\t'))
                .collect()
        } else {
            self.content.clone()
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunOp {
    pub command: CommandLine,
    pub mounts: Vec<berth_dockerfile::Mount>,
    /// `default`, `none`, `host`.
    pub network: Option<String>,
    pub heredocs: Vec<Heredoc>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CopyOp {
    /// ADD rather than COPY (archives are extracted).
    pub add: bool,
    pub sources: Vec<String>,
    pub dest: String,
    pub from: Option<String>,
    pub chown: Option<String>,
    pub chmod: Option<String>,
    pub link: bool,
    pub parents: bool,
    pub excludes: Vec<String>,
    /// `COPY <<EOF /dest`: inline files.
    pub heredocs: Vec<Heredoc>,
    pub checksum: Option<String>,
    pub keep_git_dir: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct HealthcheckOp {
    /// `None` for `HEALTHCHECK NONE`.
    pub test: Option<CommandLine>,
    /// Durations in nanoseconds.
    pub interval: Option<i64>,
    pub timeout: Option<i64>,
    pub start_period: Option<i64>,
    pub start_interval: Option<i64>,
    pub retries: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    Run(RunOp),
    Copy(CopyOp),
    Env(Vec<(String, String)>),
    Arg(Vec<(String, Option<String>)>),
    Label(Vec<(String, String)>),
    Expose(Vec<String>),
    Volume(Vec<String>),
    User(String),
    Workdir(String),
    Cmd(CommandLine),
    Entrypoint(CommandLine),
    Shell(Vec<String>),
    StopSignal(String),
    Healthcheck(HealthcheckOp),
    /// The trigger as written (run when a later build uses this image).
    OnBuild(String),
    Maintainer(String),
}
