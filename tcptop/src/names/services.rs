//! Well-known port names ("https" for 443/tcp) from `/etc/services`, read
//! once at start, with a small built-in table when the file is missing.

use std::collections::HashMap;

use crate::model::Proto;

/// Where the system keeps its port names.
pub const SERVICES_FILE: &str = "/etc/services";

/// Longer names in the file are ignored (real ones are a few letters).
const MAX_NAME: usize = 32;

/// The most common ports, for systems without `/etc/services`.
const BUILTIN: &[(u16, &str)] = &[
    (20, "ftp-data"),
    (21, "ftp"),
    (22, "ssh"),
    (23, "telnet"),
    (25, "smtp"),
    (53, "domain"),
    (67, "bootps"),
    (68, "bootpc"),
    (80, "http"),
    (110, "pop3"),
    (123, "ntp"),
    (143, "imap2"),
    (161, "snmp"),
    (389, "ldap"),
    (443, "https"),
    (445, "microsoft-ds"),
    (465, "submissions"),
    (514, "syslog"),
    (587, "submission"),
    (636, "ldaps"),
    (853, "domain-s"),
    (873, "rsync"),
    (993, "imaps"),
    (995, "pop3s"),
    (1194, "openvpn"),
    (1883, "mqtt"),
    (3306, "mysql"),
    (3389, "ms-wbt-server"),
    (5353, "mdns"),
    (5432, "postgresql"),
    (6379, "redis"),
    (8080, "http-alt"),
    (9418, "git"),
];

/// Port and protocol to service name.
#[derive(Clone, Debug, Default)]
pub struct Services {
    names: HashMap<(Proto, u16), Box<str>>,
}

impl Services {
    /// The system's table, or the built-in one if `/etc/services` cannot be
    /// read or names nothing.
    pub fn load() -> Services {
        std::fs::read_to_string(SERVICES_FILE)
            .ok()
            .map(|text| Services::parse(&text))
            .filter(|s| !s.is_empty())
            .unwrap_or_else(Services::builtin)
    }

    /// The built-in table (TCP and UDP alike).
    pub fn builtin() -> Services {
        let mut names = HashMap::new();
        for &(port, name) in BUILTIN {
            for proto in [Proto::Tcp, Proto::Udp] {
                names.insert((proto, port), name.into());
            }
        }
        Services { names }
    }

    /// Parses `/etc/services` text: `name port/proto [aliases…] [# comment]`.
    /// The first name given for a port wins; other protocols (sctp, ddp) and
    /// malformed lines are skipped.
    pub fn parse(text: &str) -> Services {
        let mut names = HashMap::new();
        for line in text.lines() {
            let line = line.split('#').next().unwrap_or("");
            let mut fields = line.split_whitespace();
            let (Some(name), Some(port_proto)) = (fields.next(), fields.next()) else {
                continue;
            };
            let Some((port, proto)) = port_proto.split_once('/') else {
                continue;
            };
            let proto = match proto.to_ascii_lowercase().as_str() {
                "tcp" => Proto::Tcp,
                "udp" => Proto::Udp,
                _ => continue,
            };
            let Ok(port) = port.parse::<u16>() else {
                continue;
            };
            let sane = name.len() <= MAX_NAME
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.+/".contains(c));
            if port == 0 || !sane {
                continue;
            }
            names.entry((proto, port)).or_insert_with(|| name.into());
        }
        Services { names }
    }

    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }

    pub fn len(&self) -> usize {
        self.names.len()
    }

    /// The name of `port` for `proto`, if it has one.
    pub fn name(&self, proto: Proto, port: u16) -> Option<&str> {
        self.names.get(&(proto, port)).map(|s| &**s)
    }

    /// Ports whose name contains `needle` (lower case), for the live filter.
    pub fn matching<'a>(&'a self, needle: &'a str) -> impl Iterator<Item = (Proto, u16)> + 'a {
        self.names
            .iter()
            .filter(move |(_, name)| super::contains_ignore_case(name, needle))
            .map(|(k, _)| *k)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "\
# Network services, Internet style
tcpmux		1/tcp				# TCP port service multiplexer
ssh		22/tcp				# SSH Remote Login Protocol
domain		53/tcp				# Domain Name Server
domain		53/udp
http		80/tcp		www		# WorldWideWeb HTTP
https		443/tcp				# http protocol over TLS/SSL
https		443/udp				# HTTP/3
www-alias	80/tcp
sctp-thing	9999/sctp
broken		notaport/tcp
nothing
zero		0/tcp
evil\x1b[2J	7777/tcp
";

    #[test]
    fn parses_the_file_format() {
        let s = Services::parse(TEXT);
        assert_eq!(s.name(Proto::Tcp, 443), Some("https"));
        assert_eq!(s.name(Proto::Udp, 443), Some("https"));
        assert_eq!(s.name(Proto::Tcp, 22), Some("ssh"));
        assert_eq!(s.name(Proto::Udp, 22), None, "tcp only");
        assert_eq!(s.name(Proto::Udp, 53), Some("domain"));
        // The first name for a port wins over later ones.
        assert_eq!(s.name(Proto::Tcp, 80), Some("http"));
        assert_eq!(s.name(Proto::Tcp, 9999), None, "sctp skipped");
        assert_eq!(s.name(Proto::Tcp, 0), None);
        assert_eq!(s.name(Proto::Tcp, 7777), None, "control characters");
        assert_eq!(s.len(), 7);
        let mut m: Vec<_> = s.matching("http").collect();
        m.sort();
        assert_eq!(
            m,
            vec![(Proto::Tcp, 80), (Proto::Tcp, 443), (Proto::Udp, 443)]
        );
    }

    #[test]
    fn builtin_table_when_the_file_names_nothing() {
        assert!(Services::parse("# only comments\n\n").is_empty());
        let b = Services::builtin();
        assert_eq!(b.name(Proto::Tcp, 443), Some("https"));
        assert_eq!(b.name(Proto::Udp, 53), Some("domain"));
        assert!(b.len() >= 60);
        // The system table, whichever it is, knows ssh.
        assert_eq!(Services::load().name(Proto::Tcp, 22), Some("ssh"));
    }
}
