//! The format layer: compression wrappers, archives, containers and CD images, each decoded
//! behind [`crate::io::ReadAt`]. [`open`] sniffs a path's bytes and builds the chain of layers
//! down to the disk image.

pub mod android_sparse;
pub mod cd;
pub mod container;
mod frames;
pub mod open;
pub mod sniff;
pub mod stream;
pub mod xz_blocks;
pub mod zip_member;

pub use open::open_source;
pub use open::{open, Layer, OpenOptions, Opened};
pub use sniff::Format;
pub use stream::{SeekableZstd, StreamSource};
pub use xz_blocks::XzBlocks;
