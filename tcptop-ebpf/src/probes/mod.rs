//! One file per kernel hook.
mod adopt;
mod destroy;
mod fentry;
mod iter;
mod kprobe;
mod owners;
mod send_recv;
mod state;
mod touch;
mod udp;
