//! The `omendb` command line's own modules, apart from the server's: operator commands
//! (`admin`), `import`, `bench` and the progress bars they draw.

pub mod admin;
pub mod bench;
pub mod import;
pub mod progress;
