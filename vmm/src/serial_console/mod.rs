//! COM1 for viewers (`--serial-socket PATH`): beside the `--serial` sink (stdout or the
//! serial log file), the guest's console on a Unix socket that several clients may use at
//! once, each first sent the recent output so a viewer opened late sees the prompt.
//!
//! - [`scrollback`]: the bounded ring of recent output;
//! - [`fanout`]: the UART's output writer, the scrollback and each client's bounded queue;
//! - [`input`]: bytes to the UART, waiting for room in its FIFO (stdin uses it too);
//! - [`server`]: the socket, a sender and a receiver thread per client.
//!
//! The fan-out and the UART slot outlive guest resets (the machine is rebuilt, the
//! socket's clients stay connected).

pub mod fanout;
pub mod input;
pub mod scrollback;
pub mod server;

pub use fanout::{FanoutWriter, SerialFanout};
pub use input::SerialInput;
pub use server::{SerialSocket, SerialSocketError};

/// Recent output replayed to a new client: a screenful of a text installer many times
/// over, or the whole boot log of a small Linux guest.
pub const SCROLLBACK_BYTES: usize = 256 * 1024;
/// How far a client may fall behind (the replay included) before it is dropped.
pub const CLIENT_QUEUE_BYTES: usize = 1024 * 1024;
/// Clients at once: each costs two threads and up to [`CLIENT_QUEUE_BYTES`].
pub const MAX_CLIENTS: usize = 16;
