//! tcptop's man page and shell completions, generated from its clap
//! definition (`tcptop::cli::Cli`) so that they say what `--help` says.
//!
//! The man page is clap_mangen's (name, synopsis, description, options,
//! version) with sections of our own between: PRIVILEGES (the `--help`
//! epilogue), INTERACTIVE KEYS (the display's own help list), EXAMPLES
//! (each one parsed by a test), EXIT STATUS, ENVIRONMENT, FILES, SEE ALSO.

use std::fs;
use std::io::{self, Write};
use std::path::Path;

use clap::CommandFactory as _;
use clap_complete::Shell;
use clap_mangen::roff::{Roff, bold, italic, roman};

/// One example: the command line as a user types it, and what it does.
/// Each line's tcptop invocation is parsed by a test (after `sudo`, before
/// a pipe), so an example cannot name a flag that no longer exists.
pub const EXAMPLES: &[(&str, &str)] = &[
    (
        "sudo tcptop",
        "The interactive display: every TCP connection and UDP flow, busiest first. \
         Press ? for the keys.",
    ),
    (
        "sudo tcptop --batch -n 1",
        "One snapshot as an aligned table on stdout, then exit.",
    ),
    (
        "sudo tcptop --batch --format jsonl --interval 5 --port 443",
        "A JSON object per connection to or from port 443, every 5 seconds, until \
         interrupted; connections that close are reported once more as CLOSED.",
    ),
    (
        "sudo tcptop --cgroup /system.slice/nginx.service --rate-window 10s",
        "Only the connections of one systemd service (and the groups below it), with \
         rates averaged over 10 seconds.",
    ),
    (
        "sudo tcptop --udp --idle-timeout 10",
        "Only UDP flows; a flow with no call for 10 seconds is reported CLOSED.",
    ),
    (
        "sudo tcptop --user nobody --log /var/tmp/tcptop.csv",
        "Attach the kernel programs as root, then run as nobody, appending every \
         snapshot to a CSV file (opened before the switch).",
    ),
    (
        "sudo setcap cap_bpf,cap_perfmon,cap_net_admin+ep \"$(command -v tcptop)\"",
        "Let every user run tcptop in the full mode without root (see PRIVILEGES; \
         packages never do this for you). sudo setcap -r undoes it.",
    ),
    (
        "tcptop --source diag --batch -n 3",
        "Unprivileged: TCP connections of this network namespace from the kernel's \
         socket diagnostics, three snapshots.",
    ),
    (
        "sudo tcptop --batch --format csv -n 60 > conns.csv",
        "A minute of snapshots as CSV.",
    ),
];

/// Exit statuses, as `lib.rs` and clap produce them.
const EXIT_STATUS: &[(&str, &str)] = &[
    (
        "0",
        "Success (also when tcptop fell back to the unprivileged mode).",
    ),
    (
        "1",
        "An error: the kernel programs could not be loaded with --source ebpf, a log file \
         could not be opened, an unknown --user, and the like. The message says what to do.",
    ),
    ("2", "A bad flag or value."),
];

const ENVIRONMENT: &[(&str, &str)] = &[(
    "TCPTOP_RAW_TRACEPOINTS=1",
    "Attach raw tracepoints (with probe reads) instead of BTF-typed ones, for \
     comparison or where a kernel's verifier rejects the typed programs.",
)];

const FILES: &[(&str, &str)] = &[
    (
        "/sys/kernel/btf/vmlinux",
        "The kernel's type information, read to find struct fields (--btf names another).",
    ),
    (
        "/proc",
        "Owners of connections open before start, process details, cgroups, namespaces.",
    ),
    ("/etc/services", "Port names in the interactive display."),
    (
        "/var/log/pods",
        "Kubernetes pod names, from the kubelet's log directories.",
    ),
];

const SEE_ALSO: &str = "ss(8), tcplife(8), bpftool(8), capabilities(7), setcap(8)";

/// The man page, tcptop.1.
pub fn man_page() -> io::Result<Vec<u8>> {
    let cmd = tcptop::cli::Cli::command();
    let man = clap_mangen::Man::new(cmd.clone()).manual("User Commands");
    let mut out = Vec::new();
    man.render_title(&mut out)?;
    man.render_name_section(&mut out)?;
    man.render_synopsis_section(&mut out)?;
    man.render_description_section(&mut out)?;
    man.render_options_section(&mut out)?;

    let mut roff = Roff::new();
    if let Some(epilogue) = cmd.get_after_help() {
        roff.control("SH", ["PRIVILEGES"]);
        paragraphs(&mut roff, &epilogue.to_string());
    }
    roff.control("SH", ["INTERACTIVE KEYS"]);
    for (key, what) in tcptop::ui::view::KEYS {
        if key.is_empty() {
            roff.control("PP", []).text([roman(*what)]);
        } else {
            tagged(&mut roff, [bold(*key)], what);
        }
    }
    roff.control("SH", ["EXAMPLES"]);
    for (line, what) in EXAMPLES {
        roff.control("PP", []).text([roman(*what)]);
        roff.control("RS", ["4"]).control("nf", []);
        roff.text([bold(*line)]);
        roff.control("fi", []).control("RE", []);
    }
    roff.control("SH", ["EXIT STATUS"]);
    for (status, what) in EXIT_STATUS {
        tagged(&mut roff, [bold(*status)], what);
    }
    roff.control("SH", ["ENVIRONMENT"]);
    for (var, what) in ENVIRONMENT {
        tagged(&mut roff, [bold(*var)], what);
    }
    roff.control("SH", ["FILES"]);
    for (path, what) in FILES {
        tagged(&mut roff, [italic(*path)], what);
    }
    roff.control("SH", ["SEE ALSO"]);
    roff.text([roman(SEE_ALSO)]);
    roff.to_writer(&mut out)?;

    man.render_version_section(&mut out)?;
    Ok(out)
}

