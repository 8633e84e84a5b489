//! The parser and the tracker on lists built byte by byte from XNU's
//! layouts. The fixtures write each field at the offset worked out by hand
//! from the headers (the numbers below, not `layout`'s constants), so a
//! mirror that drifted from the headers fails here as well as in the
//! compile-time checks.

use std::net::SocketAddr;

use super::parse::{Counting, ParseError, Pcb, PcbStats, TcpInfo, parse, read_consistent};
use super::track::Tracker;
use crate::model::{ConnState, Proto};

const INP_IPV4: u8 = 1;
const INP_IPV6: u8 = 2;

/// One socket as the kernel would write it.
#[derive(Clone)]
struct Sock {
    vflag: u8,
    laddr: [u8; 16],
    lport: u16,
    faddr: [u8; 16],
    fport: u16,
    gencnt: u64,
    protocol: i32,
    uid: u32,
    last_pid: i32,
    e_pid: i32,
    /// `xst_tc_stats`: per slot rxpackets, rxbytes, txpackets, txbytes.
    stats: [[u64; 4]; 4],
    /// t_state, t_srtt, t_rxtshift, snd_cwnd.
    tcp: Option<(i32, i32, i32, u32)>,
    /// `xsocket_n`'s length: 104, or 76 before macOS 13.
    xsocket_len: usize,
}

fn v4(a: [u8; 4]) -> [u8; 16] {
    // struct in_addr_4in6: three zero words, then the address.
    let mut r = [0u8; 16];
    r[12..].copy_from_slice(&a);
    r
}

fn v6(s: &str) -> [u8; 16] {
    s.parse::<std::net::Ipv6Addr>().unwrap().octets()
}

fn tcp4() -> Sock {
    Sock {
        vflag: INP_IPV4,
        laddr: v4([192, 0, 2, 1]),
        lport: 50000,
        faddr: v4([198, 51, 100, 7]),
        fport: 443,
        gencnt: 77,
        protocol: 6,
        uid: 501,
        last_pid: 4242,
        e_pid: 4000,
        stats: [
            [10, 5000, 7, 1200],
            [1, 100, 0, 0],
            [0, 0, 0, 0],
            [0, 0, 0, 0],
        ],
        // ESTABLISHED, 40 ms << 5, backoff 2, cwnd.
        tcp: Some((4, 40 << 5, 2, 14480)),
        xsocket_len: 104,
    }
}

fn udp4() -> Sock {
    Sock {
        vflag: INP_IPV4,
        laddr: v4([0, 0, 0, 0]),
        lport: 5353,
        faddr: v4([0, 0, 0, 0]),
        fport: 0,
        gencnt: 12,
        protocol: 17,
        uid: 65,
        last_pid: 300,
        e_pid: 300,
        stats: [[3, 900, 2, 400], [0; 4], [0; 4], [0; 4]],
        tcp: None,
        xsocket_len: 104,
    }
}

fn put(buf: &mut [u8], at: usize, bytes: &[u8]) {
    buf[at..at + bytes.len()].copy_from_slice(bytes);
}

/// A record of `len` bytes with its length and kind, padded to 8 bytes.
fn record(out: &mut Vec<u8>, len: usize, kind: u32, fields: &[(usize, Vec<u8>)]) {
    let mut r = vec![0u8; len.next_multiple_of(8)];
    put(&mut r, 0, &(len as u32).to_le_bytes());
    put(&mut r, 4, &kind.to_le_bytes());
    for (at, bytes) in fields {
        put(&mut r, *at, bytes);
    }
    out.extend_from_slice(&r);
}

fn xinpgen(out: &mut Vec<u8>, count: u32, generation: u64) {
    let mut r = vec![0u8; 24];
    put(&mut r, 0, &24u32.to_le_bytes());
    put(&mut r, 4, &count.to_le_bytes());
    put(&mut r, 8, &generation.to_le_bytes());
    put(&mut r, 16, &9u64.to_le_bytes());
    out.extend_from_slice(&r);
}

