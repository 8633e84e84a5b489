#![no_std]
// This file exists so tcptop can name this crate as a build dependency
// (cargo then rebuilds tcptop when it changes); the programs are in main.rs.
