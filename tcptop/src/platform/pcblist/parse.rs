//! One socket list's bytes to one [`Pcb`] per socket.
//!
//! The list (`get_pcblist_n`, `bsd/netinet/in_pcblist.c`) is an `xinpgen`,
//! then per socket the records `xinpcb_n`, `xsocket_n`, `xsockbuf_n` twice,
//! `xsockstat_n` and (TCP) `xtcpcb_n`, each with its length and kind first
//! and each starting on an 8-byte boundary; then, if there were sockets, a
//! closing `xinpgen`. Records are walked by their own lengths, as netstat
//! does (`protopr`, network_cmds `netstat.tproj/inet.c`): a record longer
//! than we know (a newer kernel) is fine, one shorter than the fields read
//! from it is an error, a kind we do not know is skipped.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use super::layout::{self, off};
use crate::model::Proto;

/// What the per-socket counter slots mean, which depends on the kernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Counting {
    /// xnu-11215 (macOS 15) and later: slot 0 (`SO_STATS_DATA`) counts the
    /// bytes and packets that entered the socket's buffers, slot 1
    /// (`SO_STATS_SBNOSPACE`) what was refused for lack of buffer space;
    /// only slot 0 is read.
    DataSlot,
    /// Before: one slot per traffic class (best effort, background, video,
    /// voice), summed.
    PerClass,
}

impl Counting {
    /// For the running kernel's Darwin major version (`kern.osrelease`:
    /// 24 is macOS 15, xnu-11215).
    pub fn for_darwin(major: u32) -> Counting {
        if major >= 24 {
            Counting::DataSlot
        } else {
            Counting::PerClass
        }
    }
}

/// Bytes and packets through one socket since it was created.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PcbStats {
    pub rx_packets: u64,
    pub rx_bytes: u64,
    pub tx_packets: u64,
    pub tx_bytes: u64,
}

/// What `xtcpcb_n` says of a TCP connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TcpInfo {
    /// `t_state`, XNU's numbering (`bsd/netinet/tcp_fsm.h`).
    pub state: i32,
    /// Smoothed RTT in microseconds; None before the first measurement.
    pub srtt_us: Option<u32>,
    /// Retransmit timeouts in a row without an ACK (`t_rxtshift`).
    pub rxtshift: i32,
    /// Congestion window in bytes.
    pub cwnd: u32,
}

/// One socket of a list.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pcb {
    pub proto: Proto,
    pub local: SocketAddr,
    pub remote: SocketAddr,
    /// `inp_gencnt`: set when the pcb is allocated, never reused (0 for
    /// the user-space flows Skywalk lists after the kernel's sockets).
    pub gencnt: u64,
    pub uid: u32,
    /// The last process that made a call on the socket.
    pub last_pid: i32,
    /// The process it acts for (a delegated socket), else its creator.
    pub e_pid: i32,
    pub stats: PcbStats,
    /// TCP only.
    pub tcp: Option<TcpInfo>,
}

/// One list as read.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct List {
    pub pcbs: Vec<Pcb>,
    /// The generation in the closing record differs from the opening one:
    /// sockets came or went while the kernel wrote the list (a reader
    /// retries).
    pub changed: bool,
}

/// What is wrong with a list. Offsets are from the start of the buffer.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("the list ends at byte {len}: {what} needs {need} bytes from byte {at}")]
    Truncated {
        what: &'static str,
        at: usize,
        need: usize,
        len: usize,
    },
    #[error("{what} at byte {at} says it is {claimed} bytes long; it needs at least {need}")]
    TooShort {
        what: &'static str,
        at: usize,
        claimed: usize,
        need: usize,
    },
    #[error("record kind {kind:#x} at byte {at} repeats before the socket's records are complete")]
    Repeated { kind: u32, at: usize },
    #[error("the list ends inside a socket's records (they start at byte {at})")]
    Incomplete { at: usize },
    #[error("{extra} bytes follow the closing record at byte {at}")]
    Trailing { at: usize, extra: usize },
}