/// A `.TP` entry: the tag on its own line, the text indented below.
fn tagged<const N: usize>(roff: &mut Roff, tag: [clap_mangen::roff::Inline; N], text: &str) {
    roff.control("TP", []).text(tag).text([roman(text)]);
}

/// Text whose blank lines separate paragraphs.
fn paragraphs(roff: &mut Roff, text: &str) {
    for (i, paragraph) in text.split("\n\n").enumerate() {
        if i > 0 {
            roff.control("PP", []);
        }
        for line in paragraph.lines() {
            roff.text([roman(line)]);
        }
    }
}

/// The shells we write completions for, with the file name each one's
/// completion directory expects.
pub const SHELLS: &[(Shell, &str)] = &[
    (Shell::Bash, "tcptop.bash"),
    (Shell::Zsh, "_tcptop"),
    (Shell::Fish, "tcptop.fish"),
];

/// The completion script for `shell`.
pub fn completion(shell: Shell) -> Vec<u8> {
    let mut cmd = tcptop::cli::Cli::command();
    let mut out = Vec::new();
    clap_complete::generate(shell, &mut cmd, "tcptop", &mut out);
    out
}

/// Writes `dir/tcptop.1` and `dir/completions/<file>` for each of SHELLS,
/// making the directories as needed.
pub fn write_all(dir: &Path) -> io::Result<()> {
    let completions = dir.join("completions");
    fs::create_dir_all(&completions)?;
    write(&dir.join("tcptop.1"), &man_page()?)?;
    for (shell, name) in SHELLS {
        write(&completions.join(name), &completion(*shell))?;
    }
    Ok(())
}

fn write(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let mut file = fs::File::create(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}

#[cfg(test)]
mod tests {
    use clap::Parser as _;

    use super::*;

    fn long_flags() -> Vec<String> {
        tcptop::cli::Cli::command()
            .get_arguments()
            .filter(|a| !a.is_hide_set())
            .filter_map(|a| a.get_long().map(|l| format!("--{l}")))
            .collect()
    }

    /// The man page lists every flag `--help` lists (roff writes a dash
    /// as `\-`).
    #[test]
    fn man_page_has_every_flag() {
        let page = String::from_utf8(man_page().unwrap()).unwrap();
        for flag in long_flags() {
            let roff = flag.replace('-', r"\-");
            assert!(page.contains(&roff), "{flag} is not in the man page");
        }
        for section in [
            "NAME",
            "SYNOPSIS",
            "OPTIONS",
            "PRIVILEGES",
            "EXAMPLES",
            "EXIT STATUS",
            "VERSION",
        ] {
            // roff quotes an argument with spaces.
            let heading = if section.contains(' ') {
                format!(".SH \"{section}\"")
            } else {
                format!(".SH {section}")
            };
            assert!(page.contains(&heading), "no {section}");
        }
        assert!(page.contains(env!("CARGO_PKG_VERSION")));
    }

    /// Every example's tcptop command line parses with today's flags.
    #[test]
    fn examples_parse() {
        let mut parsed = 0;
        for (line, _) in EXAMPLES {
            let line = line.strip_prefix("sudo ").unwrap_or(line);
            let Some(rest) = line.strip_prefix("tcptop") else {
                continue;
            };
            let command = rest.split(['|', '>']).next().unwrap();
            let args = std::iter::once("tcptop").chain(command.split_whitespace());
            if let Err(e) = tcptop::cli::Cli::try_parse_from(args) {
                panic!("example {line:?} does not parse: {e}");
            }
            parsed += 1;
        }
        assert!(parsed >= EXAMPLES.len() - 1);
    }

    /// Each completion script offers every flag.
    #[test]
    fn completions_have_every_flag() {
        for (shell, _) in SHELLS {
            let script = String::from_utf8(completion(*shell)).unwrap();
            for flag in long_flags() {
                // fish names long flags without their dashes: `-l interval`.
                let name = flag.trim_start_matches('-');
                assert!(
                    script.contains(&flag) || script.contains(&format!("-l {name}")),
                    "{flag} is not in the {shell} completions"
                );
            }
        }
    }
}
