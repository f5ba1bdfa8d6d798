//! Typed instructions (BuildKit `frontend/dockerfile/instructions/parse.go`):
//! flags, argument counts and the stage split.

use std::collections::HashMap;
use std::time::Duration;

use crate::error::{Location, ParseError};
use crate::mount;
use crate::parser::{self, Directive, Heredoc, Node, Warning};
use crate::suggest;

/// A parsed Dockerfile.
#[derive(Debug, Clone, PartialEq)]
pub struct Dockerfile {
    /// The escape character (`\` or the `# escape=` directive's value).
    pub escape: char,
    pub directives: Vec<Directive>,
    /// ARG instructions before the first FROM (BuildKit's "meta args").
    pub global_args: Vec<Instruction>,
    pub stages: Vec<Stage>,
    pub warnings: Vec<Warning>,
}

impl Dockerfile {
    /// The value of the `# syntax=` directive, if any.
    pub fn syntax(&self) -> Option<&str> {
        self.directive("syntax")
    }

    /// The value of a parser directive (`syntax`, `escape`, `check`).
    pub fn directive(&self, name: &str) -> Option<&str> {
        self.directives
            .iter()
            .find(|d| d.name == name)
            .map(|d| d.value.as_str())
    }

    /// Finds a stage by name (case-insensitive, like BuildKit) or index.
    pub fn stage(&self, name_or_index: &str) -> Option<(usize, &Stage)> {
        let lower = name_or_index.to_ascii_lowercase();
        if let Some(found) = self
            .stages
            .iter()
            .enumerate()
            .find(|(_, s)| s.name.as_deref() == Some(lower.as_str()))
        {
            return Some(found);
        }
        let index: usize = name_or_index.parse().ok()?;
        self.stages.get(index).map(|s| (index, s))
    }
}

/// One build stage: a FROM and the instructions up to the next FROM.
#[derive(Debug, Clone, PartialEq)]
pub struct Stage {
    /// The `AS` name, lowercased.
    pub name: Option<String>,
    /// The image or stage name as written (expand with [`Stage::expand_base`]).
    pub base: String,
    /// The `--platform` value as written.
    pub platform: Option<String>,
    pub instructions: Vec<Instruction>,
    pub location: Location,
    /// The FROM line.
    pub original: String,
}

/// One instruction with its source location.
#[derive(Debug, Clone, PartialEq)]
pub struct Instruction {
    pub location: Location,
    /// The logical line (continuations joined), trimmed: BuildKit's source code.
    pub original: String,
    pub command: Command,
    /// The comment lines right before it (BuildKit's `PrevComment`), where
    /// a `# check=...` line changes the checks for this instruction alone.
    pub comments: Vec<String>,
}

/// Shell form (a string for the configured SHELL) or exec form (argv).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CommandLine {
    /// Not valid JSON: the text as written (empty when the instruction had no arguments).
    Shell(String),
    /// A JSON array of strings.
    Exec(Vec<String>),
}

/// `KEY=value` of ENV/LABEL, raw (quotes kept) until expanded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyValue {
    pub key: String,
    pub value: String,
}

/// `ARG name[=default]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArgDef {
    pub name: String,
    pub default: Option<String>,
}

/// A heredoc source of COPY/ADD (BuildKit `SourceContent`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InlineSource {
    /// The heredoc name, used as the file name.
    pub name: String,
    /// The body (tabs already stripped for `<<-`).
    pub data: String,
    /// Whether `$` references in `data` are expanded.
    pub expand: bool,
}

/// COPY and ADD. Flags that belong to only one of them stay at their
/// defaults for the other (`from` is COPY-only; `keep_git_dir`, `checksum`
/// are ADD-only).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CopyInstr {
    /// Source paths (heredoc sources are in `inline`).
    pub sources: Vec<String>,
    pub inline: Vec<InlineSource>,
    pub dest: String,
    pub from: Option<String>,
    pub chown: Option<String>,
    pub chmod: Option<String>,
    pub link: bool,
    pub parents: bool,
    pub excludes: Vec<String>,
    pub keep_git_dir: bool,
    pub checksum: Option<String>,
    /// True when the arguments were a JSON array.
    pub json: bool,
}

