//! Names for numbers, for the interactive display only (batch output stays
//! numeric): host names of remote addresses by reverse DNS (`dns`, looked up
//! in the background, cached) and well-known port names (`services`, from
//! `/etc/services`).

pub mod dns;
pub mod services;

use std::borrow::Cow;
use std::net::SocketAddr;

pub use dns::Resolver;
pub use services::Services;

use crate::escape::untrusted;

/// Host names are cut to this many characters in the table, so that the
/// port still shows in a 47-column endpoint.
pub const HOST_WIDTH: usize = 40;

/// A host name for the table: escaped, cut to [`HOST_WIDTH`] with `…`.
pub fn host(name: &str) -> Cow<'_, str> {
    let name = untrusted(name);
    if name.chars().count() <= HOST_WIDTH {
        return name;
    }
    let mut short: String = name.chars().take(HOST_WIDTH - 1).collect();
    short.push('…');
    Cow::Owned(short)
}

/// `addr:port` with the host shown as `host` (a name: escaped, shortened)
/// and the port as `service` when given: `example.com:443`,
/// `10.0.0.1:https`, `[2001:db8::1]:https`, `example.com:https`.
pub fn endpoint(addr: SocketAddr, host: Option<&str>, service: Option<&str>) -> String {
    let port = match service {
        Some(s) => untrusted(s),
        None => addr.port().to_string().into(),
    };
    match (host, addr) {
        (Some(h), _) => format!("{}:{port}", self::host(h)),
        (None, SocketAddr::V4(a)) => format!("{}:{port}", a.ip()),
        (None, SocketAddr::V6(a)) => format!("[{}]:{port}", a.ip()),
    }
}

/// Whether `haystack` contains `needle` (lower case), ignoring ASCII case;
/// no allocation (called for every cached name while filtering).
pub fn contains_ignore_case(haystack: &str, needle: &str) -> bool {
    let (h, n) = (haystack.as_bytes(), needle.as_bytes());
    n.is_empty() || h.windows(n.len()).any(|w| w.eq_ignore_ascii_case(n))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints() {
        let v4: SocketAddr = "10.0.0.1:443".parse().unwrap();
        let v6: SocketAddr = "[2001:db8::1]:443".parse().unwrap();
        assert_eq!(endpoint(v4, None, None), "10.0.0.1:443");
        assert_eq!(endpoint(v4, None, Some("https")), "10.0.0.1:https");
        assert_eq!(endpoint(v6, None, Some("https")), "[2001:db8::1]:https");
        assert_eq!(endpoint(v6, Some("db8.example"), None), "db8.example:443");
        assert_eq!(
            endpoint(v4, Some("a\x1b[2Jb"), Some("https")),
            "a\\x1b[2Jb:https"
        );
        let long = format!("{}.example", "x".repeat(60));
        let shown = endpoint(v4, Some(&long), None);
        assert_eq!(shown.chars().count(), HOST_WIDTH + 4, "{shown}");
        assert!(shown.ends_with("x…:443"), "{shown}");
    }

    #[test]
    fn case_insensitive_search() {
        assert!(contains_ignore_case("Mail.Example.COM", "example.com"));
        assert!(contains_ignore_case("x", ""));
        assert!(!contains_ignore_case("ex", "example"));
    }
}
