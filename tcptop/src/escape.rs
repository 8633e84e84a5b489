//! Names from outside (process names, command lines, DNS names) are
//! untrusted: any process can put terminal escape sequences in its name.
//! Control characters are shown escaped, never written raw.

use std::borrow::Cow;
use std::fmt::Write as _;

/// Invisible characters that reorder or hide text (bidi controls, zero-width
/// marks, BOM): not controls to Rust, but they can disguise a name.
fn is_format(c: char) -> bool {
    matches!(c, '\u{200b}'..='\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2060}'..='\u{2069}' | '\u{feff}')
}

/// Escapes C0 and C1 control characters, DEL, invisible format characters
/// and backslash as `\xNN` / `\u{NNNN}` / `\\`.
pub fn untrusted(s: &str) -> Cow<'_, str> {
    let needs = |c: char| c.is_control() || is_format(c) || c == '\\';
    if !s.chars().any(needs) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            c if c.is_control() || is_format(c) => {
                let n = u32::from(c);
                if n <= 0xff {
                    let _ = write!(out, "\\x{n:02x}");
                } else {
                    let _ = write!(out, "\\u{{{n:04x}}}");
                }
            }
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::untrusted;

    #[test]
    fn escapes_controls_only() {
        assert_eq!(untrusted("nginx"), "nginx");
        assert_eq!(untrusted("ünï ✓"), "ünï ✓");
        assert_eq!(untrusted("a\x1b[2Jb"), "a\\x1b[2Jb");
        assert_eq!(untrusted("\u{9b}31m"), "\\x9b31m");
        assert_eq!(untrusted("x\ny\t\x7f"), "x\\x0ay\\x09\\x7f");
        assert_eq!(untrusted("a\\x1b"), "a\\\\x1b");
        assert_eq!(untrusted("gpj.\u{202e}exe"), "gpj.\\u{202e}exe");
        assert_eq!(untrusted("a\u{200b}b"), "a\\u{200b}b");
    }
}
