//! blockwise: disk images understood, not byte-copied.
//!
//! The library reads images through [`io::ReadAt`] sources (files, block devices,
//! decompressors, containers), finds their partition tables ([`layout`]) and filesystems
//! ([`fs`]), and describes which byte ranges matter as an [`extent::ExtentMap`].
//!
//! An opened image is scanned once ([`scan`]: its table, and every filesystem with its
//! allocation map); [`map`] applies the skip rule to that scan, and [`report`] presents it.

#![forbid(unsafe_op_in_unsafe_fn)]
#![deny(unsafe_code)]
#![deny(missing_docs)]
// A type in a public signature must be nameable, so it can be documented and used.
#![deny(unnameable_types)]

pub mod archive;
pub mod bmap;
pub mod checksum;
pub mod drives;
pub mod error;
pub mod extent;
pub mod flash;
pub mod format;
pub mod fs;
pub mod io;
pub mod layout;
pub mod map;
pub(crate) mod pipeline;
pub mod report;
pub mod scan;
pub mod util;

pub use error::{Error, Result};
pub use extent::ExtentMap;