/// A list problem as a message for the user, naming the list.
pub fn describe(proto: Proto, e: &ParseError) -> String {
    let name = match proto {
        Proto::Tcp => "net.inet.tcp.pcblist_n",
        Proto::Udp => "net.inet.udp.pcblist_n",
    };
    format!(
        "cannot read the kernel's socket list ({name}): {e}; this macOS version may lay \
         it out differently (please report it with `sw_vers`)"
    )
}

/// Reads a list with `read` until it did not change while being read, at
/// most `tries` times (at least once); the last read is used if it always
/// changed (its sockets are each whole: the kernel writes the list holding
/// the protocol's lock, and the change only says that sockets came or went
/// around it).
pub fn read_consistent<E>(
    mut read: impl FnMut() -> Result<Vec<u8>, E>,
    proto: Proto,
    counting: Counting,
    tries: u32,
) -> Result<Result<List, ParseError>, E> {
    let mut n = 0;
    loop {
        n += 1;
        let buf = read()?;
        match parse(&buf, proto, counting) {
            Ok(list) if list.changed && n < tries => continue,
            other => return Ok(other),
        }
    }
}

fn u16_be(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

fn u32_le(b: &[u8], at: usize) -> u32 {
    let mut w = [0u8; 4];
    w.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(w)
}

fn i32_le(b: &[u8], at: usize) -> i32 {
    u32_le(b, at).cast_signed()
}

fn u64_le(b: &[u8], at: usize) -> u64 {
    let mut w = [0u8; 8];
    w.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(w)
}

const fn roundup8(n: usize) -> usize {
    n.next_multiple_of(8)
}

/// The records of one socket that are read, each at least as long as the
/// fields read from it.
struct Records<'a> {
    inpcb: &'a [u8],
    socket: &'a [u8],
    stats: &'a [u8],
    tcpcb: Option<&'a [u8]>,
}

/// The records of one socket, as they arrive.
#[derive(Default)]
struct Item<'a> {
    inpcb: Option<&'a [u8]>,
    socket: Option<&'a [u8]>,
    rcvbuf: bool,
    sndbuf: bool,
    stats: Option<&'a [u8]>,
    tcpcb: Option<&'a [u8]>,
}

impl<'a> Item<'a> {
    fn is_empty(&self) -> bool {
        self.inpcb.is_none()
            && self.socket.is_none()
            && !self.rcvbuf
            && !self.sndbuf
            && self.stats.is_none()
            && self.tcpcb.is_none()
    }

    /// The socket's records, once all are there.
    fn complete(&self, proto: Proto) -> Option<Records<'a>> {
        if !(self.rcvbuf && self.sndbuf) {
            return None;
        }
        Some(Records {
            inpcb: self.inpcb?,
            socket: self.socket?,
            stats: self.stats?,
            tcpcb: match proto {
                Proto::Tcp => Some(self.tcpcb?),
                Proto::Udp => None,
            },
        })
    }
}

