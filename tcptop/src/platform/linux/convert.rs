//! Kernel records to platform-neutral samples.

use std::collections::HashSet;
use std::hash::{BuildHasherDefault, Hasher};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use tcptop_common::{
    AF_INET6, CONN_ACTIVE, CONN_APP, ConnStats, ConnTuple, IPPROTO_UDP, ORIGIN_BORN, UdpFlow,
};

use crate::model::{CompactString, ConnKey, ConnSample, ConnState, Counters, Proto};

fn addr(family: u16, raw: [u8; 16], port: u16) -> SocketAddr {
    let ip = if family == AF_INET6 {
        let v6 = Ipv6Addr::from(raw);
        // An IPv4 peer on a dual-stack socket: show it as IPv4.
        match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(v6),
        }
    } else {
        IpAddr::V4(Ipv4Addr::new(raw[0], raw[1], raw[2], raw[3]))
    };
    SocketAddr::new(ip, port)
}

/// An IPv4-mapped IPv6 address as IPv4, as records show the IPv4 peer of
/// a dual-stack socket.
pub fn unmap(a: SocketAddr) -> SocketAddr {
    match a {
        SocketAddr::V6(v6) => match v6.ip().to_ipv4_mapped() {
            Some(v4) => SocketAddr::new(IpAddr::V4(v4), v6.port()),
            None => a,
        },
        SocketAddr::V4(_) => a,
    }
}

/// The key of a kernel record's connection.
pub fn key(st: &ConnStats) -> ConnKey {
    let t = &st.tuple;
    ConnKey {
        proto: if t.proto == IPPROTO_UDP {
            Proto::Udp
        } else {
            Proto::Tcp
        },
        local: addr(t.family, t.saddr, t.sport),
        remote: addr(t.family, t.daddr, t.dport),
        netns: t.netns,
    }
}

/// Name bytes up to the first NUL, lossily decoded (still untrusted).
pub fn comm(raw: &[u8; 16]) -> CompactString {
    let end = raw.iter().position(|&b| b == 0).unwrap_or(raw.len());
    let raw = &raw[..end];
    // Valid UTF-8 (nearly every name) at once: compact_str's lossy
    // decoding goes a character at a time, 3% of start-up at 200,000
    // adopted connections.
    match std::str::from_utf8(raw) {
        Ok(s) => CompactString::new(s),
        Err(_) => CompactString::from_utf8_lossy(raw),
    }
}

/// Identity of one connection instance: the kernel may reuse a socket's
/// address for a new socket, so the address alone is not enough.
pub fn instance_id(sk: u64, first_ns: u64) -> u64 {
    sk ^ first_ns.rotate_left(32)
}

/// A set of instance ids. They are kernel addresses and times, chosen by
/// no one outside, so a bit mixer (splitmix64's finalizer) hashes them
/// instead of SipHash: every snapshot checks each closed connection's id,
/// tens of thousands a second under churn.
pub type IdSet = HashSet<u64, BuildHasherDefault<IdHash>>;

#[derive(Default)]
pub struct IdHash(u64);

impl Hasher for IdHash {
    fn finish(&self) -> u64 {
        let mut x = self.0;
        x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        x ^ (x >> 31)
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 ^= n;
    }
}

/// The application's bytes since tracking began, from the socket's own
/// counters (`tcptop_common::app_bytes`), when they were read.
pub fn app_since_start(st: &ConnStats) -> (u64, u64) {
    if st.flags & CONN_APP == 0 {
        return (0, 0);
    }
    (
        st.app_tx.saturating_sub(st.app_tx_base),
        st.app_rx.saturating_sub(st.app_rx_base),
    )
}

/// `ended`: from a CLOSE event (the socket is gone), not the live map.
///
/// Bytes: the larger of what the send/receive calls counted and what the
/// socket's counters say the application moved (every path, calls made
/// before the hooks attached included). Both can only fall short of the
/// truth (the counters were read at the last snapshot, the calls miss
/// paths such as splice()), and at teardown the counters are exact.
pub fn sample(sk: u64, st: &ConnStats, ended: bool) -> ConnSample {
    sample_named(sk, st, ended, comm(&st.comm))
}

