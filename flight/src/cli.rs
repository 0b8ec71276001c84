//! The `omendb` command line's own modules, apart from the server's: operator commands
//! (`admin`), `import`, `bench` and the progress bars they draw.

pub(crate) mod admin;
pub(crate) mod bench;
pub(crate) mod import;
pub(crate) mod progress;