/// A `RUN --mount` value: the raw text, and the typed mount once expanded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunMount {
    pub raw: String,
    /// `None` until [`Instruction::expand`] has run.
    pub parsed: Option<mount::Mount>,
}

/// RUN.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunInstr {
    pub command: CommandLine,
    /// Heredocs in order (bodies unexpanded: the shell expands them).
    pub heredocs: Vec<Heredoc>,
    pub mounts: Vec<RunMount>,
    /// `--network` (`default`, `none`, `host`), raw until expanded.
    pub network: Option<String>,
    /// `--security` (`sandbox` or `insecure`).
    pub security: Option<String>,
    /// `--device` values as written.
    pub devices: Vec<String>,
}

/// HEALTHCHECK.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Healthcheck {
    /// `HEALTHCHECK NONE`: disable the base image's check.
    None,
    Cmd {
        command: CommandLine,
        interval: Option<Duration>,
        timeout: Option<Duration>,
        start_period: Option<Duration>,
        start_interval: Option<Duration>,
        retries: Option<u32>,
    },
}

/// ONBUILD: BuildKit stores the trigger as text and parses it only when a
/// child build runs it, so a bad trigger is not an error here.
#[derive(Debug, Clone, PartialEq)]
pub struct OnbuildInstr {
    /// The trigger text that goes into the image config (heredocs appended).
    pub expression: String,
    /// The trigger parsed now, or the error the child build will report.
    pub trigger: Result<Box<Instruction>, ParseError>,
}

/// The instruction kinds and their arguments, raw (unexpanded).
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    Add(CopyInstr),
    Arg(Vec<ArgDef>),
    Cmd(CommandLine),
    Copy(CopyInstr),
    Entrypoint(CommandLine),
    Env {
        pairs: Vec<KeyValue>,
        /// Written as `ENV key value` (one pair, value = rest of line).
        legacy: bool,
    },
    Expose(Vec<String>),
    Healthcheck(Healthcheck),
    Label {
        pairs: Vec<KeyValue>,
        legacy: bool,
    },
    Maintainer(String),
    Onbuild(OnbuildInstr),
    Run(RunInstr),
    Shell(Vec<String>),
    StopSignal(String),
    User(String),
    Volume(Vec<String>),
    Workdir(String),
}

impl Command {
    /// The instruction name in upper case.
    pub fn name(&self) -> &'static str {
        match self {
            Command::Add(_) => "ADD",
            Command::Arg(_) => "ARG",
            Command::Cmd(_) => "CMD",
            Command::Copy(_) => "COPY",
            Command::Entrypoint(_) => "ENTRYPOINT",
            Command::Env { .. } => "ENV",
            Command::Expose(_) => "EXPOSE",
            Command::Healthcheck(_) => "HEALTHCHECK",
            Command::Label { .. } => "LABEL",
            Command::Maintainer(_) => "MAINTAINER",
            Command::Onbuild(_) => "ONBUILD",
            Command::Run(_) => "RUN",
            Command::Shell(_) => "SHELL",
            Command::StopSignal(_) => "STOPSIGNAL",
            Command::User(_) => "USER",
            Command::Volume(_) => "VOLUME",
            Command::Workdir(_) => "WORKDIR",
        }
    }
}

const INSTRUCTIONS: &[&str] = &[
    "ADD",
    "ARG",
    "CMD",
    "COPY",
    "ENTRYPOINT",
    "ENV",
    "EXPOSE",
    "FROM",
    "HEALTHCHECK",
    "LABEL",
    "MAINTAINER",
    "ONBUILD",
    "RUN",
    "SHELL",
    "STOPSIGNAL",
    "USER",
    "VOLUME",
    "WORKDIR",
];