fn sock_records(out: &mut Vec<u8>, s: &Sock) {
    record(
        out,
        104,
        0x10,
        &[
            (16, s.fport.to_be_bytes().to_vec()),
            (18, s.lport.to_be_bytes().to_vec()),
            (28, s.gencnt.to_le_bytes().to_vec()),
            (44, vec![s.vflag]),
            (46, vec![s.protocol as u8]),
            (48, s.faddr.to_vec()),
            (64, s.laddr.to_vec()),
        ],
    );
    record(
        out,
        s.xsocket_len,
        0x01,
        &[
            (36, s.protocol.to_le_bytes().to_vec()),
            (40, 30i32.to_le_bytes().to_vec()),
            (64, s.uid.to_le_bytes().to_vec()),
            (68, s.last_pid.to_le_bytes().to_vec()),
            (72, s.e_pid.to_le_bytes().to_vec()),
        ],
    );
    record(out, 32, 0x02, &[(8, 17u32.to_le_bytes().to_vec())]);
    record(out, 32, 0x04, &[(8, 0u32.to_le_bytes().to_vec())]);
    let mut stats = Vec::new();
    for (i, slot) in s.stats.iter().enumerate() {
        for (j, v) in slot.iter().enumerate() {
            stats.push((8 + 32 * i + 8 * j, v.to_le_bytes().to_vec()));
        }
    }
    record(out, 136, 0x08, &stats);
    if let Some((state, srtt, rxtshift, cwnd)) = s.tcp {
        record(
            out,
            204,
            0x20,
            &[
                (36, state.to_le_bytes().to_vec()),
                (100, cwnd.to_le_bytes().to_vec()),
                (136, srtt.to_le_bytes().to_vec()),
                (144, rxtshift.to_le_bytes().to_vec()),
            ],
        );
    }
}

/// A whole list: opening xinpgen, the sockets, closing xinpgen (none when
/// there are no sockets, as the kernel does).
fn list(socks: &[Sock], gen_first: u64, gen_last: u64) -> Vec<u8> {
    let mut out = Vec::new();
    xinpgen(&mut out, socks.len() as u32, gen_first);
    if socks.is_empty() {
        return out;
    }
    for s in socks {
        sock_records(&mut out, s);
    }
    xinpgen(&mut out, socks.len() as u32, gen_last);
    out
}

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

#[test]
fn record_strides_match_the_kernel() {
    // get_pcblist_n's item_size: 104 + 104 + 2 * 32 + 136 (+ 208 for TCP).
    let udp = list(&[udp4()], 1, 1);
    assert_eq!(udp.len(), 24 + 408 + 24);
    let tcp = list(&[tcp4()], 1, 1);
    assert_eq!(tcp.len(), 24 + 616 + 24);
    // Before macOS 13 xsocket_n was 76 bytes (80 in the list): 384.
    let old = list(
        &[Sock {
            xsocket_len: 76,
            ..udp4()
        }],
        1,
        1,
    );
    assert_eq!(old.len(), 24 + 384 + 24);
}

#[test]
fn tcp_ipv4() {
    let buf = list(&[tcp4()], 100, 100);
    let l = parse(&buf, Proto::Tcp, Counting::DataSlot).unwrap();
    assert!(!l.changed);
    assert_eq!(
        l.pcbs,
        vec![Pcb {
            proto: Proto::Tcp,
            local: addr("192.0.2.1:50000"),
            remote: addr("198.51.100.7:443"),
            gencnt: 77,
            uid: 501,
            last_pid: 4242,
            e_pid: 4000,
            stats: PcbStats {
                rx_packets: 10,
                rx_bytes: 5000,
                tx_packets: 7,
                tx_bytes: 1200,
            },
            tcp: Some(TcpInfo {
                state: 4,
                srtt_us: Some(40_000),
                rxtshift: 2,
                cwnd: 14480,
            }),
        }]
    );
}

#[test]
fn counter_slots_by_kernel() {
    assert_eq!(Counting::for_darwin(24), Counting::DataSlot);
    assert_eq!(Counting::for_darwin(23), Counting::PerClass);
    // Before macOS 15 the four slots are traffic classes: summed.
    let mut s = tcp4();
    s.stats[2] = [4, 40, 5, 50];
    s.stats[3] = [1, 1, 1, 1];
    let buf = list(&[s], 100, 100);
    let l = parse(&buf, Proto::Tcp, Counting::PerClass).unwrap();
    assert_eq!(
        l.pcbs[0].stats,
        PcbStats {
            rx_packets: 16,
            rx_bytes: 5141,
            tx_packets: 13,
            tx_bytes: 1251,
        }
    );
    // From macOS 15 slot 1 is what the buffers refused: not counted.
    let l = parse(&buf, Proto::Tcp, Counting::DataSlot).unwrap();
    assert_eq!(l.pcbs[0].stats.rx_bytes, 5000);
}