/// [`sample`] with the owner's name decoded already (the owners' walk
/// decodes each process's once, not each socket's).
pub fn sample_named(sk: u64, st: &ConnStats, ended: bool, comm: CompactString) -> ConnSample {
    let app = app_since_start(st);
    ConnSample {
        key: key(st),
        id: instance_id(sk, st.first_ns),
        pid: st.pid,
        comm,
        state: if ended {
            ConnState::Closed
        } else {
            ConnState::from_tcp(st.state)
        },
        counters: Counters {
            tx_bytes: st.tx_bytes.max(app.0),
            rx_bytes: st.rx_bytes.max(app.1),
            // Kernel segment counters are u32 and wrap.
            tx_packets: u64::from(st.segs_out.wrapping_sub(st.segs_out_base)),
            rx_packets: u64::from(st.segs_in.wrapping_sub(st.segs_in_base)),
            retrans: u64::from(st.retrans.wrapping_sub(st.retrans_base)),
        },
        rtt_us: (st.srtt_us8 != 0).then_some(st.srtt_us8 >> 3),
        cgroup_id: st.cgroup_id,
        // Born under tcptop: SYN_SENT at birth (connect) marks the client.
        // One open before start: unknown.
        active: (st.origin == ORIGIN_BORN).then_some(st.flags & CONN_ACTIVE != 0),
        workload: None,
    }
}

/// A UDP flow from the flow map; `ended`: idle past the timeout, removed.
pub fn udp_sample(t: &ConnTuple, f: &UdpFlow, ended: bool) -> ConnSample {
    ConnSample {
        key: ConnKey {
            proto: Proto::Udp,
            local: addr(t.family, t.saddr, t.sport),
            remote: addr(t.family, t.daddr, t.dport),
            netns: t.netns,
        },
        // The key is the 5-tuple: the start time tells successive flows apart.
        id: instance_id(u64::from(IPPROTO_UDP), f.first_ns),
        pid: f.pid,
        comm: comm(&f.comm),
        state: if ended {
            ConnState::Closed
        } else {
            ConnState::Flow
        },
        counters: Counters {
            tx_bytes: f.tx_bytes,
            rx_bytes: f.rx_bytes,
            tx_packets: f.tx_packets,
            rx_packets: f.rx_packets,
            retrans: 0,
        },
        rtt_us: None,
        cgroup_id: f.cgroup_id,
        active: None,
        workload: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tcptop_common::{AF_INET, IPPROTO_TCP};

    #[test]
    fn converts_v4_v6_and_mapped() {
        let mut st = ConnStats {
            tuple: ConnTuple {
                family: AF_INET,
                proto: IPPROTO_TCP,
                sport: 5000,
                dport: 80,
                netns: 7,
                ..Default::default()
            },
            segs_in: 10,
            segs_in_base: 4,
            segs_out: 2,
            segs_out_base: u32::MAX,
            srtt_us8: 800,
            pid: 42,
            ..Default::default()
        };
        st.tuple.saddr[..4].copy_from_slice(&[127, 0, 0, 1]);
        st.tuple.daddr[..4].copy_from_slice(&[10, 1, 2, 3]);
        st.comm[..4].copy_from_slice(b"curl");
        let s = sample(99, &st, false);
        assert_eq!(s.key.local.to_string(), "127.0.0.1:5000");
        assert_eq!(s.key.remote.to_string(), "10.1.2.3:80");
        assert_eq!(s.comm, "curl");
        assert_eq!(s.counters.rx_packets, 6);
        assert_eq!(s.counters.tx_packets, 3, "wrapping counter");
        assert_eq!(s.rtt_us, Some(100));
        assert_eq!(s.id, 99);
        st.first_ns = 5;
        assert_ne!(sample(99, &st, false).id, 99, "same address, later socket");
        st.state = 7;
        assert_eq!(sample(99, &st, false).state, ConnState::Close);
        assert_eq!(sample(99, &st, true).state, ConnState::Closed);

        st.tuple.family = AF_INET6;
        st.tuple.saddr = Ipv6Addr::LOCALHOST.octets();
        st.tuple.daddr = Ipv4Addr::new(192, 0, 2, 1).to_ipv6_mapped().octets();
        st.srtt_us8 = 0;
        let s = sample(1, &st, false);
        assert_eq!(s.key.local.to_string(), "[::1]:5000");
        assert_eq!(s.key.remote.to_string(), "192.0.2.1:80");
        assert_eq!(s.rtt_us, None);
    }
}