/// Parses a Dockerfile. Errors carry the location of the offending
/// instruction; see [`ParseError::render`].
pub fn parse(src: &str) -> Result<Dockerfile, ParseError> {
    let parsed = parser::parse_lines(src)?;
    let escape = parsed.escape;
    let mut global_args = Vec::new();
    let mut stages: Vec<Stage> = Vec::new();
    for node in &parsed.nodes {
        let err = |msg: String| ParseError::new(node.location, msg, node.source.clone());
        if node.cmd.eq_ignore_ascii_case("from") {
            stages.push(parse_from(node).map_err(err)?);
            continue;
        }
        let instr = parse_instruction(node, escape).map_err(err)?;
        match stages.last_mut() {
            Some(stage) => stage.instructions.push(instr),
            None if matches!(instr.command, Command::Arg(_)) => global_args.push(instr),
            None => {
                return Err(err(format!(
                    "no build stage in current context: {} must come after a FROM instruction (only ARG may precede the first FROM)",
                    instr.command.name()
                )))
            }
        }
    }
    if stages.is_empty() {
        let last = parsed.nodes.last().map(|n| n.location).unwrap_or_default();
        return Err(ParseError::new(
            last,
            "dockerfile contains no stages to build: add a FROM instruction",
            "",
        ));
    }
    Ok(Dockerfile {
        escape,
        directives: parsed.directives,
        global_args,
        stages,
        warnings: parsed.warnings,
    })
}

#[derive(Clone, Copy, PartialEq)]
enum FlagKind {
    Bool,
    Str,
    Strs,
}

#[derive(Default)]
struct Flags {
    bools: HashMap<&'static str, bool>,
    strs: HashMap<&'static str, String>,
    lists: HashMap<&'static str, Vec<String>>,
}

impl Flags {
    fn bool(&self, name: &str) -> bool {
        self.bools.get(name).copied().unwrap_or(false)
    }
    fn str(&self, name: &str) -> Option<String> {
        self.strs.get(name).cloned()
    }
    fn list(&mut self, name: &str) -> Vec<String> {
        self.lists.remove(name).unwrap_or_default()
    }
}

/// BuildKit `BFlags.Parse`.
fn parse_flags(args: &[String], spec: &[(&'static str, FlagKind)]) -> Result<Flags, String> {
    let mut flags = Flags::default();
    let mut used: Vec<&str> = Vec::new();
    for arg in args {
        let Some(body) = arg.strip_prefix("--") else {
            return Err(format!("arg should start with -- : {arg}"));
        };
        if body.is_empty() {
            break;
        }
        let (name, value) = match body.split_once('=') {
            Some((n, v)) => (n, Some(v)),
            None => (body, None),
        };
        let Some(&(key, kind)) = spec.iter().find(|(n, _)| *n == name) else {
            let known: Vec<String> = spec.iter().map(|(n, _)| n.to_string()).collect();
            let mut msg = format!("unknown flag: {name}");
            if let Some(s) = suggest::closest(name, &known) {
                msg.push_str(&format!(" (did you mean {s}?)"));
            }
            return Err(msg);
        };
        if used.contains(&key) && kind != FlagKind::Strs {
            return Err(format!("duplicate flag specified: {name}"));
        }
        used.push(key);
        match kind {
            FlagKind::Bool => {
                let v = match value {
                    Some("") => return Err(format!("missing a value on flag: {name}")),
                    None => true,
                    Some(v) => match v.to_ascii_lowercase().as_str() {
                        "true" => true,
                        "false" => false,
                        _ => {
                            return Err(format!(
                                "expecting boolean value for flag {name}, not: {v}"
                            ))
                        }
                    },
                };
                flags.bools.insert(key, v);
            }
            FlagKind::Str => {
                let v = value.ok_or_else(|| format!("missing a value on flag: {name}"))?;
                flags.strs.insert(key, v.to_string());
            }
            FlagKind::Strs => {
                let v = value.ok_or_else(|| format!("missing a value on flag: {name}"))?;
                flags.lists.entry(key).or_default().push(v.to_string());
            }
        }
    }
    Ok(flags)
}

fn parse_from(node: &Node) -> Result<Stage, String> {
    let args = &node.args;
    let name = match args.len() {
        3 if args[1].eq_ignore_ascii_case("as") => {
            let name = args[2].to_ascii_lowercase();
            if !valid_stage_name(&name) {
                return Err(format!(
                    "invalid name for build stage: {}, name can't start with a number or contain symbols",
                    crate::shell::go_quote(&args[2])
                ));
            }
            Some(name)
        }
        1 => None,
        _ => {
            return Err("FROM requires either one or three arguments (FROM image [AS name])".into())
        }
    };
    let flags = parse_flags(&node.flags, &[("platform", FlagKind::Str)])?;
    Ok(Stage {
        name,
        base: args[0].clone(),
        platform: flags.str("platform"),
        instructions: Vec::new(),
        location: node.location,
        original: node.original.trim().to_string(),
    })
}

/// `^[a-z][a-z0-9-_.]*$`
fn valid_stage_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_lowercase())
        && chars
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '-' | '_' | '.'))
}