#[test]
fn tcp_ipv6_and_v4_mapped() {
    let six = Sock {
        vflag: INP_IPV6,
        laddr: v6("2001:db8::1"),
        lport: 40001,
        faddr: v6("2001:db8::2"),
        fport: 22,
        gencnt: 80,
        ..tcp4()
    };
    // A dual-stack socket connected to an IPv4 peer: INP_IPV4 set, the
    // addresses in in_addr_4in6 form.
    let dual = Sock {
        vflag: INP_IPV4,
        laddr: v4([10, 0, 0, 5]),
        faddr: v4([10, 0, 0, 9]),
        gencnt: 81,
        ..six.clone()
    };
    // An IPv6 socket whose addresses are IPv4-mapped: shown as IPv4.
    let mapped = Sock {
        vflag: INP_IPV6,
        laddr: v6("::ffff:10.0.0.5"),
        faddr: v6("::ffff:10.0.0.10"),
        gencnt: 82,
        ..six.clone()
    };
    let buf = list(&[six, dual, mapped], 90, 90);
    let l = parse(&buf, Proto::Tcp, Counting::DataSlot).unwrap();
    let ends: Vec<_> = l
        .pcbs
        .iter()
        .map(|p| (p.local, p.remote, p.gencnt))
        .collect();
    assert_eq!(
        ends,
        vec![
            (addr("[2001:db8::1]:40001"), addr("[2001:db8::2]:22"), 80),
            (addr("10.0.0.5:40001"), addr("10.0.0.9:22"), 81),
            (addr("10.0.0.5:40001"), addr("10.0.0.10:22"), 82),
        ]
    );
}

#[test]
fn udp_connected_unconnected_and_old_xsocket() {
    let connected = Sock {
        vflag: INP_IPV6,
        laddr: v6("fe80::1"),
        lport: 60000,
        faddr: v6("2001:db8::53"),
        fport: 53,
        gencnt: 13,
        xsocket_len: 76,
        ..udp4()
    };
    let buf = list(&[udp4(), connected], 20, 20);
    let l = parse(&buf, Proto::Udp, Counting::DataSlot).unwrap();
    assert_eq!(l.pcbs.len(), 2);
    assert_eq!(l.pcbs[0].local, addr("0.0.0.0:5353"));
    assert_eq!(l.pcbs[0].remote, addr("0.0.0.0:0"));
    assert_eq!(l.pcbs[0].tcp, None);
    assert_eq!(
        (l.pcbs[0].uid, l.pcbs[0].last_pid, l.pcbs[0].stats.tx_bytes),
        (65, 300, 400)
    );
    assert_eq!(l.pcbs[1].remote, addr("[2001:db8::53]:53"));
    assert_eq!(l.pcbs[1].stats.rx_bytes, 900);
}

#[test]
fn empty_list_has_no_closing_record() {
    let buf = list(&[], 3, 3);
    assert_eq!(buf.len(), 24);
    assert_eq!(
        parse(&buf, Proto::Tcp, Counting::DataSlot).unwrap(),
        Default::default()
    );
}

#[test]
fn left_out_as_netstat_does() {
    // Freed and reused while the list was written (newer than the list),
    // another protocol, neither IPv4 nor IPv6.
    let newer = Sock {
        gencnt: 99,
        ..tcp4()
    };
    let other = Sock {
        protocol: 17,
        ..tcp4()
    };
    let neither = Sock { vflag: 0, ..tcp4() };
    let buf = list(&[newer, other, neither, tcp4()], 90, 90);
    let l = parse(&buf, Proto::Tcp, Counting::DataSlot).unwrap();
    assert_eq!(l.pcbs.len(), 1);
    assert_eq!(l.pcbs[0].gencnt, 77);
}

