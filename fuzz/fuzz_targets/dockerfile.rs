//! Parses arbitrary text as a Dockerfile and expands every instruction with
//! a small fixed environment: neither step may panic, and a parsed file must
//! have at least one stage with locations inside the input.
#![no_main]

use berth_dockerfile::{parse, Command, Instruction};
use libfuzzer_sys::fuzz_target;

fn lookup(name: &str) -> Option<String> {
    match name {
        "A" => Some("a b".into()),
        "EMPTY" => Some(String::new()),
        "P" => Some("/usr/local/bin".into()),
        _ => None,
    }
}

fn check(instr: &Instruction, escape: char, lines: usize) {
    assert!(instr.location.start_line >= 1 && instr.location.start_line <= instr.location.end_line);
    assert!(instr.location.end_line <= lines.max(1));
    let _ = instr.expand(escape, &lookup);
    if let Command::Onbuild(ob) = &instr.command {
        if let Ok(trigger) = &ob.trigger {
            let _ = trigger.expand(escape, &lookup);
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(src) = std::str::from_utf8(data) else {
        return;
    };
    let lines = src.split_inclusive('\n').count();
    match parse(src) {
        Ok(df) => {
            assert!(!df.stages.is_empty());
            for a in &df.global_args {
                check(a, df.escape, lines);
            }
            for stage in &df.stages {
                let _ = stage.expand_base(df.escape, &lookup);
                let _ = stage.expand_platform(df.escape, &lookup);
                for i in &stage.instructions {
                    check(i, df.escape, lines);
                }
            }
        }
        Err(e) => {
            assert!(e.location.start_line >= 1);
            let _ = e.render("Dockerfile");
        }
    }
    let _ = berth_dockerfile::expand_words(src, '\\', &lookup);
    let _ = berth_dockerfile::expand_heredoc(src, &lookup);
});