fn command_line(args: &[String], json: bool) -> CommandLine {
    if json {
        CommandLine::Exec(args.to_vec())
    } else {
        CommandLine::Shell(args.join(" "))
    }
}

fn exactly_one(node: &Node, name: &str) -> Result<String, String> {
    if node.args.len() != 1 {
        return Err(format!("{name} requires exactly one argument"));
    }
    Ok(node.args[0].clone())
}

fn no_flags(node: &Node) -> Result<(), String> {
    parse_flags(&node.flags, &[]).map(|_| ())
}

fn key_values(node: &Node, name: &str) -> Result<Vec<KeyValue>, String> {
    if node.args.is_empty() {
        return Err(format!("{name} requires at least one argument"));
    }
    node.args
        .chunks(2)
        .map(|kv| {
            if kv[0].is_empty() {
                return Err(format!("{name} names can not be blank"));
            }
            Ok(KeyValue {
                key: kv[0].clone(),
                value: kv.get(1).cloned().unwrap_or_default(),
            })
        })
        .collect()
}

pub(crate) fn parse_instruction(node: &Node, escape: char) -> Result<Instruction, String> {
    let lower = node.cmd.to_ascii_lowercase();
    let command = match lower.as_str() {
        "env" => {
            no_flags(node)?;
            Command::Env {
                pairs: key_values(node, "ENV")?,
                legacy: node.legacy_kv,
            }
        }
        "label" => {
            no_flags(node)?;
            Command::Label {
                pairs: key_values(node, "LABEL")?,
                legacy: node.legacy_kv,
            }
        }
        "maintainer" => {
            let m = exactly_one(node, "MAINTAINER")?;
            no_flags(node)?;
            Command::Maintainer(m)
        }
        "add" | "copy" => Command::from_copy(node, lower == "add")?,
        "onbuild" => parse_onbuild(node, escape)?,
        "workdir" => {
            let p = exactly_one(node, "WORKDIR")?;
            no_flags(node)?;
            Command::Workdir(p)
        }
        "run" => parse_run(node)?,
        "cmd" => {
            no_flags(node)?;
            Command::Cmd(command_line(&node.args, node.json))
        }
        "entrypoint" => {
            no_flags(node)?;
            Command::Entrypoint(command_line(&node.args, node.json))
        }
        "healthcheck" => parse_healthcheck(node)?,
        "expose" => {
            if node.args.is_empty() {
                return Err("EXPOSE requires at least one argument".into());
            }
            no_flags(node)?;
            let mut ports = node.args.clone();
            // BuildKit sorts the raw port words.
            ports.sort();
            Command::Expose(ports)
        }
        "user" => {
            let u = exactly_one(node, "USER")?;
            no_flags(node)?;
            Command::User(u)
        }
        "volume" => {
            if node.args.is_empty() {
                return Err("VOLUME requires at least one argument".into());
            }
            no_flags(node)?;
            let mut vols = Vec::new();
            for v in &node.args {
                let v = v.trim_matches(crate::shell::is_space);
                if v.is_empty() {
                    return Err("VOLUME specified can not be an empty string".into());
                }
                vols.push(v.to_string());
            }
            Command::Volume(vols)
        }
        // BuildKit never parses STOPSIGNAL's or ARG's flags, so they are ignored.
        "stopsignal" => Command::StopSignal(exactly_one(node, "STOPSIGNAL")?),
        "arg" => {
            if node.args.is_empty() {
                return Err("ARG requires at least one argument".into());
            }
            let mut defs = Vec::new();
            for arg in &node.args {
                match arg.split_once('=') {
                    Some(("", _)) => return Err("ARG names can not be blank".into()),
                    Some((k, v)) => defs.push(ArgDef {
                        name: k.to_string(),
                        default: Some(v.to_string()),
                    }),
                    None => defs.push(ArgDef {
                        name: arg.clone(),
                        default: None,
                    }),
                }
            }
            Command::Arg(defs)
        }
        "shell" => {
            no_flags(node)?;
            if node.args.is_empty() {
                return Err("SHELL requires at least one argument".into());
            }
            if !node.json {
                return Err(
                    "SHELL requires the arguments to be in JSON form, e.g. SHELL [\"/bin/bash\", \"-c\"]"
                        .into(),
                );
            }
            Command::Shell(node.args.clone())
        }
        _ => {
            let mut msg = format!("unknown instruction: {}", node.cmd);
            let names: Vec<String> = INSTRUCTIONS.iter().map(|s| s.to_string()).collect();
            if let Some(s) = suggest::closest(&node.cmd.to_ascii_uppercase(), &names) {
                msg.push_str(&format!(" (did you mean {s}?)"));
            }
            return Err(msg);
        }
    };
    Ok(Instruction {
        location: node.location,
        original: node.original.trim().to_string(),
        command,
        comments: node.comments.clone(),
    })
}

