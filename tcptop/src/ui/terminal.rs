//! The terminal in raw mode on the alternate screen, restored on every exit
//! path. ratatui's `try_init` enables raw mode, enters the alternate screen
//! and installs a panic hook that restores the terminal before the previous
//! hook prints the panic message. The guard adds what that leaves out: the
//! cursor hidden from the start and shown again at the end, a restore when
//! set-up fails halfway, and one at every return, error or unwinding
//! (`Drop`).

use std::io::{self, Write};

use crossterm::cursor::Show;
use crossterm::execute;
use ratatui::DefaultTerminal;

/// Owns the terminal set-up; dropping it restores the terminal.
pub struct TerminalGuard {
    pub terminal: DefaultTerminal,
}

impl TerminalGuard {
    /// Call once: each call chains one more panic hook.
    pub fn enter() -> io::Result<TerminalGuard> {
        let setup = ratatui::try_init().and_then(|mut terminal| {
            terminal.hide_cursor()?;
            Ok(terminal)
        });
        match setup {
            Ok(terminal) => Ok(TerminalGuard { terminal }),
            Err(e) => {
                restore();
                Err(e)
            }
        }
    }
}

impl Drop for TerminalGuard {
    fn drop(&mut self) {
        restore();
    }
}

/// Leaves raw mode and the alternate screen (`ratatui::try_restore`) and
/// shows the cursor. Safe to call more than once; errors are ignored
/// (nothing better to do).
pub fn restore() {
    let _ = ratatui::try_restore();
    let mut out = io::stdout();
    let _ = execute!(out, Show);
    let _ = out.flush();
}
