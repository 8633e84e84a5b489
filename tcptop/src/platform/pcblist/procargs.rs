//! A process's command line from `sysctl kern.procargs2` (`KERN_PROCARGS2`,
//! what `ps` reads on macOS): `argc` as a native-endian int, the executable's
//! path, NUL padding, then `argc` NUL-terminated arguments (the environment
//! follows; it is not read). Pure over bytes, like the socket lists.

/// The arguments joined by spaces, or None when the buffer is not in that
/// shape (too short, no argument).
pub fn command_line(buf: &[u8]) -> Option<String> {
    let argc = usize::try_from(i32::from_le_bytes(buf.get(..4)?.try_into().ok()?)).ok()?;
    let rest = buf.get(4..)?;
    // The executable's path, then the padding.
    let path_end = rest.iter().position(|&b| b == 0)?;
    let args_start = path_end + rest[path_end..].iter().position(|&b| b != 0)?;
    let args: Vec<String> = rest[args_start..]
        .split(|&b| b == 0)
        .take(argc)
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect();
    (argc > 0 && !args.is_empty()).then(|| args.join(" "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn args_not_environment() {
        let mut b = 3i32.to_le_bytes().to_vec();
        b.extend_from_slice(b"/usr/bin/curl\0\0\0\0curl\0-s\0https://example.org/\0HOME=/x\0");
        assert_eq!(
            command_line(&b).as_deref(),
            Some("curl -s https://example.org/")
        );
    }

    #[test]
    fn short_or_odd_buffers() {
        assert_eq!(command_line(b""), None);
        assert_eq!(command_line(&1i32.to_le_bytes()), None);
        let mut b = 0i32.to_le_bytes().to_vec();
        b.extend_from_slice(b"/bin/x\0\0x\0");
        assert_eq!(command_line(&b), None);
        let mut b = (-1i32).to_le_bytes().to_vec();
        b.extend_from_slice(b"/bin/x\0x\0");
        assert_eq!(command_line(&b), None);
        // Path and padding only.
        let mut b = 1i32.to_le_bytes().to_vec();
        b.extend_from_slice(b"/bin/x\0\0\0");
        assert_eq!(command_line(&b), None);
    }
}