impl Command {
    fn from_copy(node: &Node, is_add: bool) -> Result<Command, String> {
        let name = if is_add { "ADD" } else { "COPY" };
        if node.args.len() < 2 {
            return Err(format!(
                "{name} requires at least two arguments, but only one was provided. Destination could not be determined"
            ));
        }
        let spec: &[(&'static str, FlagKind)] = if is_add {
            &[
                ("exclude", FlagKind::Strs),
                ("chown", FlagKind::Str),
                ("chmod", FlagKind::Str),
                ("link", FlagKind::Bool),
                ("keep-git-dir", FlagKind::Bool),
                ("checksum", FlagKind::Str),
            ]
        } else {
            &[
                ("exclude", FlagKind::Strs),
                ("parents", FlagKind::Bool),
                ("chown", FlagKind::Str),
                ("from", FlagKind::Str),
                ("chmod", FlagKind::Str),
                ("link", FlagKind::Bool),
            ]
        };
        let mut flags = parse_flags(&node.flags, spec)?;
        let (srcs, dest) = node.args.split_at(node.args.len() - 1);
        let dest = dest[0].clone();
        if parser::parse_heredoc(&dest).ok().flatten().is_some() {
            return Err(format!("{name} cannot accept a heredoc as a destination"));
        }
        let mut sources = Vec::new();
        let mut inline = Vec::new();
        for src in srcs {
            match parser::parse_heredoc(src).ok().flatten() {
                Some(h) => {
                    let content = node
                        .heredocs
                        .iter()
                        .rev()
                        .find(|d| d.name == h.name)
                        .map(|d| d.content.clone())
                        .unwrap_or_default();
                    let data = if h.chomp {
                        parser::chomp_heredoc_content(&content)
                    } else {
                        content
                    };
                    inline.push(InlineSource {
                        name: h.name,
                        data,
                        expand: h.expand,
                    });
                }
                None => sources.push(src.clone()),
            }
        }
        let c = CopyInstr {
            sources,
            inline,
            dest,
            from: flags.str("from"),
            chown: flags.str("chown"),
            chmod: flags.str("chmod"),
            link: flags.bool("link"),
            parents: flags.bool("parents"),
            excludes: flags.list("exclude"),
            keep_git_dir: flags.bool("keep-git-dir"),
            checksum: flags.str("checksum"),
            json: node.json,
        };
        Ok(if is_add {
            Command::Add(c)
        } else {
            Command::Copy(c)
        })
    }
}

fn parse_run(node: &Node) -> Result<Command, String> {
    let mut flags = parse_flags(
        &node.flags,
        &[
            ("mount", FlagKind::Strs),
            ("network", FlagKind::Str),
            ("security", FlagKind::Str),
            ("device", FlagKind::Strs),
        ],
    )?;
    let mut mounts = Vec::new();
    for raw in flags.list("mount") {
        mount::check_unexpanded(&raw)?;
        mounts.push(RunMount { raw, parsed: None });
    }
    let network = flags.str("network");
    if let Some(n) = &network {
        // A `$` value is checked after expansion instead.
        if !n.contains('$') {
            mount::check_network(n)?;
        }
    }
    let security = flags.str("security");
    if let Some(s) = &security {
        if s != "sandbox" && s != "insecure" {
            return Err(format!(
                "security {} is not valid (use sandbox or insecure)",
                crate::shell::go_quote(s)
            ));
        }
    }
    Ok(Command::Run(RunInstr {
        command: command_line(&node.args, node.json),
        heredocs: node.heredocs.clone(),
        mounts,
        network,
        security,
        devices: flags.list("device"),
    }))
}

fn parse_healthcheck(node: &Node) -> Result<Command, String> {
    if node.args.is_empty() {
        return Err("HEALTHCHECK requires at least one argument".into());
    }
    let typ = node.args[0].to_ascii_uppercase();
    let args = &node.args[1..];
    if typ == "NONE" {
        // BuildKit never parses the flags of HEALTHCHECK NONE.
        if !args.is_empty() {
            return Err("HEALTHCHECK NONE takes no arguments".into());
        }
        return Ok(Command::Healthcheck(Healthcheck::None));
    }
    let flags = parse_flags(
        &node.flags,
        &[
            ("interval", FlagKind::Str),
            ("timeout", FlagKind::Str),
            ("start-period", FlagKind::Str),
            ("start-interval", FlagKind::Str),
            ("retries", FlagKind::Str),
        ],
    )?;
    if typ != "CMD" {
        return Err(format!(
            "Unknown type {} in HEALTHCHECK (try CMD)",
            crate::shell::go_quote(&typ)
        ));
    }
    if args.is_empty() {
        return Err("Missing command after HEALTHCHECK CMD".into());
    }
    let interval = |name: &str| -> Result<Option<Duration>, String> {
        let Some(v) = flags.str(name) else {
            return Ok(None);
        };
        if v.is_empty() {
            return Ok(None);
        }
        let nanos = crate::duration::parse_go_duration(&v)?;
        if nanos == 0 {
            return Ok(None);
        }
        if nanos < 1_000_000 {
            return Err(format!("Interval \"{name}\" cannot be less than 1ms"));
        }
        Ok(Some(Duration::from_nanos(nanos as u64)))
    };
    let retries = match flags.str("retries").filter(|v| !v.is_empty()) {
        None => None,
        Some(v) => {
            let n: i32 = v.parse().map_err(|_| {
                format!(
                    "strconv.ParseInt: parsing {}: invalid syntax",
                    crate::shell::go_quote(&v)
                )
            })?;
            if n < 0 {
                return Err(format!("--retries cannot be negative ({n})"));
            }
            Some(n as u32)
        }
    };
    Ok(Command::Healthcheck(Healthcheck::Cmd {
        command: command_line(args, node.json),
        interval: interval("interval")?,
        timeout: interval("timeout")?,
        start_period: interval("start-period")?,
        start_interval: interval("start-interval")?,
        retries,
    }))
}

fn parse_onbuild(node: &Node, escape: char) -> Result<Command, String> {
    let Some(child) = node.child.as_deref() else {
        return Err("ONBUILD requires at least one argument".into());
    };
    no_flags(node)?;
    let trigger_name = child.cmd.trim().to_ascii_uppercase();
    match trigger_name.as_str() {
        "ONBUILD" => return Err("Chaining ONBUILD via `ONBUILD ONBUILD` isn't allowed".into()),
        "MAINTAINER" | "FROM" => {
            return Err(format!(
                "{trigger_name} isn't allowed as an ONBUILD trigger"
            ))
        }
        _ => {}
    }
    // `(?i)^\s*ONBUILD\s*` removed from the logical line.
    let original = node
        .original
        .trim_start_matches(|c: char| c.is_ascii_whitespace());
    let mut expression = original
        .get(7..)
        .filter(|_| original.len() >= 7 && original[..7].eq_ignore_ascii_case("onbuild"))
        .unwrap_or(original)
        .trim_start_matches(|c: char| c.is_ascii_whitespace())
        .to_string();
    for h in &node.heredocs {
        expression.push('\n');
        expression.push_str(&h.content);
        expression.push_str(&h.name);
    }
    let trigger = parse_instruction(child, escape)
        .map(Box::new)
        .map_err(|m| ParseError::new(node.location, m, node.source.clone()));
    Ok(Command::Onbuild(OnbuildInstr {
        expression,
        trigger,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flag_parsing_rules() {
        let spec = &[
            ("link", FlagKind::Bool),
            ("from", FlagKind::Str),
            ("x", FlagKind::Strs),
        ];
        let s = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let f = parse_flags(&s(&["--link", "--from=a", "--x=1", "--x=2"]), spec).unwrap();
        assert!(f.bool("link"));
        assert_eq!(f.str("from").as_deref(), Some("a"));
        let f = parse_flags(&s(&["--link=FALSE"]), spec).unwrap();
        assert!(!f.bool("link"));
        assert_eq!(
            parse_flags(&s(&["--link="]), spec).err().unwrap(),
            "missing a value on flag: link"
        );
        assert_eq!(
            parse_flags(&s(&["--from"]), spec).err().unwrap(),
            "missing a value on flag: from"
        );
        assert_eq!(
            parse_flags(&s(&["--link=yes"]), spec).err().unwrap(),
            "expecting boolean value for flag link, not: yes"
        );
        assert_eq!(
            parse_flags(&s(&["--from=a", "--from=b"]), spec)
                .err()
                .unwrap(),
            "duplicate flag specified: from"
        );
        assert_eq!(
            parse_flags(&s(&["--frm=a"]), spec).err().unwrap(),
            "unknown flag: frm (did you mean from?)"
        );
        assert_eq!(
            parse_flags(&s(&["--zzzzzz"]), spec).err().unwrap(),
            "unknown flag: zzzzzz"
        );
    }

    #[test]
    fn stage_names() {
        assert!(valid_stage_name("build-1.x_y"));
        assert!(!valid_stage_name("1build"));
        assert!(!valid_stage_name("b@d"));
        assert!(!valid_stage_name(""));
    }
}
