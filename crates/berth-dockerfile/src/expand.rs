//! Which fields of which instruction BuildKit expands (see the table in the
//! crate docs). Every field of one instruction is expanded against the same
//! `lookup`: the variables as they were *before* the instruction.

use crate::instructions::{
    ArgDef, Command, CopyInstr, Instruction, KeyValue, RunInstr, RunMount, Stage,
};
use crate::mount::{self, Mount};
use crate::shell::{expand_heredoc, expand_word, expand_words, ExpandError, Lookup};

impl Instruction {
    /// Returns the instruction with exactly the fields BuildKit expands
    /// expanded and quote-removed; the others are returned unchanged.
    ///
    /// `escape` is the Dockerfile's escape character ([`crate::Dockerfile::escape`]).
    /// `lookup` must see the variables as they are before this instruction:
    /// in `ENV a=1 b=$a`, `$a` is the *previous* value of `a`.
    pub fn expand(&self, escape: char, lookup: Lookup<'_>) -> Result<Instruction, ExpandError> {
        let w = |s: &str| expand_word(s, escape, lookup);
        let opt = |s: &Option<String>| s.as_deref().map(w).transpose();
        let command = match &self.command {
            Command::Env { pairs, legacy } => Command::Env {
                pairs: expand_pairs(pairs, &w)?,
                legacy: *legacy,
            },
            Command::Label { pairs, legacy } => Command::Label {
                pairs: expand_pairs(pairs, &w)?,
                legacy: *legacy,
            },
            Command::Arg(defs) => Command::Arg(
                defs.iter()
                    .map(|d| {
                        Ok(ArgDef {
                            name: w(&d.name)?,
                            default: opt(&d.default)?,
                        })
                    })
                    .collect::<Result<_, ExpandError>>()?,
            ),
            Command::Copy(c) => Command::Copy(expand_copy(c, &w, lookup)?),
            Command::Add(c) => {
                let mut out = expand_copy(c, &w, lookup)?;
                out.checksum = opt(&c.checksum)?;
                Command::Add(out)
            }
            Command::Expose(ports) => {
                let mut out = Vec::new();
                for p in ports {
                    out.extend(expand_words(p, escape, lookup)?);
                }
                Command::Expose(out)
            }
            Command::Volume(v) => {
                Command::Volume(v.iter().map(|s| w(s)).collect::<Result<_, _>>()?)
            }
            Command::User(u) => Command::User(w(u)?),
            Command::Workdir(p) => Command::Workdir(w(p)?),
            Command::StopSignal(s) => Command::StopSignal(w(s)?),
            Command::Run(r) => Command::Run(expand_run(r, &w)?),
            // CMD, ENTRYPOINT, SHELL, HEALTHCHECK, MAINTAINER and ONBUILD
            // are taken literally by BuildKit.
            other => other.clone(),
        };
        Ok(Instruction {
            location: self.location,
            original: self.original.clone(),
            command,
            comments: self.comments.clone(),
        })
    }
}

fn expand_pairs(
    pairs: &[KeyValue],
    w: &dyn Fn(&str) -> Result<String, ExpandError>,
) -> Result<Vec<KeyValue>, ExpandError> {
    pairs
        .iter()
        .map(|kv| {
            Ok(KeyValue {
                key: w(&kv.key)?,
                value: w(&kv.value)?,
            })
        })
        .collect()
}

/// Sources, destination, `--chown` and `--chmod` are expanded; `--from` is
/// not (BuildKit resolves it literally: `COPY --from=$X` fails there too),
/// and neither are `--exclude` patterns. Heredoc bodies are expanded with
/// quotes kept when their terminator was unquoted.
fn expand_copy(
    c: &CopyInstr,
    w: &dyn Fn(&str) -> Result<String, ExpandError>,
    lookup: Lookup<'_>,
) -> Result<CopyInstr, ExpandError> {
    let mut out = c.clone();
    out.sources = c.sources.iter().map(|s| w(s)).collect::<Result<_, _>>()?;
    out.dest = w(&c.dest)?;
    out.chown = c.chown.as_deref().map(w).transpose()?;
    out.chmod = c.chmod.as_deref().map(w).transpose()?;
    for src in &mut out.inline {
        if src.expand {
            src.data = expand_heredoc(&src.data, lookup)?;
        }
    }
    Ok(out)
}

/// `--mount` values are expanded field by field and parsed into [`Mount`];
/// `--network` is expanded and validated. The command itself is left to the
/// shell, heredoc bodies included.
fn expand_run(
    r: &RunInstr,
    w: &dyn Fn(&str) -> Result<String, ExpandError>,
) -> Result<RunInstr, ExpandError> {
    let mut out = r.clone();
    out.mounts = r
        .mounts
        .iter()
        .map(|m| {
            let mut expand = |v: &str| w(v).map_err(|e| e.message);
            let parsed = Mount::parse_with(&m.raw, &mut expand).map_err(ExpandError::new)?;
            Ok(RunMount {
                raw: m.raw.clone(),
                parsed: Some(parsed),
            })
        })
        .collect::<Result<_, ExpandError>>()?;
    if let Some(n) = &r.network {
        let n = w(n)?;
        mount::check_network(&n).map_err(ExpandError::new)?;
        out.network = Some(n);
    }
    Ok(out)
}

impl Stage {
    /// Expands the FROM image name against the global ARGs (BuildKit's
    /// meta args), erroring on an empty result like BuildKit.
    pub fn expand_base(&self, escape: char, lookup: Lookup<'_>) -> Result<String, ExpandError> {
        let base = expand_word(&self.base, escape, lookup)?;
        if base.is_empty() {
            return Err(ExpandError::new(format!(
                "base name ({}) should not be blank: check the build args it uses",
                self.base
            )));
        }
        Ok(base)
    }

    /// Expands `--platform` against the global ARGs; `None` without the flag.
    pub fn expand_platform(
        &self,
        escape: char,
        lookup: Lookup<'_>,
    ) -> Result<Option<String>, ExpandError> {
        let Some(raw) = &self.platform else {
            return Ok(None);
        };
        let p = expand_word(raw, escape, lookup)?;
        if p.is_empty() {
            return Err(ExpandError::new(format!(
                "empty platform value from expression {raw}"
            )));
        }
        Ok(Some(p))
    }
}
