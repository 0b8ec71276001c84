//! The Flight server, tested through real clients: `plain` runs the service in-process, `server`
//! starts the real `omendb serve` binary.

mod common;
mod plain;
mod server;
mod sql;