/// Parses one list of `proto` sockets (the bytes of one `sysctl` read).
pub fn parse(buf: &[u8], proto: Proto, counting: Counting) -> Result<List, ParseError> {
    let len = buf.len();
    if len < off::XINPGEN_LEN {
        return Err(ParseError::Truncated {
            what: "the opening xinpgen",
            at: 0,
            need: off::XINPGEN_LEN,
            len,
        });
    }
    let head_len = u32_le(buf, off::XIG_LEN) as usize;
    if head_len < off::XINPGEN_LEN {
        return Err(ParseError::TooShort {
            what: "the opening xinpgen",
            at: 0,
            claimed: head_len,
            need: off::XINPGEN_LEN,
        });
    }
    let count = u32_le(buf, off::XIG_COUNT);
    let gen_first = u64_le(buf, off::XIG_GEN);
    let mut pos = roundup8(head_len);
    let mut list = List::default();
    if count == 0 && pos >= len {
        // No sockets: the kernel writes no closing record.
        return Ok(list);
    }
    let mut item = Item::default();
    let mut item_start = pos;
    let mut gen_last = None;
    while pos < len {
        if len - pos < 8 {
            return Err(ParseError::Truncated {
                what: "a record's length and kind",
                at: pos,
                need: 8,
                len,
            });
        }
        let rec_len = u32_le(buf, pos) as usize;
        if rec_len <= off::XINPGEN_LEN {
            // The closing xinpgen (netstat's test: nothing else is this
            // short).
            if rec_len != off::XINPGEN_LEN {
                return Err(ParseError::TooShort {
                    what: "a record",
                    at: pos,
                    claimed: rec_len,
                    need: off::XINPGEN_LEN,
                });
            }
            if len - pos < off::XINPGEN_LEN {
                return Err(ParseError::Truncated {
                    what: "the closing xinpgen",
                    at: pos,
                    need: off::XINPGEN_LEN,
                    len,
                });
            }
            gen_last = Some(u64_le(buf, pos + off::XIG_GEN));
            let end = pos + roundup8(off::XINPGEN_LEN);
            if end < len {
                return Err(ParseError::Trailing {
                    at: pos,
                    extra: len - end,
                });
            }
            break;
        }
        if len - pos < rec_len {
            return Err(ParseError::Truncated {
                what: "a record",
                at: pos,
                need: rec_len,
                len,
            });
        }
        let rec = &buf[pos..pos + rec_len];
        if item.is_empty() {
            item_start = pos;
        }
        let kind = u32_le(rec, 4);
        let need = |what, min: usize| {
            if rec_len < min {
                Err(ParseError::TooShort {
                    what,
                    at: pos,
                    claimed: rec_len,
                    need: min,
                })
            } else {
                Ok(())
            }
        };
        let repeated = ParseError::Repeated { kind, at: pos };
        match kind {
            layout::XSO_INPCB => {
                need("an xinpcb_n", off::INPCB_MIN)?;
                if item.inpcb.replace(rec).is_some() {
                    return Err(repeated);
                }
            }
            layout::XSO_SOCKET => {
                need("an xsocket_n", off::SOCKET_MIN)?;
                if item.socket.replace(rec).is_some() {
                    return Err(repeated);
                }
            }
            layout::XSO_RCVBUF => {
                need("an xsockbuf_n", off::SOCKBUF_MIN)?;
                if std::mem::replace(&mut item.rcvbuf, true) {
                    return Err(repeated);
                }
            }
            layout::XSO_SNDBUF => {
                need("an xsockbuf_n", off::SOCKBUF_MIN)?;
                if std::mem::replace(&mut item.sndbuf, true) {
                    return Err(repeated);
                }
            }
            layout::XSO_STATS => {
                need("an xsockstat_n", off::STATS_MIN)?;
                if item.stats.replace(rec).is_some() {
                    return Err(repeated);
                }
            }
            layout::XSO_TCPCB => {
                need("an xtcpcb_n", off::TCPCB_MIN)?;
                if item.tcpcb.replace(rec).is_some() {
                    return Err(repeated);
                }
            }
            // A kind this version does not know: its length carries us
            // past it.
            _ => {}
        }
        if let Some(records) = item.complete(proto) {
            if let Some(pcb) = pcb(proto, gen_first, &records, counting) {
                list.pcbs.push(pcb);
            }
            item = Item::default();
        }
        pos += roundup8(rec_len);
    }
    if !item.is_empty() {
        return Err(ParseError::Incomplete { at: item_start });
    }
    match gen_last {
        Some(g) => list.changed = g != gen_first,
        None => {
            return Err(ParseError::Truncated {
                what: "the closing xinpgen",
                at: len,
                need: off::XINPGEN_LEN,
                len,
            });
        }
    }
    Ok(list)
}