#[test]
fn unknown_kinds_and_longer_records_are_skipped() {
    let mut buf = Vec::new();
    xinpgen(&mut buf, 1, 40);
    // A kind from a future kernel, 44 bytes (padded to 48).
    record(&mut buf, 44, 0x400, &[]);
    sock_records(&mut buf, &udp4());
    xinpgen(&mut buf, 1, 40);
    let l = parse(&buf, Proto::Udp, Counting::DataSlot).unwrap();
    assert_eq!(l.pcbs.len(), 1);
}

#[test]
fn generation_change_is_reported_and_retried() {
    let changed = list(&[tcp4()], 100, 101);
    let l = parse(&changed, Proto::Tcp, Counting::DataSlot).unwrap();
    assert!(l.changed);

    // A reader retries while the list changes, and keeps the last read.
    let steady = list(
        &[
            tcp4(),
            Sock {
                gencnt: 78,
                ..tcp4()
            },
        ],
        101,
        101,
    );
    let mut reads = vec![changed.clone(), steady];
    let mut calls = 0;
    let l = read_consistent::<()>(
        || {
            calls += 1;
            Ok(reads.remove(0))
        },
        Proto::Tcp,
        Counting::DataSlot,
        3,
    )
    .unwrap()
    .unwrap();
    assert_eq!((calls, l.changed, l.pcbs.len()), (2, false, 2));

    let mut calls = 0;
    let l = read_consistent::<()>(
        || {
            calls += 1;
            Ok(changed.clone())
        },
        Proto::Tcp,
        Counting::DataSlot,
        3,
    )
    .unwrap()
    .unwrap();
    assert_eq!((calls, l.changed, l.pcbs.len()), (3, true, 1));

    // A read error is the reader's, at once.
    assert_eq!(
        read_consistent(|| Err("EPERM"), Proto::Tcp, Counting::DataSlot, 3),
        Err("EPERM")
    );
}

#[test]
fn every_truncation_is_an_error() {
    let second = Sock {
        lport: 50002,
        gencnt: 78,
        ..tcp4()
    };
    let full = list(&[tcp4(), second], 100, 100);
    assert_eq!(
        parse(&full, Proto::Tcp, Counting::DataSlot)
            .unwrap()
            .pcbs
            .len(),
        2
    );
    for cut in 0..full.len() {
        let r = parse(&full[..cut], Proto::Tcp, Counting::DataSlot);
        assert!(r.is_err(), "a list cut at {cut} of {} parsed", full.len());
    }
    assert_eq!(
        parse(&full[..10], Proto::Tcp, Counting::DataSlot),
        Err(ParseError::Truncated {
            what: "the opening xinpgen",
            at: 0,
            need: 24,
            len: 10,
        })
    );
    // Cut after the first socket: its records are whole, the list is not.
    assert_eq!(
        parse(&full[..24 + 616], Proto::Tcp, Counting::DataSlot),
        Err(ParseError::Truncated {
            what: "the closing xinpgen",
            at: 640,
            need: 24,
            len: 640,
        })
    );
    // Cut inside the second socket's records.
    assert_eq!(
        parse(&full[..24 + 616 + 104], Proto::Tcp, Counting::DataSlot),
        Err(ParseError::Incomplete { at: 640 })
    );
}

#[test]
fn malformed_lists_are_clear_errors() {
    let full = list(&[tcp4()], 100, 100);
    let with = |at: usize, bytes: &[u8]| {
        let mut b = full.clone();
        put(&mut b, at, bytes);
        parse(&b, Proto::Tcp, Counting::DataSlot)
    };
    // A record of length 0 would loop forever if believed.
    assert_eq!(
        with(24, &0u32.to_le_bytes()),
        Err(ParseError::TooShort {
            what: "a record",
            at: 24,
            claimed: 0,
            need: 24,
        })
    );
    // Longer than the list.
    assert!(matches!(
        with(24, &u32::MAX.to_le_bytes()),
        Err(ParseError::Truncated {
            what: "a record",
            ..
        })
    ));
    // An xinpcb_n too short for the addresses.
    assert_eq!(
        with(24, &40u32.to_le_bytes()),
        Err(ParseError::TooShort {
            what: "an xinpcb_n",
            at: 24,
            claimed: 40,
            need: 80,
        })
    );
    // The opening record claims to be shorter than itself.
    assert!(matches!(
        with(0, &8u32.to_le_bytes()),
        Err(ParseError::TooShort { at: 0, .. })
    ));
    // The receive buffer's record twice (the second in the send's place).
    assert_eq!(
        with(24 + 104 + 104 + 32 + 4, &2u32.to_le_bytes()),
        Err(ParseError::Repeated { kind: 2, at: 264 })
    );
    // Something after the closing record.
    let mut b = full.clone();
    b.extend_from_slice(&[0u8; 16]);
    assert_eq!(
        parse(&b, Proto::Tcp, Counting::DataSlot),
        Err(ParseError::Trailing { at: 640, extra: 16 })
    );
    // A TCP list whose socket lacks its xtcpcb_n.
    let udp_shaped = list(
        &[Sock {
            tcp: None,
            ..tcp4()
        }],
        100,
        100,
    );
    assert!(matches!(
        parse(&udp_shaped, Proto::Tcp, Counting::DataSlot),
        Err(ParseError::Incomplete { at: 24 })
    ));
    // The message names the list and what to do.
    let e = with(24, &0u32.to_le_bytes()).unwrap_err();
    let msg = super::parse::describe(Proto::Tcp, &e);
    assert!(
        msg.contains("net.inet.tcp.pcblist_n") && msg.contains("sw_vers"),
        "{msg}"
    );
}

