//! One file per kernel hook.
mod destroy;
mod send_recv;
mod sock_ops;
mod state;
