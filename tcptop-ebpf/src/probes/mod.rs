//! One file per kernel hook.
mod destroy;
mod fentry;
mod kprobe;
mod retransmit;
mod send_recv;
mod state;
mod udp;
