//! The records of `sysctl net.inet.tcp.pcblist_n` and
//! `net.inet.udp.pcblist_n`, as XNU lays them out. The C library has no
//! header for them (they are `PRIVATE` in XNU), nor does the libc crate:
//! these mirrors are written from XNU's headers and checked by the compiler
//! against the sizes and offsets worked out by hand below. They are never
//! filled from bytes: the parser reads each field at its offset
//! (`offset_of!` here), little-endian (every macOS ABI, x86_64 and arm64).
//!
//! Sources, apple-oss-distributions/xnu at xnu-11417.101.15 (macOS 15.4):
//! - `bsd/netinet/in_pcb.h`: `struct xinpgen`, `struct xinpcb_n`, between
//!   `#pragma pack(4)` (line 319) and `#pragma pack()` (line 527): 8-byte
//!   fields are 4-aligned, hence `packed(4)` here.
//! - `bsd/sys/socketvar.h`: `struct xsocket_n`, `xsockbuf_n`, `xsockstat_n`,
//!   `struct data_stats`, `SO_TC_STATS_MAX` (4), the `XSO_*` kinds; also
//!   under `#pragma pack(4)` (lines 433 to 583).
//! - `bsd/netinet/tcp_var.h`: `struct xtcpcb_n` under `#pragma pack(4)`
//!   (lines 1500 to 1711); `TCP_RTT_SHIFT` (5); `bsd/netinet/tcp_timer.h`:
//!   `TCPT_NTIMERS_EXT` (4); `bsd/netinet/tcp_fsm.h`: the states.
//! - `bsd/netinet/in_pcblist.c`, `get_pcblist_n`: the list is one `xinpgen`,
//!   then per socket one item of `xinpcb_n`, `xsocket_n`, `xsockbuf_n`
//!   (receive), `xsockbuf_n` (send), `xsockstat_n` and, for TCP, `xtcpcb_n`,
//!   each starting on an 8-byte boundary (`ADVANCE64`), each with its length
//!   and kind first; then, if there were sockets, one more `xinpgen` whose
//!   generation differs from the first if the list changed during the read.
//!   Skywalk's user-space flows follow the kernel's sockets in the same
//!   format (`nstat_userland_list_snapshot`, `bsd/net/ntstat.c`) with most
//!   fields zero, `inp_gencnt` included.
//! - network_cmds (network_cmds-741.100.2) `netstat.tproj/inet.c`,
//!   `protopr`: walks the records by `xgn_len` and `xgn_kind`, as we do.
//!
//! The layouts have been the same since xnu-4903 (macOS 10.14) but one:
//! `xsocket_n` grew from 76 bytes to 104 at xnu-8792 (macOS 13: `so_gencnt`
//! to `xso_filter_flags`; the per-socket stride of the UDP list went from
//! 384 to 408 bytes). Records are read by their own length, and each needs
//! only the fields read from it, so both forms parse.
#![allow(
    dead_code,
    reason = "the mirrors document the whole layout; only some fields are read"
)]

use std::mem::{offset_of, size_of};

/// `XSO_*` (socketvar.h): the kind of each record.
pub const XSO_SOCKET: u32 = 0x001;
pub const XSO_RCVBUF: u32 = 0x002;
pub const XSO_SNDBUF: u32 = 0x004;
pub const XSO_STATS: u32 = 0x008;
pub const XSO_INPCB: u32 = 0x010;
pub const XSO_TCPCB: u32 = 0x020;

/// `inp_vflag` bits (in_pcb.h).
pub const INP_IPV4: u8 = 0x1;
pub const INP_IPV6: u8 = 0x2;

/// `SO_TC_STATS_MAX` (socketvar.h): slots in `xst_tc_stats`.
pub const SO_TC_STATS_MAX: usize = 4;

/// `TCP_RTT_SHIFT` (tcp_var.h): `t_srtt` is milliseconds with 5 bits of
/// fraction (`tcp_xmit_timer`, tcp_input.c: `t_srtt = rtt << TCP_RTT_SHIFT`,
/// rtt in `tcp_now` ticks of `TCP_RETRANSHZ` = 1000 per second).
pub const TCP_RTT_SHIFT: u32 = 5;

