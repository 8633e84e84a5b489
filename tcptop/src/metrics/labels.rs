//! A row's label set at each level. Values are the row's own text, escaped
//! like every untrusted name tcptop writes (`escape::untrusted`:
//! control, bidi and zero-width characters as `\xNN`/`\u{NNNN}`, backslash
//! doubled, the same text as the jsonl and CSV fields); the exposition
//! format's own escaping of `\`, `"` and newline is prometheus-client's.
//! Labels with an empty value are left out (Prometheus treats both alike).

use std::net::{IpAddr, SocketAddr};

use crate::escape::untrusted;
use crate::model::Proto;
use crate::table::Row;

/// `--metrics-level`: how fine the series are.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Level {
    /// `proto`, `comm`, `workload`, `unit`, `container`, `pod`.
    #[default]
    Process,
    /// Also `remote_ip` (the top N by bytes, the others `other`), `port`
    /// (the service port, never the ephemeral one) and `role` (`server`:
    /// the port is this machine's, `client`: the remote's).
    Remote,
    /// Also `pid`, `local`, `remote` (address:port) and `netns`: a series
    /// per connection (opt-in).
    Connection,
}

impl Level {
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Process => "process",
            Level::Remote => "remote",
            Level::Connection => "connection",
        }
    }
}

/// A label set: names and values, in order, empty values left out.
pub type Labels = Vec<(&'static str, String)>;

/// Which end of a connection serves it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Role {
    /// The service port is local: the remote connected to this machine.
    Server,
    /// The service port is the remote's.
    Client,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Server => "server",
            Role::Client => "client",
        }
    }
}

/// The kernel's range of ephemeral ports (read once, by the platform).
pub fn ephemeral_range() -> (u16, u16) {
    crate::platform::ephemeral_ports()
}

/// The service port of a connection between ports `local` and `remote`,
/// and whose it is. Where the source knows which end opened the connection
/// (`active`: this end called connect()), the other end's port serves: a
/// service on a port inside the ephemeral range (gRPC's 50051) is told from
/// its clients' ports that way. Otherwise: the port outside the ephemeral
/// range when the other is inside it; both inside, or both outside, the
/// lower one. Port 0 (a UDP flow whose peer is not known) is never the
/// service port.
pub fn service_port(
    local: u16,
    remote: u16,
    active: Option<bool>,
    ephemeral: (u16, u16),
) -> (u16, Role) {
    let eph = |p: u16| (ephemeral.0..=ephemeral.1).contains(&p);
    let local_serves = match (local, remote) {
        (_, 0) => true,
        (0, _) => false,
        _ if active.is_some() => active == Some(false),
        _ => match (eph(local), eph(remote)) {
            (true, false) => false,
            (false, true) => true,
            _ => local <= remote,
        },
    };
    if local_serves {
        (local, Role::Server)
    } else {
        (remote, Role::Client)
    }
}

/// The address as people write it: an IPv4-mapped IPv6 address as IPv4.
pub fn canonical_ip(a: &SocketAddr) -> IpAddr {
    a.ip().to_canonical()
}

/// Label sets for rows.
#[derive(Clone, Debug)]
pub struct Labeler {
    pub level: Level,
    pub ephemeral: (u16, u16),
}

impl Labeler {
    /// The row's label set. `named`: at the remote level, whether its remote
    /// address has a series of its own (else `remote_ip="other"`).
    pub fn labels(&self, r: &Row, named: bool) -> Labels {
        let mut l = Labels::with_capacity(10);
        push(&mut l, "proto", r.key.proto.as_str());
        push(&mut l, "comm", &untrusted(&r.comm));
        if let Some(w) = &r.workload {
            push(&mut l, "workload", &untrusted(w.label()));
            for (name, v) in [
                ("unit", &w.unit),
                ("container", &w.container),
                ("pod", &w.pod),
            ] {
                if let Some(v) = v {
                    push(&mut l, name, &untrusted(v));
                }
            }
        }
        match self.level {
            Level::Process => {}
            Level::Remote => {
                let ip = if named {
                    canonical_ip(&r.key.remote).to_string()
                } else {
                    "other".to_string()
                };
                push(&mut l, "remote_ip", &ip);
                let (port, role) = service_port(
                    r.key.local.port(),
                    r.key.remote.port(),
                    r.active,
                    self.ephemeral,
                );
                push(&mut l, "port", &port.to_string());
                push(&mut l, "role", role.as_str());
            }
            Level::Connection => {
                push(&mut l, "pid", &r.pid.to_string());
                push(&mut l, "local", &r.key.local.to_string());
                push(&mut l, "remote", &r.key.remote.to_string());
                push(&mut l, "netns", &r.key.netns.to_string());
            }
        }
        l
    }
}

/// The label set of the series that takes what does not fit.
pub fn overflow_labels(proto: Proto) -> Labels {
    vec![
        ("proto", proto.as_str().to_string()),
        ("overflow", "true".to_string()),
    ]
}

fn push(l: &mut Labels, name: &'static str, value: &str) {
    if !value.is_empty() {
        l.push((name, value.to_string()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EPH: (u16, u16) = (32768, 60999);

    #[test]
    fn service_port_is_never_the_ephemeral_one() {
        // (local, remote) → (service port, role)
        let cases = [
            ((45000, 443), (443, Role::Client)),
            ((443, 45000), (443, Role::Server)),
            ((8080, 50000), (8080, Role::Server)),
            ((50000, 8080), (8080, Role::Client)),
            // Both outside the range: the lower.
            ((5432, 6000), (5432, Role::Server)),
            ((6000, 5432), (5432, Role::Client)),
            // Both inside: the lower (a guess; documented).
            ((40401, 45000), (40401, Role::Server)),
            ((45000, 40401), (40401, Role::Client)),
            // A UDP flow with an unknown peer: its own port.
            ((53, 0), (53, Role::Server)),
            ((40000, 0), (40000, Role::Server)),
            ((0, 53), (53, Role::Client)),
            ((1000, 1000), (1000, Role::Server)),
        ];
        for ((local, remote), want) in cases {
            assert_eq!(
                service_port(local, remote, None, EPH),
                want,
                "{local} -> {remote}"
            );
        }
        // Another range moves the answer.
        assert_eq!(
            service_port(40401, 45000, None, (45000, 45999)),
            (40401, Role::Server)
        );
        assert_eq!(
            service_port(20000, 40401, None, (10000, 30000)),
            (40401, Role::Client)
        );
        // Who opened the connection decides where the source knows it: a
        // service inside the ephemeral range (gRPC's 50051) and a client
        // whose port is lower.
        assert_eq!(
            service_port(39096, 50051, Some(true), EPH),
            (50051, Role::Client)
        );
        assert_eq!(
            service_port(50051, 39096, Some(false), EPH),
            (50051, Role::Server)
        );
        // Even against the range: the end that connected is the client.
        assert_eq!(
            service_port(443, 45000, Some(true), EPH),
            (45000, Role::Client)
        );
        // A UDP flow's unknown peer is never the service port.
        assert_eq!(
            service_port(40000, 0, Some(true), EPH),
            (40000, Role::Server)
        );
    }

    #[test]
    fn range_is_read_or_defaulted() {
        let (lo, hi) = ephemeral_range();
        assert!(lo <= hi);
    }
}
