//! blockwise: disk images understood, not byte-copied.
//!
//! The library reads images through [`io::ReadAt`] sources (files, block devices,
//! decompressors, containers), finds their partition tables ([`layout`]) and filesystems
//! ([`fs`]), and describes which byte ranges matter as an [`extent::ExtentMap`].

#![forbid(unsafe_op_in_unsafe_fn)]

pub mod archive;
pub mod bmap;
pub mod error;
pub mod extent;
pub mod format;
pub mod fs;
pub mod inspect;
pub mod io;
pub mod layout;
pub mod map;
pub mod pipeline;
pub mod util;

pub use error::{Error, Result};
pub use extent::ExtentMap;