/// `struct xinpgen`: the list's first and last record (24 bytes).
#[repr(C, packed(4))]
pub struct XinpGen {
    pub xig_len: u32,
    pub xig_count: u32,
    /// `inp_gen_t` (`u_quad_t`): the protocol's pcb generation.
    pub xig_gen: u64,
    pub xig_sogen: u64,
}

/// `struct in_addr_4in6` / `struct in6_addr` (a union of both, 4-aligned:
/// the IPv4 address is its last 4 bytes).
#[repr(C)]
pub struct Addr4in6 {
    pub words: [u32; 4],
}

/// `inp_depend6` of `struct xinpcb_n`.
#[repr(C, packed(4))]
pub struct Depend6 {
    pub inp6_hlim: u8,
    pub inp6_cksum: i32,
    pub inp6_ifindex: u16,
    pub inp6_hops: i16,
}

/// `struct xinpcb_n` (104 bytes).
#[repr(C, packed(4))]
pub struct XinpcbN {
    pub xi_len: u32,
    pub xi_kind: u32,
    pub xi_inpp: u64,
    /// Network byte order.
    pub inp_fport: u16,
    pub inp_lport: u16,
    pub inp_ppcb: u64,
    /// Set when the pcb is allocated (`in_pcballoc`: `++ipi_gencnt`), unique
    /// per protocol: never reused, unlike a 4-tuple or a kernel address.
    pub inp_gencnt: u64,
    pub inp_flags: i32,
    pub inp_flow: u32,
    pub inp_vflag: u8,
    pub inp_ip_ttl: u8,
    pub inp_ip_p: u8,
    pub inp_dependfaddr: Addr4in6,
    pub inp_dependladdr: Addr4in6,
    pub inp_depend4: u8,
    pub inp_depend6: Depend6,
    pub inp_flowhash: u32,
    pub inp_flags2: u32,
}

/// `struct xsocket_n` (104 bytes; 76 before xnu-8792).
#[repr(C, packed(4))]
pub struct XsocketN {
    pub xso_len: u32,
    pub xso_kind: u32,
    pub xso_so: u64,
    pub so_type: i16,
    pub so_options: u32,
    pub so_linger: i16,
    pub so_state: i16,
    pub so_pcb: u64,
    pub xso_protocol: i32,
    pub xso_family: i32,
    pub so_qlen: i16,
    pub so_incqlen: i16,
    pub so_qlimit: i16,
    pub so_timeo: i16,
    pub so_error: u16,
    pub so_pgid: i32,
    pub so_oobmark: u32,
    pub so_uid: u32,
    /// The last process to make a call on the socket (`sotoxsocket_n`:
    /// `so->last_pid`).
    pub so_last_pid: i32,
    /// The process it acts for (a delegated socket), else the creator.
    pub so_e_pid: i32,
    pub so_gencnt: u64,
    pub so_flags: u32,
    pub so_flags1: u32,
    pub so_usecount: i32,
    pub so_retaincnt: i32,
    pub xso_filter_flags: u32,
}

/// `struct xsockbuf_n` (32 bytes).
#[repr(C, packed(4))]
pub struct XsockbufN {
    pub xsb_len: u32,
    pub xsb_kind: u32,
    /// Bytes in the buffer.
    pub sb_cc: u32,
    pub sb_hiwat: u32,
    pub sb_mbcnt: u32,
    pub sb_mbmax: u32,
    pub sb_lowat: i32,
    pub sb_flags: i16,
    pub sb_timeo: i16,
}

/// `struct data_stats` (32 bytes).
#[repr(C, packed(4))]
pub struct DataStatsC {
    pub rxpackets: u64,
    pub rxbytes: u64,
    pub txpackets: u64,
    pub txbytes: u64,
}

