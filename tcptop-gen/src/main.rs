//! `tcptop-gen DIR`: writes tcptop's man page (DIR/tcptop.1) and its bash,
//! zsh and fish completions (DIR/completions/) from the clap definition.
//! scripts/package and the Homebrew formula run it.

use std::path::Path;
use std::process::ExitCode;

fn main() -> ExitCode {
    let mut args = std::env::args_os().skip(1);
    let (Some(dir), None) = (args.next(), args.next()) else {
        eprintln!("usage: tcptop-gen DIR (writes DIR/tcptop.1 and DIR/completions/)");
        return ExitCode::from(2);
    };
    let dir = Path::new(&dir);
    match tcptop_gen::write_all(dir) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tcptop-gen: cannot write into \"{}\": {e}", dir.display());
            ExitCode::FAILURE
        }
    }
}
