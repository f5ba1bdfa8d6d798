//! Parsed instructions -> [`Op`]s: expansion against the stage's variables
//! as they are *before* the instruction (ENV over ARG), then a plain
//! translation. The only module that knows the parser's syntax tree.

use berth_dockerfile::{Command, Healthcheck};

use crate::ops::{CommandLine, CopyOp, HealthcheckOp, Heredoc, Op, RunOp};
use crate::plan::Step;
use crate::stage::StageState;
use crate::{BuildError, Result};

fn command_line(c: &berth_dockerfile::CommandLine) -> CommandLine {
    match c {
        berth_dockerfile::CommandLine::Shell(s) => CommandLine::Shell(s.clone()),
        berth_dockerfile::CommandLine::Exec(v) => CommandLine::Exec(v.clone()),
    }
}

fn nanos(d: Option<std::time::Duration>) -> Option<i64> {
    d.map(|d| d.as_nanos() as i64)
}

/// Expands `step` against `st` and translates it.
pub fn lower(step: &Step, st: &StageState) -> Result<Op> {
    let lookup = |n: &str| st.lookup(n);
    let instr = step.instruction.expand(step.escape, &lookup).map_err(|e| {
        BuildError::Dockerfile(format!("{}: {e}\n  >>> {}", step.location, step.text))
    })?;
    Ok(match instr.command {
        Command::Run(r) => Op::Run(RunOp {
            command: command_line(&r.command),
            mounts: r.mounts.into_iter().filter_map(|m| m.parsed).collect(),
            network: r.network,
            heredocs: r
                .heredocs
                .iter()
                .map(|h| Heredoc {
                    name: h.name.clone(),
                    content: h.content.clone(),
                    expand: h.expand,
                    chomp: h.chomp,
                })
                .collect(),
        }),
        Command::Copy(c) | Command::Add(c) => {
            let add = matches!(step.instruction.command, Command::Add(_));
            Op::Copy(CopyOp {
                add,
                sources: c.sources,
                dest: c.dest,
                from: c.from,
                chown: c.chown,
                chmod: c.chmod,
                link: c.link,
                parents: c.parents,
                excludes: c.excludes,
                heredocs: c
                    .inline
                    .into_iter()
                    .map(|i| Heredoc {
                        name: i.name,
                        content: i.data,
                        expand: i.expand,
                        chomp: false,
                    })
                    .collect(),
                checksum: c.checksum,
                keep_git_dir: c.keep_git_dir,
            })
        }
        Command::Env { pairs, .. } => {
            Op::Env(pairs.into_iter().map(|kv| (kv.key, kv.value)).collect())
        }
        Command::Label { pairs, .. } => {
            Op::Label(pairs.into_iter().map(|kv| (kv.key, kv.value)).collect())
        }
        Command::Arg(defs) => Op::Arg(defs.into_iter().map(|d| (d.name, d.default)).collect()),
        Command::Expose(p) => Op::Expose(p),
        Command::Volume(v) => Op::Volume(v),
        Command::User(u) => Op::User(u),
        Command::Workdir(w) => Op::Workdir(w),
        Command::Cmd(c) => Op::Cmd(command_line(&c)),
        Command::Entrypoint(c) => Op::Entrypoint(command_line(&c)),
        Command::Shell(v) => Op::Shell(v),
        Command::StopSignal(s) => Op::StopSignal(s),
        Command::Maintainer(m) => Op::Maintainer(m),
        Command::Onbuild(o) => Op::OnBuild(o.expression),
        Command::Healthcheck(Healthcheck::None) => Op::Healthcheck(HealthcheckOp::default()),
        Command::Healthcheck(Healthcheck::Cmd {
            command,
            interval,
            timeout,
            start_period,
            start_interval,
            retries,
        }) => Op::Healthcheck(HealthcheckOp {
            test: Some(command_line(&command)),
            interval: nanos(interval),
            timeout: nanos(timeout),
            start_period: nanos(start_period),
            start_interval: nanos(start_interval),
            retries: retries.map(i64::from),
        }),
    })
}

/// A base image's ONBUILD trigger as steps of the child stage.
pub fn parse_trigger(trigger: &str, location: &str) -> Result<Vec<Step>> {
    let df = berth_dockerfile::parse(&format!("FROM scratch\n{trigger}\n")).map_err(|e| {
        BuildError::Dockerfile(format!(
            "{location}: the base image's ONBUILD trigger {trigger:?}: {}",
            e.message
        ))
    })?;
    let stage = df.stages.into_iter().next().ok_or_else(|| {
        BuildError::Dockerfile(format!("{location}: invalid ONBUILD trigger {trigger:?}"))
    })?;
    Ok(stage
        .instructions
        .into_iter()
        .map(|i| Step {
            text: format!("ONBUILD {}", i.original),
            instruction: i,
            escape: df.escape,
            location: location.to_string(),
        })
        .collect())
}