/// `struct xsockstat_n` (136 bytes).
#[repr(C, packed(4))]
pub struct XsockstatN {
    pub xst_len: u32,
    pub xst_kind: u32,
    pub xst_tc_stats: [DataStatsC; SO_TC_STATS_MAX],
}

/// `struct xtcpcb_n` (204 bytes, 208 in the list).
#[repr(C, packed(4))]
pub struct XtcpcbN {
    pub xt_len: u32,
    pub xt_kind: u32,
    pub t_segq: u64,
    pub t_dupacks: i32,
    pub t_timer: [i32; 4],
    pub t_state: i32,
    pub t_flags: u32,
    pub t_force: i32,
    pub snd_una: u32,
    pub snd_max: u32,
    pub snd_nxt: u32,
    pub snd_up: u32,
    pub snd_wl1: u32,
    pub snd_wl2: u32,
    pub iss: u32,
    pub irs: u32,
    pub rcv_nxt: u32,
    pub rcv_adv: u32,
    pub rcv_wnd: u32,
    pub rcv_up: u32,
    pub snd_wnd: u32,
    pub snd_cwnd: u32,
    pub snd_ssthresh: u32,
    pub t_maxopd: u32,
    pub t_rcvtime: u32,
    pub t_starttime: u32,
    pub t_rtttime: i32,
    pub t_rtseq: u32,
    pub t_rxtcur: i32,
    pub t_maxseg: u32,
    /// Smoothed RTT, milliseconds << [`TCP_RTT_SHIFT`].
    pub t_srtt: i32,
    pub t_rttvar: i32,
    /// Retransmit timer backoff: the timeouts in a row without an ACK
    /// (zeroed by the next ACK), not a count of retransmitted segments.
    pub t_rxtshift: i32,
    pub t_rttmin: u32,
    pub t_rttupdated: u32,
    pub max_sndwnd: u32,
    pub t_softerror: i32,
    pub t_oobflags: i8,
    pub t_iobc: i8,
    pub snd_scale: u8,
    pub rcv_scale: u8,
    pub request_r_scale: u8,
    pub requested_s_scale: u8,
    pub ts_recent: u32,
    pub ts_recent_age: u32,
    pub last_ack_sent: u32,
    pub cc_send: u32,
    pub cc_recv: u32,
    pub snd_recover: u32,
    pub snd_cwnd_prev: u32,
    pub snd_ssthresh_prev: u32,
}

/// Offsets of the fields the parser reads, with the smallest record that
/// holds them all (a shorter record of that kind is an error).
pub mod off {
    use super::*;

    pub const XIG_LEN: usize = offset_of!(XinpGen, xig_len);
    pub const XIG_COUNT: usize = offset_of!(XinpGen, xig_count);
    pub const XIG_GEN: usize = offset_of!(XinpGen, xig_gen);
    pub const XINPGEN_LEN: usize = size_of::<XinpGen>();

    pub const INP_FPORT: usize = offset_of!(XinpcbN, inp_fport);
    pub const INP_LPORT: usize = offset_of!(XinpcbN, inp_lport);
    pub const INP_GENCNT: usize = offset_of!(XinpcbN, inp_gencnt);
    pub const INP_VFLAG: usize = offset_of!(XinpcbN, inp_vflag);
    pub const INP_FADDR: usize = offset_of!(XinpcbN, inp_dependfaddr);
    pub const INP_LADDR: usize = offset_of!(XinpcbN, inp_dependladdr);
    pub const INPCB_MIN: usize = INP_LADDR + size_of::<Addr4in6>();

    pub const SO_PROTOCOL: usize = offset_of!(XsocketN, xso_protocol);
    pub const SO_UID: usize = offset_of!(XsocketN, so_uid);
    pub const SO_LAST_PID: usize = offset_of!(XsocketN, so_last_pid);
    pub const SO_E_PID: usize = offset_of!(XsocketN, so_e_pid);
    pub const SOCKET_MIN: usize = SO_E_PID + 4;

    pub const SB_CC: usize = offset_of!(XsockbufN, sb_cc);
    pub const SOCKBUF_MIN: usize = SB_CC + 4;