/// One socket from its records (lengths checked), or None when the list
/// says to leave it out, as netstat does: another protocol, a pcb freed
/// and reused while the list was written (its generation is newer than the
/// list's), neither IPv4 nor IPv6.
fn pcb(proto: Proto, gen_list: u64, r: &Records<'_>, counting: Counting) -> Option<Pcb> {
    let Records {
        inpcb,
        socket,
        stats,
        tcpcb,
    } = *r;
    let ipproto = match proto {
        Proto::Tcp => libc::IPPROTO_TCP,
        Proto::Udp => libc::IPPROTO_UDP,
    };
    if i32_le(socket, off::SO_PROTOCOL) != ipproto {
        return None;
    }
    let gencnt = u64_le(inpcb, off::INP_GENCNT);
    if gencnt > gen_list {
        return None;
    }
    let vflag = inpcb[off::INP_VFLAG];
    let addr = |at: usize| -> Option<IpAddr> {
        let raw: [u8; 16] = inpcb[at..at + 16].try_into().ok()?;
        if vflag & layout::INP_IPV4 != 0 {
            // struct in_addr_4in6: the IPv4 address is the last word.
            Some(IpAddr::V4(Ipv4Addr::new(
                raw[12], raw[13], raw[14], raw[15],
            )))
        } else if vflag & layout::INP_IPV6 != 0 {
            let v6 = Ipv6Addr::from(raw);
            // An IPv4 peer of a dual-stack socket: as IPv4, as on Linux.
            Some(v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4))
        } else {
            None
        }
    };
    let local = SocketAddr::new(addr(off::INP_LADDR)?, u16_be(inpcb, off::INP_LPORT));
    let remote = SocketAddr::new(addr(off::INP_FADDR)?, u16_be(inpcb, off::INP_FPORT));
    let slot = |i: usize| {
        let at = off::ST_STATS + i * off::DS_LEN;
        PcbStats {
            rx_packets: u64_le(stats, at + off::DS_RXPACKETS),
            rx_bytes: u64_le(stats, at + off::DS_RXBYTES),
            tx_packets: u64_le(stats, at + off::DS_TXPACKETS),
            tx_bytes: u64_le(stats, at + off::DS_TXBYTES),
        }
    };
    let stats = match counting {
        Counting::DataSlot => slot(0),
        Counting::PerClass => {
            (0..layout::SO_TC_STATS_MAX)
                .map(slot)
                .fold(PcbStats::default(), |a, s| PcbStats {
                    rx_packets: a.rx_packets.saturating_add(s.rx_packets),
                    rx_bytes: a.rx_bytes.saturating_add(s.rx_bytes),
                    tx_packets: a.tx_packets.saturating_add(s.tx_packets),
                    tx_bytes: a.tx_bytes.saturating_add(s.tx_bytes),
                })
        }
    };
    let tcp = tcpcb.map(|t| {
        let srtt = i32_le(t, off::T_SRTT);
        TcpInfo {
            state: i32_le(t, off::T_STATE),
            srtt_us: srtt_us(srtt),
            rxtshift: i32_le(t, off::T_RXTSHIFT),
            cwnd: u32_le(t, off::SND_CWND),
        }
    });
    Some(Pcb {
        proto,
        local,
        remote,
        gencnt,
        uid: u32_le(socket, off::SO_UID),
        last_pid: i32_le(socket, off::SO_LAST_PID),
        e_pid: i32_le(socket, off::SO_E_PID),
        stats,
        tcp,
    })
}

/// `t_srtt` to microseconds: milliseconds (`tcp_now` ticks,
/// `TCP_RETRANSHZ` = 1000 a second) with `TCP_RTT_SHIFT` (5) bits of
/// fraction (`tcp_xmit_timer`, tcp_input.c: `t_srtt = rtt <<
/// TCP_RTT_SHIFT`). 0 (or less) is no measurement yet.
pub fn srtt_us(t_srtt: i32) -> Option<u32> {
    let scaled = u64::try_from(t_srtt).ok().filter(|&s| s > 0)?;
    u32::try_from((scaled * 1000) >> layout::TCP_RTT_SHIFT).ok()
}