#[test]
fn garbage_never_panics() {
    // Deterministic noise, and noise after a valid opening record.
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    for round in 0..2000 {
        let n = (next() % 900) as usize;
        let mut b: Vec<u8> = (0..n).map(|_| next() as u8).collect();
        if round % 2 == 0 && b.len() >= 24 {
            put(&mut b, 0, &24u32.to_le_bytes());
            // Small record lengths, so the walk goes deep.
            let mut at = 24;
            while at + 8 <= b.len() {
                let len = 8 + (next() % 240) as u32;
                put(&mut b, at, &len.to_le_bytes());
                put(&mut b, at + 4, &(1u32 << (next() % 6)).to_le_bytes());
                at += (len as usize).next_multiple_of(8);
            }
        }
        for proto in [Proto::Tcp, Proto::Udp] {
            let _ = parse(&b, proto, Counting::PerClass);
        }
    }
}

#[test]
fn srtt_units() {
    use super::parse::srtt_us;
    // Milliseconds with five bits of fraction.
    assert_eq!(srtt_us(40 << 5), Some(40_000));
    assert_eq!(srtt_us(1), Some(31));
    assert_eq!(srtt_us(0), None);
    assert_eq!(srtt_us(-5), None);
    // Beyond a u32 of microseconds (over an hour): not a measurement.
    assert_eq!(srtt_us(i32::MAX), None);
    assert_eq!(srtt_us(4_000_000 << 5), Some(4_000_000_000));
}

fn pcbs(socks: &[Sock], proto: Proto) -> Vec<Pcb> {
    parse(&list(socks, 100, 100), proto, Counting::DataSlot)
        .unwrap()
        .pcbs
}

fn names(pid: u32) -> String {
    match pid {
        4242 => "curl".into(),
        300 => "mDNSResponder".into(),
        _ => String::new(),
    }
}