    pub const ST_STATS: usize = offset_of!(XsockstatN, xst_tc_stats);
    pub const STATS_MIN: usize = size_of::<XsockstatN>();
    pub const DS_RXPACKETS: usize = offset_of!(DataStatsC, rxpackets);
    pub const DS_RXBYTES: usize = offset_of!(DataStatsC, rxbytes);
    pub const DS_TXPACKETS: usize = offset_of!(DataStatsC, txpackets);
    pub const DS_TXBYTES: usize = offset_of!(DataStatsC, txbytes);
    pub const DS_LEN: usize = size_of::<DataStatsC>();

    pub const T_STATE: usize = offset_of!(XtcpcbN, t_state);
    pub const SND_UNA: usize = offset_of!(XtcpcbN, snd_una);
    pub const ISS: usize = offset_of!(XtcpcbN, iss);
    pub const IRS: usize = offset_of!(XtcpcbN, irs);
    pub const RCV_NXT: usize = offset_of!(XtcpcbN, rcv_nxt);
    pub const SND_CWND: usize = offset_of!(XtcpcbN, snd_cwnd);
    pub const T_SRTT: usize = offset_of!(XtcpcbN, t_srtt);
    pub const T_RXTSHIFT: usize = offset_of!(XtcpcbN, t_rxtshift);
    pub const TCPCB_MIN: usize = T_RXTSHIFT + 4;
}

// The layout worked out by hand from the headers (pack(4): 8-byte fields
// on 4-byte boundaries), checked against the mirrors above at compile time
// on every target. The fixtures (tests) write records at these numbers.
const _: () = {
    assert!(size_of::<XinpGen>() == 24);
    assert!(off::XIG_COUNT == 4 && off::XIG_GEN == 8);

    assert!(size_of::<XinpcbN>() == 104);
    assert!(off::INP_FPORT == 16 && off::INP_LPORT == 18);
    assert!(offset_of!(XinpcbN, inp_ppcb) == 20);
    assert!(off::INP_GENCNT == 28);
    assert!(off::INP_VFLAG == 44);
    assert!(off::INP_FADDR == 48 && off::INP_LADDR == 64);
    assert!(offset_of!(XinpcbN, inp_depend6) == 84);
    assert!(offset_of!(XinpcbN, inp_flags2) == 100);

    assert!(size_of::<XsocketN>() == 104);
    assert!(offset_of!(XsocketN, so_options) == 20);
    assert!(offset_of!(XsocketN, so_pcb) == 28);
    assert!(off::SO_PROTOCOL == 36);
    assert!(offset_of!(XsocketN, so_pgid) == 56);
    assert!(off::SO_UID == 64 && off::SO_LAST_PID == 68 && off::SO_E_PID == 72);
    // Where the older, shorter form ended.
    assert!(off::SOCKET_MIN == 76);
    assert!(offset_of!(XsocketN, so_gencnt) == 76);

    assert!(size_of::<XsockbufN>() == 32);
    assert!(off::SB_CC == 8);

    assert!(size_of::<DataStatsC>() == 32);
    assert!(size_of::<XsockstatN>() == 136);
    assert!(off::ST_STATS == 8);
    assert!(off::DS_RXPACKETS == 0 && off::DS_RXBYTES == 8);
    assert!(off::DS_TXPACKETS == 16 && off::DS_TXBYTES == 24);

    assert!(size_of::<XtcpcbN>() == 204);
    assert!(offset_of!(XtcpcbN, t_timer) == 20);
    assert!(off::T_STATE == 36);
    assert!(off::SND_UNA == 48 && off::ISS == 72 && off::IRS == 76 && off::RCV_NXT == 80);
    assert!(off::SND_CWND == 100);
    assert!(off::T_SRTT == 136 && off::T_RXTSHIFT == 144);
    assert!(offset_of!(XtcpcbN, ts_recent) == 172);
    assert!(offset_of!(XtcpcbN, snd_ssthresh_prev) == 200);
};