#[test]
fn tracker_counts_from_start_and_closes_what_vanished() {
    let listener = Sock {
        faddr: v4([0; 4]),
        fport: 0,
        lport: 8080,
        gencnt: 5,
        tcp: Some((1, 0, 0, 0)),
        ..tcp4()
    };
    let mut t = Tracker::new();
    // First read: what is open counts from now; the idle UDP socket and
    // the listener are not shown.
    let mut all = pcbs(&[tcp4(), listener.clone()], Proto::Tcp);
    all.extend(pcbs(&[udp4()], Proto::Udp));
    let s = t.update(&all, &mut names);
    assert_eq!(s.live.len(), 1);
    let a = &s.live[0];
    assert_eq!(
        (a.pid, a.comm.as_str(), a.state, a.id),
        (4242, "curl", ConnState::Established, 77)
    );
    assert_eq!(a.counters, Default::default());
    assert_eq!(a.rtt_us, Some(40_000));
    assert!(s.closed.is_empty());

    // Second read: A moved data and backed off once more, B is new (counts
    // from its birth), the UDP socket moved data.
    let mut a2 = tcp4();
    a2.stats[0] = [15, 8000, 9, 1700];
    a2.tcp = Some((4, 50 << 5, 3, 14480));
    let b = Sock {
        lport: 50001,
        gencnt: 90,
        last_pid: 0,
        e_pid: 777,
        stats: [[1, 60, 2, 517], [0; 4], [0; 4], [0; 4]],
        tcp: Some((2, 0, 0, 1448)),
        ..tcp4()
    };
    let mut u2 = udp4();
    u2.stats[0] = [5, 1300, 2, 400];
    let mut all = pcbs(&[a2.clone(), b, listener], Proto::Tcp);
    all.extend(pcbs(&[u2], Proto::Udp));
    let s = t.update(&all, &mut names);
    assert_eq!(s.live.len(), 3);
    let find = |port: u16| s.live.iter().find(|c| c.key.local.port() == port).unwrap();
    let a = find(50000);
    assert_eq!(
        (
            a.counters.rx_bytes,
            a.counters.tx_bytes,
            a.counters.rx_packets,
            a.counters.tx_packets,
            a.counters.retrans
        ),
        (3000, 500, 5, 2, 1)
    );
    assert_eq!(a.rtt_us, Some(50_000));
    let b = find(50001);
    assert_eq!((b.state, b.pid, b.rtt_us), (ConnState::SynSent, 777, None));
    assert_eq!((b.counters.rx_bytes, b.counters.tx_bytes), (60, 517));
    let u = find(5353);
    assert_eq!(
        (u.key.proto, u.state, u.comm.as_str()),
        (Proto::Udp, ConnState::Flow, "mDNSResponder")
    );
    assert_eq!((u.counters.rx_bytes, u.counters.rx_packets), (400, 2));
    assert_eq!(u.key.remote, addr("0.0.0.0:0"));

    // Third read: A and the UDP socket are gone: CLOSED once, with what
    // the last read showed; B stays.
    let mut b3 = pcbs(
        &[Sock {
            gencnt: 90,
            lport: 50001,
            ..tcp4()
        }],
        Proto::Tcp,
    );
    b3[0].tcp = Some(TcpInfo {
        state: 4,
        srtt_us: Some(1000),
        rxtshift: 0,
        cwnd: 1448,
    });
    let s = t.update(&b3, &mut names);
    assert_eq!(s.live.len(), 1);
    assert_eq!(s.closed.len(), 2);
    let a = s
        .closed
        .iter()
        .find(|c| c.key.local.port() == 50000)
        .unwrap();
    assert_eq!(a.state, ConnState::Closed);
    assert_eq!((a.counters.rx_bytes, a.counters.tx_bytes), (3000, 500));
    let u = s.closed.iter().find(|c| c.key.proto == Proto::Udp).unwrap();
    assert_eq!(u.counters.rx_bytes, 400);
    // Reported once.
    let s = t.update(&b3, &mut names);
    assert!(s.closed.is_empty());
}

#[test]
fn tracker_tells_a_reused_tuple_from_its_predecessor() {
    let mut t = Tracker::new();
    t.update(&pcbs(&[tcp4()], Proto::Tcp), &mut names);
    // The same 4-tuple, a new pcb: the old one closed, the new one counts
    // from its birth.
    let s = t.update(
        &pcbs(
            &[Sock {
                gencnt: 95,
                ..tcp4()
            }],
            Proto::Tcp,
        ),
        &mut names,
    );
    assert_eq!((s.live.len(), s.closed.len()), (1, 1));
    assert_eq!(s.live[0].id, 95);
    assert_eq!(s.live[0].counters.rx_bytes, 5000);
    assert_eq!(s.closed[0].id, 77);
}

#[test]
fn tcp_states_in_xnu_numbering() {
    use super::track::conn_state;
    let want = [
        ConnState::Close,
        ConnState::Listen,
        ConnState::SynSent,
        ConnState::SynRecv,
        ConnState::Established,
        ConnState::CloseWait,
        ConnState::FinWait1,
        ConnState::Closing,
        ConnState::LastAck,
        ConnState::FinWait2,
        ConnState::TimeWait,
    ];
    for (n, s) in want.into_iter().enumerate() {
        assert_eq!(conn_state(n as i32), s);
    }
    assert_eq!(conn_state(11), ConnState::Unknown(11));
    assert_eq!(conn_state(-1), ConnState::Unknown(255));
}
